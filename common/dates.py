"""The one parser of the dates and moments that users pass on the command line.

Every date is a UTC calendar day `YYYY-MM-DD`; a moment is a date (its midnight) or
`YYYY-MM-DDTHH:MM:SS`, in UTC, held as a naive datetime. An output "as of T" uses only
impressions strictly before T (README.md, "Dates and as-of moments")."""
from __future__ import annotations

import datetime as dt

from common.errors import UserInputError

MOMENT_FORMAT = "%Y-%m-%dT%H:%M:%S"


def parse_moment(text: str, option: str) -> dt.datetime:
    """`YYYY-MM-DD` (midnight) or `YYYY-MM-DDTHH:MM:SS`; `option` names the argument in the
    error."""
    for fmt in ("%Y-%m-%d", MOMENT_FORMAT):
        try:
            return dt.datetime.strptime(text, fmt)
        except (TypeError, ValueError):
            continue
    raise UserInputError(f"{option} {text!r} is not a date YYYY-MM-DD or a moment "
                         "YYYY-MM-DDTHH:MM:SS (UTC)")


def parse_day(text: str, option: str) -> dt.date:
    """A calendar day `YYYY-MM-DD`; `option` names the argument in the error."""
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise UserInputError(f"{option} {text!r} is not a date YYYY-MM-DD") from None


def optional_moment(text: str | None, option: str) -> dt.datetime | None:
    return parse_moment(text, option) if text else None


def optional_day(text: str | None, option: str) -> dt.date | None:
    return parse_day(text, option) if text else None


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def day_or_today(text: str | None, option: str) -> dt.date:
    """The day `text` names, or today (UTC) when it is empty."""
    return optional_day(text, option) or today_utc()

"""The guard on a day's data before the daily run scores it: a day that is missing, empty or
much smaller than the days before it (a partition truncated or still being loaded) would give
every user recommendations from a state that missed most of the day, so it is refused with
the figures. The figures come from the state summaries (features/state_chain.py), which
count each day's impressions, users and news shown."""
from __future__ import annotations

import datetime as dt
import statistics

from common.config import Config
from common.errors import UserInputError
from features.state_chain import stored_state

DAY = dt.timedelta(days=1)
MEASURES = (("day_impressions", "impressions"), ("day_users", "users"),
            ("day_news_shown", "news shown"))


def check_day_volume(cfg: Config, date: dt.date) -> dict:
    """Refuse to score `date` when the log's day before it is empty, or when its impressions,
    users or news shown fall below `daily.min_volume_ratio` of their median over the
    `daily.volume_days` days before (compared once at least two of those days had data).
    Returns the figures compared."""
    day = date - DAY
    current = (stored_state(cfg, date) or {}).get("summary", {})
    if "day_impressions" not in current:
        # the state as of `date` is a full build_features rebuild, not a day advanced by the
        # daily chain: it counts no single day, so there is nothing to compare
        return {"day": day.isoformat(), "checked": False,
                "reason": "the state as of the date was built by build_features"}
    if not current["day_impressions"]:
        raise UserInputError(
            f"cannot score {date}: the log holds no impression on {day} (the day is missing "
            "or empty): load it, then run the day again")
    history = []
    for back in range(1, cfg["daily.volume_days"] + 1):
        summary = (stored_state(cfg, date - back * DAY) or {}).get("summary", {})
        if summary.get("day_impressions"):
            history.append(summary)
    figures = {"day": day.isoformat(), "previous_days": len(history)}
    ratio = cfg["daily.min_volume_ratio"]
    low, texts = [], []
    for key, name in MEASURES:
        before = [summary[key] for summary in history if summary.get(key)]
        if key not in current or len(before) < 2:
            continue
        median = statistics.median(before)
        figures[name] = {"day": current[key], "median": median}
        share = current[key] / median
        texts.append(f"{name} {current[key]:,} ({share:.0%} of the median {median:,.0f})")
        if share < ratio:
            low.append(name)
    if low:
        listed = ", ".join(texts)
        raise UserInputError(
            f"cannot score {date}: the log's day {day} looks incomplete: {listed} over the "
            f"{len(history)} days before it; {' and '.join(low)} below daily.min_volume_ratio "
            f"{ratio}: check the day's partition and run the day again (or lower "
            "daily.min_volume_ratio to accept it)")
    return figures

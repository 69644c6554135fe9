"""The one check of names the project puts into SQL: database and table identifiers."""
from __future__ import annotations

import re

from common.errors import UserInputError

# Spark SQL's unquoted identifier, within the Hive metastore's 128-character limit.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
IDENTIFIER_RULE = "letters, digits and _, not starting with a digit, at most 128 characters"


def identifier_problem(value) -> str | None:
    """Why `value` is not a valid table identifier, or None."""
    if isinstance(value, str) and IDENTIFIER.match(value):
        return None
    return f"is not a valid table identifier ({IDENTIFIER_RULE})"


def validated_identifier(value: str, key: str) -> str:
    problem = identifier_problem(value)
    if problem:
        raise UserInputError(f"{key} {value!r} {problem}")
    return value

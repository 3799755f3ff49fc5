"""JSON as the standard defines it, read safely: Python's json module also reads NaN, Infinity and -Infinity,
and says too deep a value or too long a number in errors other than ValueError or in words about Python."""

from __future__ import annotations

import json
from typing import Any

MAX_DIGITS = 4000  # an integer's digits read, under Python's own limit (4,300)


def loads(text: str | bytes) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity, and values nested deeper than the parser goes, with a
    ValueError, like any other bad JSON."""
    try:
        return json.loads(text, parse_constant=_refuse, parse_int=_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _int(digits: str) -> int:
    # Python refuses to read 4,300 digits and more, in a message that tells of sys.set_int_max_str_digits()
    if (count := len(digits.lstrip("-"))) > MAX_DIGITS:
        raise ValueError(f"a number of {count} digits is past any limit")
    return int(digits)

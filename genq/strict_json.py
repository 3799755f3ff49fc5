"""JSON as the standard defines it: Python's json module also reads NaN, Infinity and -Infinity."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity with a ValueError, like any other bad JSON."""
    return json.loads(text, parse_constant=_refuse)


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")

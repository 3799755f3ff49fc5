"""The JSON API under /api/v1: one blueprint per area, all behind Bearer (or session) authentication."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from flask import Blueprint, g, request

from genq.core import strict_json
from genq.db.models import utcnow
from genq.errors import BadRequest, InvalidInput
from genq.jobs.schemas import MAX_ID
from genq.jobs.service import check_clean, clean
from genq.web.auth import require_principal

PREFIX = "/api/v1"


def api_blueprint(name: str, public: bool = False) -> Blueprint:
    """A blueprint under /api/v1 whose routes require a valid token unless `public`."""
    bp = Blueprint(name, __name__, url_prefix=PREFIX)
    if not public:
        bp.before_request(_authenticate)
    return bp


def _authenticate() -> None:
    g.caller = require_principal()


def read_json() -> Any:
    """The request body as JSON: strict (no NaN/Infinity), clean strings, 400 naming the problem otherwise."""
    data = request.get_data(cache=True)
    if not data.strip():
        raise BadRequest("the request body is empty: send a JSON object")
    try:
        body = strict_json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError; strict_json says nesting too deep as one
        raise BadRequest(f"the request body is not valid JSON: {str(exc)[:200]}") from None
    try:
        check_clean(body, "body")
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    return body


def query_int(name: str, default: int | None, lo: int, hi: int, clamp: bool = False) -> int | None:
    """An integer query parameter within [lo, hi] (values above hi clamp when `clamp`), else 422."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not re.fullmatch(r"-?[0-9]+", text):
        raise InvalidInput(f"query parameter '{name}' must be an integer")
    # a number of many digits is past any bound: said as such, not parsed (Python refuses 4,300 digits and more)
    value = int(text) if len(text) <= 20 else (lo - 1 if text[0] == "-" else hi + 1)
    if clamp and value > hi:
        return hi
    if not lo <= value <= hi:
        raise InvalidInput(f"query parameter '{name}' must be between {lo} and {hi}")
    return value


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of `choices` (or absent), else 422."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise InvalidInput(f"query parameter '{name}' must be one of: {', '.join(choices)}")
    return raw


def query_job_ids(name: str = "jobs") -> list[int] | None:
    """Job ids from ?jobs=3,5 (or ?jobs=3&jobs=5), in order, empty items skipped; None when there are none; 422
    naming the parameter and the item when an item is not an id. The API and the dashboard pages share it."""
    items = [item.strip() for item in ",".join(request.args.getlist(name)).split(",") if item.strip()]
    for item in items:
        if not (item.isascii() and item.isdigit() and len(item) <= 10 and 1 <= int(item) <= MAX_ID):
            raise InvalidInput(f"query parameter '{name}' must be job ids separated by commas, e.g. ?{name}=3,5; "
                               f"'{clean(item, 20)}' is not")
    return [int(item) for item in items] or None


def query_since(days: int = 30) -> date:
    """The date in ?since=2026-11-01, else `days` ago; 422 naming the parameter for anything else."""
    raw = request.args.get("since") or ""
    try:
        return date.fromisoformat(raw) if raw else utcnow().date() - timedelta(days=days)
    except ValueError:
        raise InvalidInput(f"query parameter 'since' must be a date like 2026-11-01, got '{raw[:40]}'") from None

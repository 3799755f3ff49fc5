"""Retry database writes across a lost connection, with exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger("genq.worker")
T = TypeVar("T")

TRANSIENT = (OperationalError, DBAPIError, ConnectionError, TimeoutError)


def transient(exc: BaseException) -> bool:
    """Whether `exc` is a lost connection, database or network, that a retry may get past: not a database's
    refusal of what was sent (a DataError, an IntegrityError), which a retry only repeats."""
    if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError):
        return exc.connection_invalidated
    return isinstance(exc, TRANSIENT)


def with_retry(fn: Callable[[], T], what: str, attempts: int = 8, first_delay: float = 0.25) -> T:
    """Call `fn`; on a transient error wait 0.25, 0.5, 1, ... s and call it again (about a minute in all)."""
    delay = first_delay
    for attempt in range(attempts):
        try:
            return fn()
        except TRANSIENT as exc:
            if not transient(exc):
                raise
            if attempt == attempts - 1:
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
    raise AssertionError("unreachable")

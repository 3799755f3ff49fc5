"""The database's clock: the one every host agrees on. Leases, heartbeats and dispatch times are written and
compared in it, never in a host's own clock (hosts' clocks drift; GENQ_CLOCK_SKEW_SECONDS fakes that in tests)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session


def db_now(session: Session) -> datetime:
    """The database's current time as naive UTC (PostgreSQL: now(), the transaction's start)."""
    if session.get_bind().dialect.name == "sqlite":
        return datetime.fromisoformat(session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")))
    return session.scalar(text("SELECT CAST(now() AT TIME ZONE 'UTC' AS timestamp)"))

"""Engine and session factory; migrations through Alembic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from genq.config import env_number

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the web read while a worker writes; busy_timeout waits for the write lock instead of failing.
    # synchronous=NORMAL, as SQLite advises with WAL: a commit no longer waits for the disk (0.14-0.38 ms a
    # commit here, several a tiny job); a crash of any process loses nothing, a power cut the last commits.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, pre_ping: bool = True) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout, PostgreSQL a liveness check per checkout unless
    `pre_ping` is False (a caller that retries on a lost connection, which also replaces the pool's others)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # A host that loses its network mid-transaction would hold its row locks until TCP gives up (hours): the
    # server ends a transaction idle this long, so a lost worker's job can be re-queued after its lease.
    idle = round(env_number("GENQ_DB_IDLE_TRANSACTION_SECONDS", 60, float, 0.001) * 1000)
    # ...and the host itself would wait on its socket as long (its answer retransmitted with backoff, or lost
    # with the server's end of the connection): keepalive probes and a TCP user timeout end a connection that
    # has gone this long unanswered, so the caller gets an error it retries instead of hanging.
    tcp = env_number("GENQ_DB_TCP_TIMEOUT_SECONDS", 30, int, 1)
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=5, max_overflow=5,
                         connect_args={"options": f"-c idle_in_transaction_session_timeout={idle}",
                                       "connect_timeout": tcp, "tcp_user_timeout": tcp * 1000, "keepalives": 1,
                                       "keepalives_idle": max(1, tcp // 3), "keepalives_interval": max(1, tcp // 6),
                                       "keepalives_count": 3})


class Database:
    """One engine and session factory per process (engines must not cross a fork)."""

    def __init__(self, url: str, pre_ping: bool = True):
        self.url = url
        self.engine = make_engine(url, pre_ping)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reads = sessionmaker(self.engine.execution_options(isolation_level="AUTOCOMMIT"))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads alone, outside a transaction: no BEGIN or COMMIT round trip (each statement sees
        what was committed when it ran, as under PostgreSQL's default isolation anyway)."""
        with self._reads() as session:
            yield session

    def upgrade(self) -> None:
        """Apply all Alembic migrations up to head."""
        upgrade(self.url, self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def upgrade(url: str, engine: Engine | None = None, retries: int = 30) -> None:
    """Migrate the database at `url` to the newest schema, waiting for it to answer first."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = engine or make_engine(url)
    for attempt in range(retries):
        try:
            with engine.connect() as connection:
                _migrate_to_head(cfg, connection)
            return
        except OperationalError:
            if attempt == retries - 1:
                raise
            time.sleep(1)


def _migrate_to_head(cfg, connection) -> None:
    """Run the migrations in one transaction; on SQLite with foreign keys off meanwhile: a batch migration
    recreates a table (copy, drop, rename), and dropping `jobs` with them on would cascade-delete every metric,
    log and output that references it."""
    from alembic import command

    sqlite = connection.dialect.name == "sqlite"
    if sqlite:  # outside a transaction, where SQLite honours it
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()

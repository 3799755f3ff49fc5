"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL when GENQ_TEST_DATABASE_URL is set),
a real Redis, and settings pointing at a temporary GENQ_HOME."""

from __future__ import annotations

import os
import uuid

# Two cores are shared by the tests and the worker processes they start: one thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from genq.config import Settings  # noqa: E402
from genq.db import Database  # noqa: E402

PG_URL = os.environ.get("GENQ_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(scope="session")
def redis_url():
    """GENQ_TEST_REDIS_URL, or a Redis server started for this test session."""
    url = os.environ.get("GENQ_TEST_REDIS_URL")
    if url:
        yield url
        return
    from genq.redis_server import EmbeddedRedis

    server = EmbeddedRedis.start(data_dir=None)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server_url():
    """A throw-away PostgreSQL database for this session, dropped at the end."""
    if not PG_URL:
        pytest.skip("GENQ_TEST_DATABASE_URL is not set")
    name = f"genq_test_{uuid.uuid4().hex[:10]}"
    url = make_url(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
                   if PG_URL.startswith("postgresql://") else PG_URL)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A migrated, empty database: SQLite in tmp_path, or the session's PostgreSQL database wiped clean."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'genq.db'}"
        Database(url).upgrade()
        return url
    url = request.getfixturevalue("pg_server_url")
    db = Database(url)
    db.upgrade()
    from genq.db.models import Base

    with db.engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.dispose()
    return url


@pytest.fixture
def settings(tmp_path, database_url, monkeypatch) -> Settings:
    """Settings for a temporary GENQ_HOME on the test's database; also exported as GENQ_* variables."""
    home = tmp_path / "home"
    monkeypatch.setenv("GENQ_HOME", str(home))
    monkeypatch.setenv("GENQ_DATABASE_URL", database_url)
    monkeypatch.delenv("GENQ_ARTIFACTS", raising=False)
    s = Settings.from_env()
    s.ensure_dirs()
    return s


@pytest.fixture
def db(settings):
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A tiny random GPT-2 with its own BPE tokenizer, saved with save_pretrained once per session (copy it into
    a test's models folder: tests may change their copy)."""
    from tests.hf_tiny import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")

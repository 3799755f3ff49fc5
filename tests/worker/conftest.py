"""Fixtures for tests that run the real platform: gunicorn web, scheduler and Celery workers as separate
processes, on the test's database and a real Redis."""

from __future__ import annotations

import os

import pytest
import redis

from genq.api_tokens import create_token
from genq.db import Database
from tests.worker.platform import Platform


@pytest.fixture
def platform(settings, redis_url, tmp_path):
    """Web (gunicorn) running; start the scheduler and workers in the test. Short leases for fast recovery."""
    env = {
        **os.environ,
        "GENQ_HOME": str(settings.home),
        "GENQ_DATABASE_URL": settings.database_url,
        "GENQ_REDIS_URL": redis_url,
        "GENQ_LEASE_SECONDS": "3",
        "GENQ_DISPATCH_TIMEOUT_SECONDS": "5",
        "GENQ_TORCH_THREADS": "1",
        "GENQ_LOG_LEVEL": "INFO",
    }
    db = Database(settings.database_url)
    with db.session() as s:
        token = create_token(s, team="admin", role="admin")
    p = Platform(env=env, home=settings.home, db=db, token=token)
    # Messages left by an earlier test must not reach this test's workers (GENQ_TEST_REDIS_URL is wiped).
    redis.Redis.from_url(redis_url).flushdb()
    try:
        p.start_web()
        yield p
    finally:
        p.stop()
        db.dispose()


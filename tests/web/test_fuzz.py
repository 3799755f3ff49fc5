"""Schemathesis fuzzing of every operation in /api/v1/openapi.json: no input may cause a 5xx."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from genq.config import Settings
from genq.web import create_app
from tests.web.conftest import add_artifact, add_job, add_metrics, add_output, png

pytestmark = pytest.mark.fuzz


def served_spec() -> dict:
    """The document the app serves at /api/v1/openapi.json (fetching it needs no database)."""
    home = Path(tempfile.mkdtemp(prefix="genq-spec-"))
    try:
        settings = Settings(
            home=home,
            database_url=f"sqlite:///{home / 'db'}",
            redis_url=None,
            artifacts=home / "artifacts",
            secret_key="spec",
        )
        return create_app({"SETTINGS": settings}).test_client().get("/api/v1/openapi.json").json
    finally:
        shutil.rmtree(home, ignore_errors=True)


# Schemathesis' fixture-based lazy loader does not work with pytest 9 yet, so the schema is loaded at import
# and each generated request goes to the per-test app (on SQLite and PostgreSQL) through `app=`.
# The event streams are left out: a stream is not one answer but minutes of them (tests/web/test_events.py).
schema = schemathesis.openapi.from_dict(served_spec()).exclude(path_regex="^/api/v1/events")


@pytest.fixture
def seeded(app, db, settings, token):
    """The app with a few real rows, so small generated ids sometimes hit something."""
    source = add_job(db, status="succeeded")
    add_metrics(db, source, "train/loss", [2.0, 1.5, 1.0])
    art = add_artifact(db, settings, source, "s.png", png(), "image/png", kind="sample")
    add_output(db, source, 0, "image", prompt="seven", artifact_id=art)
    add_output(db, source, 0, "text", text="a sample at step 10", step=10)
    add_job(db, status="running")
    return app


@schema.parametrize()
@hypothesis_settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_no_server_errors(case, seeded, token):
    case.call_and_validate(
        app=seeded, headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
    )

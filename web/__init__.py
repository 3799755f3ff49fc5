"""The web dashboard and JSON API: a Flask app factory. Writes job rows; never imports torch."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.routing import BaseConverter, ValidationError

from genq.config import Settings
from genq.core import base_models
from genq.db import Database
from genq.events import Publisher
from genq.jobs.schemas import is_row_id

csrf = CSRFProtect()
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class State:
    """What one app holds: its settings, its database, its Prometheus registry, and its live events (what it
    publishes, and the streams it relays)."""

    settings: Settings
    db: Database
    telemetry: Any
    events: Publisher
    relay: Any
    store: Any = None  # the artifact store (genq.store), made on first use by web/api/store.py


def state() -> State:
    """The current app's State."""
    return current_app.extensions["genq"]


def artifact_store():
    """This app's artifact store (genq.store), made on first use."""
    app_state = state()
    if app_state.store is None:
        app_state.store = app_state.settings.store()
    return app_state.store


class IdConverter(BaseConverter):
    """A row id, 1..2**31-1; anything else does not match, so the route answers 404, not an SQL overflow."""

    regex = r"[0-9]{1,10}"

    def to_python(self, value: str) -> int:
        if not is_row_id(value):
            raise ValidationError()
        return int(value)

    def to_url(self, value: Any) -> str:
        return str(int(value))


def secret_key(settings: Settings) -> str:
    """settings.secret_key, else a random key kept in GENQ_HOME/secret-key so sessions survive restarts."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.home) / "secret-key"
    if path.exists():
        return path.read_text().strip()
    # Written whole to a temporary file, then linked into place: two processes starting at once
    # agree on one key, and neither can read a half-written file.
    fd, tmp = tempfile.mkstemp(dir=settings.home, prefix=".secret-key-")
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip()


def create_app(config: dict | None = None) -> Flask:
    """Build the app; config may hold "SETTINGS" (else Settings.from_env()) and any Flask config keys."""
    from genq.web import auth, dashboard, errors, monitoring, scheduling_pages
    from genq.web.api import artifacts, datasets, evaluation, events, jobs, models, openapi, store, teams, workers
    from genq.web.streams import Relay

    config = dict(config or {})
    settings: Settings = config.pop("SETTINGS", None) or Settings.from_env()
    settings.ensure_dirs()
    base_models.configure(settings.models_folder)  # the hf-causal-lm params name its folders: checked at submission
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key(settings),
        SESSION_COOKIE_NAME="genq_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # The file limit is checked exactly while storing; this bounds the whole multipart body.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 1024 * 1024,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in _csrf below, only for cookie-authenticated requests
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.config.update(config)
    database = Database(settings.database_url)
    if app.config.get("MIGRATE"):
        database.upgrade()
    relay = Relay(settings.redis_url, settings.max_event_streams, settings.event_stream_seconds,
                  settings.event_keepalive_seconds)
    app.extensions["genq"] = State(settings, database, monitoring.Telemetry(database, relay),
                                   Publisher(settings.redis_url), relay)
    app.url_map.converters["id"] = IdConverter
    csrf.init_app(app)
    errors.register(app)

    @app.before_request
    def _csrf() -> None:
        # A browser never adds an Authorization header on its own, so Bearer calls cannot be forged;
        # cookie-authenticated form posts and fetches must carry the CSRF token.
        if request.method not in UNSAFE_METHODS or "Authorization" in request.headers:
            return
        if request.path.startswith("/api/") and auth.current_principal() is None:
            return  # the API answers 401 first
        csrf.protect()

    @app.before_request
    def _worker_tokens() -> None:
        # A worker token lives on every worker host: it may move artifacts and nothing else.
        if request.blueprint != "api_store" and request.endpoint != "static":
            auth.refuse_worker_token()

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("Referrer-Policy", "same-origin")
        state().telemetry.count(request, response)
        return response

    for module in (auth, dashboard, monitoring, jobs, datasets, artifacts, workers, evaluation, events, models,
                   openapi, teams, scheduling_pages, store):
        app.register_blueprint(module.bp)
    return app

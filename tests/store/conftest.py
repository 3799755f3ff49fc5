"""Fixtures for the artifact store: each backend against the real thing (a folder, moto's S3 server as its own
process, the web app behind a real HTTP server), and small transfer chunks so several-chunk files stay small."""

from __future__ import annotations

import os
import threading

import pytest
from werkzeug.serving import make_server

from genq import store as store_module
from genq import store_http
from genq.api_tokens import create_token
from genq.db import Database
from genq.store import FsspecStore, LocalStore
from genq.store_http import HttpStore
from genq.web import create_app
from tests.s3_server import S3_ENV, moto_server

SMALL_CHUNK = 64 * 1024


@pytest.fixture
def database_url(tmp_path):
    """SQLite only: the store's tests are about moving files (the proxy's database use is the token check)."""
    url = f"sqlite:///{tmp_path / 'genq.db'}"
    Database(url).upgrade()
    return url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server for this session, with the AWS variables and GENQ_S3_ENDPOINT_URL set for it."""
    saved = {k: os.environ.get(k) for k in (*S3_ENV, "GENQ_S3_ENDPOINT_URL")}
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        os.environ.update({**S3_ENV, "GENQ_S3_ENDPOINT_URL": url})
        try:
            yield url
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(store_module, "CHUNK", SMALL_CHUNK)
    monkeypatch.setattr(store_http, "CHUNK", SMALL_CHUNK)
    monkeypatch.setattr(store_http, "HTTP_PIECE", SMALL_CHUNK)
    import genq.web.api.store as proxy

    monkeypatch.setattr(proxy, "CHUNK", SMALL_CHUNK)
    return SMALL_CHUNK


@pytest.fixture
def web_url(settings, db):
    """The web app on a real HTTP server (threaded), storing artifacts in settings.artifacts."""
    app = create_app({"SETTINGS": settings})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    app.extensions["genq"].db.dispose()


@pytest.fixture
def worker_token(db) -> str:
    with db.session() as s:
        return create_token(s, "admin", "worker")


@pytest.fixture(params=["local", "s3", "http"])
def store(request, tmp_path, small_chunks):
    """One store of each backend."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        return FsspecStore(f"s3://genq/{tmp_path.name}")
    return HttpStore(request.getfixturevalue("web_url"), request.getfixturevalue("worker_token"))

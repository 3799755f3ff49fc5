"""Web fixtures: an app on the test database, a client, tokens for two teams, and row helpers."""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from genq.api_tokens import create_token, ensure_team
from genq.db import Database
from genq.db.models import Artifact, Base, Job, Output, Team, Worker
from genq.metrics import record_metrics
from genq.web import create_app
from tests.conftest import BACKENDS


@pytest.fixture(scope="session")
def sqlite_template():
    """One migrated SQLite file per session; each test gets a copy (migrating per test costs ~0.25 s)."""
    # On tmpfs when there is one: web tests commit often and each SQLite commit fsyncs.
    folder = Path(tempfile.mkdtemp(prefix="genq-web-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    path = folder / "template.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.dispose()
    yield folder, path
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_migrated(pg_server_url):
    """The session's PostgreSQL database, migrated once."""
    database = Database(pg_server_url)
    database.upgrade()
    database.dispose()
    return pg_server_url


@pytest.fixture(params=BACKENDS)
def database_url(request, sqlite_template):
    """Overrides the shared fixture with a faster equivalent: a migrated, empty database per test."""
    if request.param == "sqlite":
        folder, template = sqlite_template
        path = folder / f"{request.node.name.replace('/', '_')[:80]}-{id(request)}.db"
        shutil.copyfile(template, path)
        request.addfinalizer(lambda: [p.unlink(missing_ok=True) for p in folder.glob(path.name + "*")])
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_migrated")
    database = Database(url)
    with database.engine.begin() as conn:  # DELETE is much faster than TRUNCATE on tiny tables
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    database.dispose()
    return url


@pytest.fixture
def app(settings, db):
    app = create_app({"SETTINGS": settings, "TESTING": True})
    yield app
    app.extensions["genq"].db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def make_token(db, team: str = "alpha", role: str = "admin") -> str:
    """A new token for `team` (created if missing)."""
    with db.session() as s:
        return create_token(s, team, role)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token(db) -> str:
    return make_token(db, "alpha", "admin")


@pytest.fixture
def auth(token) -> dict[str, str]:
    return bearer(token)


@pytest.fixture
def other_auth(db) -> dict[str, str]:
    """An admin of another team."""
    return bearer(make_token(db, "beta", "admin"))


def team_id(db, name: str = "alpha") -> int:
    with db.session() as s:
        from sqlalchemy import select

        return s.scalar(select(Team.id).where(Team.name == name))


def add_job(db, team: str = "alpha", **fields: Any) -> int:
    """Insert a job row directly (as the worker would leave it); returns its id."""
    values: dict[str, Any] = {
        "type": "train",
        "model": "gpt",
        "builtin_dataset": "pydoc",
        "params": {},
        "status": "queued",
    }
    values.update(fields)
    with db.session() as s:
        job = Job(team_id=ensure_team(s, team).id, **values)
        s.add(job)
        s.flush()
        return job.id


def add_metrics(db, job_id: int, name: str, values: list[float], start: int = 0, every: int = 1) -> None:
    """Record points as the worker does (with their block summaries)."""
    rows = [{"job_id": job_id, "name": name, "step": start + i * every, "value": v} for i, v in enumerate(values)]
    with db.session() as s:
        record_metrics(s, rows)


def add_artifact(
    db, settings, job_id: int, name: str, data: bytes, media_type: str, kind: str = "output"
) -> int:
    """Write `data` under the artifact store and record it; returns the artifact id."""
    relative = f"jobs/{job_id}/{name}"
    path = settings.artifacts / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with db.session() as s:
        a = Artifact(
            job_id=job_id, kind=kind, name=name, path=relative, size_bytes=len(data), media_type=media_type
        )
        s.add(a)
        s.flush()
        return a.id


def add_output(
    db,
    job_id: int,
    index: int,
    kind: str,
    prompt: str | None = None,
    text: str | None = None,
    artifact_id: int | None = None,
    step: int | None = None,
) -> int:
    """An output row (a final one, or with `step` a gallery sample drawn at that training step); its id."""
    with db.session() as s:
        out = Output(job_id=job_id, index=index, kind=kind, prompt=prompt, text=text, artifact_id=artifact_id,
                     step=step)
        s.add(out)
        s.flush()
        return out.id


def add_worker(db, worker_id: str, gpu: str, memory_gib: float, **fields: Any) -> None:
    """An online worker row with one CUDA device of `memory_gib` GiB."""
    device = {"kind": "cuda", "name": gpu, "memory_bytes": int(memory_gib * 2**30)}
    with db.session() as s:
        s.add(Worker(id=worker_id, hostname=worker_id.split(":")[0], devices=[device], **fields))


def count(db, model) -> int:
    from sqlalchemy import func, select

    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def upload(client, headers, data: bytes, filename: str = "data.txt", **form: str):
    """POST a file to /api/v1/datasets."""
    return client.post(
        "/api/v1/datasets",
        headers=headers,
        data={"file": (io.BytesIO(data), filename), **form},
        content_type="multipart/form-data",
    )


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client, token: str) -> None:
    """Sign the test client in through the /login form."""
    page = client.get("/login")
    answer = client.post("/login", data={"token": token, "csrf_token": csrf_from(page.text), "next": "/"})
    assert answer.status_code == 302, answer.text


def png(size: int = 8, color: int = 128, fmt: str = "PNG") -> bytes:
    """A small real image (PNG or JPEG)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size), color).save(buf, format=fmt)
    return buf.getvalue()


def wav(seconds: float = 0.05, rate: int = 8000, width: int = 2) -> bytes:
    """A short silent mono PCM WAV, 16-bit unless `width` (bytes per sample) says otherwise."""
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * width * int(seconds * rate))
    return buf.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


TRAIN_JOB = {"type": "train", "model": "gpt", "dataset": "pydoc", "params": {"max_steps": 20, "n_layer": 2}}


def submit(client, headers, **overrides):
    """POST a small gpt training job on pydoc, with `overrides` replacing top-level fields."""
    return client.post("/api/v1/jobs", headers=headers, json={**TRAIN_JOB, **overrides})

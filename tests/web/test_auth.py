"""Tokens, Bearer and cookie sign-in, roles, team isolation, CSRF."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from genq.api_tokens import authenticate, create_token, revoke_token
from genq.db.models import ApiToken, Dataset, Job, Team
from genq.errors import Conflict, InvalidInput, NotFound
from genq.web import create_app
from tests.web.conftest import add_artifact, add_job, bearer, count, csrf_from, login, make_token, png, upload

READ_PATHS = [
    "/api/v1/jobs/{job}",
    "/api/v1/jobs/{job}/metrics",
    "/api/v1/jobs/{job}/outputs",
    "/api/v1/jobs/{job}/artifacts",
    "/api/v1/jobs/{job}/logs",
    "/api/v1/artifacts/{art}/download",
    "/api/v1/datasets/{ds}",
]


def test_tokens_are_stored_hashed(db):
    with db.session() as s:
        token = create_token(s, "new-team", "member")
    with db.session() as s:
        row = s.scalar(select(ApiToken))
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in row.prefix
        assert token.startswith(row.prefix) and s.scalar(select(Team.name)) == "new-team"
        found = authenticate(s, token)
        assert found.id == row.id and found.team.name == "new-team" and found.role == "member"
        assert authenticate(s, token + "x") is None and authenticate(s, "") is None
        assert authenticate(s, "x" * 10_000) is None
        create_token(s, "new-team")  # the team is reused
        assert len(s.scalars(select(Team)).all()) == 1


def test_token_validation_and_revocation(db):
    with db.session() as s:
        with pytest.raises(InvalidInput, match="unknown role 'root'"):
            create_token(s, "t", "root")
        with pytest.raises(InvalidInput, match="team name"):
            create_token(s, "../evil")
        token = create_token(s, "t")
        token_id = s.scalar(select(ApiToken.id))
        assert revoke_token(s, token_id).revoked_at is not None
        assert authenticate(s, token) is None
        with pytest.raises(Conflict, match="already revoked"):
            revoke_token(s, token_id)
        with pytest.raises(NotFound):
            revoke_token(s, 999)


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer nope", "Basic dXNlcjpwdw==", "bearer  ", "Token x"]
)
def test_api_needs_a_valid_token(client, header):
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [
        ("get", "/api/v1/jobs"),
        ("post", "/api/v1/jobs"),
        ("get", "/api/v1/workers"),
        ("get", "/api/v1/datasets"),
        ("post", "/api/v1/jobs/1/cancel"),
    ]:
        answer = getattr(client, method)(path, headers=headers)
        assert answer.status_code == 401, (method, path, answer.data)
        assert answer.json["error"] == "unauthorized" and "Bearer" in answer.headers["WWW-Authenticate"]
        # a token sent without the Bearer scheme is told so, not called invalid
        wrong_scheme = header is not None and not header.lower().startswith("bearer ") or header == "bearer  "
        assert ("must be 'Bearer TOKEN'" in answer.json["message"]) == wrong_scheme, (header, answer.json)


def test_public_endpoints(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_viewer_reads_but_cannot_change(client, db, auth):
    viewer = bearer(make_token(db, "alpha", "viewer"))
    job_id = add_job(db)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=viewer).status_code == 200
    for answer in (
        client.post(
            "/api/v1/jobs", headers=viewer, json={"type": "train", "model": "gpt", "dataset": "pydoc"}
        ),
        client.post(f"/api/v1/jobs/{job_id}/cancel", headers=viewer),
        upload(client, viewer, b"text", "a.txt"),
    ):
        assert answer.status_code == 403 and answer.json["error"] == "forbidden"
        assert "viewer" in answer.json["message"]
    assert count(db, Job) == 1 and count(db, Dataset) == 0
    member = bearer(make_token(db, "alpha", "member"))
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=member).status_code == 202


def test_other_teams_rows_look_missing(client, db, settings, auth, other_auth):
    job = add_job(db, team="beta", status="running")
    art = add_artifact(db, settings, job, "secret.png", png(), "image/png")
    ds = upload(client, other_auth, b"their text", "t.txt").json["id"]
    for path in READ_PATHS:
        url = path.format(job=job, art=art, ds=ds)
        assert client.get(url, headers=other_auth).status_code == 200, url
        answer = client.get(url, headers=auth)
        assert answer.status_code == 404 and answer.json["error"] == "not_found", url
    assert client.post(f"/api/v1/jobs/{job}/cancel", headers=auth).status_code == 404
    with db.session() as s:
        assert s.get(Job, job).cancel_requested is False
    assert client.get("/api/v1/jobs", headers=auth).json["jobs"] == []
    assert client.get("/api/v1/datasets", headers=auth).json["datasets"] == []
    train = client.post("/api/v1/jobs", headers=auth, json={"type": "train", "model": "gpt", "dataset": ds})
    assert train.status_code == 404


def test_login_sets_a_safe_cookie_and_logout_clears_it(client, token):
    assert client.get("/").status_code == 302
    page = client.get("/login?next=/workers")
    answer = client.post(
        "/login", data={"token": token, "csrf_token": csrf_from(page.text), "next": "/workers"}
    )
    assert answer.status_code == 302 and answer.location == "/workers"
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if c.startswith("genq_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/jobs").status_code == 200  # the dashboard's fetch() uses the cookie
    client.get("/logout")
    assert client.get("/").status_code == 302
    assert client.get("/api/v1/jobs").status_code == 401


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example", "/\\evil", "javascript:alert(1)"]
)
def test_login_never_redirects_off_site(client, token, target):
    page = client.get("/login")
    answer = client.post("/login", data={"token": token, "csrf_token": csrf_from(page.text), "next": target})
    assert answer.location == "/"


def test_login_with_bad_token_or_without_csrf(client, token):
    page = client.get("/login")
    bad = client.post("/login", data={"token": "nope", "csrf_token": csrf_from(page.text)})
    assert bad.status_code == 401 and "not valid" in bad.text
    forged = client.post("/login", data={"token": token})
    assert forged.status_code == 400 and "CSRF" in forged.text
    assert client.get("/").status_code == 302


def test_cookie_posts_need_csrf_but_bearer_posts_do_not(client, db, token):
    job_id = add_job(db)
    login(client, token)
    forged = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert forged.status_code == 400 and "CSRF" in forged.json["message"]
    forged_page = client.post(f"/jobs/{job_id}/cancel")
    assert forged_page.status_code == 400
    with db.session() as s:
        assert s.get(Job, job_id).status == "queued"
    csrf = csrf_from(client.get(f"/jobs/{job_id}").text)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRFToken": csrf}).status_code == 202
    other = add_job(db)
    fresh = client.application.test_client()
    assert fresh.post(f"/api/v1/jobs/{other}/cancel", headers=bearer(token)).status_code == 202


def test_bad_bearer_header_does_not_fall_back_to_the_cookie(client, token):
    login(client, token)
    assert client.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_revoked_token_ends_the_session(client, db, token):
    login(client, token)
    with db.session() as s:
        revoke_token(s, s.scalar(select(ApiToken.id)))
    assert client.get("/").status_code == 302


def test_secret_key_is_persisted(settings, db):
    first = create_app({"SETTINGS": settings}).secret_key
    assert first and (settings.home / "secret-key").read_text().strip() == first
    assert create_app({"SETTINGS": settings}).secret_key == first

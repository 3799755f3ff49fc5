"""The /queue, /teams and /usage pages."""

from __future__ import annotations

import html

from genq.db.models import ApiToken, Team
from tests.web.conftest import add_job, add_worker, bearer, make_token


def test_queue_page_shows_position_eta_and_reason(client, auth, db):
    add_worker(db, "w", "H100", 80)
    running = add_job(db, status="running", worker_id="w")
    waiting = add_job(db, status="queued")
    page = client.get("/queue", headers=auth)
    text = html.unescape(page.text)
    assert page.status_code == 200
    assert f"#{running}" in text and f"#{waiting}" in text
    assert "Why it waits" in text and "the 1 slot of pool 'default' is busy" in text
    job = client.get(f"/api/v1/jobs/{waiting}", headers=auth).json
    assert job["queue_position"] == 0 and job["wait_reason"] in text
    assert job["wait_reason"] in html.unescape(client.get(f"/jobs/{waiting}", headers=auth).text)


def test_teams_page_for_admins_saves_settings_and_revokes_tokens(client, auth, db):
    operator = bearer(make_token(db, "admin", "admin"))
    member = bearer(make_token(db, "alpha", "member"))
    assert client.get("/teams", headers=member).status_code == 403
    assert "alpha" in client.get("/teams", headers=auth).text
    saved = client.post("/teams", headers=operator, data={"name": "alpha", "weight": "3", "max_gpus": "2",
                                                          "gpu_hours_per_week": ""})
    assert saved.status_code == 302
    with db.session() as s:
        team = s.query(Team).filter_by(name="alpha").one()
        assert (team.weight, team.max_gpus, team.gpu_hours_per_week) == (3.0, 2, None)
    bad = client.post("/teams", headers=operator, data={"name": "alpha", "weight": "-2"})
    assert bad.status_code == 422 and "weight" in bad.text
    assert 'name="weight" value="-2"' in bad.text  # what was typed stays in its field, not the saved 3.0
    words = client.post("/teams", headers=operator, data={"name": "alpha", "weight": "heavy"}).text
    assert "weight must be a number, got &#39;heavy&#39;" in words and "no limit" not in words  # weights have one
    assert client.post("/teams", headers=auth, data={"name": "alpha", "weight": "9"}).status_code == 403
    with db.session() as s:
        victim = s.query(ApiToken).filter_by(role="member").one().id
    client.post(f"/tokens/{victim}/revoke", headers=auth)
    assert client.get("/api/v1/jobs", headers=member).status_code == 401


def test_usage_page(client, auth):
    page = client.get("/usage?since=2026-01-01", headers=auth)
    assert page.status_code == 200 and "No usage since 2026-01-01" in page.text
    assert client.get("/usage?since=soon", headers=auth).status_code == 422


def test_a_job_wider_than_its_teams_lowered_max_gpus_says_so_and_lets_narrower_ones_start(client, auth, db):
    add_worker(db, "h:1:a", "H100", 80, slots=2, pool="two")
    wide = add_job(db, gpus=2, pool="two")
    narrow = add_job(db, pool="two")
    operator = bearer(make_token(db, "admin", "admin"))
    assert client.patch("/api/v1/teams/alpha", headers=operator, json={"max_gpus": 1}).status_code == 200
    job = client.get(f"/api/v1/jobs/{wide}", headers=auth).json
    assert "more than team alpha may hold at once (max_gpus 1): it can never start" in job["wait_reason"]
    assert "raise max_gpus or cancel it" in job["wait_reason"] and job["eta"] is None
    job = client.get(f"/api/v1/jobs/{narrow}", headers=auth).json
    assert (job["queue_position"], job["wait_reason"]) == (0, "a slot is free: it starts at this scheduling round")

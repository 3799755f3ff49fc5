"""The operator sees every team; teams, tokens and usage under /api/v1; who may do what; bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from genq.api_tokens import create_token, hash_token
from genq.db.models import ApiToken, Job, Team, utcnow
from genq.jobs.usage import accrue
from tests.web.conftest import add_job, bearer, make_token, submit


@pytest.fixture
def operator(db) -> dict[str, str]:
    return bearer(make_token(db, "admin", "admin"))


def test_the_operator_sees_and_filters_every_teams_jobs(client, auth, other_auth, operator, db):
    mine, theirs = add_job(db, team="alpha"), add_job(db, team="beta")
    everything = {j["id"] for j in client.get("/api/v1/jobs", headers=operator).json["jobs"]}
    assert everything == {mine, theirs}
    assert [j["id"] for j in client.get("/api/v1/jobs?team=beta", headers=operator).json["jobs"]] == [theirs]
    assert client.get("/api/v1/jobs?team=nobody", headers=operator).json["jobs"] == []
    assert [j["id"] for j in client.get("/api/v1/jobs", headers=auth).json["jobs"]] == [mine]
    assert client.get("/api/v1/jobs?team=beta", headers=auth).json["jobs"] == [], "a team sees only its own"
    assert client.get(f"/api/v1/jobs/{theirs}", headers=operator).json["team"] == "beta"
    assert client.get(f"/api/v1/jobs/{theirs}", headers=auth).status_code == 404
    page = client.get(f"/jobs/{theirs}", headers=operator)
    assert page.status_code == 200 and "beta" in page.text
    assert str(theirs) in client.get("/?team=beta", headers=operator).text
    assert client.post(f"/api/v1/jobs/{theirs}/cancel", headers=operator).status_code == 202


def test_the_operator_submits_for_any_team_and_others_only_for_their_own(client, auth, other_auth, operator):
    answer = submit(client, operator, team="beta", preemptible=False)
    assert answer.status_code == 201 and answer.json["team"] == "beta" and answer.json["preemptible"] is False
    assert submit(client, operator, team="ghost").status_code == 422
    assert submit(client, auth, team="beta").status_code == 403


def test_operator_creates_and_changes_teams_and_bad_settings_are_named(client, auth, operator):
    made = client.post("/api/v1/teams", headers=operator,
                       json={"name": "vision", "weight": 2, "max_gpus": 4, "gpu_hours_per_week": 100})
    assert made.status_code == 201, made.json
    assert (made.json["weight"], made.json["max_gpus"], made.json["gpu_hours_per_week"]) == (2.0, 4, 100.0)
    assert client.post("/api/v1/teams", headers=operator, json={"name": "vision"}).status_code == 409
    changed = client.patch("/api/v1/teams/vision", headers=operator, json={"max_gpus": None, "weight": 0.5})
    assert (changed.json["max_gpus"], changed.json["weight"]) == (None, 0.5)
    for body, field in [({"weight": -1}, "weight"), ({"weight": 0}, "weight"), ({"weight": 1e9}, "weight"),
                        ({"weight": None}, "weight"), ({"max_gpus": 0}, "max_gpus"), ({"max_gpus": True}, "max_gpus"),
                        ({"max_gpus": 2.5}, "max_gpus"), ({"gpu_hours_per_week": -3}, "gpu_hours_per_week"),
                        ({"gpu_hours_per_week": 1e12}, "gpu_hours_per_week"), ({"colour": "red"}, "colour"),
                        ({"weight": 10 ** 400}, "weight"), ({"gpu_hours_per_week": 10 ** 400}, "gpu_hours_per_week"),
                        ({"weight": 1e-320}, "weight"), ({"gpu_hours_per_week": 1e-300}, "gpu_hours_per_week"),
                        ({"name": "renamed"}, "name")]:
        answer = client.patch("/api/v1/teams/vision", headers=operator, json=body)
        assert answer.status_code == 422 and field in answer.json["message"], (body, answer.json)
    tiny = client.patch("/api/v1/teams/vision", headers=operator, json={"weight": 1e-4})
    assert "field 'weight': Input should be greater than or equal to 0.001" in tiny.json["message"], tiny.json
    assert client.patch("/api/v1/teams/vision", headers=operator, json={"weight": 0.001}).status_code == 200
    assert client.post("/api/v1/teams", headers=operator, json={"name": "../x"}).status_code == 422
    huge = client.post("/api/v1/teams", headers=operator, json={"name": "huge", "weight": 10 ** 400})
    assert huge.status_code == 422 and "weight" in huge.json["message"]
    assert client.patch("/api/v1/teams/nobody", headers=operator, json={"weight": 1}).status_code == 404
    assert client.post("/api/v1/teams", headers=auth, json={"name": "mine"}).status_code == 403
    assert client.patch("/api/v1/teams/alpha", headers=auth, json={"weight": 100}).status_code == 403
    assert [t["name"] for t in client.get("/api/v1/teams", headers=auth).json["teams"]] == ["alpha"]
    every = client.get("/api/v1/teams", headers=operator).json["teams"]
    assert {"admin", "alpha", "vision"} <= {t["name"] for t in every}


def test_team_admins_manage_their_own_tokens_and_a_revoked_one_is_refused_at_once(client, auth, other_auth, db):
    made = client.post("/api/v1/tokens", headers=auth, json={"role": "member"})
    assert made.status_code == 201 and made.json["team"] == "alpha" and made.json["token"].startswith("genq_")
    member = bearer(made.json["token"])
    assert client.get("/api/v1/jobs", headers=member).status_code == 200
    listed = client.get("/api/v1/tokens", headers=auth).json["tokens"]
    assert {t["team"] for t in listed} == {"alpha"} and all("token" not in t and "token_hash" not in t for t in listed)
    assert any(t["last_used_at"] for t in listed), "the member token was used just now"
    assert client.get("/api/v1/tokens", headers=member).status_code == 403
    assert client.post("/api/v1/tokens", headers=member, json={"role": "admin"}).status_code == 403
    assert client.post("/api/v1/tokens", headers=auth, json={"team": "beta"}).status_code == 403
    assert client.post("/api/v1/tokens", headers=auth, json={"role": "owner"}).status_code == 422
    typo = client.post("/api/v1/tokens", headers=auth, json={"rol": "viewer"})
    assert typo.status_code == 422 and "'rol'" in typo.json["message"], "a misspelt role is no member token"
    assert client.get("/api/v1/tokens?team=beta", headers=auth).status_code == 403
    beta_token = client.get("/api/v1/tokens", headers=other_auth).json["tokens"][0]["id"]
    assert client.delete(f"/api/v1/tokens/{beta_token}", headers=auth).status_code == 404
    assert client.post(f"/api/v1/tokens/{made.json['id']}/revoke", headers=auth).status_code == 200
    assert client.get("/api/v1/jobs", headers=member).status_code == 401
    assert client.delete(f"/api/v1/tokens/{made.json['id']}", headers=auth).status_code == 409


def test_usage_per_team_job_and_day_as_json_and_csv(client, auth, other_auth, operator, db, settings):
    now = utcnow()
    ours = add_job(db, team="alpha", status="running", gpus=1, accrued_until=now - timedelta(seconds=100))
    theirs = add_job(db, team="beta", status="succeeded", gpus=1, accrued_until=now - timedelta(seconds=50),
                     finished_at=now - timedelta(seconds=20))
    with db.session() as s:
        added = accrue(s, now, settings.usage_half_life_hours)
    assert added == pytest.approx(130.0)
    with db.session() as s:
        assert s.get(Job, ours).gpu_seconds == pytest.approx(100.0) and s.get(Job, theirs).accrued_until is None
        alpha = s.query(Team).filter_by(name="alpha").one()
        assert alpha.usage == pytest.approx(100.0)
    report = client.get("/api/v1/usage", headers=operator).json
    assert {t["team"]: t["gpu_seconds"] for t in report["teams"]} == {"alpha": 100.0, "beta": 30.0}
    assert [j["job"] for j in client.get("/api/v1/usage", headers=auth).json["jobs"]] == [ours]
    assert [t["team"] for t in client.get("/api/v1/usage?team=beta", headers=operator).json["teams"]] == ["beta"]
    csv = client.get("/api/v1/usage?format=csv", headers=operator)
    assert csv.mimetype == "text/csv" and csv.text.splitlines()[0] == "day,team,job,gpu_seconds"
    assert len(csv.text.splitlines()) == 3
    assert client.get("/api/v1/usage?since=yesterday", headers=auth).status_code == 422
    assert client.get("/api/v1/usage?since=2999-01-01", headers=auth).json["teams"] == []
    assert client.get(f"/api/v1/jobs/{ours}", headers=auth).json["gpu_seconds"] == pytest.approx(100.0)


def test_more_gpus_than_the_widest_host_holds_is_refused(client, auth, db):
    from genq.db.models import Worker

    assert submit(client, auth, gpus=4).status_code == 201, "no worker online: accepted, it waits for one"
    generate = client.post("/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": 1, "gpus": 2})
    assert generate.status_code == 422 and "a generation job runs on one device" in generate.json["message"], \
        "not the pool's width: gpus > 1 never applies to generation"
    with db.session() as s:  # host h: two processes of one slot; host g: one
        s.add_all([Worker(id="h:1", hostname="h", slots=1), Worker(id="h:2", hostname="h", slots=1),
                   Worker(id="g:1", hostname="g", slots=1)])
    answer = submit(client, auth, gpus=3)
    assert answer.status_code == 422 and "widest host of pool 'default' holds 2" in answer.json["message"]
    assert submit(client, auth, gpus=2).status_code == 201, "the slots of one host count together"
    generate = client.post("/api/v1/jobs", headers=auth, json={"type": "generate", "source_job": 1, "gpus": 2})
    assert generate.status_code == 422 and "a generation job runs on one device" in generate.json["message"]


def test_more_gpus_than_the_teams_quota_is_refused(client, auth, operator):
    assert client.patch("/api/v1/teams/alpha", headers=operator, json={"max_gpus": 1}).status_code == 200
    answer = submit(client, auth, gpus=2)
    assert answer.status_code == 422, answer.json
    assert "more than team 'alpha' may hold at once (max_gpus 1): it could never start" in answer.json["message"]
    assert submit(client, auth, gpus=1).status_code == 201


def test_a_job_of_two_devices_needs_the_memory_of_half_its_batch_on_each(client, auth, db):
    from genq.core import spec
    from genq.db.models import Worker

    params = {"batch_size": 64, "block_size": 256, "n_layer": 4, "n_embd": 256, "n_head": 4}
    gpt = spec.get("gpt")
    whole, half = (gpt.memory_bytes(gpt.train_params({**params, "batch_size": b})) for b in (64, 32))
    device = {"kind": "cuda", "name": "small", "memory_bytes": (whole + half) // 2}  # holds half, not all
    with db.session() as s:
        s.add_all([Worker(id=f"h:{i}", hostname="h", slots=1, devices=[device]) for i in range(2)])
    assert submit(client, auth, params=params, gpus=1).status_code == 422, "the whole batch does not fit"
    assert submit(client, auth, params=params, gpus=2).status_code == 201, "each device holds half of it"


def test_only_the_operator_creates_worker_tokens(client, auth, operator, db, settings):
    """A worker token reads and writes every team's artifacts (/api/v1/store): a team admin may not mint one."""
    refused = client.post("/api/v1/tokens", headers=auth, json={"role": "worker"})
    assert refused.status_code == 403, refused.json
    assert "only the operator" in refused.json["message"] and "worker" in refused.json["message"]
    with db.session() as s:
        assert [t.role for t in s.query(ApiToken).filter_by(role="worker")] == [], "no token was made"
    assert client.post("/api/v1/tokens", headers=auth, json={"role": "viewer"}).status_code == 201
    made = client.post("/api/v1/tokens", headers=operator, json={"team": "admin", "role": "worker"})
    assert made.status_code == 201 and made.json["role"] == "worker"
    # the operator's worker token reaches the store; a team admin never held one to overwrite other teams' files
    stored = settings.artifacts / "datasets" / "9" / "data.txt"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"beta's data")
    reply = client.get("/api/v1/store/datasets/9/data.txt", headers=bearer(made.json["token"]))
    assert reply.status_code == 200 and reply.data == b"beta's data"


@pytest.mark.parametrize("name", ["admin\n", "alpha\n", "vision\r", "vi\tsion", "\nvision", "vision\x00",
                                  "vision\x7f"])
def test_team_names_with_control_characters_are_refused_naming_the_problem(client, operator, name):
    answer = client.post("/api/v1/teams", headers=operator, json={"name": name})
    assert answer.status_code == 422, answer.json
    message = answer.json["message"]
    assert "control character" in message or "NUL" in message, message
    assert [t["name"] for t in client.get("/api/v1/teams", headers=operator).json["teams"]] == ["admin"]


def test_team_names_differing_only_in_case_are_one_team(client, auth, operator, db):
    for name, existing in [("ALPHA", "alpha"), ("Admin", "admin"), ("aLpHa", "alpha")]:
        answer = client.post("/api/v1/teams", headers=operator, json={"name": name})
        assert answer.status_code == 409, (name, answer.json)
        assert f"'{existing}'" in answer.json["message"] and "case" in answer.json["message"]
    assert client.post("/api/v1/teams", headers=operator, json={"name": "Vision"}).status_code == 201
    taken = client.post("/api/v1/teams", headers=operator, json={"name": "vision"})
    assert taken.status_code == 409 and "'Vision'" in taken.json["message"]
    exact = client.post("/api/v1/teams", headers=operator, json={"name": "alpha"})
    assert exact.status_code == 409 and "already exists" in exact.json["message"]
    assert sorted(t["name"] for t in client.get("/api/v1/teams", headers=operator).json["teams"]) == \
        ["Vision", "admin", "alpha"]
    with db.session() as s:  # `genq token create --team ALPHA`: a token of alpha, no second team
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(create_token(s, "ALPHA", "member"))))
        assert s.get(Team, row.team_id).name == "alpha" and s.scalar(select(func.count(Team.id))) == 3
    made = client.post("/api/v1/tokens", headers=operator, json={"team": "ALPHA", "role": "viewer"})
    assert made.status_code == 201 and made.json["team"] == "alpha", made.json
    own = client.post("/api/v1/tokens", headers=bearer(make_token(db, "alpha", "admin")), json={"team": "Alpha"})
    assert own.status_code == 201 and own.json["team"] == "alpha", own.json  # a team admin's own team
    # and wherever a team is named, its name in another case names it
    assert client.patch("/api/v1/teams/ALPHA", headers=operator, json={"weight": 2}).json["weight"] == 2
    mine = submit(client, auth, team="ALPHA")  # auth: a member of alpha
    assert mine.status_code == 201 and mine.json["team"] == "alpha", mine.json
    theirs = submit(client, operator, team="VISION")
    assert theirs.status_code == 201 and theirs.json["team"] == "Vision", theirs.json
    listed = client.get("/api/v1/jobs?team=Alpha", headers=operator).json["jobs"]
    assert [j["id"] for j in listed] == [mine.json["id"]]


def test_team_bodies_and_long_names_in_messages(client, operator, auth):
    empty = client.post("/api/v1/teams", headers=operator, data=b"", content_type="application/json")
    assert empty.status_code == 400 and "empty" in empty.json["message"]
    for body in ("null", "[]", '"vision"'):
        answer = client.post("/api/v1/teams", headers=operator, data=body, content_type="application/json")
        assert answer.status_code == 422 and "JSON object" in answer.json["message"], body
    long = "v" * 100_000
    for answer in (client.post("/api/v1/teams", headers=operator, json={"name": long}),
                   client.post("/api/v1/teams", headers=operator, json={"name": "vision", long: 1}),
                   client.patch(f"/api/v1/teams/{long}", headers=operator, json={"weight": 1}),
                   client.post("/api/v1/tokens", headers=operator, json={"team": long}),
                   client.post("/api/v1/tokens", headers=auth, json={"team": long}),
                   client.post("/api/v1/tokens", headers=auth, json={"role": long}),
                   client.post("/api/v1/tokens", headers=auth, json={long: "x"})):
        assert answer.status_code in (403, 404, 422), answer.json
        assert len(answer.json["message"]) < 300 and "v" * 40 + "'..." in answer.json["message"], answer.json


def test_the_dashboard_team_form_quotes_a_long_name_cut(client, operator):
    page = client.post("/teams", headers=operator, data={"name": "w" * 100_000, "weight": "2"})
    assert page.status_code == 404 and "w" * 40 + "&#39;..." in page.text and "w" * 41 not in page.text

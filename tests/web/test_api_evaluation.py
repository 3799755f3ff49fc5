"""Human evaluation API: 1-5 ratings, blind pairs, votes, and every bad input refused with nothing written."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from genq.db.models import ApiToken, Output, PreferenceVote, Rating, ShownPair
from tests.web.conftest import add_artifact, add_job, add_output, bearer, count, make_token, png, wav
from tests.web.judging import judge, prefer, text_jobs


def test_rating_replaces_and_summarises(client, auth, db):
    job = add_job(db, type="generate", status="succeeded")
    first, second = (add_output(db, job, i, "text", prompt="p", text=f"t{i}") for i in range(2))
    rated = client.put(f"/api/v1/outputs/{first}/rating", headers=auth, json={"score": 2})
    assert rated.status_code == 201 and rated.json == {"output_id": first, "score": 2, "replaced": False}
    again = client.put(f"/api/v1/outputs/{first}/rating", headers=auth, json={"score": 5})
    assert again.status_code == 200 and again.json["replaced"] is True
    member = bearer(make_token(db, "alpha", "member"))
    assert client.put(f"/api/v1/outputs/{second}/rating", headers=member, json={"score": 4}).status_code == 201
    assert count(db, Rating) == 2  # the first token's second rating replaced its first
    summary = client.get(f"/api/v1/jobs/{job}/ratings", headers=auth).json
    assert summary == {"count": 2, "mean": 4.5, "histogram": [0, 0, 0, 1, 1]}
    empty = add_job(db, type="generate", status="succeeded")
    assert client.get(f"/api/v1/jobs/{empty}/ratings", headers=auth).json == {
        "count": 0, "mean": None, "histogram": [0, 0, 0, 0, 0]
    }


@pytest.mark.parametrize(
    "body, words",
    [
        ({"score": 0}, "field 'score': Input should be greater than or equal to 1"),
        ({"score": 6}, "field 'score': Input should be less than or equal to 5"),
        ({"score": 3.5}, "field 'score': Input should be a valid integer"),
        ({"score": "3"}, "field 'score': Input should be a valid integer"),
        ({"score": True}, "field 'score': Input should be a valid integer"),
        ({"score": None}, "field 'score'"),
        ({}, "field 'score': Field required"),
        ({"score": 3, "comment": "nice"}, "unknown field 'comment'"),
        ([3], "must be a JSON object"),
    ],
)
def test_bad_ratings_are_refused(client, auth, db, body, words):
    job = add_job(db, type="generate", status="succeeded")
    output = add_output(db, job, 0, "text", prompt="p", text="t")
    answer = client.put(f"/api/v1/outputs/{output}/rating", headers=auth, json=body)
    assert answer.status_code == 422 and answer.json["error"] == "invalid_input"
    assert words in answer.json["message"]
    assert count(db, Rating) == 0


def test_ratings_of_other_teams_outputs_look_missing(client, auth, other_auth, db):
    theirs = add_job(db, team="beta", type="generate", status="succeeded")
    output = add_output(db, theirs, 0, "text", prompt="p", text="t")
    answer = client.put(f"/api/v1/outputs/{output}/rating", headers=auth, json={"score": 3})
    assert answer.status_code == 404 and answer.json["message"] == f"output {output} not found"
    assert client.get(f"/api/v1/jobs/{theirs}/ratings", headers=auth).status_code == 404
    assert client.put("/api/v1/outputs/999999/rating", headers=auth, json={"score": 3}).status_code == 404
    assert count(db, Rating) == 0
    assert client.put(f"/api/v1/outputs/{output}/rating", headers=other_auth, json={"score": 3}).status_code == 201


def test_the_database_refuses_bad_scores_duplicates_and_uncanonical_pairs(db):
    job = add_job(db, type="generate", status="succeeded")
    first, second = (add_output(db, job, i, "text", prompt="p", text="t") for i in range(2))
    make_token(db)
    with db.session() as s:
        token = s.scalar(select(ApiToken.id))
    bad_rows = [
        Rating(output_id=first, token_id=token, score=6),
        PreferenceVote(token_id=token, a_output_id=second, b_output_id=first, winner="a"),  # smaller id first
        PreferenceVote(token_id=token, a_output_id=first, b_output_id=second, winner="x"),
        ShownPair(token_id=token, a_output_id=second, b_output_id=first),
    ]
    for row in bad_rows:
        with pytest.raises(IntegrityError), db.session() as s:
            s.add(row)
    with db.session() as s:
        s.add(Rating(output_id=first, token_id=token, score=3))
    with pytest.raises(IntegrityError), db.session() as s:  # one rating per token and output
        s.add(Rating(output_id=first, token_id=token, score=4))
    assert count(db, Rating) == 1 and count(db, PreferenceVote) == 0 and count(db, ShownPair) == 0


def test_blind_pairs_answer_the_same_prompt_and_hide_the_job(client, auth, db):
    x, y = text_jobs(db, ["p0", "p1", None])
    add_output(db, x, 3, "text", prompt="only x", text="X:only x")
    seen = set()
    for _ in range(40):
        answer = client.get(f"/api/v1/preferences/next?jobs={x},{y}", headers=auth)
        assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
        pair = answer.json
        assert set(pair) == {"prompt", "a", "b", "judged", "unjudged"}
        assert set(pair["a"]) == set(pair["b"]) == {"id", "kind", "text"}  # no job, no index
        assert {pair["a"]["text"], pair["b"]["text"]} == {f"X:{pair['prompt']}", f"Y:{pair['prompt']}"}
        assert pair["judged"] is False and pair["unjudged"] == 3
        seen.add((pair["prompt"], pair["a"]["text"][0]))
    # Every prompt (None pairs with None) comes up, in both orders; "only x" has no partner.
    assert seen == {(p, side) for p in ("p0", "p1", None) for side in "XY"}
    assert count(db, ShownPair) == 3


def test_next_pair_prefers_unjudged_pairs_and_never_pairs_a_job_with_itself(client, auth, db):
    x, y, z = text_jobs(db, ["p0", "p1"], names=("X", "Y", "Z"))
    add_output(db, x, 2, "text", prompt="p0", text="X:p0 again")
    # p0: X has 2 outputs, Y and Z one each: 2*1 + 2*1 + 1*1 = 5 pairs; p1: 3 pairs.
    pairs = judge(client, auth, [x, y, z], prefer("X"), 8)
    assert [p["unjudged"] for p in pairs] == list(range(8, 0, -1))
    served = {frozenset((p["a"]["id"], p["b"]["id"])) for p in pairs}
    assert len(served) == 8  # eight different pairs: none served twice while another was left
    for p in pairs:
        assert p["a"]["text"][0] != p["b"]["text"][0]
    again = client.get(f"/api/v1/preferences/next?jobs={x},{y},{z}", headers=auth).json
    assert again["judged"] is True and again["unjudged"] == 0  # all judged: a repeat, which a vote would replace
    other_rater = bearer(make_token(db, "alpha", "viewer"))
    fresh = client.get(f"/api/v1/preferences/next?jobs={x},{y},{z}", headers=other_rater).json
    assert fresh["judged"] is False and fresh["unjudged"] == 8


def test_gallery_samples_drawn_during_training_are_never_paired(client, auth, db):
    x, y = text_jobs(db, ["p0"])
    for job in (x, y):  # what each job drew at step 10 for the same prompt: not what it produced
        add_output(db, job, 0, "text", prompt="p0", text="gallery", step=10)
    pairs = judge(client, auth, [x, y], prefer("X"), 3)
    assert all("gallery" not in (p["a"]["text"], p["b"]["text"]) for p in pairs)
    assert {p["unjudged"] for p in pairs} == {1, 0}  # one final pair only
    sample = client.get(f"/api/v1/jobs/{x}/samples", headers=auth).json["samples"][0]["id"]
    refused = client.put(f"/api/v1/outputs/{sample}/rating", headers=auth, json={"score": 3})
    assert refused.status_code == 409 and "training step 10" in refused.json["message"]


def test_a_failed_row_is_neither_paired_rated_nor_shown_as_an_output(client, auth, db):
    x, y = text_jobs(db, ["p0"])
    failed = {}
    for job in (x, y):  # a prompts file's bad row, in both jobs: stored with its error, and no text
        failed[job] = add_output(db, job, 5, "text", prompt=None, text=None)
    with db.session() as s:
        for output_id in failed.values():
            s.get(Output, output_id).status, s.get(Output, output_id).error = "error", "row 5 (line 6): not JSON"
    pairs = judge(client, auth, [x, y], prefer("X"), 3)
    assert all(failed[x] not in (p["a"]["id"], p["b"]["id"]) for p in pairs)
    assert {p["unjudged"] for p in pairs} == {1, 0}  # the one pair of real outputs
    refused = client.put(f"/api/v1/outputs/{failed[x]}/rating", headers=auth, json={"score": 4})
    assert refused.status_code == 409 and "failed (row 5 (line 6): not JSON)" in refused.json["message"]
    page = client.get(f"/jobs/{x}", headers=auth).text
    assert "row 5 (line 6): not JSON" in page and f'data-output-id="{failed[x]}"' not in page


def test_media_outputs_in_a_pair_come_by_url(client, auth, db, settings):
    jobs = []
    for color in (10, 200):
        job = add_job(db, type="generate", status="succeeded", model="dcgan")
        image = add_artifact(db, settings, job, "o0.png", png(color=color), "image/png")
        add_output(db, job, 0, "image", prompt="seven", artifact_id=image)
        sound = add_artifact(db, settings, job, "o1.wav", wav(), "audio/wav")
        add_output(db, job, 1, "audio", prompt="C4", artifact_id=sound)
        jobs.append(job)
    for _ in range(6):
        pair = client.get(f"/api/v1/preferences/next?jobs={jobs[0]},{jobs[1]}", headers=auth).json
        kinds = {"seven": "image", "C4": "audio"}
        for side in (pair["a"], pair["b"]):
            assert set(side) == {"id", "kind", "url", "media_type"} and side["kind"] == kinds[pair["prompt"]]
            assert client.get(side["url"], headers=auth).status_code == 200


def test_votes_count_once_per_rater_and_pair(client, auth, db):
    x, y = text_jobs(db, ["p0"])
    pair = judge(client, auth, [x, y], prefer("X"), 1)[0]
    board = client.get(f"/api/v1/leaderboard?jobs={x},{y}", headers=auth).json
    assert [(r["job"], r["wins"], r["losses"]) for r in board["jobs"]] == [(x, 1, 0), (y, 0, 1)]
    # The same rater, the same pair named the other way round, now for Y: the vote is replaced, not added.
    body = {"a": pair["b"]["id"], "b": pair["a"]["id"], "winner": "a" if pair["b"]["text"].startswith("Y") else "b"}
    replaced = client.post("/api/v1/preferences", headers=auth, json=body)
    assert replaced.status_code == 200 and replaced.json == {**body, "replaced": True}
    assert count(db, PreferenceVote) == 1
    board = client.get(f"/api/v1/leaderboard?jobs={x},{y}", headers=auth).json
    assert board["votes"] == 1
    assert [(r["job"], r["wins"], r["losses"], r["votes"]) for r in board["jobs"]] == [(y, 1, 0, 1), (x, 0, 1, 1)]
    assert client.post("/api/v1/preferences", headers=auth, json={**body, "winner": "tie"}).status_code == 200
    board = client.get(f"/api/v1/leaderboard?jobs={x},{y}", headers=auth).json
    assert [(r["ties"], r["votes"]) for r in board["jobs"]] == [(1, 1), (1, 1)] and board["votes"] == 1
    assert [r["rating"] for r in board["jobs"]] == [1000.0, 1000.0]  # a tie is half a win for each


def test_votes_need_a_pair_that_was_shown_to_this_rater(client, auth, db):
    x, y = text_jobs(db, ["p0", "p1"])
    outputs = client.get(f"/api/v1/jobs/{x}/outputs", headers=auth).json["outputs"]
    theirs = client.get(f"/api/v1/jobs/{y}/outputs", headers=auth).json["outputs"]
    body = {"a": outputs[0]["id"], "b": theirs[0]["id"], "winner": "a"}
    answer = client.post("/api/v1/preferences", headers=auth, json=body)
    assert answer.status_code == 409 and answer.json["error"] == "conflict"
    assert "were not shown to you as a pair" in answer.json["message"]
    pair = client.get(f"/api/v1/preferences/next?jobs={x},{y}", headers=auth).json
    shown = {"a": pair["a"]["id"], "b": pair["b"]["id"], "winner": "tie"}
    other_rater = bearer(make_token(db, "alpha", "member"))
    assert client.post("/api/v1/preferences", headers=other_rater, json=shown).status_code == 409
    assert count(db, PreferenceVote) == 0
    assert client.post("/api/v1/preferences", headers=auth, json=shown).status_code == 201


@pytest.mark.parametrize(
    "change, status, words",
    [
        ({"winner": "c"}, 422, "field 'winner': Input should be 'a', 'b' or 'tie'"),
        ({"winner": "A"}, 422, "field 'winner'"),
        ({"winner": None}, 422, "field 'winner'"),
        ({"a": "1"}, 422, "field 'a': Input should be a valid integer"),
        ({"b": 0}, 422, "field 'b': Input should be greater than or equal to 1"),
        ({"b": 2**40}, 422, "field 'b'"),
        ({"extra": 1}, 422, "unknown field 'extra'"),
        ({"b": "same"}, 422, "'a' and 'b' must be two different outputs"),
        ({"a": 999999}, 404, "output 999999 not found"),
    ],
)
def test_bad_votes_are_refused(client, auth, db, change, status, words):
    x, y = text_jobs(db, ["p0"])
    pair = client.get(f"/api/v1/preferences/next?jobs={x},{y}", headers=auth).json
    body = {"a": pair["a"]["id"], "b": pair["b"]["id"], "winner": "a"}
    body.update({"b": pair["a"]["id"]} if change.get("b") == "same" else change)
    answer = client.post("/api/v1/preferences", headers=auth, json=body)
    assert answer.status_code == status and words in answer.json["message"], answer.json
    assert count(db, PreferenceVote) == 0


def test_votes_on_other_teams_outputs_look_missing(client, auth, other_auth, db):
    mine = text_jobs(db, ["p0"], names=("X",))[0]
    x, y = text_jobs(db, ["p0"], team="beta")
    pair = client.get(f"/api/v1/preferences/next?jobs={x},{y}", headers=other_auth).json
    mixed = {"a": client.get(f"/api/v1/jobs/{mine}/outputs", headers=auth).json["outputs"][0]["id"],
             "b": pair["a"]["id"], "winner": "a"}
    for body in ({"a": pair["a"]["id"], "b": pair["b"]["id"], "winner": "a"}, mixed):
        answer = client.post("/api/v1/preferences", headers=auth, json=body)
        assert answer.status_code == 404 and answer.json["message"] == f"output {pair['a']['id']} not found"
    assert client.get(f"/api/v1/preferences/next?jobs={x},{y}", headers=auth).status_code == 404
    assert client.get(f"/api/v1/leaderboard?jobs={x},{y}", headers=auth).status_code == 404
    assert count(db, PreferenceVote) == 0


@pytest.mark.parametrize("path", ["/api/v1/preferences/next", "/api/v1/leaderboard"])
@pytest.mark.parametrize(
    "jobs, status, words",
    [
        (None, 422, "must name at least 2 different jobs"),
        ("", 422, "must name at least 2 different jobs"),
        ("{x}", 422, "must name at least 2 different jobs"),
        ("{x},{x}", 422, "must name at least 2 different jobs"),
        ("{x},abc", 422, "query parameter 'jobs' must be job ids separated by commas"),
        ("{x};{y}", 422, "query parameter 'jobs' must be job ids"),
        ("-1,{y}", 422, "query parameter 'jobs' must be job ids"),
        ("0,{y}", 422, "query parameter 'jobs' must be job ids"),
        ("{x},99999999999", 422, "query parameter 'jobs' must be job ids"),
        ("{x},１", 422, "query parameter 'jobs' must be job ids"),
        (",".join(str(i) for i in range(1, 52)), 422, "compare at most 50"),
        ("{x},123456", 404, "job 123456 not found"),
    ],
)
def test_malformed_job_lists_are_refused(client, auth, db, path, jobs, status, words):
    x, y = text_jobs(db, ["p0"])
    url = path if jobs is None else f"{path}?jobs={jobs.format(x=x, y=y)}"
    answer = client.get(url, headers=auth)
    assert answer.status_code == status and words in answer.json["message"], answer.json
    assert count(db, ShownPair) == 0


def test_jobs_without_a_common_prompt_have_no_pair(client, auth, db):
    x = text_jobs(db, ["p0", "p1"], names=("X",))[0]
    y = text_jobs(db, ["q0", None], names=("Y",))[0]
    answer = client.get(f"/api/v1/preferences/next?jobs={x},{y}", headers=auth)
    assert answer.status_code == 404
    assert answer.json["message"] == (
        f"no pair to judge: jobs {x}, {y} have no outputs of two different jobs of one kind for the same prompt"
    )
    empty = add_job(db, type="generate", status="queued")
    assert client.get(f"/api/v1/preferences/next?jobs={x},{empty}", headers=auth).status_code == 404
    assert count(db, ShownPair) == 0


def test_an_image_is_never_paired_with_a_text(client, auth, db):
    (text,) = text_jobs(db, [None], names=("X",))  # unconditional samples: the same prompt, None
    image = add_job(db, type="train", status="succeeded", model="dcgan")
    add_output(db, image, 0, "image", prompt=None)
    answer = client.get(f"/api/v1/preferences/next?jobs={text},{image}", headers=auth)
    assert answer.status_code == 404 and "of one kind" in answer.json["message"], answer.json


def test_viewers_may_rate_and_vote(client, db):
    viewer = bearer(make_token(db, "alpha", "viewer"))
    x, y = text_jobs(db, ["p0"])
    judge(client, viewer, [x, y], prefer("Y"), 1)
    output = client.get(f"/api/v1/jobs/{x}/outputs", headers=viewer).json["outputs"][0]["id"]
    assert client.put(f"/api/v1/outputs/{output}/rating", headers=viewer, json={"score": 1}).status_code == 201
    assert count(db, PreferenceVote) == 1 and count(db, Rating) == 1
    assert client.put(f"/api/v1/outputs/{output}/rating", json={"score": 1}).status_code == 401

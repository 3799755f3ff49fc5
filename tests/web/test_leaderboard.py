"""The leaderboard's Bradley–Terry ratings and intervals, raters' agreement, and the preference export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genq.evaluation import agreement, bradley_terry
from tests.web.conftest import add_artifact, add_job, add_output, bearer, make_token, png
from tests.web.judging import judge, prefer, text_jobs

PROMPTS = [f"p{i}" for i in range(10)]


def board(client, headers, jobs: list[int]) -> dict:
    answer = client.get("/api/v1/leaderboard?jobs=" + ",".join(map(str, jobs)), headers=headers)
    assert answer.status_code == 200, answer.json
    return answer.json


def by_job(leaderboard: dict) -> dict[int, dict]:
    return {row["job"]: row for row in leaderboard["jobs"]}


def test_eight_wins_in_ten_put_x_above_y(client, auth, db):
    x, y = text_jobs(db, PROMPTS)
    # X wins on p0..p7, Y on p8 and p9; every prompt is served once because unjudged pairs come first.
    judge(client, auth, [x, y], lambda p: prefer("Y" if p["prompt"] in ("p8", "p9") else "X")(p), 10)
    result = board(client, auth, [x, y])
    rows = by_job(result)
    assert [r["job"] for r in result["jobs"]] == [x, y] and result["votes"] == 10
    assert (rows[x]["wins"], rows[x]["losses"], rows[x]["votes"]) == (8, 2, 10)
    # Without a prior the fit is exact: odds 8:2 = 4, so X - Y = 400*log10(4) = 241 points around 1000.
    # The N(0, 2²) prior pulls that in a little: 1112 and 888.
    assert rows[x]["rating"] == pytest.approx(1111.9, abs=0.2) and rows[y]["rating"] == pytest.approx(888.1, abs=0.2)
    assert rows[x]["rating"] + rows[y]["rating"] == pytest.approx(2000, abs=0.2)
    low, high = rows[x]["interval"]
    assert low < rows[x]["rating"] < high and low < 1120.4 < high  # the unshrunk value is inside too
    assert high - low == pytest.approx(252.5, abs=1)  # ±1.96 standard errors of 64 points: 10 votes say little
    assert low > rows[y]["rating"] and rows[y]["interval"][1] < rows[x]["rating"]


def test_equal_votes_give_equal_ratings(client, auth, db):
    x, y = text_jobs(db, PROMPTS)
    judge(client, auth, [x, y], lambda p: prefer("X" if p["prompt"] < "p5" else "Y")(p), 10)
    rows = by_job(board(client, auth, [x, y]))
    assert rows[x]["rating"] == pytest.approx(1000, abs=0.1) and rows[y]["rating"] == pytest.approx(1000, abs=0.1)
    assert rows[x]["interval"] == pytest.approx(rows[y]["interval"], abs=0.1)
    assert rows[x]["interval"][0] < 1000 < rows[x]["interval"][1]


def test_three_jobs_rank_in_order_and_an_undefeated_job_is_finite(client, auth, db):
    x, y, z = text_jobs(db, PROMPTS[:4], names=("X", "Y", "Z"))
    # X beats everyone, Y beats Z: on 4 prompts, 3 pairs each.
    ranking = {"X": 0, "Y": 1, "Z": 2}
    best = lambda p: "a" if ranking[p["a"]["text"][0]] < ranking[p["b"]["text"][0]] else "b"  # noqa: E731
    judge(client, auth, [x, y, z], best, 12)
    result = board(client, auth, [z, y, x])
    assert [r["job"] for r in result["jobs"]] == [x, y, z]
    rows = by_job(result)
    assert (rows[x]["wins"], rows[x]["losses"], rows[y]["wins"], rows[z]["losses"]) == (8, 0, 4, 8)
    assert rows[y]["rating"] == pytest.approx(1000, abs=0.1)  # symmetric data: the middle job is the average
    assert rows[x]["rating"] - 1000 == pytest.approx(1000 - rows[z]["rating"], abs=0.1)
    assert 1250 < rows[x]["rating"] < 1600  # undefeated, yet finite


def test_jobs_nobody_compared_sit_at_the_average_with_wide_intervals(client, auth, db):
    x, y = text_jobs(db, PROMPTS[:1])
    rows = board(client, auth, [x, y])["jobs"]
    for row in rows:
        assert row["rating"] == 1000 and row["votes"] == 0
        assert row["interval"][0] < 700 and row["interval"][1] > 1300


def test_ties_count_half_a_win():
    two_wins_two_ties, _ = bradley_terry(2, [(0, 1, 1.0)] * 2 + [(0, 1, 0.5)] * 2)
    three_one, _ = bradley_terry(2, [(0, 1, 1.0)] * 3 + [(1, 0, 1.0)])
    assert two_wins_two_ties == pytest.approx(three_one) and two_wins_two_ties[0] > 0
    only_ties, se = bradley_terry(2, [(0, 1, 0.5)] * 6)
    assert only_ties == pytest.approx([0, 0]) and np.all(se < 0.5)


def test_more_votes_narrow_the_interval():
    few = bradley_terry(2, [(0, 1, 1.0)] * 8 + [(0, 1, 0.0)] * 2)
    many = bradley_terry(2, [(0, 1, 1.0)] * 80 + [(0, 1, 0.0)] * 20)
    assert many[1][0] < few[1][0] / 2.5
    assert many[0][0] - many[0][1] == pytest.approx(np.log(4), abs=0.02)  # the prior's pull fades: odds 4:1


def test_agreement_measures():
    # Pair 1: three raters agree; pair 2: two of three do; pair 3 has one rater and does not count.
    result = agreement([["a", "a", "a"], ["a", "a", "b"], ["tie"]])
    assert result["pairs"] == 2 and result["rater_pairs"] == 6
    assert result["fraction"] == pytest.approx(4 / 6)
    # Coincidences: a-a 4, a-b 1, b-a 1; n_a = 5, n_b = 1: alpha = 1 - (6 - 1) * 2 / (2 * 5 * 1) = 0.
    assert result["alpha"] == pytest.approx(0.0)
    assert agreement([["a", "b"], ["b", "a"]])["alpha"] < 0  # worse than chance
    assert agreement([["a", "a"], ["b", "b"], ["tie", "tie"]])["alpha"] == pytest.approx(1.0)
    assert agreement([["a"], ["b"]]) == {"pairs": 0, "rater_pairs": 0, "fraction": None, "alpha": None}


def test_leaderboard_reports_raters_agreement(client, auth, db):
    x, y = text_jobs(db, ["p0", "p1"])
    raters = [auth, bearer(make_token(db, "alpha", "member")), bearer(make_token(db, "alpha", "viewer"))]
    judge(client, raters[0], [x, y], prefer("X"), 2)
    judge(client, raters[1], [x, y], prefer("X"), 2)
    judge(client, raters[2], [x, y], lambda p: prefer("Y" if p["prompt"] == "p1" else "X")(p), 2)
    result = board(client, auth, [x, y])
    assert result["votes"] == 6
    assert result["agreement"] == {"pairs": 2, "rater_pairs": 6, "fraction": pytest.approx(4 / 6), "alpha": 0.0}
    assert "Bradley-Terry" in result["method"] and "Krippendorff" in result["method"]


def test_export_is_a_preference_dataset(client, auth, other_auth, db, settings):
    x, y = text_jobs(db, ["p0", "p1", "p2"])
    judge(client, auth, [x, y], lambda p: "tie" if p["prompt"] == "p2" else prefer("Y")(p), 3)
    images = []
    for color in (10, 200):
        job = add_job(db, type="generate", status="succeeded", model="dcgan")
        art = add_artifact(db, settings, job, "o.png", png(color=color), "image/png")
        images.append((job, art, add_output(db, job, 0, "image", prompt="seven", artifact_id=art)))
    pair = judge(client, auth, [images[0][0], images[1][0]], lambda p: "a" if p["a"]["id"] == images[1][2] else "b", 1)
    theirs = text_jobs(db, ["p0"], team="beta")
    judge(client, other_auth, theirs, prefer("X"), 1)

    answer = client.get("/api/v1/preferences/export", headers=auth)
    assert answer.status_code == 200 and answer.mimetype == "application/x-ndjson"
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = [json.loads(line) for line in answer.text.splitlines()]
    texts = sorted((r["prompt"], r["chosen"], r["rejected"]) for r in rows if r["prompt"] != "seven")
    assert texts == [("p0", "Y:p0", "X:p0"), ("p1", "Y:p1", "X:p1")]  # the tie on p2 is skipped
    image_rows = [r for r in rows if r["prompt"] == "seven"]
    assert len(rows) == 3 and len(pair) == 1 and all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    assert image_rows[0]["chosen"] == f"http://localhost/api/v1/artifacts/{images[1][1]}/download"
    assert image_rows[0]["rejected"] == f"http://localhost/api/v1/artifacts/{images[0][1]}/download"

    only_text = client.get(f"/api/v1/preferences/export?jobs={x},{y}", headers=auth).text.splitlines()
    assert len(only_text) == 2 and all(json.loads(line)["prompt"] != "seven" for line in only_text)
    assert client.get(f"/api/v1/preferences/export?jobs={theirs[0]}", headers=auth).status_code == 404
    assert client.get("/api/v1/preferences/export?jobs=x", headers=auth).status_code == 422
    assert len(client.get("/api/v1/preferences/export", headers=other_auth).text.splitlines()) == 1


def test_a_team_exports_no_vote_the_operator_cast_across_teams(client, auth, other_auth, db):
    (ours,) = text_jobs(db, ["p0"], names=("X",))
    (theirs,) = text_jobs(db, ["p0"], names=("Y",), team="beta")
    operator = bearer(make_token(db, "admin", "admin"))
    judge(client, operator, [ours, theirs], prefer("Y"), 1)
    assert client.get("/api/v1/preferences/export", headers=auth).text == ""  # beta's output is not alpha's
    assert client.get("/api/v1/preferences/export", headers=other_auth).text == ""
    assert json.loads(client.get("/api/v1/preferences/export", headers=operator).text)["chosen"] == "Y:p0"

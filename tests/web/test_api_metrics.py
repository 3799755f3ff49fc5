"""GET /api/v1/jobs/{id}/metrics?points=&start=&end=: series downsampled in SQL to min, max and last per bucket."""

from __future__ import annotations

import math
import random

import pytest

from tests.web.conftest import add_job, add_metrics


def get(client, auth, job_id: int, query: str):
    answer = client.get(f"/api/v1/jobs/{job_id}/metrics?{query}", headers=auth)
    assert answer.status_code == 200, answer.text
    return answer.json


def brute_force(points: dict[int, float], start: int, end: int, width: int):
    """(series, bands) as the API should answer them, computed point by point."""
    buckets: dict[int, list[tuple[int, float]]] = {}
    for step in sorted(points):
        if start <= step <= end:
            buckets.setdefault(step // width, []).append((step, points[step]))
    series, bands = [], []
    for _, rows in sorted(buckets.items()):
        finite = [v for _, v in rows if math.isfinite(v)]
        step, last = rows[-1]
        series.append([step, last if math.isfinite(last) else None])
        bands.append([step, min(finite, default=None), max(finite, default=None)])
    return series, bands


def test_a_single_spike_among_100k_points_is_a_bucket_max(client, auth, db):
    job_id = add_job(db, status="running")
    values = [2.0 + math.sin(i / 500) * 0.1 for i in range(100_000)]
    values[54_321], values[77_777] = 1000.0, -50.0
    add_metrics(db, job_id, "train/loss", values)
    add_metrics(db, job_id, "val/loss", [3.0, 2.0], every=50_000)
    answer = get(client, auth, job_id, "points=800")
    rows, bands, width = answer["series"]["train/loss"], answer["bands"]["train/loss"], answer["bucket"]["train/loss"]
    assert 400 <= len(rows) <= 800 and len(bands) == len(rows)
    spike = next(b for b in bands if b[0] // width == 54_321 // width)
    assert spike[2] == 1000.0 and max(b[2] for b in bands) == 1000.0
    assert min(b[1] for b in bands) == -50.0
    assert all(v != 1000.0 for _, v in rows), "the spike is not any bucket's last value: only the band keeps it"
    assert rows[-1] == [99_999, values[-1]]
    assert answer["series"]["val/loss"] == [[0, 3.0], [50_000, 2.0]]  # a sparse series: every point
    assert answer["bands"]["val/loss"] == [[0, 3.0, 3.0], [50_000, 2.0, 2.0]]
    # Zoomed in around the spike: full resolution, one step a bucket.
    near = get(client, auth, job_id, "points=800&start=54000&end=54600&name=train/loss")
    assert near["bucket"]["train/loss"] == 1 and len(near["series"]["train/loss"]) == 601
    assert [54_321, 1000.0] in near["series"]["train/loss"]


def test_range_and_budget_are_respected(client, auth, db):
    job_id = add_job(db, status="running")
    add_metrics(db, job_id, "train/loss", [1.0 / (i + 1) for i in range(20_000)], every=3)
    for start, end, points in [(0, 59_997, 1), (0, 59_997, 2), (0, 59_997, 500), (10_001, 40_000, 300),
                               (59_990, 10**9, 50), (30_000, 30_000, 10), (100_000, 200_000, 10)]:
        answer = get(client, auth, job_id, f"points={points}&start={start}&end={end}")
        rows = answer["series"].get("train/loss", [])
        steps = [step for step, _ in rows]
        assert len(rows) <= points and steps == sorted(set(steps))
        assert all(start <= step <= end for step in steps), (start, end)
        inside = [s for s in range(0, 59_998, 3) if start <= s <= end]
        assert bool(rows) == bool(inside)
        if inside:
            assert steps[-1] == inside[-1]
            assert len(rows) >= min(points, len(inside)) // 4  # the budget is used, not squandered


def test_downsampled_equals_brute_force_with_resumes_and_infinities(client, auth, db):
    rnd = random.Random(7)
    job_id = add_job(db, status="running")
    truth: dict[int, float] = {}
    step = 0
    for batch in range(60):  # written as a worker flushes, with a resume that logs 300 steps again
        values, first = [], step
        for _ in range(50):
            values.append(float("inf") if rnd.random() < 0.01 else rnd.gauss(0, 1))
        add_metrics(db, job_id, "train/loss", values, start=first, every=3)
        truth.update({first + 3 * i: v for i, v in enumerate(values)})
        step = first + 150 if batch != 40 else first - 300
    end_step = max(truth)
    for _ in range(40):
        start = rnd.randrange(0, end_step)
        end = start + rnd.choice([0, 10, 200, 3000, 10**6])
        points = rnd.choice([1, 2, 5, 64, 800])
        answer = get(client, auth, job_id, f"points={points}&start={start}&end={end}&name=train/loss")
        expected = brute_force(truth, start, end, answer["bucket"].get("train/loss", 1))
        got = (answer["series"].get("train/loss", []), answer["bands"].get("train/loss", []))
        assert got == expected, (start, end, points)
        assert len(got[0]) <= points


@pytest.mark.parametrize(
    "query, name",
    [
        ("points=0", "points"),
        ("points=ten", "points"),
        ("points=10001", "points"),
        ("start=-1", "start"),
        ("start=1e3", "start"),
        ("end=2.5", "end"),
        ("start=10&end=5", "end"),
        ("points=10&max_points=10", "max_points"),
    ],
)
def test_bad_range_or_budget_is_422_naming_the_parameter(client, auth, db, query, name):
    job_id = add_job(db)
    answer = client.get(f"/api/v1/jobs/{job_id}/metrics?{query}", headers=auth)
    assert answer.status_code == 422 and f"'{name}'" in answer.json["message"], answer.json


def test_another_teams_job_is_404_with_points(client, auth, other_auth, db):
    job_id = add_job(db, team="beta")
    add_metrics(db, job_id, "train/loss", [1.0, 0.5])
    assert client.get(f"/api/v1/jobs/{job_id}/metrics?points=10", headers=auth).status_code == 404
    assert get(client, other_auth, job_id, "points=10")["series"] == {"train/loss": [[0, 1.0], [1, 0.5]]}
    for query in ("name=%00", "name=%00&points=10", "name=train/loss"):  # names no series has, too
        assert client.get(f"/api/v1/jobs/{job_id}/metrics?{query}", headers=auth).status_code == 404, query
    assert client.get("/api/v1/jobs/99999/metrics?name=%00", headers=other_auth).status_code == 404

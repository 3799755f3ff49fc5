"""Queue position, ETA and wait reason from the pool's forecast, reused across requests while the pool's jobs
stay the same, recomputed as soon as they change."""

from __future__ import annotations

from genq.db.models import Job
from genq.jobs.scheduling_order import pool_forecast, standing
from tests.web.conftest import add_job, add_worker


def positions(db, *ids: int) -> list[int | None]:
    with db.session() as s:
        return [standing(s, s.get(Job, i)).queue_position for i in ids]


def test_a_forecast_is_reused_until_the_queue_changes(db):
    add_worker(db, "w", "H100", 80, slots=1)
    add_job(db, status="running", worker_id="w")
    first = add_job(db)
    with db.session() as s:
        before = pool_forecast(s, "default")
    with db.session() as s:
        assert pool_forecast(s, "default") is before, "nothing changed: the same forecast, not a new one"
    urgent = add_job(db, priority=5)
    assert positions(db, first, urgent) == [1, 0], "a job queued since is seen at once"
    with db.session() as s:
        s.get(Job, urgent).status = "cancelled"
    assert positions(db, first, urgent) == [0, None]
    later = add_job(db)
    assert positions(db, first, later) == [0, 1]
    with db.session() as s:
        s.get(Job, later).priority = 9  # the same jobs, in another order
    assert positions(db, first, later) == [1, 0]

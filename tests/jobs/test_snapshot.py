"""Policy snapshots from SQL: the step rates the scheduler keeps between decisions."""

from __future__ import annotations

from datetime import timedelta

from genq.db.models import Job, Metric, utcnow
from genq.jobs.snapshot import StepRates
from tests.web.conftest import add_job


def log_loss(db, job_id: int, *points: tuple[int, float]) -> None:
    """train/loss points (step, seconds after the run started)."""
    with db.session() as s:
        began = s.get(Job, job_id).run_started_at
        s.add_all(Metric(job_id=job_id, name="train/loss", step=step, value=1.0,
                         created_at=began + timedelta(seconds=t)) for step, t in points)


def test_kept_step_rates_are_reused_until_they_expire_and_a_new_job_is_read_at_once(db):
    began = utcnow() - timedelta(minutes=5)
    first = add_job(db, status="running", worker_id="w", run_started_at=began)
    log_loss(db, first, (1, 10.0), (11, 20.0))  # 1 s a step
    kept = StepRates(seconds=60)
    with db.reading() as s:
        assert kept.get(s, [first]) == {first: 1.0}
    second = add_job(db, status="running", worker_id="w", run_started_at=began)
    log_loss(db, first, (21, 50.0))  # slower since: 2 s a step over the run
    log_loss(db, second, (1, 10.0), (5, 30.0))
    with db.reading() as s:
        assert kept.get(s, [first, second]) == {first: 1.0, second: 5.0}, "the kept rate, and the new job's"
        kept.read_at -= 61
        assert kept.get(s, [first, second]) == {first: 2.0, second: 5.0}, "read again once expired"

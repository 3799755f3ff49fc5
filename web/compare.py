"""What /compare shows of a few runs side by side: the params that differ, the final metrics, a chart per
metric (a line per job), and the outputs for each prompt."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from genq import metrics
from genq.db.models import Job
from genq.errors import InvalidInput
from genq.jobs.service import owned
from genq.jobs.views import job_to_dict
from genq.web import queries
from genq.web.api import query_job_ids

MAX_JOBS = 10
OUTPUTS_PER_JOB = 200  # a batch job may hold thousands: the page shows the first ones
MISSING = object()  # a param one job has and another lacks (None is a value)


def job_ids() -> list[int]:
    """The request's ?jobs= ids, each once, in order; 422 naming 'jobs' when there are none or too many."""
    ids = list(dict.fromkeys(query_job_ids() or []))
    if not ids:
        raise InvalidInput("query parameter 'jobs' must name the jobs to compare, e.g. /compare?jobs=12,15")
    if len(ids) > MAX_JOBS:
        raise InvalidInput(f"query parameter 'jobs' names {len(ids)} jobs; compare at most {MAX_JOBS} at once")
    return ids


def comparison(session: Session, team_id: int | None, ids: list[int]) -> dict[str, Any]:
    """Everything the page shows; a job that is missing or another team's answers 404 naming it."""
    jobs = [job_to_dict(session, owned(session, Job, i, team_id, "job"), brief=True) for i in ids]
    latest = metrics.latest_points(session, ids)
    found = {name for series in latest.values() for name in series}
    names = [n for n in queries.LOSS_SERIES if n in found] + sorted(found - set(queries.LOSS_SERIES))
    return {
        "jobs": jobs,
        "params": differing_params(jobs),
        "charts": [{"name": name, "sources": [{"job": i, "name": name, "label": f"#{i}"} for i in ids]}
                   for name in names],
        "final": [(name, [latest.get(i, {}).get(name) for i in ids]) for name in names],
        "prompts": outputs_by_prompt([queries.job_outputs(session, i, limit=OUTPUTS_PER_JOB) for i in ids]),
    }


def differing_params(jobs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(param, its value in each job as text, '—' where unset) for the model, dataset and params that differ."""
    rows = [("model", [job["model"] for job in jobs]), ("dataset", [job["dataset"] for job in jobs])]
    keys = sorted({key for job in jobs for key in job["params"] or {}})
    rows += [(key, [(job["params"] or {}).get(key, MISSING) for job in jobs]) for key in keys]
    shown = []
    for key, values in rows:
        texts = ["—" if v is MISSING else v if isinstance(v, str) else json.dumps(v) for v in values]
        if len(set(texts)) > 1:
            shown.append((key, texts))
    return shown


def outputs_by_prompt(per_job: list[list[dict[str, Any]]]) -> list[tuple[str | None, list[list[dict]]]]:
    """(prompt, each job's outputs for it), prompts in the order they first appear."""
    rows: dict[str | None, list[list[dict]]] = {}
    for column, outputs in enumerate(per_job):
        for out in outputs:
            rows.setdefault(out["prompt"], [[] for _ in per_job])[column].append(out)
    return list(rows.items())

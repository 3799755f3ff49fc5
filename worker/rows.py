"""Batch generation in the worker: which rows a job still has to run, storing finished rows as they come, and
the outputs.jsonl / outputs.csv files written from the database at the end.

The database decides which rows exist: a resumed job reads the rows already stored and runs the others, and
a unique (job, row, index) constraint keeps a row from being stored twice.
"""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from genq.config import Settings
from genq.core.api import RowResult
from genq.core.data.prompts import PromptRow, parse_prompts
from genq.datasets import dataset_file
from genq.db import Artifact, Database, Dataset, Job, Output
from genq.errors import InvalidInput
from genq.worker.artifacts import JobFiles

MEDIA_TYPES = {"outputs.jsonl": "application/x-ndjson", "outputs.csv": "text/csv"}
FILES_EVERY = 30.0  # seconds between rewrites of the output files while a job runs


def prompt_rows(settings: Settings, session: Session, job: Job) -> list[PromptRow]:
    """The job's rows, numbered in input order: its prompts file's (template applied) or its inline prompts;
    a retry's only the rows it names."""
    if job.dataset_id is not None:
        dataset = session.get(Dataset, job.dataset_id)
        if dataset is None:
            raise InvalidInput(f"the prompts dataset {job.dataset_id} no longer exists")
        with dataset_file(settings, dataset) as path:  # a local copy when the store is elsewhere
            rows = parse_prompts(path.read_bytes(), path.suffix.lstrip("."), job.params.get("template"))
    else:
        rows = [PromptRow(row=i, prompt=p) for i, p in enumerate(job.prompts or [None])]
    if job.only_rows is not None:
        keep = set(job.only_rows)
        rows = [r for r in rows if r.row in keep]
    return rows


def stored_rows(db: Database, job_id: int) -> set[int]:
    """The rows of the job already stored (by any attempt)."""
    with db.reading() as s:
        return set(s.scalars(select(Output.row).where(Output.job_id == job_id, Output.row.is_not(None)).distinct()))


def none_ok(db: Database, job_id: int) -> str | None:
    """Why a finished batch job failed when none of its rows did (the first error), else None."""
    with db.reading() as s:
        if s.scalar(select(Output.id).where(Output.job_id == job_id, Output.status == "ok").limit(1)) is not None:
            return None
        first = s.scalar(select(Output.error).where(Output.job_id == job_id).order_by(Output.row).limit(1))
    return None if first is None else f"no row succeeded; the first: {first}"


def start(settings: Settings, db: Database, job: Job, hooks, counts) -> list[PromptRow]:
    """The start of a batch generation run: `hooks.batch` set to counts(total=, done=) of the job's rows (the
    worker's RowCounts), the bad rows among those no attempt stored yet reported as error rows; returns the
    others, to generate."""
    with db.session() as s:
        all_rows = prompt_rows(settings, s, job)
    done = stored_rows(db, job.id) if job.attempts > 1 else set()  # a first attempt finds none
    todo = [r for r in all_rows if r.row not in done]
    hooks.batch = counts(total=len(all_rows), done=len(done))
    if done:
        hooks.log(f"resuming: {len(done)} of {len(all_rows)} rows already stored")
    hooks.rows(error_results(todo, job.params.get("num_samples", 1)))
    return [r for r in todo if r.error is None]


def error_results(rows: list[PromptRow], num_samples: int) -> list[RowResult]:
    """An error output for each row that cannot run."""
    return [RowResult(r.row, r.row * num_samples, r.prompt, None, "error", r.error, r.row_id)
            for r in rows if r.error is not None]


# Built once on the tables: the ORM's bulk statements, built per call, cost a tiny job's end more than the
# statements themselves (bench/dispatch.py).
_O, _A, _J = Output.__table__.c, Artifact.__table__.c, Job.__table__.c
_COUNT_ROWS = update(Job.__table__).where(_J.id == bindparam("job")).values(
    rows_done=_J.rows_done + bindparam("done"), rows_failed=_J.rows_failed + bindparam("failed"))
_ROWS_OF = (select(_O.row, _O.row_id, _O.index, _O.prompt, _O.text, _O.status, _O.error)
            .where(_O.job_id == bindparam("job"), _O.row.is_not(None)).order_by(_O.row, _O.index))
_FILES_OF = select(_A.name, _A.id).where(_A.job_id == bindparam("job"), _A.name.in_(list(MEDIA_TYPES)))


def record_rows(session: Session, job_id: int, results: list[RowResult]) -> tuple[int, int]:
    """Insert the outputs of finished rows and count them on the job, in the caller's (fenced) transaction;
    returns (rows, failed rows) added."""
    session.execute(insert(Output.__table__), [
        {"job_id": job_id, "index": r.index, "row": r.row, "row_id": r.row_id, "prompt": r.prompt, "kind": "text",
         "text": r.text, "status": r.status, "error": r.error} for r in results])
    rows = {r.row for r in results}
    failed = {r.row for r in results if r.status == "error"}
    session.execute(_COUNT_ROWS, {"job": job_id, "done": len(rows), "failed": len(failed)})
    return len(rows), len(failed)


def write_sample_files(files: JobFiles, lines: list[dict], fields: list[str]) -> dict:
    """outputs.jsonl and outputs.csv of `lines` (dicts of `fields`, in order) written in the run's folder and put
    in the artifact store: {path: what the store answered}."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    writer.writerows(lines)
    files.workdir.mkdir(parents=True, exist_ok=True)
    bodies = {"outputs.jsonl": "".join(json.dumps(line) + "\n" for line in lines), "outputs.csv": table.getvalue()}
    out = {}
    for name, body in bodies.items():
        path = files.workdir / name
        path.write_text(body, encoding="utf-8")
        out[path] = files.upload(path)  # the store replaces a key whole: a reader never sees half a file
    return out


def write_files(session: Session, files: JobFiles, job_id: int) -> None:
    """outputs.jsonl and outputs.csv of every row stored so far, in input order, as the job's artifacts
    (replacing the previous ones: the worker writes them every FILES_EVERY seconds and at the end), written in
    the run's folder and put in the artifact store, in the caller's transaction."""
    lines = [row._asdict() for row in session.execute(_ROWS_OF, {"job": job_id})]
    held = dict(session.execute(_FILES_OF, {"job": job_id}).all())
    for path, stored in write_sample_files(files, lines, list(_ROWS_OF.selected_columns.keys())).items():
        name = path.name
        values = {"path": stored.key, "sha256": stored.sha256, "size_bytes": stored.size,
                  "media_type": MEDIA_TYPES[name]}
        if name in held:
            session.execute(update(Artifact.__table__).where(_A.id == held[name]).values(**values))
        else:
            session.execute(insert(Artifact.__table__).values(job_id=job_id, kind="output", name=name, **values))

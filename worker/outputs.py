"""What a job leaves at its end: its samples' files and output rows (a training job's final samples, a
generation job's outputs), in the job's last transaction.

Image and audio generation jobs go by rows too: a model that draws every prompt at once (dcgan, vae, wavenet)
still answers a prompts file row by row, as a text model does (genq.worker.rows). The rows that run are the
file's good rows (a retry's: those it names), each giving num_samples samples in order; all of them are stored
at the job's end, numbered by their row and carrying its id, beside the file's bad rows as error rows, and
listed in outputs.jsonl and outputs.csv."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session

from genq.config import Settings
from genq.core.api import Sample, UnknownClasses
from genq.core.data.prompts import PromptRow
from genq.core.spec import get as get_spec
from genq.db import Artifact, Database, Job, Output
from genq.worker.artifacts import JobFiles, Stored
from genq.worker.hooks import MEDIA_TYPES, add_samples
from genq.worker.rows import prompt_rows, write_sample_files

SAMPLE_KINDS = {"images": "image", "audio": "audio"}  # what one sample of a model of this data kind is


@dataclass
class MediaRows:
    good: list[PromptRow]  # the rows that run, in order
    bad: list[PromptRow]  # the prompts file's rows that cannot run
    per_row: int  # samples per row
    kind: str  # image or audio

    @classmethod
    def load(cls, settings: Settings, db: Database, job: Job) -> MediaRows:
        """The rows of generation job `job` (its prompts file's, or its inline prompts)."""
        with db.session() as s:
            rows = prompt_rows(settings, s, job)
        return cls([r for r in rows if r.error is None], [r for r in rows if r.error is not None],
                   job.params.get("num_samples", 1), SAMPLE_KINDS[get_spec(job.model).data])

    def prompts(self) -> list[str | None]:
        return [r.prompt for r in self.good]

    def generate(self, draw: Callable[[list[str | None]], list[Sample]]) -> list[Sample]:
        """draw(prompts) of the good rows; when some name no class of the model (found before anything is drawn),
        those rows fail, as bad rows, and the others are drawn."""
        try:
            return draw(self.prompts())
        except UnknownClasses as exc:
            failed = [r for r in self.good if r.prompt in exc.reasons]
            self.good = [r for r in self.good if r.prompt not in exc.reasons]
            self.bad = sorted([*self.bad, *(replace(r, error=f"row {r.row}: {exc.reasons[r.prompt]}") for r in failed)],
                              key=lambda r: r.row)
            return draw(self.prompts()) if self.good else []

    def row_params(self) -> list[str]:
        """The per-row params the good rows give (a media model draws every row with the job's params)."""
        return sorted({key for r in self.good for key in r.params})

    def none_ok(self) -> str | None:
        """Why the job fails when no row can run (the first bad row), else None."""
        return None if self.good or not self.bad else f"no row succeeded; the first: {self.bad[0].error}"

    def numbered(self, samples: list[Sample]) -> list[tuple[PromptRow, int, Sample]]:
        """Each sample with its row and its output index (the row's number x per_row + its place in the row):
        samples come per_row a row, for a prefix of the good rows when a stop request ended the job."""
        return [(self.good[i // self.per_row], self.good[i // self.per_row].row * self.per_row + i % self.per_row,
                 sample) for i, sample in enumerate(samples)]

    def counts(self, samples: list[Sample]) -> tuple[int, int]:
        """(rows stored, failed rows) once `samples` are: the whole rows they make, and the bad rows."""
        return len(samples) // self.per_row + len(self.bad), len(self.bad)

    def lines(self, samples: list[Sample]) -> list[dict]:
        """outputs.jsonl / outputs.csv lines, in row order: each sample's (its file by name), each bad row's."""
        ok = [{"row": row.row, "row_id": row.row_id, "index": index, "prompt": s.prompt, "kind": s.kind,
               "text": s.text, "file": s.path.name if s.path else None, "status": "ok", "error": None}
              for row, index, s in self.numbered(samples)]
        bad = [{"row": r.row, "row_id": r.row_id, "index": r.row * self.per_row, "prompt": r.prompt,
                "kind": self.kind, "text": None, "file": None, "status": "error", "error": r.error} for r in self.bad]
        return sorted(ok + bad, key=lambda line: line["index"])

    def record_bad(self, session: Session, job_id: int) -> None:
        """An error output for each bad row, in the caller's transaction."""
        if self.bad:
            session.execute(insert(Output.__table__), [
                {"job_id": job_id, "index": r.row * self.per_row, "row": r.row, "row_id": r.row_id,
                 "prompt": r.prompt, "kind": self.kind, "status": "error", "error": r.error} for r in self.bad])


def upload_outputs(files: JobFiles, samples: list[Sample], media: MediaRows | None) -> dict[Path, Stored]:
    """Upload the files of `samples` and, for an image or audio generation job, outputs.jsonl and outputs.csv
    (each row's samples, the file of an image or a clip by name, and its bad rows)."""
    stored = files.upload_samples(samples)
    if media is not None and (lines := media.lines(samples)):
        stored.update(write_sample_files(files, lines, list(lines[0])))
    return stored


def record_outputs(s: Session, job: Job, samples: list[Sample], stored: dict[Path, Stored],
                   media: MediaRows | None) -> None:
    """Output rows (and artifacts for files) for `samples`, in the caller's transaction; an image or audio
    generation job's numbered by their rows, its bad rows as error rows, and all as outputs.jsonl and
    outputs.csv."""
    numbered = None if media is None else [(row, index) for row, index, _ in media.numbered(samples)]
    add_samples(s, job.id, samples, stored, "sample" if job.type == "train" else "output", rows=numbered)
    if media is not None:
        media.record_bad(s, job.id)
    for path, up in stored.items():
        if path.name in ("outputs.jsonl", "outputs.csv"):
            s.add(Artifact(job_id=job.id, kind="output", name=path.name, path=up.key, size_bytes=up.size,
                           sha256=up.sha256, media_type=MEDIA_TYPES[path.suffix]))

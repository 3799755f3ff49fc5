"""Image and audio generation jobs by rows: a model that draws every prompt at once (dcgan, vae, wavenet) still
answers a prompts file row by row, as a text model does (genq.worker.rows). The rows that run are the file's
good rows (a retry's: those it names), each giving num_samples samples in order; all of them are stored at the
job's end, numbered by their row and carrying its id, beside the file's bad rows as error rows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.orm import Session

from genq.config import Settings
from genq.core.api import Sample
from genq.core.data.prompts import PromptRow
from genq.core.spec import get as get_spec
from genq.db import Database, Job, Output
from genq.worker.rows import prompt_rows

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

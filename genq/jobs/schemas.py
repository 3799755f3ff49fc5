"""The job API's request and response models: the API validates with them and the OpenAPI document is built
from them, so the fields are written once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from genq.datasets import MAX_PROMPT_CHARS, MAX_PROMPTS
from genq.db.models import JOB_STATUSES
from genq.errors import InvalidInput
from genq.jobs.params import MODELS

MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL; bigger numbers cannot name a row
GPUS_LIMIT = 1024  # beyond any worker: refused as a number before the pool's workers are asked
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def is_row_id(digits: str) -> bool:
    """Whether a string of ASCII digits names a possible row: 1..MAX_ID (checked by length first: int() refuses
    4,300 digits and more)."""
    return len(digits) <= len(str(MAX_ID)) and 1 <= int(digits) <= MAX_ID


class _JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    params: dict[str, Any] = Field(default_factory=dict, description="model or generation params")
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first within the pool")
    gpus: int = Field(1, description="devices (CPU slots) of one worker host; N > 1: N data-parallel processes "
                                     "(training of a kind whose spec says data_parallel)")
    team: Name | None = Field(None, description="must be the token's team when given")
    pool: Name = Field("default", description="the worker pool to run in")
    preemptible: bool = Field(True, description="false: never preempted to give another team its share")

    @field_validator("gpus")
    @classmethod
    def _device_count(cls, v: int) -> int:
        if not 1 <= v <= GPUS_LIMIT:
            raise ValueError(f"gpus must be between 1 and {GPUS_LIMIT}, got {v}")
        return v


class TrainJobRequest(_JobRequest):
    """Train a model on an uploaded dataset (its id) or a built-in one (digits, tones, pydoc)."""

    type: Literal["train"]
    model: str = Field(json_schema_extra={"enum": list(MODELS)})
    dataset: int | str = Field(description="an uploaded dataset id or a built-in name: digits, tones, pydoc")


class GenerateJobRequest(_JobRequest):
    """Sample from a succeeded training job (or directly from a pretrained model of the models folder, "base"),
    with prompts inline or from a prompts dataset."""

    type: Literal["generate"]
    source_job: int | None = Field(None, ge=1, le=MAX_ID, description="a succeeded train job; or give base")
    base: str | None = Field(None, min_length=1, max_length=200,
                             description="a model of the models folder (GET /api/v1/models), instead of source_job")
    prompts: list[Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]] | None = Field(
        None, min_length=1, max_length=MAX_PROMPTS
    )
    dataset: int | None = Field(None, ge=1, le=MAX_ID, description="a prompts dataset id, instead of prompts")

    @field_validator("prompts")
    @classmethod
    def _prompt_texts(cls, v: list[str] | None) -> list[str] | None:
        """A blank prompt is refused, as in a prompts file (an empty shell variable, say)."""
        for i, prompt in enumerate(v or ()):
            if not prompt.strip():
                raise ValueError(f"prompt {i + 1} is empty (leave prompts out for unconditional samples)")
        return v


REQUESTS: dict[str, type[_JobRequest]] = {"train": TrainJobRequest, "generate": GenerateJobRequest}


def parse_request(body: object) -> TrainJobRequest | GenerateJobRequest:
    """Validate a job submission body; InvalidInput names every bad field."""
    if not isinstance(body, Mapping):
        raise InvalidInput("the request body must be a JSON object")
    cls = REQUESTS.get(body.get("type")) if isinstance(body.get("type"), str) else None
    if cls is None:
        raise InvalidInput("field 'type' must be 'train' or 'generate'")
    try:
        return cls.model_validate(dict(body))
    except ValidationError as exc:
        raise refused(exc, "job") from None


class RetryRequest(BaseModel):
    """POST /api/v1/jobs/{id}/retry: which rows run again."""

    model_config = ConfigDict(extra="forbid", strict=True)
    only_failed: bool = Field(True, description="the rows not stored as ok (true), or every row (false)")


def parse_retry(body: object) -> RetryRequest:
    """Validate a retry body; InvalidInput names every bad field."""
    if not isinstance(body, Mapping):
        raise InvalidInput('the request body must be a JSON object like {"only_failed": true}')
    try:
        return RetryRequest.model_validate(dict(body))
    except ValidationError as exc:
        raise refused(exc, "retry") from None


def refused(exc: ValidationError, what: str) -> InvalidInput:
    """A pydantic ValidationError as InvalidInput ("invalid WHAT: field 'x': ...") naming every bad field."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "body"
        problems.append(
            f"unknown field '{key}'"
            if err["type"] == "extra_forbidden"
            else f"field '{key}': {err['msg'].removeprefix('Value error, ')}"
        )
    return InvalidInput(f"invalid {what}: " + "; ".join(problems), details=problems)


Time = Annotated[str | None, Field(json_schema_extra={"format": "date-time"})]


class JobOut(BaseModel):
    """A job as the API answers it (CONTRACT.md's fields plus the submission)."""

    id: int
    type: Literal["train", "generate"]
    model: str = Field(json_schema_extra={"enum": list(MODELS)})
    team: str
    status: Literal[JOB_STATUSES]  # type: ignore[valid-type]
    progress: float = Field(ge=0, le=1)
    step: int
    attempts: int
    queue_position: int | None = Field(description="jobs that will be dispatched before this one; null once it left")
    eta: Time = Field(description="expected start while queued, expected finish while running; null when unknown")
    wait_reason: str | None = Field(description="why a queued job waits, in one sentence")
    preemptions: int
    preemptible: bool
    gpu_seconds: float = Field(description="devices x seconds this job has held (CPU slots on CPU workers)")
    error: str | None
    created_at: Time
    started_at: Time
    finished_at: Time
    dataset: int | str | None
    source_job: int | None
    base: str | None = Field(None, description="the models-folder model a generate job samples without a source job")
    params: dict[str, Any]
    prompts: list[str] | int | None = Field(
        description="the prompts given inline; their number in listings and for prompts from a dataset")
    priority: int
    gpus: int
    pool: str
    max_attempts: int
    checkpoint_step: int | None
    cancel_requested: bool
    finished: bool
    rows_total: int | None = Field(None, description="generation: the input rows")
    rows_done: int = Field(0, description="generation: rows stored so far, ok or error")
    rows_failed: int = Field(0, description="generation: stored rows whose status is error")
    retry_of: int | None = Field(None, description="the job this one retries rows of")

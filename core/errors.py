"""The model library's errors: a person can act on each; the platform maps them to its own (4xx, job failed)."""

from __future__ import annotations


class CoreError(ValueError):
    """Base class: the model library refuses the request with a message naming the problem."""


class DataError(CoreError):
    """The data does not fit the model (wrong kind, too small, unreadable): the job fails with this message."""


class UnknownClasses(DataError):
    """Prompts that name no class of a class-conditional model, found before anything was generated: `reasons`
    says why for each of them (a platform may fail their rows alone and generate the others)."""

    def __init__(self, message: str, reasons: dict[str, str]):
        super().__init__(message)
        self.reasons = reasons


class ParamError(CoreError):
    """Params that the model does not take: unknown keys, wrong types, values out of range. `problems` names
    each bad key."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


class RankLost(RuntimeError):
    """A process of a data-parallel run died (genq.core.parallel): the run is over, and resumes from its last
    checkpoint when run again; no fault of the request."""

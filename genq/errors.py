"""The small error hierarchy shared by the API, the CLI and the worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from genq.core.errors import CoreError


class GenqError(Exception):
    """Base class: an error a person can act on. `code` and `status` shape the JSON answer."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, details: object | None = None):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        body: dict = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidInput(GenqError):
    """The request is malformed or names an unknown thing (a model, a param)."""

    code, status = "invalid_input", 422


class BadRequest(GenqError):
    code, status = "bad_request", 400


class Unauthorized(GenqError):
    code, status = "unauthorized", 401


class Forbidden(GenqError):
    code, status = "forbidden", 403


class NotFound(GenqError):
    code, status = "not_found", 404


class Conflict(GenqError):
    """The request is valid but the target is in the wrong state (an unfinished source job, say)."""

    code, status = "conflict", 409


class TooLarge(GenqError):
    code, status = "too_large", 413


class Unavailable(GenqError):
    """The server cannot take this request now; `retry_after` seconds later it may."""

    code, status = "unavailable", 503

    def __init__(self, message: str, *, retry_after: int = 15):
        super().__init__(message)
        self.retry_after = retry_after


class JobError(GenqError):
    """A job cannot run as submitted (bad data for the model, say): fail it at once, do not retry."""

    code, status = "job_error", 422


@contextmanager
def refused_as_invalid_input() -> Iterator[None]:
    """The model library's refusals (bad params, bad data: CoreError) as InvalidInput, a 422 with the same
    message and the bad keys as details."""
    try:
        yield
    except CoreError as exc:
        raise InvalidInput(str(exc), details=getattr(exc, "problems", None) or None) from None

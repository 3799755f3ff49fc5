"""The one error helper: GenqError and HTTP errors become {"error", "message"} JSON (pages for browsers)."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from genq.errors import GenqError, Unavailable
from genq.jobs.schemas import MAX_ID, is_row_id

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def wants_json() -> bool:
    """API paths and machine clients get JSON; dashboard pages get HTML."""
    if request.path.startswith("/api/") or request.path in ("/healthz", "/metrics"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, code: str, message: str, details: object = None):
    """A JSON error body (or the error page) with `status`."""
    if wants_json():
        body = {"error": code, "message": message}
        if details is not None:
            body["details"] = details
        response = jsonify(body)
    else:
        response = render_template("error.html", status=status, code=code, message=message)
    headers = {"WWW-Authenticate": 'Bearer realm="genq"'} if status == 401 else {}
    return response, status, headers


def _out_of_range_id(path: str) -> str | None:
    """The first number in `path` that is no row id (IdConverter's range), else None."""
    return next((part for part in path.split("/") if part.isascii() and part.isdigit() and not is_row_id(part)),
                None)


def register(app: Flask) -> None:
    """Install the handlers on `app`."""

    @app.errorhandler(GenqError)
    def _genq(exc: GenqError):
        response, status, headers = error_response(exc.status, exc.code, exc.message, exc.details)
        if isinstance(exc, Unavailable):
            headers["Retry-After"] = str(exc.retry_after)
        return response, status, headers

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        message, headers = exc.description or exc.name, {}
        # /jobs/0: no route takes an id out of range (genq.web.IdConverter). werkzeug checks a rule's methods
        # before its converters, so DELETE /datasets/0 fails as a 405 when another method's rule has that path.
        if status in (404, 405) and not request.url_rule and (wrong := _out_of_range_id(request.path)):
            status, message = 404, f"nothing has the id {wrong}: ids run from 1 to {MAX_ID}"
        elif status == 404 and not request.url_rule:
            message = f"no such page or endpoint: {request.method} {request.path}"
        elif status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
            message = f"{request.method} is not allowed on {request.path}: it takes {headers['Allow']}"
        if status == 413:
            message = "the request is larger than the upload limit"
        if status == 416:
            message = f"the Range header '{request.headers.get('Range', '')[:60]}' asks for bytes past the file's end"
        response, status, more = error_response(status, CODES.get(status, exc.name.lower().replace(" ", "_")),
                                                message)
        return response, status, {**headers, **more}

    @app.errorhandler(Exception)
    def _crash(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; the server log has the details")

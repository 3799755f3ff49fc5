"""/api/v1/openapi.json: the OpenAPI 3.1 description of the API; request bodies come from the pydantic
models the API validates with, so the description cannot drift from the checks."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import jsonify
from pydantic.json_schema import models_json_schema

from genq import __version__
from genq.datasets import KINDS
from genq.db.models import JOB_STATUSES
from genq.evaluation import RatingRequest, VoteRequest
from genq.jobs.schemas import MAX_ID, GenerateJobRequest, JobOut, TrainJobRequest
from genq.web.api import api_blueprint, openapi_teams
from genq.web.api.jobs import MAX_STEP
from genq.web.api.openapi_schemas import OBJ, REF, SCHEMAS, STR
from genq.web.api.openapi_schemas import errors as _errors
from genq.web.api.openapi_schemas import json_response as _json
from genq.web.api.openapi_schemas import query as _query
from genq.web.api.openapi_schemas import ref as _ref

bp = api_blueprint("api_openapi", public=True)



def _wrapped(key: str, item: str) -> dict:
    return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": _ref(item)}}}


_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def _path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": _ID}



EVENTS = """A text/event-stream. Each event is `event: NAME` and `data: JSON`:
- `status`: the job as GET /api/v1/jobs/{id} shows it; always the first event, so a late client starts right,
  and again whenever it changes status;
- `progress`: `{"progress": 0..1, "step": N}`;
- `metrics`: new points, `{"series": {"train/loss": [[step, value], ...], ...}}` (a diverged value is null);
- `log`: new log lines, `{"lines": [{"id", "time", "message"}]}`;
- `outputs`: outputs were recorded, `{"count": N}` at the end (read them at /api/v1/jobs/{id}/outputs), or
  a training job's samples at an evaluation, `{"count": N, "step": S}` (at /api/v1/jobs/{id}/samples);
- `ping`: a keep-alive (with a comment line) every 15 s.

The stream ends after the job has finished (after its last status event), or after a maximum lifetime
(GENQ_EVENT_STREAM_SECONDS, 300 s; reconnect and the first event brings you up to date). 503 with Retry-After
when the server holds its limit of open streams (GENQ_MAX_EVENT_STREAMS) or has no Redis: poll the JSON API."""

LIST_EVENTS = """A text/event-stream of the caller's team's jobs:
- `jobs`: `{"jobs": [...]}`, the list GET /api/v1/jobs gives with the same filters; first, and again after
  jobs change status (at most once a second);
- `progress`: `{"id", "progress", "step"}` of a running job;
- `ping`: a keep-alive every 15 s.

Ends after a maximum lifetime like the job stream; 503 with Retry-After in the same cases."""


def _stream(summary: str, description: str, params: list, errors: tuple) -> dict:
    return {
        "get": {
            "summary": summary,
            "description": description,
            "parameters": params,
            "responses": {
                "200": {"description": "the stream", "content": {"text/event-stream": {"schema": STR}}},
                **_errors(*errors),
            },
        }
    }


def _get(summary: str, response: dict, params: list | None = None, errors: tuple = (404,)) -> dict:
    return {
        "get": {
            "summary": summary,
            "parameters": params or [],
            "responses": {"200": response, **_errors(*errors)},
        }
    }


def _replacing(summary: str, request: str, answer: str, errors: tuple, params: list | None = None) -> dict:
    """A PUT or POST of the caller's one rating or vote: 201 when new, 200 when it replaced the caller's last."""
    return {
        "summary": summary + " (the caller's earlier one is replaced)",
        "parameters": params or [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
        "responses": {"200": _json(_ref(answer), "replaced"), "201": _json(_ref(answer), "new"), **_errors(*errors)},
    }


def _store_paths() -> dict:
    """The proxied artifact store (web/api/store.py): worker tokens and the operator only."""
    key = [{"name": "key", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 500},
            "description": "a relative path such as jobs/3/a1/checkpoints/step-00000020/model.safetensors"}]
    binary = {"type": "string", "format": "binary"}
    header = [{"name": "X-Content-SHA256", "in": "header", "required": True, "schema": {"type": "string"}},
              {"name": "Content-Range", "in": "header", "required": True, "schema": {"type": "string"},
               "description": "bytes START-END/TOTAL (or bytes */TOTAL to ask where the upload stands)"}]
    stored = {"type": "object", "properties": {"key": {"type": "string"}, "size_bytes": {"type": "integer"},
                                               "sha256": {"type": "string"}}}
    offset = {"type": "object", "properties": {"offset": {"type": "integer"}}}
    return {
        "get": {"summary": "A stored file (Range: bytes=N- continues a download)", "parameters": key,
                "responses": {"200": {"description": "the file", "content": {"*/*": {"schema": binary}}},
                              "206": {"description": "the rest of the file", "content": {"*/*": {"schema": binary}}},
                              **_errors(400, 403, 404)}},
        "put": {"summary": "One piece of a file; the last stores it", "parameters": key + header,
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": binary}}},
                "responses": {"201": _json(stored, "stored whole"), "202": _json(offset, "piece taken"),
                              "409": _json(offset, "send from `offset`"), **_errors(400, 403, 413, 422)}},
        "delete": {"summary": "Remove a stored file", "parameters": key,
                   "responses": {"204": {"description": "removed"}, **_errors(403, 422)}},
    }


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI document."""
    requests = [(TrainJobRequest, "validation"), (GenerateJobRequest, "validation")]
    judging = [(RatingRequest, "validation"), (VoteRequest, "validation")]
    refs, defs = models_json_schema([*requests, *judging, (JobOut, "serialization")], ref_template=REF)
    schemas = {**SCHEMAS, **defs.get("$defs", {})}
    schemas["Job"] = schemas.pop("JobOut")
    schemas["JobRequest"] = {
        "oneOf": [refs[r] for r in requests],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                "train": REF.format(model="TrainJobRequest"),
                "generate": REF.format(model="GenerateJobRequest"),
            },
        },
    }
    job_id = [_path_id("job_id")]
    jobs = _query("jobs", {"type": "string", "pattern": r"^[0-9]{1,10}(,[0-9]{1,10})*$"}, "job ids: 3,5")
    paths = {
        "/api/v1/jobs": {
            "post": {
                "summary": "Submit a train or generate job",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("JobRequest")}},
                },
                "responses": {"201": _json(_ref("Job"), "queued"), **_errors(400, 403, 404, 409, 422)},
            },
            **_get(
                "The team's jobs, newest first",
                _json(_ref("JobList")),
                [
                    _query("status", {"enum": list(JOB_STATUSES)}),
                    _query("type", {"enum": ["train", "generate"]}),
                    _query("team", STR, "only this team (a token sees only its own)"),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "default": 50}, "page size, at most 200"
                    ),
                    _query("before", _ID, "a job id: list jobs older than it (the previous answer's next)"),
                ],
                errors=(422,),
            ),
        },
        "/api/v1/jobs/{job_id}": _get("One job", _json(_ref("Job")), job_id),
        "/api/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job (a running one stops after saving a checkpoint)",
                "parameters": job_id,
                "responses": {
                    "202": _json(_ref("Job"), "cancelled or cancel requested"),
                    **_errors(403, 404, 409),
                },
            }
        },
        "/api/v1/jobs/{job_id}/metrics": _get(
            "Metric series",
            _json(_ref("Metrics")),
            job_id
            + [
                _query(
                    "points",
                    {"type": "integer", "minimum": 1, "maximum": 10_000},
                    "at most this many buckets per series: each bucket's last point, and its min and max in bands",
                ),
                _query("start", {"type": "integer", "minimum": 0}, "first step of the range"),
                _query("end", {"type": "integer", "minimum": 0}, "last step of the range (not below start)"),
                _query(
                    "max_points",
                    {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                    "keep this many evenly spaced points per series (not with points)",
                ),
                _query("name", STR, "only this series (repeatable)"),
            ],
            errors=(404, 422),
        ),
        "/api/v1/jobs/{job_id}/outputs": _get(
            "Generated samples; with after or limit, those of the next input rows and the `after` of the next "
            "page; with stored_after, the next ones stored and the `stored_after` of the next page",
            _json(_wrapped("outputs", "Output")),
            job_id
            + [
                _query("after", {"type": "integer", "minimum": -1, "maximum": MAX_ID}, "the rows after this one"),
                _query("stored_after", {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                       "the outputs stored after this output id, in the order they were stored (a running job's)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "this many rows (default 100)"),
            ],
            errors=(404, 422),
        ),
        "/api/v1/jobs/{job_id}/retry": {
            "post": {
                "summary": "A new generation job for the rows not stored as ok ({\"only_failed\": true}) or all rows",
                "parameters": job_id,
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"only_failed": {"type": "boolean", "default": True}}}}}},
                "responses": {
                    "201": _json(_ref("Job"), "the new job, queued"),
                    **_errors(400, 403, 404, 409, 422),
                },
            }
        },
        "/api/v1/jobs/{job_id}/samples": _get(
            "Samples drawn after each evaluation of a training job, one step at a time",
            _json(_ref("Samples")),
            job_id
            + [
                _query(
                    "step",
                    {"type": "integer", "minimum": 0, "maximum": MAX_STEP},
                    "a training step (default: the last with samples)",
                )
            ],
            errors=(404, 422),
        ),
        "/api/v1/jobs/{job_id}/artifacts": _get(
            "Checkpoints, samples, output files", _json(_wrapped("artifacts", "Artifact")), job_id
        ),
        "/api/v1/jobs/{job_id}/logs": _get(
            "Log lines",
            _json(_wrapped("logs", "LogLine")),
            job_id
            + [
                _query("after", {"type": "integer", "minimum": 0}, "only lines with a bigger id"),
                _query("limit", {"type": "integer", "minimum": 1, "default": 1000}),
            ],
            errors=(404, 422),
        ),
        "/api/v1/jobs/{job_id}/ratings": _get("Its outputs' 1-5 ratings", _json(_ref("RatingSummary")), job_id),
        "/api/v1/outputs/{output_id}/rating": {
            "put": _replacing(
                "Rate an output 1-5", "RatingRequest", "Rating", (400, 404, 422), [_path_id("output_id")]
            )
        },
        "/api/v1/preferences/next": _get(
            "A blind pair: outputs of two of the jobs for the same prompt, in random order",
            _json(_ref("BlindPair")),
            [{**jobs, "required": True}],
            errors=(404, 422),
        ),
        "/api/v1/preferences": {
            "post": _replacing("Vote on a pair /preferences/next served", "VoteRequest", "Vote", (400, 404, 409, 422))
        },
        "/api/v1/leaderboard": _get(
            "The jobs ranked by Bradley-Terry rating from the votes, with 95% intervals and agreement",
            _json(_ref("Leaderboard")),
            [{**jobs, "required": True}],
            errors=(404, 422),
        ),
        "/api/v1/preferences/export": _get(
            "The votes as a preference dataset: JSONL of {prompt, chosen, rejected}; ties skipped",
            {"description": "JSON lines", "content": {"application/x-ndjson": {"schema": STR}}},
            [jobs],
            errors=(404, 422),
        ),
        "/api/v1/artifacts/{artifact_id}/download": _get(
            "Download an artifact",
            {
                "description": "the file",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            [_path_id("artifact_id")],
        ),
        "/api/v1/store/{key}": _store_paths(),
        "/api/v1/datasets": {
            "post": {
                "summary": "Upload a dataset",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("DatasetUpload")}},
                },
                "responses": {"201": _json(_ref("Dataset"), "stored"), **_errors(400, 403, 413, 422)},
            },
            **_get(
                "The team's datasets",
                _json(_wrapped("datasets", "Dataset")),
                [_query("kind", {"enum": list(KINDS)})],
                errors=(422,),
            ),
        },
        "/api/v1/datasets/{dataset_id}": {
            **_get("One dataset", _json(_ref("Dataset")), [_path_id("dataset_id")]),
            "delete": {"summary": "Delete a dataset that no job uses, and its file",
                       "parameters": [_path_id("dataset_id")],
                       "responses": {"200": _json(_ref("Dataset"), "deleted"), **_errors(403, 404, 409)}},
        },
        "/api/v1/workers": _get(
            "Workers, devices, slots, load, heartbeats; their hosts (version, draining)",
            _json({**_wrapped("workers", "Worker"), "properties": {
                **_wrapped("workers", "Worker")["properties"],
                "hosts": {"type": "array", "items": _ref("WorkerHost")}}}), errors=()
        ),
        "/api/v1/models": _get(
            "The pretrained models of the models folder (GENQ_MODELS) that hf-causal-lm jobs name by base",
            _json(_wrapped("models", "BaseModel")),
            errors=(),
        ),
        "/api/v1/events": _stream(
            "Live events of one job (server-sent events)",
            EVENTS,
            [{"name": "job", "in": "query", "required": True, "schema": _ID}],
            (404, 422, 503),
        ),
        "/api/v1/events/jobs": _stream(
            "Live events of the team's job list (server-sent events)",
            LIST_EVENTS,
            [
                _query("status", {"enum": list(JOB_STATUSES)}),
                _query("type", {"enum": ["train", "generate"]}),
            ],
            (422, 503),
        ),
        "/api/v1/openapi.json": {
            "get": {"summary": "This document", "security": [], "responses": {"200": _json(OBJ)}}
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the database answers",
                "security": [],
                "responses": {"200": _json(OBJ), "503": _json(OBJ, "database unavailable")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "description": "Open unless GENQ_METRICS_TOKEN is set: then 'Authorization: Bearer' that token.",
                "security": [],
                "responses": {
                    "200": {"description": "text exposition", "content": {"text/plain": {"schema": STR}}},
                    "401": {"description": "GENQ_METRICS_TOKEN is set and the request does not bear it"},
                },
            }
        },
    }
    paths.update(openapi_teams.paths())
    schemas.update(openapi_teams.SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "genq",
            "version": __version__,
            "description": "Submit training and generation jobs; read their progress, metrics and outputs.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document (no token needed: it describes, it holds no data)."""
    return jsonify(spec())

"""The OpenAPI description of /api/v1/teams, /api/v1/tokens and /api/v1/usage (merged into openapi.spec)."""

from __future__ import annotations

from typing import Any

from genq.jobs.schemas import MAX_ID
from genq.teams import TeamSettings
from genq.web.api.openapi_schemas import errors as _errors
from genq.web.api.openapi_schemas import json_response as _json
from genq.web.api.openapi_schemas import query as _query
from genq.web.api.openapi_schemas import ref as _ref

TIME = {"type": ["string", "null"], "format": "date-time"}
QUOTA_INT = {"type": ["integer", "null"]}
QUOTA_NUM = {"type": ["number", "null"]}




_settings = TeamSettings.model_json_schema()["properties"]
SCHEMAS: dict[str, Any] = {
    "Team": {"type": "object", "properties": {
        "name": {"type": "string"}, "weight": {"type": "number"}, "max_gpus": QUOTA_INT,
        "gpu_hours_per_week": QUOTA_NUM, "gpus_in_use": {"type": "integer"},
        "gpu_hours_this_week": {"type": "number"}, "decayed_usage_gpu_seconds": {"type": "number"},
        "created_at": TIME}},
    "TeamRequest": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                 "description": "unique ignoring case: a name differing from a team's only in case is a 409"},
        **_settings}},
    "TeamChange": {"type": "object", "additionalProperties": False, "properties": _settings},
    "Token": {"type": "object", "properties": {
        "id": {"type": "integer"}, "team": {"type": "string"}, "role": {"type": "string"},
        "prefix": {"type": "string"}, "created_at": TIME, "last_used_at": TIME, "revoked_at": TIME,
        "token": {"type": "string", "description": "the secret: only in the answer that created it"}}},
    "TokenRequest": {"type": "object", "additionalProperties": False, "properties": {
        "team": {"type": "string"}, "role": {"enum": ["admin", "member", "viewer", "worker"],
                                             "description": "worker: the operator only (403 for a team admin)"}}},
    "Usage": {"type": "object", "properties": {
        "since": {"type": "string", "format": "date"},
        "teams": {"type": "array", "items": {"type": "object"}},
        "jobs": {"type": "array", "items": {"type": "object"}},
        "days": {"type": "array", "items": {"type": "object"}}}},
}


def paths() -> dict[str, Any]:
    """The paths of teams, tokens and usage."""
    token_id = [{"name": "token_id", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}]
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    team_body = {"required": True, "content": {"application/json": {"schema": _ref("TeamChange")}}}
    change = {"summary": "Change a team's weight or quotas (operator); null lifts a quota", "parameters": name,
              "requestBody": team_body, "responses": {"200": _json(_ref("Team")), **_errors(403, 404, 422)}}
    revoke = {"summary": "Revoke a token: refused at once from then on", "parameters": token_id,
              "responses": {"200": _json(_ref("Token")), **_errors(403, 404, 409)}}
    listed = {"type": "object", "properties": {"teams": {"type": "array", "items": _ref("Team")}}}
    tokens = {"type": "object", "properties": {"tokens": {"type": "array", "items": _ref("Token")}}}
    return {
        "/api/v1/teams": {
            "get": {"summary": "Teams with weights, quotas and usage (the caller's own unless operator)",
                    "responses": {"200": _json(listed), **_errors()}},
            "post": {"summary": "Create a team (operator)",
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("TeamRequest")}}},
                     "responses": {"201": _json(_ref("Team"), "created"), **_errors(400, 403, 409, 422)}},
        },
        "/api/v1/teams/{name}": {"patch": change, "put": change},
        "/api/v1/tokens": {
            "get": {"summary": "Tokens (a team admin: its team's; the operator: all, or ?team=); never secrets",
                    "parameters": [_query("team", {"type": "string"})],
                    "responses": {"200": _json(tokens), **_errors(403)}},
            "post": {"summary": "Create a token; the answer holds its secret, once",
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("TokenRequest")}}},
                     "responses": {"201": _json(_ref("Token"), "created"), **_errors(400, 403, 404, 422)}},
        },
        "/api/v1/tokens/{token_id}": {"delete": revoke},
        "/api/v1/tokens/{token_id}/revoke": {"post": revoke},
        "/api/v1/usage": {
            "get": {"summary": "GPU-seconds (CPU slot-seconds on CPU workers) per team, job and day",
                    "parameters": [_query("team", {"type": "string"}),
                                   _query("since", {"type": "string", "format": "date"}, "default: 30 days ago"),
                                   _query("format", {"enum": ["json", "csv"]})],
                    "responses": {"200": {"description": "OK", "content": {
                        "application/json": {"schema": _ref("Usage")},
                        "text/csv": {"schema": {"type": "string"}}}}, **_errors(422)}},
        },
    }

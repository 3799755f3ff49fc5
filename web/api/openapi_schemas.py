"""The OpenAPI document's component schemas that no pydantic model describes (answers assembled by hand)."""

from __future__ import annotations

from typing import Any

from genq.datasets import KINDS
from genq.db.models import WINNERS

REF = "#/components/schemas/{model}"


def ref(name: str) -> dict:
    """A reference to the component schema `name`."""
    return {"$ref": REF.format(model=name)}


def json_response(schema: dict, description: str = "OK") -> dict:
    """A JSON response of `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict:
    """The error responses `codes`, and 401."""
    return {str(c): json_response(ref("Error"), "error") for c in (401, *codes)}


def query(name: str, schema: dict, description: str = "") -> dict:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
STR = {"type": "string"}
INT = {"type": "integer"}
TIME = {"type": ["string", "null"], "format": "date-time"}
OBJ = {"type": "object"}
NUMBER_OR_NULL = {"type": ["number", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": STR, "message": STR, "details": {}},
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": REF.format(model="Job")}},
            "next": {"type": ["integer", "null"], "description": "pass as ?before= for more"},
        },
    },
    "Dataset": {
        "type": "object",
        "required": ["id", "name", "kind", "size_bytes"],
        "properties": {
            "id": INT,
            "name": STR,
            "kind": {"enum": list(KINDS)},
            "size_bytes": INT,
            "filename": STR,
            "info": OBJ,
            "created_at": TIME,
        },
    },
    "DatasetUpload": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "name": {
                "type": "string",
                "maxLength": 200,
                "description": "display name (default: the file name)",
            },
            "kind": {
                "enum": list(KINDS),
                "description": "insist on a kind (default: detected from the bytes)",
            },
        },
    },
    "Metrics": {
        "type": "object",
        "required": ["series"],
        "properties": {
            "series": {
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "items": {"type": "array", "prefixItems": [INT, {"type": ["number", "null"]}]},
                },
            },
            "bands": {
                "description": "with ?points: each bucket's [last step, min, max] (finite values; null if none)",
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "items": {"type": "array", "prefixItems": [INT, {"type": ["number", "null"]},
                                                               {"type": ["number", "null"]}]},
                },
            },
            "bucket": {
                "description": "with ?points: steps per bucket, per series",
                "type": "object",
                "additionalProperties": INT,
            },
        },
    },
    "Output": {
        "type": "object",
        "required": ["id", "index", "prompt", "kind"],
        "properties": {
            "id": {**INT, "description": "what ratings and preference votes name"},
            "index": INT,
            "prompt": {"type": ["string", "null"]},
            "kind": STR,
            "text": STR,
            "url": STR,
            "media_type": {"type": ["string", "null"]},
            "row": {"type": ["integer", "null"], "description": "the input row (from 0) of a generation output"},
            "row_id": {"type": ["string", "null"], "description": "the row's id or custom_id"},
            "status": {"type": "string", "enum": ["ok", "error"]},
            "error": {"type": ["string", "null"], "description": "why the row failed, or a note on it"},
        },
    },
    "Samples": {
        "type": "object",
        "required": ["steps", "step", "samples"],
        "properties": {
            "steps": {
                "type": "array",
                "items": INT,
                "description": "the training steps with gallery samples, in order",
            },
            "step": {"type": ["integer", "null"], "description": "the step of `samples`: ?step=, else the last"},
            "samples": {"type": "array", "items": {"$ref": REF.format(model="Output")}},
        },
    },
    "Artifact": {
        "type": "object",
        "properties": {
            "id": INT,
            "job_id": INT,
            "kind": STR,
            "name": STR,
            "size_bytes": INT,
            "media_type": STR,
            "created_at": TIME,
            "url": STR,
        },
    },
    "RatingSummary": {
        "type": "object",
        "required": ["count", "mean", "histogram"],
        "properties": {
            "count": INT,
            "mean": NUMBER_OR_NULL,
            "histogram": {"type": "array", "items": INT, "minItems": 5, "maxItems": 5,
                          "description": "how many 1s, 2s, 3s, 4s and 5s"},
        },
    },
    "Rating": {
        "type": "object",
        "properties": {"output_id": INT, "score": INT, "replaced": {"type": "boolean"}},
    },
    "BlindPair": {
        "type": "object",
        "required": ["prompt", "a", "b", "judged", "unjudged"],
        "properties": {
            "prompt": {"type": ["string", "null"]},
            "a": {"$ref": REF.format(model="BlindOutput")},
            "b": {"$ref": REF.format(model="BlindOutput")},
            "judged": {"type": "boolean", "description": "you voted on this pair before; a new vote replaces it"},
            "unjudged": {**INT, "description": "pairs of these jobs you have not voted on"},
        },
    },
    "BlindOutput": {
        "type": "object",
        "required": ["id", "kind"],
        "properties": {"id": INT, "kind": STR, "text": STR, "url": STR, "media_type": {"type": ["string", "null"]}},
    },
    "Vote": {
        "type": "object",
        "properties": {"a": INT, "b": INT, "winner": {"enum": list(WINNERS)}, "replaced": {"type": "boolean"}},
    },
    "Leaderboard": {
        "type": "object",
        "required": ["jobs", "votes", "agreement", "method"],
        "properties": {
            "jobs": {"type": "array", "items": {"type": "object", "properties": {
                "job": INT, "model": STR, "type": STR,
                "rating": {"type": "number", "description": "Bradley-Terry, 1000 = the jobs' average"},
                "interval": {"type": "array", "items": {"type": "number"}, "description": "95%"},
                "votes": INT, "wins": INT, "losses": INT, "ties": INT,
                "scores": {"type": "object", "properties": {"count": INT, "mean": NUMBER_OR_NULL}},
            }}},
            "votes": INT,
            "agreement": {"type": "object", "properties": {
                "pairs": {**INT, "description": "pairs judged by two raters or more"},
                "rater_pairs": INT,
                "fraction": {**NUMBER_OR_NULL, "description": "rater pairs that agree"},
                "alpha": {**NUMBER_OR_NULL, "description": "Krippendorff's alpha, nominal"},
            }},
            "method": STR,
        },
    },
    "LogLine": {"type": "object", "properties": {"id": INT, "time": TIME, "message": STR}},
    "Worker": {
        "type": "object",
        "properties": {
            "id": STR,
            "hostname": STR,
            "pool": STR,
            "slots": INT,
            "devices": {"type": "array"},
            "status": STR,
            "started_at": TIME,
            "last_heartbeat": TIME,
            "running": INT,
            "running_jobs": {"type": "array", "items": INT},
            "version": {"type": ["string", "null"]},
        },
    },
    "WorkerHost": {
        "type": "object",
        "properties": {
            "hostname": STR,
            "version": STR,
            "pools": {"type": "array", "items": STR},
            "devices": {"type": "array"},
            "draining": {"type": "boolean"},
            "drain_deadline": {"type": ["string", "null"]},
            "last_seen": TIME,
        },
    },
    "BaseModel": {
        "type": "object",
        "required": ["name", "model_type", "architectures", "causal_lm", "parameters", "size_bytes", "error"],
        "properties": {
            "name": {**STR, "description": "what a job names as \"base\""},
            "model_type": {"type": ["string", "null"], "description": "from its config.json (gpt2, llama, ...)"},
            "architectures": {"type": "array", "items": STR},
            "causal_lm": {"type": "boolean", "description": "whether hf-causal-lm can train and sample it"},
            "parameters": {"type": ["integer", "null"], "description": "from its safetensors headers, else its config"},
            "size_bytes": INT,
            "error": {"type": ["string", "null"], "description": "why the folder cannot be used, when it cannot"},
        },
    },
}

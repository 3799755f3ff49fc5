"""/api/v1 human evaluation: rate outputs, judge blind pairs, the leaderboard, and the preference export.

Every role may rate and vote (a viewer token is what an outside rater gets): judging changes no job."""

from __future__ import annotations

import json

from flask import Response, g, jsonify, request

from genq import evaluation
from genq.db.models import Job
from genq.jobs.service import owned
from genq.web import queries, state
from genq.web.api import api_blueprint, query_job_ids, read_json

bp = api_blueprint("api_evaluation")
BLIND_FIELDS = ("id", "kind", "text", "url", "media_type")  # not the job, the index or anything naming them


@bp.put("/outputs/<id:output_id>/rating")
def rate(output_id: int):
    """Score an output 1-5 (201 the first time, 200 when it replaces the caller's earlier score)."""
    body = read_json()
    with state().db.session() as s:
        answer, created = evaluation.rate(s, g.caller.token_id, g.caller.scope, output_id, body)
    return jsonify(answer), 201 if created else 200


@bp.get("/jobs/<id:job_id>/ratings")
def job_ratings(job_id: int):
    """{"count", "mean", "histogram"}: the 1-5 ratings of the job's outputs, histogram[0] counting the 1s."""
    with state().db.session() as s:
        owned(s, Job, job_id, g.caller.scope, "job")
        return jsonify(evaluation.rating_summary(s, job_id))


def pair_to_dict(session, pair: evaluation.Pair) -> dict:
    """The JSON form of a blind pair: the two outputs by id and content only."""
    shown = queries.outputs_by_id(session, [pair.a, pair.b])
    a, b = ({k: v for k, v in shown[i].items() if k in BLIND_FIELDS} for i in (pair.a, pair.b))
    return {"prompt": pair.prompt, "a": a, "b": b, "judged": pair.judged, "unjudged": pair.unjudged}


@bp.get("/preferences/next")
def next_pair():
    """A blind pair of outputs of two of ?jobs= for the same prompt, preferring pairs the caller has not judged."""
    ids = query_job_ids() or []
    with state().db.session() as s:
        pair = evaluation.next_pair(s, g.caller.token_id, g.caller.scope, ids)
        answer = pair_to_dict(s, pair)
    return jsonify(answer), 200, {"Cache-Control": "no-store"}


@bp.post("/preferences")
def vote():
    """A verdict on a served pair (201; 200 when it replaces the caller's earlier verdict on that pair)."""
    body = read_json()
    with state().db.session() as s:
        answer, created = evaluation.vote(s, g.caller.token_id, g.caller.scope, body)
    return jsonify(answer), 201 if created else 200


@bp.get("/leaderboard")
def leaderboard():
    """The jobs of ?jobs= ranked by Bradley–Terry rating from the votes, with intervals, votes and agreement."""
    ids = query_job_ids() or []
    with state().db.session() as s:
        return jsonify(evaluation.leaderboard(s, g.caller.scope, ids))


@bp.get("/preferences/export")
def export():
    """The team's votes (between ?jobs= when given) as JSONL of {"prompt", "chosen", "rejected"}; ties skipped."""
    ids = query_job_ids()
    root = request.host_url.rstrip("/")
    with state().db.session() as s:
        rows = evaluation.export_rows(s, g.caller.scope, ids, lambda a: root + queries.download_url(a))
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return Response(
        body,
        mimetype="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="preferences.jsonl"', "Cache-Control": "no-store"},
    )

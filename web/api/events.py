"""/api/v1/events: server-sent events for live pages (one job, or a team's job list); see genq.web.streams."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import select

from genq.db.models import JOB_STATUSES, Job, Team
from genq.errors import InvalidInput
from genq.events import job_channel, team_channel
from genq.jobs.service import MAX_ID, owned
from genq.jobs.views import visible_team
from genq.web import state, streams
from genq.web.api import api_blueprint, query_choice, query_int

bp = api_blueprint("api_events")


@bp.get("/events")
def job_events():
    """Events of job ?job=ID: status (first, with the job as GET /jobs/ID shows it), progress, metrics, log,
    outputs, and a keep-alive every few seconds; the stream ends once the job has finished, or once the caller's
    token has been revoked (checked every few seconds)."""
    job_id = query_int("job", None, 1, MAX_ID)  # no clamp: a 404 would name another id
    if job_id is None:
        raise InvalidInput("query parameter 'job' is required: GET /api/v1/events?job=ID "
                           "(a team's job list: GET /api/v1/events/jobs)")
    with state().db.session() as s:
        owned(s, Job, job_id, g.caller.scope, "job")  # another team's job looks missing: 404, no stream
    relay = state().relay
    sub = relay.subscribe([job_channel(job_id)], streams.token_live(state().db, g.caller.token_id))
    return streams.response(streams.job_events(state().db, job_id, sub, relay.keepalive), sub)


@bp.get("/events/jobs")
def team_events():
    """Events of the team's job list (?status=&type= as GET /jobs): jobs (the list, first and after every
    status change) and progress ({"id", "progress", "step"})."""
    filters = {"status": query_choice("status", JOB_STATUSES), "type": query_choice("type", ("train", "generate"))}
    relay = state().relay
    with state().db.session() as s:  # the operator's list holds every team's jobs (or ?team='s)
        scope = visible_team(s, g.caller, request.args.get("team"))
        teams = list(s.scalars(select(Team.id))) if scope is None else [scope]
    sub = relay.subscribe([team_channel(t) for t in teams], streams.token_live(state().db, g.caller.token_id))
    return streams.response(streams.team_events(state().db, scope, filters, sub, relay.keepalive), sub)

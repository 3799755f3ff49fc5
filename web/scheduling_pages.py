"""Dashboard pages of the shared cluster: /queue (where each job stands and why), /teams (weights, quotas,
tokens; admins) and /usage (GPU-seconds per team and day)."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from genq.api_tokens import list_tokens, revoke_token
from genq.db.models import ApiToken, Job
from genq.errors import Forbidden, GenqError, InvalidInput, NotFound
from genq.jobs.service import of_team
from genq.jobs.usage import usage_report
from genq.jobs.views import job_to_dict, visible_team
from genq.teams import list_teams, may_manage_tokens, parse_settings, require_operator, token_to_dict, update_team
from genq.web import state
from genq.web.api import query_since
from genq.web.dashboard import _signed_in

bp = Blueprint("scheduling", __name__)
bp.before_request(_signed_in)
QUEUE_ROWS = 300  # queued jobs shown, first to start first


@bp.get("/queue")
def queue():
    """Running and queued jobs with position, ETA, reason and team; every team's for the operator."""
    with state().db.session() as s:
        team_id = visible_team(s, g.caller, request.args.get("team"))
        running = [job_to_dict(s, j, brief=True) for j in s.scalars(
            select(Job).where(Job.status == "running", *of_team(team_id)).order_by(Job.pool, Job.started_at))]
        waiting = [job_to_dict(s, j, brief=True) for j in s.scalars(
            select(Job).where(Job.status == "queued", *of_team(team_id))
            .order_by(Job.priority.desc(), Job.created_at).limit(QUEUE_ROWS))]
        teams = list_teams(s, state().settings.usage_half_life_hours, g.caller.scope)
    waiting.sort(key=lambda j: (j["pool"], j["queue_position"] if j["queue_position"] is not None else 1 << 30))
    return render_template("queue.html", running=running, waiting=waiting, teams=teams,
                           team=request.args.get("team") or "")


@bp.route("/teams", methods=["GET", "POST"])
def teams():
    """Teams with weights and quotas (the operator changes them), and the tokens an admin manages."""
    if not (g.caller.is_operator or g.caller.role == "admin"):
        raise Forbidden("only team admins and the operator see the teams page")
    error, status = None, 200
    if request.method == "POST":
        try:
            require_operator(g.caller, "change teams")
            body = {k: _form_number(k) for k in ("weight", "max_gpus", "gpu_hours_per_week")}
            with state().db.session() as s:
                update_team(s, request.form.get("name", ""), parse_settings(body))
            flash(f"Team {request.form.get('name')} updated.")
            return redirect(url_for("scheduling.teams"))
        except GenqError as exc:
            error, status = exc.message, exc.status
    with state().db.session() as s:
        rows = list_teams(s, state().settings.usage_half_life_hours, g.caller.scope)
        tokens = [token_to_dict(t) for t in list_tokens(s, None if g.caller.is_operator else g.caller.team)]
    return render_template("teams.html", teams=rows, tokens=tokens, error=error), status


def _form_number(name: str) -> float | int | None:
    raw = (request.form.get(name) or "").strip()
    if not raw or raw.lower() == "none":
        return None
    try:
        number = float(raw) if len(raw) <= 20 else float("x")
    except ValueError:
        limit = "" if name == "weight" else " (or empty for no limit)"  # a weight has no "none"
        raise InvalidInput(f"{name} must be a number{limit}, got '{raw[:20]}'") from None
    return int(number) if name == "max_gpus" and number.is_integer() else number


@bp.post("/tokens/<id:token_id>/revoke")
def revoke(token_id: int):
    """The revoke button."""
    try:
        with state().db.session() as s:
            row = s.get(ApiToken, token_id)
            if row is None or not (g.caller.is_operator or row.team_id == g.caller.team_id):
                raise NotFound(f"token {token_id} not found")
            may_manage_tokens(g.caller, row.team.name)
            revoke_token(s, token_id)
        flash(f"Token {token_id} revoked.")
    except GenqError as exc:
        flash(exc.message, "error")
    return redirect(url_for("scheduling.teams"))


@bp.get("/usage")
def usage():
    """GPU-seconds per team and day since ?since= (default 30 days)."""
    since = query_since()
    with state().db.session() as s:
        report = usage_report(s, visible_team(s, g.caller, request.args.get("team")), since)
    return render_template("usage.html", report=report, since=since.isoformat(), team=request.args.get("team") or "")

"""/api/v1/teams, /api/v1/tokens and /api/v1/usage: teams with their weights and quotas (the operator manages
them), API tokens (a team's admins manage its own), and GPU-seconds used per team, job and day."""

from __future__ import annotations

from flask import Response, g, jsonify, request
from sqlalchemy import select

from genq.api_tokens import create_token, hash_token, list_tokens, quoted, revoke_token
from genq.db.models import ApiToken
from genq.errors import InvalidInput, NotFound
from genq.jobs.usage import usage_csv, usage_report
from genq.jobs.views import visible_team
from genq.teams import (
    create_team,
    get_team,
    list_teams,
    may_create_token,
    may_manage_tokens,
    parse_settings,
    require_operator,
    token_to_dict,
    update_team,
)
from genq.web import state
from genq.web.api import api_blueprint, query_choice, query_since, read_json

bp = api_blueprint("api_teams")


@bp.get("/teams")
def teams():
    """{"teams": [...]}: every team for the operator, the caller's own for anyone else."""
    with state().db.session() as s:
        return jsonify({"teams": list_teams(s, state().settings.usage_half_life_hours, g.caller.scope)})


@bp.post("/teams")
def add_team():
    """Create a team {"name", "weight", "max_gpus", "gpu_hours_per_week"} (the operator only)."""
    require_operator(g.caller, "create teams")
    body = read_json()
    settings = parse_settings(body)
    with state().db.session() as s:
        team = create_team(s, body.get("name"), settings)
        out = list_teams(s, state().settings.usage_half_life_hours, team.id)[0]
    return jsonify(out), 201


@bp.route("/teams/<name>", methods=["PATCH", "PUT"])
def change_team(name: str):
    """Change a team's weight or quotas (the operator only); a quota of null lifts it."""
    require_operator(g.caller, "change teams")
    body = read_json()
    if isinstance(body, dict) and "name" in body:
        raise InvalidInput(f"field 'name': team {quoted(name)} keeps its name (a new name is a new team)")
    settings = parse_settings(body)
    with state().db.session() as s:
        team = update_team(s, name, settings)
        return jsonify(list_teams(s, state().settings.usage_half_life_hours, team.id)[0])


@bp.get("/tokens")
def tokens():
    """{"tokens": [...]}: a team admin's own team's, or every team's (?team=) for the operator; never secrets."""
    team = request.args.get("team") or (None if g.caller.is_operator else g.caller.team)
    may_manage_tokens(g.caller, team)  # another team's: 403, as for any of its token calls
    with state().db.session() as s:
        rows = list_tokens(s, team)
        return jsonify({"tokens": [token_to_dict(r) for r in rows]})


@bp.post("/tokens")
def add_token():
    """Create a token {"team", "role"}; the answer holds the secret, once."""
    body = read_json()
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    if unknown := sorted(set(body) - {"team", "role"}):
        raise InvalidInput(f"unknown field {quoted(unknown[0])}: a token takes 'team' and 'role'")
    team = body.get("team", g.caller.team)
    if not isinstance(team, str):
        raise InvalidInput("field 'team' must be a team name")
    role = body.get("role", "member")
    may_create_token(g.caller, team, role)  # a team admin: its own team's, and never a worker token
    with state().db.session() as s:
        get_team(s, team)  # no team is created by a token request
        secret = create_token(s, team, role)
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
        return jsonify({**token_to_dict(row), "token": secret}), 201


@bp.route("/tokens/<id:token_id>/revoke", methods=["POST"])
@bp.delete("/tokens/<id:token_id>")
def revoke(token_id: int):
    """Revoke a token: refused at once from then on (a team admin: its own team's only)."""
    with state().db.session() as s:
        row = s.get(ApiToken, token_id)
        if row is None or not (g.caller.is_operator or row.team_id == g.caller.team_id):
            raise NotFound(f"token {token_id} not found")
        may_manage_tokens(g.caller, row.team.name)
        return jsonify(token_to_dict(revoke_token(s, token_id)))


@bp.get("/usage")
def usage():
    """GPU-seconds per team, job and day since ?since= (a date; default 30 days ago); ?team=; ?format=csv."""
    since = query_since()
    fmt = query_choice("format", ("json", "csv")) or "json"
    with state().db.session() as s:
        report = usage_report(s, visible_team(s, g.caller, request.args.get("team")), since)
    if fmt == "csv":
        return Response(usage_csv(report), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=usage.csv"})
    report.pop("rows")
    return jsonify(report)

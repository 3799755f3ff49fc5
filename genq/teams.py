"""Teams and their scheduling settings (weight, quotas), and who may manage teams and tokens: the one
implementation behind `genq team`, `genq token`, /api/v1/teams and /api/v1/tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from genq.api_tokens import OPERATOR_TEAM, check_new_team_name, quoted, same_team, team_named
from genq.db.models import ApiToken, Job, Team, iso, utcnow
from genq.errors import Forbidden, InvalidInput, NotFound
from genq.jobs.schemas import refused
from genq.jobs.usage import decayed_usage, week_gpu_hours

# A weight or a weekly quota outside these is a typo (a weight of 1e-320 would leave the team no share at all).
MIN_WEIGHT, MAX_WEIGHT = 0.001, 1000.0
MAX_GPUS_QUOTA = 100_000
MIN_GPU_HOURS, MAX_GPU_HOURS = 0.01, 10_000_000.0


class TeamSettings(BaseModel):
    """What an operator sets on a team; a quota of null lifts it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    weight: float | None = Field(None, ge=MIN_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False,
                                 description="its share of a busy pool, relative to the other busy teams")
    max_gpus: int | None = Field(None, ge=1, le=MAX_GPUS_QUOTA, description="devices (CPU slots) held at once")
    gpu_hours_per_week: float | None = Field(None, ge=MIN_GPU_HOURS, le=MAX_GPU_HOURS, allow_inf_nan=False,
                                             description="GPU-hours over the last 7 days")


def parse_settings(body: object, allowed: tuple[str, ...] = ("weight", "max_gpus", "gpu_hours_per_week")
                   ) -> dict[str, Any]:
    """The settings `body` gives (only those present), validated: 422 naming each bad one."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    fields = {k: v for k, v in body.items() if k != "name"}
    if unknown := sorted(set(fields) - set(TeamSettings.model_fields)):
        raise InvalidInput(f"invalid team settings: unknown field {quoted(unknown[0])}")
    for key, least, most in (("weight", MIN_WEIGHT, MAX_WEIGHT), ("gpu_hours_per_week", MIN_GPU_HOURS, MAX_GPU_HOURS)):
        value = fields.get(key)
        if isinstance(value, int) and not isinstance(value, bool):  # strict mode takes 2 for a float only as 2.0
            if abs(value) > most:  # and float() of an int past a float's range would raise OverflowError
                raise InvalidInput(f"invalid team settings: field '{key}': must be from {least:g} to {most:g}")
            fields[key] = float(value)
    try:
        parsed = TeamSettings.model_validate(fields)
    except ValidationError as exc:
        raise refused(exc, "team settings") from None
    if "weight" in fields and fields["weight"] is None:
        raise InvalidInput("invalid team settings: field 'weight': must be a number above 0, not null")
    return {k: getattr(parsed, k) for k in fields if k in allowed}


def create_team(session: Session, name: object, settings: dict[str, Any]) -> Team:
    """A new team; InvalidInput for a bad name, Conflict if the name is taken (ignoring case)."""
    name = check_new_team_name(session, name)
    team = Team(name=name, **{"weight": 1.0, **settings})
    session.add(team)
    session.flush()
    return team


def get_team(session: Session, name: str) -> Team:
    """The team called `name` (ignoring case, as names are compared), or NotFound."""
    team = team_named(session, name)
    if team is None:
        raise NotFound(f"team {quoted(name)} not found (see `genq team list`)")
    return team


def update_team(session: Session, name: str, settings: dict[str, Any]) -> Team:
    """Change a team's weight and quotas."""
    team = get_team(session, name)
    for key, value in settings.items():
        setattr(team, key, value)
    session.flush()
    return team


def team_to_dict(team: Team, now: datetime, half_life_hours: float, held: int, week_hours: float) -> dict[str, Any]:
    """The JSON form of a team, with its devices held now and its usage."""
    return {
        "name": team.name,
        "weight": team.weight,
        "max_gpus": team.max_gpus,
        "gpu_hours_per_week": team.gpu_hours_per_week,
        "gpus_in_use": held,
        "gpu_hours_this_week": round(week_hours, 4),
        "decayed_usage_gpu_seconds": round(decayed_usage(team, now, half_life_hours), 3),
        "created_at": iso(team.created_at),
    }


def list_teams(session: Session, half_life_hours: float, only: int | None = None) -> list[dict[str, Any]]:
    """Every team (or team `only`) with its settings, devices in use and usage."""
    now = utcnow()
    holding = or_(Job.status == "running", (Job.status == "queued") & Job.dispatched_at.is_not(None))
    held = dict(session.execute(select(Job.team_id, func.sum(Job.gpus)).where(holding).group_by(Job.team_id)).all())
    week = week_gpu_hours(session, now.date())
    query = select(Team).order_by(Team.name)
    if only is not None:
        query = query.where(Team.id == only)
    return [team_to_dict(t, now, half_life_hours, int(held.get(t.id) or 0), week.get(t.id, 0.0))
            for t in session.scalars(query)]


def token_to_dict(row: ApiToken) -> dict[str, Any]:
    """A token as listed: never its secret."""
    return {"id": row.id, "team": row.team.name, "role": row.role, "prefix": row.prefix,
            "created_at": iso(row.created_at), "last_used_at": iso(row.last_used_at),
            "revoked_at": iso(row.revoked_at)}


def may_manage_tokens(caller: Any, team: str) -> None:
    """Forbidden unless `caller` (a web Principal) is the operator or an admin of `team`."""
    if caller.is_operator:
        return
    if caller.role != "admin":
        raise Forbidden(f"only a team admin manages tokens; this token is a {caller.role} of team {caller.team}")
    if not same_team(team, caller.team):
        raise Forbidden(f"an admin of team {caller.team} manages only that team's tokens, not those of team "
                        f"{quoted(team)}")


def may_create_token(caller: Any, team: str, role: object) -> None:
    """Forbidden unless `caller` may create a `role` token for `team`: a team's admin for its own team, except
    `worker` tokens, which only the operator creates (a worker token reads and writes every team's artifacts in
    the store, /api/v1/store)."""
    may_manage_tokens(caller, team)
    if role == "worker" and not caller.is_operator:
        raise Forbidden("only the operator (an admin token of team "
                        f"'{OPERATOR_TEAM}') may create worker tokens: a worker token reads and writes every "
                        "team's artifacts; ask the operator (`genq token create --team admin --role worker`)")


def require_operator(caller: Any, action: str) -> None:
    """Forbidden unless `caller` is the operator (the admin team's admin)."""
    if not caller.is_operator:
        raise Forbidden(f"only the operator (an admin token of team '{OPERATOR_TEAM}') may {action}")

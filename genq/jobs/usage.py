"""Usage: device-seconds (GPU-seconds; CPU slot-seconds on CPU workers) per job, per team and per day.

The scheduler counts it every tick (`accrue`): each running job's devices x the seconds since it was last
counted go to the job, to its team's decayed usage (fair share) and to the job's row for the day (/usage and
the weekly quota). A job that left `running` between two ticks is counted up to its finish time; one that went
back to the queue loses at most one tick.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from genq.db.models import Job, Team, UsageDay
from genq.jobs.pool import decay

# accrue's statements, built once on the tables: the scheduler runs them every tick for every running job, and an
# ORM statement built at each call cost more than the database took to run it.
_J, _U, _T = Job.__table__.c, UsageDay.__table__.c, Team.__table__.c
_ACCRUING = select(_J.id, _J.team_id, _J.gpus, _J.status, _J.accrued_until, _J.finished_at).where(
    _J.accrued_until.is_not(None))
# conditional on the value read: a second scheduler counting at the same time adds nothing twice
_COUNT_JOB = (update(Job.__table__).where(_J.id == bindparam("b_job"), _J.accrued_until == bindparam("b_since"))
              .values(accrued_until=bindparam("b_until"), gpu_seconds=_J.gpu_seconds + bindparam("b_seconds")))
_COUNT_DAY = (update(UsageDay.__table__).where(_U.job_id == bindparam("b_job"), _U.day == bindparam("b_day"))
              .values(gpu_seconds=_U.gpu_seconds + bindparam("b_seconds")))
_NEW_DAY = insert(UsageDay.__table__)
_TEAMS = select(_T.id, _T.usage, _T.usage_at).where(_T.id.in_(bindparam("b_teams", expanding=True))).with_for_update()
_SET_TEAM = update(Team.__table__).where(_T.id == bindparam("b_team")).values(usage=bindparam("b_usage"),
                                                                               usage_at=bindparam("b_at"))


def accrue(session: Session, now: datetime, half_life_hours: float) -> float:
    """Count the device-seconds used since the last call; returns how many were added."""
    per_team: dict[int, float] = {}
    for job_id, team_id, gpus, status, since, finished in session.execute(_ACCRUING).all():
        end = now if status == "running" else min(finished or since, now)
        seconds = max((end - since).total_seconds(), 0.0) * gpus
        until = now if status == "running" else None
        won = session.execute(_COUNT_JOB, {"b_job": job_id, "b_since": since, "b_until": until,
                                           "b_seconds": seconds}).rowcount
        if not won or seconds <= 0:
            continue
        per_team[team_id] = per_team.get(team_id, 0.0) + seconds
        day = end.date()
        if not session.execute(_COUNT_DAY, {"b_job": job_id, "b_day": day, "b_seconds": seconds}).rowcount:
            session.execute(_NEW_DAY, {"team_id": team_id, "job_id": job_id, "day": day, "gpu_seconds": seconds})
    if per_team:
        teams = session.execute(_TEAMS, {"b_teams": list(per_team)}).all()
        session.execute(_SET_TEAM, [{"b_team": team.id, "b_usage": decayed_usage(team, now, half_life_hours)
                                     + per_team[team.id], "b_at": now} for team in teams])
    return sum(per_team.values())


def decayed_usage(team: Team | Row, now: datetime, half_life_hours: float) -> float:
    """The team's fair-share usage faded to `now`."""
    if team.usage_at is None:
        return team.usage or 0.0
    return decay(team.usage or 0.0, (now - team.usage_at).total_seconds(), half_life_hours)


def week_gpu_hours(session: Session, today: date, team_id: int | None = None) -> dict[int, float]:
    """GPU-hours each team (or team `team_id`) used over the last 7 days (today included)."""
    query = select(UsageDay.team_id, func.sum(UsageDay.gpu_seconds)).where(UsageDay.day > today - timedelta(days=7))
    if team_id is not None:
        query = query.where(UsageDay.team_id == team_id)
    rows = session.execute(query.group_by(UsageDay.team_id))
    return {team_id: float(total) / 3600.0 for team_id, total in rows}


def usage_report(session: Session, team_id: int | None, since: date) -> dict[str, Any]:
    """GPU-seconds per team, per job and per day since `since` (one team's, or all with None)."""
    query = (select(UsageDay.day, Team.name, UsageDay.job_id, UsageDay.gpu_seconds)
             .join(Team, Team.id == UsageDay.team_id).where(UsageDay.day >= since))
    if team_id is not None:
        query = query.where(UsageDay.team_id == team_id)
    rows = session.execute(query.order_by(UsageDay.day, Team.name, UsageDay.job_id)).all()
    teams: dict[str, float] = {}
    jobs: dict[int, dict[str, Any]] = {}
    days: dict[tuple[str, str], float] = {}
    for day, team, job_id, seconds in rows:
        teams[team] = teams.get(team, 0.0) + seconds
        jobs.setdefault(job_id, {"job": job_id, "team": team, "gpu_seconds": 0.0})["gpu_seconds"] += seconds
        days[(day.isoformat(), team)] = days.get((day.isoformat(), team), 0.0) + seconds
    return {
        "since": since.isoformat(),
        "teams": [{"team": t, "gpu_seconds": round(v, 3), "gpu_hours": round(v / 3600, 4)}
                  for t, v in sorted(teams.items())],
        "jobs": [{**j, "gpu_seconds": round(j["gpu_seconds"], 3)} for j in jobs.values()],
        "days": [{"day": d, "team": t, "gpu_seconds": round(v, 3)} for (d, t), v in days.items()],
        "rows": [(day.isoformat(), team, job_id, round(seconds, 3)) for day, team, job_id, seconds in rows],
    }


def usage_csv(report: dict[str, Any]) -> str:
    """The report's rows as CSV: day, team, job, gpu_seconds."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", "team", "job", "gpu_seconds"])
    writer.writerows(report["rows"])
    return out.getvalue()

"""`genq team ...` and `genq token ...`: teams' weights and quotas, and API tokens, set by the operator directly on
the configured database (no server needed)."""

from __future__ import annotations

import click

from genq.config import Settings


def operator_session():
    """A session on the configured database, migrated first: the operator's commands act on it directly."""
    from genq.db import Database
    from genq.db.session import upgrade

    settings = Settings.from_env()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    return Database(settings.database_url).session()


# -- teams --------------------------------------------------------------------------------------------------------

@click.group("team")
def team() -> None:
    """Teams: their fair-share weight and quotas (on the configured database, as the operator)."""


def _team_settings(weight, max_gpus, gpu_hours_per_week) -> dict:
    """The options given, as the API's body; 'none' lifts a quota."""
    body: dict = {}
    for key, value in (("weight", weight), ("max_gpus", max_gpus), ("gpu_hours_per_week", gpu_hours_per_week)):
        if value is None:
            continue
        option = f"--{key.replace('_', '-')}"
        if value.strip().lower() == "none":
            if key == "weight":  # every team has a share: a quota may be lifted, a weight not
                raise click.BadParameter(f"{option} must be a number above 0, got '{value}'")
            body[key] = None
            continue
        try:
            number = float(value)
        except ValueError:
            either = "a number above 0" if key == "weight" else "a number or 'none'"
            raise click.BadParameter(f"{option} must be {either}, got '{value}'") from None
        body[key] = int(number) if key == "max_gpus" and number.is_integer() else number
    return body


def _team_options(command):
    for option in reversed([
        click.option("--weight", help="share of a busy pool, relative to the other busy teams (default 1)"),
        click.option("--max-gpus", help="devices held at once ('none': no limit)"),
        click.option("--gpu-hours-per-week", help="GPU-hours over the last 7 days ('none': no limit)"),
    ]):
        command = option(command)
    return command


def _write_team(write, name: str, options: dict) -> None:
    """Apply `write(session, name, settings)` (create_team or update_team) and print the team's row."""
    from genq.teams import list_teams, parse_settings

    half_life = Settings.from_env().usage_half_life_hours
    with operator_session() as s:
        row = write(s, name, parse_settings(_team_settings(**options)))
        _echo_team(list_teams(s, half_life, row.id)[0])


def _echo_team(row: dict) -> None:
    click.echo(f"{row['name']}\tweight {row['weight']:g}\tmax_gpus {row['max_gpus'] or '-'}\t"
               f"gpu_hours_per_week {row['gpu_hours_per_week'] or '-'}\tin use {row['gpus_in_use']}\t"
               f"{_hours(row['gpu_hours_this_week'])} GPU-h this week")


def _hours(hours: float) -> str:
    """GPU-hours to two decimals, or two significant digits below 0.1: 0.0088 does not read as a quota of 0.01."""
    return f"{hours:.2f}" if hours >= 0.1 or hours == 0 else f"{hours:.2g}"


@team.command("create")
@click.argument("name")
@_team_options
def team_create(name: str, **options) -> None:
    """Create team NAME."""
    from genq.teams import create_team

    _write_team(create_team, name, options)


@team.command("set")
@click.argument("name")
@_team_options
def team_set(name: str, **options) -> None:
    """Change team NAME's weight or quotas."""
    from genq.teams import update_team

    _write_team(update_team, name, options)


@team.command("list")
def team_list() -> None:
    """List teams with weights, quotas and usage."""
    from genq.teams import list_teams

    half_life = Settings.from_env().usage_half_life_hours
    with operator_session() as s:
        for row in list_teams(s, half_life):
            _echo_team(row)


# -- tokens -------------------------------------------------------------------------------------------------------

@click.group("token")
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--team", required=True)
@click.option("--role", type=click.Choice(["admin", "member", "viewer", "worker"]), default="member", show_default=True)
def token_create(team: str, role: str) -> None:
    """Print a new API token for TEAM (created if no team has that name: said on stderr, so a typo shows)."""
    from genq.api_tokens import create_token, team_named

    with operator_session() as s:
        new = team_named(s, team) is None
        click.echo(create_token(s, team=team, role=role))
    if new:
        click.echo(f"created team '{team}': no team had that name (`genq team list` shows them)", err=True)


@token.command("list")
@click.option("--team", help="only this team's tokens")
def token_list(team: str | None) -> None:
    """List tokens: id, team, role, prefix, created, revoked, last used (never the secret)."""
    from genq.api_tokens import list_tokens
    from genq.db.models import iso

    with operator_session() as s:
        for row in list_tokens(s, team):
            click.echo(f"{row.id}\t{row.team.name}\t{row.role}\t{row.prefix}...\t{iso(row.created_at)}\t"
                       f"{'revoked ' + iso(row.revoked_at) if row.revoked_at else 'live'}\t"
                       f"last used {iso(row.last_used_at) or 'never'}")


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(1, 2**31 - 1))  # the ids a row can have (genq.jobs.schemas.MAX_ID)
def token_revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID (see `genq token list`): requests with it are refused at once."""
    from genq.api_tokens import revoke_token

    with operator_session() as s:
        row = revoke_token(s, token_id)
        click.echo(f"revoked token {row.id} ({row.prefix}..., team {row.team.name}, role {row.role})")

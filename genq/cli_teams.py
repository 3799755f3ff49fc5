"""`genq team create|set|list`: teams' fair-share weights and quotas, set on the configured database by the
operator (as `genq token` does)."""

from __future__ import annotations

import click

from genq.config import Settings


@click.group("team")
def team() -> None:
    """Teams: their fair-share weight and quotas (on the configured database, as the operator)."""


def _team_settings(weight, max_gpus, gpu_hours_per_week) -> dict:
    """The options given, as the API's body; 'none' lifts a quota."""
    body: dict = {}
    for key, value in (("weight", weight), ("max_gpus", max_gpus), ("gpu_hours_per_week", gpu_hours_per_week)):
        if value is None:
            continue
        if value.strip().lower() == "none":
            body[key] = None
            continue
        try:
            number = float(value)
        except ValueError:
            raise click.BadParameter(f"--{key.replace('_', '-')} must be a number or 'none', got '{value}'") from None
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


def _echo_team(row: dict) -> None:
    click.echo(f"{row['name']}\tweight {row['weight']:g}\tmax_gpus {row['max_gpus'] or '-'}\t"
               f"gpu_hours_per_week {row['gpu_hours_per_week'] or '-'}\tin use {row['gpus_in_use']}\t"
               f"{row['gpu_hours_this_week']:.2f} GPU-h this week")


@team.command("create")
@click.argument("name")
@_team_options
def team_create(name, weight, max_gpus, gpu_hours_per_week) -> None:
    """Create team NAME."""
    from genq.teams import create_team, list_teams, parse_settings

    settings = Settings.from_env()
    from genq.cli import _operator_session

    with _operator_session() as s:
        created = create_team(s, name, parse_settings(_team_settings(weight, max_gpus, gpu_hours_per_week)))
        _echo_team(list_teams(s, settings.usage_half_life_hours, created.id)[0])


@team.command("set")
@click.argument("name")
@_team_options
def team_set(name, weight, max_gpus, gpu_hours_per_week) -> None:
    """Change team NAME's weight or quotas."""
    from genq.teams import list_teams, parse_settings, update_team

    settings = Settings.from_env()
    from genq.cli import _operator_session

    with _operator_session() as s:
        changed = update_team(s, name, parse_settings(_team_settings(weight, max_gpus, gpu_hours_per_week)))
        _echo_team(list_teams(s, settings.usage_half_life_hours, changed.id)[0])


@team.command("list")
def team_list() -> None:
    """List teams with weights, quotas and usage."""
    from genq.teams import list_teams

    settings = Settings.from_env()
    from genq.cli import _operator_session

    with _operator_session() as s:
        for row in list_teams(s, settings.usage_half_life_hours):
            _echo_team(row)

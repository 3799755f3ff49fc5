"""`genq dataset`: upload, list and delete datasets through the HTTP API (GENQ_URL, GENQ_TOKEN), as the
dashboard's Datasets page does."""

from __future__ import annotations

from pathlib import Path

import click

from genq.cli_jobs import connect
from genq.datasets import KINDS

DATASETS_ROW = "{id:>6}  {team:10}  {kind:8}  {size:>10}  {created:20}  {name}"


@click.group()
def dataset() -> None:
    """Datasets: upload, list, delete."""


@dataset.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="what lists show (default: the file's name)")
@click.option("--kind", type=click.Choice(KINDS), help="what the file holds (default: what the server reads it as)")
@click.option("--team", help="the operator's choice; the token's team by default")
def dataset_upload(path: Path, name: str | None, kind: str | None, team: str | None) -> None:
    """Upload a file as a dataset; prints its id."""
    out = connect().upload(path, name=name, team=team, kind=kind)
    click.echo(f"uploaded {path} as dataset {out['id']} ({out['kind']})", err=True)
    click.echo(out["id"])


@dataset.command("list")
@click.option("--kind", type=click.Choice(KINDS), help="only datasets of this kind")
def dataset_list(kind: str | None) -> None:
    """The datasets the token's team may use (the operator: every team's), newest first."""
    rows = connect().datasets(kind)
    click.echo(DATASETS_ROW.format(id="ID", team="TEAM", kind="KIND", size="BYTES", created="CREATED", name="NAME"))
    for row in rows:
        click.echo(DATASETS_ROW.format(id=row["id"], team=row["team"][:10], kind=row["kind"], size=row["size_bytes"],
                                       created=row["created_at"][:19], name=row["name"]))


@dataset.command("delete")
@click.argument("dataset_id", type=click.IntRange(min=1))
def dataset_delete(dataset_id: int) -> None:
    """Delete a dataset that no job uses (refused, naming the jobs, while one does)."""
    out = connect().delete_dataset(dataset_id)
    click.echo(f"deleted dataset {out['id']} ({out['name']})")

"""The client commands of `genq`: submit and follow jobs through the HTTP API (GENQ_URL, GENQ_TOKEN)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

import click

from genq.config import Settings
from genq.core import strict_json
from genq.errors import GenqError


def connect():
    """A client of the API this environment names: GENQ_URL (else GENQ_HOST and GENQ_PORT) and GENQ_TOKEN (else
    the admin token in GENQ_HOME)."""
    from genq.client import ApiError, Client

    settings = Settings.from_env()
    token = os.environ.get("GENQ_TOKEN")
    if token is not None and not token.strip():  # a script's variable left empty must not act as the operator
        raise ApiError("GENQ_TOKEN is set but empty: give it a token, or unset it to use the admin token of "
                       "GENQ_HOME")
    admin = settings.home / "admin-token"
    if token is None and admin.exists():
        token = admin.read_text().strip()
    if not token:
        raise ApiError(f"no token: set GENQ_TOKEN, or run where GENQ_HOME holds the admin-token `genq up` writes "
                       f"(there is none in {settings.home})")
    return Client(os.environ.get("GENQ_URL", f"http://{settings.host}:{settings.port}"), token.strip())


TIMED_OUT = 124  # genq wait's exit status when --timeout runs out, as timeout(1)'s: a script tells it from failed (1)
INTERRUPTED = 130  # genq wait's and logs -f's exit status on Ctrl-C (128 + SIGINT, as a shell's): not 1, "failed"
JOB_ID = click.IntRange(min=1)  # ids start at 1: -1 is named here, not sent


def _parse_params(pairs: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs, the last of a KEY given twice counting (a script overrides its base params); a VALUE that
    reads as JSON (3, 1e-3, true) keeps its type, else it is a string."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--param")
        try:
            parsed = strict_json.loads(value)  # NaN and Infinity stay strings: the server names them
        except ValueError:
            parsed = value
        try:
            json.dumps(parsed, allow_nan=False)
        except ValueError:  # 1e400 reads as inf, which no JSON request can carry
            raise click.BadParameter(f"'{pair}': {value} is not a finite number", param_hint="--param") from None
        params[key.strip()] = parsed
    return params


@click.group()
def submit() -> None:
    """Submit a job; prints its id."""


@submit.command("train")
@click.option("--model", required=True)
@click.option("--dataset", required=True, help="a local file to upload, a dataset id, or a built-in name")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE")
@click.option("--team")
@click.option("--priority", default=0, show_default=True)
@click.option("--gpus", default=1, show_default=True)
def submit_train(model, dataset, params, team, priority, gpus) -> None:
    """Submit a training job."""
    payload = {"type": "train", "model": model, "params": _parse_params(params), "priority": priority,
               "gpus": gpus}
    if team:
        payload["team"] = team
    path = Path(dataset)
    if path.is_dir():
        raise click.BadParameter(f"'{dataset}' is a directory: give a file (a text file, or a zip of images or "
                                 "WAV files), a dataset id or a built-in name", param_hint="--dataset")
    client = connect()  # the arguments first: a bad one is said whatever the environment
    if path.is_file():
        click.echo(_submit_uploading(client, payload, path))
    else:
        payload["dataset"] = int(dataset) if dataset.isdigit() else dataset
        click.echo(client.submit(payload)["id"])


def _submit_uploading(client, payload: dict, path: Path, kind: str | None = None) -> int:
    """Submit `payload` with the file at `path` uploaded as its dataset (of `kind`, else as the server reads it);
    the job's id. A refused submission deletes that upload again: nothing half-created."""
    uploaded = client.upload(path, team=payload.get("team"), kind=kind)  # a job's dataset is its team's
    payload["dataset"] = uploaded["id"]
    try:
        job_id = client.submit(payload)["id"]
    except GenqError as refused:
        deleted = True
        try:
            client.delete_dataset(uploaded["id"])
        except GenqError as exc:
            deleted = False
            click.echo(f"the upload stays as dataset {uploaded['id']}: deleting it failed ({exc.message})", err=True)
        # The server names the dataset by the id the user never saw (and that is gone): name the file instead.
        named = f"{path} (uploaded as dataset {uploaded['id']}{', now deleted' if deleted else ''})"
        refused.message = re.sub(rf"\bdataset {uploaded['id']}\b", lambda _: named, refused.message)
        refused.args = (refused.message, *refused.args[1:])
        raise
    click.echo(f"uploaded {path} as dataset {uploaded['id']} ({uploaded['kind']})", err=True)
    return job_id


@submit.command("generate")
@click.option("--from", "source", type=JOB_ID, help="a finished training job")
@click.option("--base", help="instead of --from: a model of the models folder (hf-causal-lm), sampled as saved")
@click.option("--prompt", "prompts", multiple=True)
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a CSV or JSONL file of prompts")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE")
def submit_generate(source, base, prompts, prompts_file, params) -> None:
    """Submit a generation job: of the prompts given, or unconditional samples (num_samples) without any."""
    if prompts and prompts_file:
        raise click.UsageError("give --prompt or --prompts, not both")
    if (source is None) == (base is None):
        raise click.UsageError("give --from JOB_ID or --base NAME (one of them)")
    payload = {"type": "generate", "params": _parse_params(params)}
    client = connect()
    payload.update({"source_job": source} if source is not None else {"base": base})
    if prompts_file:
        click.echo(_submit_uploading(client, payload, prompts_file, kind="prompts"))
    else:
        payload.update({"prompts": list(prompts)} if prompts else {})
        click.echo(client.submit(payload)["id"])


# One format for the header and the rows of `genq jobs`: each column starts under its title.
JOBS_ROW = "{id:>6}  {team:10}  {type:8}  {model:12}  {status:10}  {progress:>8}  {position:>4}  {eta:20}  {why}"


@click.command()
@click.option("--status")
@click.option("--type", "type_")
@click.option("--team")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="show at most this many jobs")
@click.option("--before", type=JOB_ID, metavar="ID", help="only jobs of ids below ID: the page after a listing")
def jobs(status, type_, team, limit, before) -> None:
    """List jobs, newest first: the newest 50 unless --limit says otherwise (stderr says when more exist)."""
    rows, following = connect().jobs_and_next(limit, before, status=status, type=type_, team=team)
    click.echo(JOBS_ROW.format(id="ID", team="TEAM", type="TYPE", model="MODEL", status="STATUS", progress="PROGRESS",
                               position="POS", eta="ETA", why="CREATED / WHY IT WAITS"))
    for job in rows:
        position = "" if job.get("queue_position") is None else job["queue_position"] + 1
        click.echo(JOBS_ROW.format(id=job["id"], team=job["team"][:10], type=job["type"], model=job["model"] or "",
                                   status=job["status"], progress=f"{job['progress'] * 100:.0f}%", position=position,
                                   eta=(job.get("eta") or "")[:19], why=job.get("wait_reason") or job["created_at"]))
    if following is not None:
        filters = "".join(f" --{name} {shlex.quote(value)}" for name, value
                          in (("status", status), ("type", type_), ("team", team)) if value)
        click.echo(f"... more jobs: genq jobs{filters} --limit {max(limit * 4, 200)} "
                   f"(or --before {following} for the next ones)", err=True)


@click.command()
@click.argument("job_id", type=JOB_ID)
def show(job_id: int) -> None:
    """Show a job, its latest metrics and its outputs."""
    client = connect()
    job = client.job(job_id)
    click.echo(json.dumps(job, indent=2, ensure_ascii=False))  # an error in any language reads as written
    series = client.metrics(job_id, points=1)
    if series:
        click.echo("metrics (latest):")
        for name, points in sorted(series.items()):
            click.echo(f"  {name}: {points[-1][1]:.4g} at step {points[-1][0]}")
    for output in client.outputs(job_id) if job["status"] == "succeeded" else []:
        click.echo(f"--- output {output['index']} ({output['kind']}) prompt={output.get('prompt')!r}")
        click.echo(output.get("text") or output.get("url") or f"error: {output.get('error')}")


def _interrupted(job_id: int, status: str | None, again: str) -> NoReturn:
    """Ctrl-C while following a job: a line saying where the job stands, then exit status 130 (128 + SIGINT, as a
    shell gives), so a script tells it from the job's failure (1); the job itself goes on."""
    where = f"job {job_id} is still {status}" if status else f"stopped following job {job_id}"
    click.echo(f"interrupted: {where} ({again})", err=True)
    sys.exit(INTERRUPTED)


@click.command()
@click.argument("job_id", type=JOB_ID)
@click.option("-f", "--follow", is_flag=True,
              help=f"keep printing until the job ends (Ctrl-C stops following: exit status {INTERRUPTED})")
def logs(job_id: int, follow: bool) -> None:
    """Print a job's log."""
    from genq.client import FINISHED

    client = connect()
    after = None
    status = None

    def show(lines: list[dict]) -> None:
        nonlocal after
        for line in lines:
            if after is None or line["id"] > after:  # a line the stream and a read both brought shows once
                click.echo(f"{line['time']}  {line['message']}")
                after = line["id"]

    try:
        if not follow:
            show(client.logs(job_id))
            return
        # Each status event (the first, a stream's first, a change, each poll without a stream, the final one, with
        # which the last lines may have landed) reads the lines since the last shown; a stream's log events bring
        # the lines between.
        for name, data in client.watch(job_id):
            if name == "status":
                status = data["status"]
                show(client.logs(job_id, after))
            elif name == "log":
                show(data["lines"])
    except KeyboardInterrupt:
        if not follow:
            click.echo("interrupted", err=True)
            sys.exit(INTERRUPTED)
        _interrupted(job_id, status if status not in FINISHED else None, f"genq logs -f {job_id} to follow it again")


def _timeout(ctx, param, value: float) -> float:
    if not math.isfinite(value) or value < 0:  # -5 would time out at once, nan never
        raise click.BadParameter(f"{value:g} is not a number of seconds of 0 (never) or more")
    return value


@click.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--timeout", default=0.0, callback=_timeout,
              help=f"give up after this many seconds (0: never): exit status {TIMED_OUT}")
def wait(job_id: int, timeout: float) -> None:
    """Show a progress bar until the job ends; exit status 0 only if it succeeded (1 if it did not, 124 if
    --timeout ran out first, 130 if interrupted by Ctrl-C: the job goes on)."""
    from tqdm import tqdm

    from genq.client import FINISHED

    client = connect()
    job = None
    try:
        # disable=None: a bar on a terminal, nothing when piped; the outcome is printed either way. tqdm writes the
        # postfix after ", ": "40%, running step 700". The job's event stream moves it (polled without one).
        with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}%{postfix}", disable=None) as bar:
            try:
                for job in client.follow(job_id, time.monotonic() + timeout if timeout else None):
                    bar.n = round(job["progress"] * 100, 1)
                    bar.set_postfix_str(f"{job['status']} step {job['step']}")
            except TimeoutError:
                bar.close()
                click.echo(f"Error: job {job_id} still {job['status']} after {timeout:.0f} s", err=True)
                sys.exit(TIMED_OUT)
    except KeyboardInterrupt:
        status = job["status"] if job and job["status"] not in FINISHED else None
        _interrupted(job_id, status, f"genq wait {job_id} to wait again")
    click.echo(f"job {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
               err=job["status"] != "succeeded")
    if job["status"] != "succeeded":
        sys.exit(1)


@click.command()
@click.argument("job_id", type=JOB_ID)
def cancel(job_id: int) -> None:
    """Cancel a job (a training job saves a checkpoint first)."""
    connect().cancel(job_id)
    click.echo(f"cancel requested for job {job_id}")


@click.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--all-rows", is_flag=True, help="every row again, not only the failed or missing ones")
def retry(job_id: int, all_rows: bool) -> None:
    """Submit a generation job for the rows of finished job JOB_ID that failed or were never stored; prints its id."""
    click.echo(connect().retry(job_id, only_failed=not all_rows)["id"])


COMMANDS = [submit, jobs, show, logs, wait, cancel, retry]

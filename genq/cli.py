"""The `genq` command: run the platform's parts, and submit and follow jobs through the HTTP API."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import click

from genq.cli_teams import team as team_group
from genq.config import Settings
from genq.errors import GenqError

FINISHED = ("succeeded", "failed", "cancelled")


def _logging() -> None:
    logging.basicConfig(level=os.environ.get("GENQ_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group()
def main() -> None:
    """genq: a self-hosted job platform for generative AI."""


# -- running the platform -------------------------------------------------------------------------------------

@main.command()
def up() -> None:
    """The whole platform on one machine: database, Redis, scheduler, workers and the dashboard."""
    from genq.client import wait_until_serving
    from genq.db.session import upgrade
    from genq.redis_server import EmbeddedRedis
    from genq.worker.devices import gpu_ids
    from genq.worker.process import Supervisor, genq_command, worker_children

    _logging()
    settings = Settings.from_env()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    token = _admin_token(settings)
    env = {"GENQ_HOME": str(settings.home), "GENQ_DATABASE_URL": settings.database_url,
           "GENQ_ARTIFACTS": settings.artifact_store or str(settings.artifacts)}
    redis = None
    if settings.redis_url is None:
        redis = EmbeddedRedis.start(data_dir=settings.home / "redis")
        env["GENQ_REDIS_URL"] = redis.url
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    try:
        supervisor.start("scheduler", genq_command("scheduler"), env)
        for name, argv, extra in worker_children(gpu_ids(), 1, "default"):
            supervisor.start(name, argv, {**env, **extra})
        web = supervisor.start("web", genq_command("web"), env)
        url = f"http://{settings.host}:{settings.port}"
        if not wait_until_serving(url, web):
            raise click.ClickException(f"the web server is not serving {url} (exit code {web.poll()}); "
                                       "its output is above")
        click.echo(f"\ngenq is up: {url}\nadmin token: {token}\n(also in {settings.home / 'admin-token'}; "
                   "Ctrl-C stops everything)\n")
        code = supervisor.wait()
    finally:
        supervisor.stop()
        if redis is not None:
            redis.stop()
    sys.exit(code)


def _admin_token(settings: Settings) -> str:
    """The admin token kept in GENQ_HOME/admin-token, created on first start."""
    from genq.api_tokens import authenticate, create_token
    from genq.db import Database

    path = settings.home / "admin-token"
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            if path.exists() and authenticate(s, path.read_text().strip()):
                return path.read_text().strip()
            token = create_token(s, team="admin", role="admin")
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        return token
    finally:
        db.dispose()


@main.command()
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes")
@click.option("--threads", default=16, show_default=True,
              help="threads per worker process (live event streams take at most half of them)")
def web(workers: int, threads: int) -> None:
    """Serve the dashboard and the HTTP API (gunicorn)."""
    import dataclasses

    from gunicorn.app.base import BaseApplication

    from genq.web import create_app

    settings = Settings.from_env()
    # An open event stream holds a thread until it ends: half the threads always serve ordinary requests.
    streams = min(settings.max_event_streams, threads // 2)
    settings = dataclasses.replace(settings, max_event_streams=streams)

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", os.environ.get("GENQ_ACCESS_LOG") or None)
            self.cfg.set("timeout", 120)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn 24+: one shared socket path per user
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("post_worker_init", _streams_end_with_the_worker)

        def load(self):
            return create_app({"SETTINGS": settings})

    Server().run()


def _streams_end_with_the_worker(worker) -> None:
    """gunicorn's post_worker_init: on SIGTERM the worker's event streams end too, so a graceful stop is not held
    up by open dashboards until its graceful timeout."""
    import signal

    graceful_stop = worker.handle_exit
    state = getattr(worker.wsgi, "extensions", {}).get("genq")  # None when the app failed to load

    def handle(signum, frame):
        if state is not None:
            state.relay.close()
        graceful_stop(signum, frame)
    signal.signal(signal.SIGTERM, handle)


@main.command()
@click.option("--interval", default=1.0, show_default=True, help="seconds between scheduling rounds")
def scheduler(interval: float) -> None:
    """Dispatch queued jobs to free worker slots and recover lost ones."""
    from genq.worker.scheduler import Scheduler

    _logging()
    settings = Settings.from_env()
    if not settings.redis_url:
        raise click.UsageError("set GENQ_REDIS_URL (the scheduler sends jobs through Redis)")
    Scheduler(settings, settings.redis_url).run(interval)


@main.group(invoke_without_command=True)
@click.option("--gpus", default="", help="comma-separated GPU ids: one worker process per GPU")
@click.option("--pool", default="default", show_default=True, help="the pool this worker serves")
@click.option("--slots", default=1, show_default=True, help="CPU jobs run at once (one process each)")
@click.option("--name", default="", hidden=True)
@click.pass_context
def worker(ctx: click.Context, gpus: str, pool: str, slots: int, name: str) -> None:
    """Run jobs: one Celery worker process per GPU, or SLOTS processes on the CPU (`genq worker drain HOST`:
    see its --help)."""
    if ctx.invoked_subcommand is not None:
        return
    from genq.worker.process import Supervisor, run_celery_worker, worker_children

    _logging()
    settings = Settings.from_env()
    if not settings.redis_url:
        raise click.UsageError("set GENQ_REDIS_URL (workers receive jobs through Redis)")
    _check_worker_host(settings)
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()]
    if not gpu_list and slots == 1:
        os.environ.setdefault("GENQ_POOL", pool)
        run_celery_worker(pool, name or "cpu0")
        return
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    for child, argv, env in worker_children(gpu_list, slots, pool):
        supervisor.start(child, argv, env)
    sys.exit(supervisor.wait())


def _check_worker_host(settings: Settings) -> None:
    """Refuse to start a worker whose genq the database does not match, saying which to upgrade."""
    import socket

    from genq.db import Database
    from genq.worker.hosts import VersionMismatch, check_schema

    database = Database(settings.database_url)
    try:
        with database.session() as s:
            check_schema(s, socket.gethostname())
    except VersionMismatch as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        database.dispose()


@worker.command("drain")
@click.argument("host")
@click.option("--timeout", type=float, default=None,
              help="seconds after which running jobs checkpoint and re-queue (default: let them finish)")
def worker_drain(host: str, timeout: float | None) -> None:
    """Stop HOST taking new jobs; its running jobs finish (or checkpoint and re-queue after --timeout)."""
    from genq.worker.hosts import drain_host

    try:
        with _operator_session() as s:
            drain_host(s, host, timeout)
    except GenqError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"host {host} is draining" + (f"; running jobs re-queue after {timeout:g} s" if timeout else ""))


@worker.command("undrain")
@click.argument("host")
def worker_undrain(host: str) -> None:
    """Let a drained HOST take jobs again."""
    from genq.worker.hosts import undrain_host

    try:
        with _operator_session() as s:
            undrain_host(s, host)
    except GenqError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"host {host} takes jobs again")


@main.group()
def db() -> None:
    """Database administration."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    from genq.db.session import upgrade

    settings = Settings.from_env()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    click.echo(f"database at {settings.database_url} is up to date")


@main.group()
def token() -> None:
    """API tokens."""


def _operator_session():
    """A session on the configured database, migrated first: the token commands act on it directly."""
    from genq.db import Database
    from genq.db.session import upgrade

    settings = Settings.from_env()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    return Database(settings.database_url).session()


@token.command("create")
@click.option("--team", required=True)
@click.option("--role", type=click.Choice(["admin", "member", "viewer", "worker"]), default="member", show_default=True)
def token_create(team: str, role: str) -> None:
    """Print a new API token for TEAM."""
    from genq.api_tokens import create_token

    with _operator_session() as s:
        click.echo(create_token(s, team=team, role=role))


@token.command("list")
@click.option("--team", help="only this team's tokens")
def token_list(team: str | None) -> None:
    """List tokens: id, team, role, prefix, created, revoked, last used (never the secret)."""
    from genq.api_tokens import list_tokens
    from genq.db.models import iso

    with _operator_session() as s:
        for row in list_tokens(s, team):
            click.echo(f"{row.id}\t{row.team.name}\t{row.role}\t{row.prefix}...\t{iso(row.created_at)}\t"
                       f"{'revoked ' + iso(row.revoked_at) if row.revoked_at else 'live'}\t"
                       f"last used {iso(row.last_used_at) or 'never'}")


@token.command("revoke")
@click.argument("token_id", type=int)
def token_revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID (see `genq token list`): requests with it are refused at once."""
    from genq.api_tokens import revoke_token

    with _operator_session() as s:
        row = revoke_token(s, token_id)
        click.echo(f"revoked token {row.id} ({row.prefix}..., team {row.team.name}, role {row.role})")


# -- client commands ------------------------------------------------------------------------------------------

def _client():
    from genq.client import Client

    settings = Settings.from_env()
    token = os.environ.get("GENQ_TOKEN")
    if not token and (settings.home / "admin-token").exists():
        token = (settings.home / "admin-token").read_text().strip()
    return Client(os.environ.get("GENQ_URL", f"http://{settings.host}:{settings.port}"), token)


def _parse_params(pairs: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs; a VALUE that reads as JSON (3, 1e-3, true) keeps its type, else it is a string."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--param")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


@main.group()
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
    client = _client()
    payload = {"type": "train", "model": model, "params": _parse_params(params), "priority": priority,
               "gpus": gpus}
    if team:
        payload["team"] = team
    path = Path(dataset)
    if path.is_file():
        uploaded = client.upload(path)
        click.echo(f"uploaded {path} as dataset {uploaded['id']} ({uploaded['kind']})", err=True)
        payload["dataset"] = uploaded["id"]
    else:
        payload["dataset"] = int(dataset) if dataset.isdigit() else dataset
    click.echo(client.submit(payload)["id"])


@submit.command("generate")
@click.option("--from", "source", type=int, help="a finished training job")
@click.option("--base", help="instead of --from: a model of the models folder (hf-causal-lm), sampled as saved")
@click.option("--prompt", "prompts", multiple=True)
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a CSV or JSONL file of prompts")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE")
def submit_generate(source, base, prompts, prompts_file, params) -> None:
    """Submit a generation job."""
    if prompts and prompts_file:
        raise click.UsageError("give --prompt or --prompts, not both")
    if (source is None) == (base is None):
        raise click.UsageError("give --from JOB_ID or --base NAME (one of them)")
    client = _client()
    payload = {"type": "generate", "params": _parse_params(params)}
    payload.update({"source_job": source} if source is not None else {"base": base})
    if prompts_file:
        payload["dataset"] = client.upload(prompts_file)["id"]
    else:
        payload["prompts"] = list(prompts)
    click.echo(client.submit(payload)["id"])


@main.command()
@click.option("--status")
@click.option("--type", "type_")
@click.option("--team")
def jobs(status, type_, team) -> None:
    """List jobs, newest first."""
    rows = _client().jobs(status=status, type=type_, team=team)
    click.echo(f"{'ID':>6}  {'TEAM':10}  {'TYPE':8}  {'MODEL':8}  {'STATUS':10}  {'PROGRESS':>8}  {'POS':>4}  "
               f"{'ETA':20}  CREATED / WHY IT WAITS")
    for job in rows:
        position = "" if job.get("queue_position") is None else job["queue_position"] + 1
        eta = (job.get("eta") or "")[:19]
        click.echo(f"{job['id']:>6}  {job['team'][:10]:10}  {job['type']:8}  {job['model']:8}  {job['status']:10}  "
                   f"{job['progress'] * 100:>7.0f}%  {position:>4}  {eta:20}  "
                   f"{job.get('wait_reason') or job['created_at']}")


@main.command()
@click.argument("job_id", type=int)
def show(job_id: int) -> None:
    """Show a job, its latest metrics and its outputs."""
    client = _client()
    job = client.job(job_id)
    click.echo(json.dumps(job, indent=2))
    series = client.metrics(job_id, points=1)
    if series:
        click.echo("metrics (latest):")
        for name, points in sorted(series.items()):
            click.echo(f"  {name}: {points[-1][1]:.4g} at step {points[-1][0]}")
    for output in client.outputs(job_id) if job["status"] == "succeeded" else []:
        click.echo(f"--- output {output['index']} ({output['kind']}) prompt={output.get('prompt')!r}")
        click.echo(output.get("text") or output.get("url"))


@main.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="keep printing until the job ends")
def logs(job_id: int, follow: bool) -> None:
    """Print a job's log."""
    client = _client()
    after = None
    while True:
        for line in client.logs(job_id, after):
            click.echo(f"{line['time']}  {line['message']}")
            after = line["id"]
        if not follow or client.job(job_id)["status"] in FINISHED:
            if follow:  # the last lines may have landed with the final status
                for line in client.logs(job_id, after):
                    click.echo(f"{line['time']}  {line['message']}")
            return
        time.sleep(1)


@main.command()
@click.argument("job_id", type=int)
@click.option("--timeout", default=0.0, help="give up after this many seconds (0: never)")
def wait(job_id: int, timeout: float) -> None:
    """Show a progress bar until the job ends; exit status 0 only if it succeeded."""
    from tqdm import tqdm

    client = _client()
    start = time.monotonic()
    # disable=None: a bar on a terminal, nothing when piped; the outcome is printed either way.
    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% {postfix}", disable=None) as bar:
        while True:
            job = client.job(job_id)
            bar.n = round(job["progress"] * 100, 1)
            bar.set_postfix_str(f"{job['status']} step {job['step']}")
            if job["status"] in FINISHED:
                break
            if timeout and time.monotonic() - start > timeout:
                raise click.ClickException(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(1)
    click.echo(f"job {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
               err=job["status"] != "succeeded")
    if job["status"] != "succeeded":
        sys.exit(1)


@main.command()
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel a job (a training job saves a checkpoint first)."""
    _client().cancel(job_id)
    click.echo(f"cancel requested for job {job_id}")


def run() -> None:
    try:
        main(standalone_mode=True)
    except GenqError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


main.add_command(team_group)

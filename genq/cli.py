"""The `genq` command: run the platform's parts (up, web, scheduler, worker, db); the team and token commands are
in cli_admin, the job commands in cli_jobs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from genq.cli_admin import operator_session, team, token
from genq.cli_datasets import dataset
from genq.cli_jobs import COMMANDS
from genq.config import Settings
from genq.errors import GenqError


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
    if settings.redis_url is not None:
        _check_redis(settings.redis_url)  # before anything is created: nothing could run without it
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


def _check_redis(url: str) -> None:
    """Refuse to start the platform on a GENQ_REDIS_URL that does not answer: no job could be sent."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.RedisError, ValueError) as exc:
        raise click.ClickException(f"GENQ_REDIS_URL {url[:80]} does not answer ({exc}): start Redis, or leave "
                                   "GENQ_REDIS_URL unset for genq up's own") from None


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
    _check_database(settings)
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
    _check_database(settings)
    Scheduler(settings, settings.redis_url).run(interval)


@main.group(invoke_without_command=True)
@click.option("--gpus", default="", help="comma-separated GPU ids: one worker process per GPU")
@click.option("--pool", default="default", show_default=True, help="the pool this worker serves")
@click.option("--slots", default=1, show_default=True, type=click.IntRange(1, 256),
              help="CPU jobs run at once (one process each)")
@click.option("--name", default="", hidden=True)
@click.pass_context
def worker(ctx: click.Context, gpus: str, pool: str, slots: int, name: str) -> None:
    """Run jobs: one Celery worker process per GPU, or SLOTS processes on the CPU (`genq worker drain HOST`:
    see its --help)."""
    if ctx.invoked_subcommand is not None:
        return
    if not all(g.strip().isdigit() for g in gpus.split(",") if g.strip()):
        raise click.BadParameter(f"GPU ids are CUDA's numbers from 0, as in 0,1 (not '{gpus[:40]}')",
                                 param_hint="'--gpus'")
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


def _check_database(settings: Settings) -> None:
    """Refuse to start a part of genq on a database it cannot use: none yet, an unreadable URL, or a schema this
    genq does not match (saying which to upgrade)."""
    import socket

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from genq.db import Database
    from genq.worker.hosts import VersionMismatch, check_schema

    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise click.ClickException(f"GENQ_DATABASE_URL '{settings.database_url[:80]}' is not a database URL "
                                   "(sqlite:///PATH, postgresql+psycopg://...)") from None
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise click.ClickException(f"no database at {url.database}: run `genq db upgrade` first (`genq up` does)")
    database = Database(settings.database_url)
    try:
        with database.session() as s:
            check_schema(s, socket.gethostname())
    except VersionMismatch as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        database.dispose()


def _check_worker_host(settings: Settings) -> None:
    """_check_database, and refuse a worker whose GENQ_TOKEN the web server's store refuses (once here, not in
    each of its processes)."""
    from genq.worker.store_access import CredentialsRefused, check_store_access

    _check_database(settings)
    try:
        check_store_access(settings.store())
    except CredentialsRefused as exc:
        raise click.ClickException(str(exc)) from None


def _drain_timeout(ctx, param, value: float | None) -> float | None:
    """--timeout: finite, from 0 to a year (worker.hosts.check_drain_timeout), else a usage error (exit 2)."""
    from genq.worker.hosts import check_drain_timeout

    try:
        return check_drain_timeout(value)
    except GenqError as exc:
        raise click.BadParameter(exc.message, ctx, param) from None


@worker.command("drain")
@click.argument("host")
@click.option("--timeout", type=float, default=None, callback=_drain_timeout,
              help="seconds after which running jobs checkpoint and re-queue (default: let them finish)")
def worker_drain(host: str, timeout: float | None) -> None:
    """Stop HOST taking new jobs; its running jobs finish (or checkpoint and re-queue after --timeout)."""
    from genq.worker.hosts import drain_host

    try:
        with operator_session() as s:
            drain_host(s, host, timeout)
    except GenqError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"host {host} is draining"
               + (f"; running jobs re-queue after {timeout:g} s" if timeout is not None else ""))


@worker.command("undrain")
@click.argument("host")
def worker_undrain(host: str) -> None:
    """Let a drained HOST take jobs again."""
    from genq.worker.hosts import undrain_host

    try:
        with operator_session() as s:
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


def run() -> None:
    try:
        main(standalone_mode=True)
    except GenqError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


for command in [team, token, dataset, *COMMANDS]:
    main.add_command(command)

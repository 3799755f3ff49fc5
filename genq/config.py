"""Settings read from the environment (see the README's configuration table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    """Where genq keeps its state and how its parts find each other."""

    home: Path
    database_url: str
    redis_url: str | None  # None: `genq up` starts an embedded server
    artifacts: Path  # a folder on this host: the store itself (a folder store) or the worker's local copies
    models: Path | None = None  # pretrained models named by "base" (hf-causal-lm); None: home/models
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 200 * 1024 * 1024
    lease_seconds: float = 30.0  # a running job's lease; heartbeats renew it every lease/3
    dispatch_timeout_seconds: float = 60.0  # a dispatched but unclaimed job is re-sent after this
    max_attempts: int = 3
    # Live events: a server-sent event stream holds one web server thread, so a process serves at most this
    # many at once (`genq web` also keeps it to half its threads); each ends after event_stream_seconds (the
    # browser reconnects) and sends a keep-alive every event_keepalive_seconds.
    max_event_streams: int = 8
    event_stream_seconds: float = 300.0
    event_keepalive_seconds: float = 15.0
    # A worker keeps this many trained models loaded for generation jobs (0: none), of this many bytes at most.
    model_cache_models: int = 4
    model_cache_bytes: int = 2 * 1024**3
    usage_half_life_hours: float = 24.0  # fair share: how fast a team's past usage fades
    preempt_min_run_seconds: float = 300.0  # a job runs this long before it may be preempted; negative: never
    secret_key: str = field(default="", repr=False)
    # GENQ_ARTIFACTS as given: a folder (then the same as `artifacts`), an fsspec URL or http(s)://WEB
    artifact_store: str = ""
    token: str = field(default="", repr=False)  # GENQ_TOKEN: a worker's token for an http(s) artifact store
    cache_bytes: int = 10 * 1024**3  # GENQ_CACHE_MB: a worker's local copies of datasets and checkpoints

    @classmethod
    def from_env(cls) -> Settings:
        """Build settings from GENQ_* variables, filling in the documented defaults."""
        home = Path(_env("GENQ_HOME", "./.genq")).resolve()
        store = _env("GENQ_ARTIFACTS", str(home / "artifacts"))
        remote = "://" in store and not store.startswith("file://")
        return cls(
            home=home,
            database_url=_env("GENQ_DATABASE_URL", f"sqlite:///{home / 'genq.db'}"),
            redis_url=os.environ.get("GENQ_REDIS_URL") or None,
            artifacts=(home / "artifacts" if remote else Path(store.removeprefix("file://"))).resolve(),
            models=Path(_env("GENQ_MODELS", str(home / "models"))).resolve(),
            host=_env("GENQ_HOST", "127.0.0.1"),
            port=int(_env("GENQ_PORT", "8000")),
            max_upload_bytes=int(_env("GENQ_MAX_UPLOAD_BYTES", str(200 * 1024 * 1024))),
            lease_seconds=float(_env("GENQ_LEASE_SECONDS", "30")),
            dispatch_timeout_seconds=float(_env("GENQ_DISPATCH_TIMEOUT_SECONDS", "60")),
            max_attempts=int(_env("GENQ_MAX_ATTEMPTS", "3")),
            max_event_streams=int(_env("GENQ_MAX_EVENT_STREAMS", "8")),
            event_stream_seconds=float(_env("GENQ_EVENT_STREAM_SECONDS", "300")),
            event_keepalive_seconds=float(_env("GENQ_EVENT_KEEPALIVE_SECONDS", "15")),
            model_cache_models=int(_env("GENQ_MODEL_CACHE", "4")),
            model_cache_bytes=int(_env("GENQ_MODEL_CACHE_MB", "2048")) * 1024**2,
            usage_half_life_hours=float(_env("GENQ_USAGE_HALF_LIFE_HOURS", "24")),
            preempt_min_run_seconds=float(_env("GENQ_PREEMPT_MIN_RUN_SECONDS", "300")),
            secret_key=_env("GENQ_SECRET_KEY", ""),
            artifact_store=store,
            token=_env("GENQ_TOKEN", ""),
            cache_bytes=int(_env("GENQ_CACHE_MB", "10240")) * 1024**2,
        )

    @property
    def models_folder(self) -> Path:
        """Where the pretrained models named by "base" live: GENQ_MODELS, else $GENQ_HOME/models."""
        return self.models or self.home / "models"

    def store(self):
        """The artifact store GENQ_ARTIFACTS names (genq.store); a folder store when none was given."""
        from genq.store import open_store

        return open_store(self.artifact_store or str(self.artifacts), self.token)

    def ensure_dirs(self) -> None:
        """Create the home and artifact folders."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)

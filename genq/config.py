"""Settings read from the environment (see the README's configuration table)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from genq.errors import InvalidInput


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_number(name: str, default: float, kind: type = int, low: float = 0, high: float = math.inf) -> float:
    """The variable `name` as a finite `kind` (int or float) from low to high, else InvalidInput naming it."""
    raw = _env(name, str(default))
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        span = ("" if low == -math.inf else f" at least {low:g}") if high == math.inf else f" from {low:g} to {high:g}"
        raise InvalidInput(f"{name} must be {'an integer' if kind is int else 'a number'}{span}, not '{raw[:40]}'")
    return value


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
    metrics_token: str = field(default="", repr=False)  # GENQ_METRICS_TOKEN: /metrics asks for it when set

    @classmethod
    def from_env(cls) -> Settings:
        """Build settings from GENQ_* variables, filling in the documented defaults."""
        if (forced := os.environ.get("GENQ_CPU_BF16", "")) not in ("", "0", "1"):  # read by genq.core.device
            raise InvalidInput(f"GENQ_CPU_BF16 must be 0 or 1 (unset: detected from the CPU), not '{forced[:40]}'")
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
            port=env_number("GENQ_PORT", 8000, int, 1, 65535),
            max_upload_bytes=env_number("GENQ_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, int, 1),
            # a heartbeat renews the lease every lease/3 (at most 2 s): below a second it would spin
            lease_seconds=env_number("GENQ_LEASE_SECONDS", 30, float, 1),
            dispatch_timeout_seconds=env_number("GENQ_DISPATCH_TIMEOUT_SECONDS", 60, float, 1),
            max_attempts=env_number("GENQ_MAX_ATTEMPTS", 3, int, 1),
            max_event_streams=env_number("GENQ_MAX_EVENT_STREAMS", 8, int),
            event_stream_seconds=env_number("GENQ_EVENT_STREAM_SECONDS", 300, float, 1),
            event_keepalive_seconds=env_number("GENQ_EVENT_KEEPALIVE_SECONDS", 15, float, 0.1),
            model_cache_models=env_number("GENQ_MODEL_CACHE", 4, int),
            model_cache_bytes=env_number("GENQ_MODEL_CACHE_MB", 2048, int) * 1024**2,
            usage_half_life_hours=env_number("GENQ_USAGE_HALF_LIFE_HOURS", 24, float, 0.001),
            preempt_min_run_seconds=env_number("GENQ_PREEMPT_MIN_RUN_SECONDS", 300, float, -math.inf),
            secret_key=_env("GENQ_SECRET_KEY", ""),
            artifact_store=store,
            token=_env("GENQ_TOKEN", ""),
            cache_bytes=env_number("GENQ_CACHE_MB", 10240, int) * 1024**2,
            metrics_token=_env("GENQ_METRICS_TOKEN", ""),
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
        """Create the home and artifact folders, or InvalidInput naming the variable that cannot be one."""
        for name, folder in (("GENQ_HOME", self.home), ("GENQ_ARTIFACTS", self.artifacts)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InvalidInput(f"{name}: {folder} cannot be a folder ({exc.strerror})") from None

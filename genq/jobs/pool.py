"""What the scheduling policy (genq.jobs.policy) reads and returns: one pool's snapshot (its workers, running
and queued jobs, teams) and the plan and forecasts made of it. Plain data, built from SQL by genq.jobs.snapshot
or on a simulated clock by bench/scheduling.py."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_RUN_SECONDS = 900.0  # a job's expected run time when nothing similar has run yet
# A wide job that found no room this long reserves a worker: sooner, reserved slots would idle for jobs that
# find room by themselves soon enough; never, small jobs could hold it off for ever.
RESERVE_AFTER_SECONDS = 1800.0
# A wide job of a team below its share waiting this long reserves before the others (else fair-share order
# decides): its team could otherwise never gather the devices of one worker while others' smaller jobs flow.
STARVING_AFTER_SECONDS = 12 * 3600.0


def decay(usage: float, seconds: float, half_life_hours: float) -> float:
    """`usage` faded by `seconds` of exponential decay with the given half-life."""
    if seconds <= 0 or half_life_hours <= 0:
        return usage
    return usage * 0.5 ** (seconds / (half_life_hours * 3600.0))


@dataclass(frozen=True)
class TeamState:
    name: str
    weight: float = 1.0
    usage: float = 0.0  # decayed GPU-seconds, as of the snapshot
    max_gpus: int | None = None
    gpu_hours_per_week: float | None = None
    week_gpu_hours: float = 0.0  # used over the last 7 days


@dataclass(frozen=True)
class Waiting:
    id: int
    team: str
    priority: int
    created_at: float  # seconds on the snapshot's clock: age orders a team's jobs (kept across preemption)
    gpus: int = 1
    expected_seconds: float | None = None  # how long it runs once started; None: unknown


@dataclass(frozen=True)
class Running:
    id: int
    team: str
    gpus: int = 1
    node: str | None = None  # the worker; None: sent but not yet claimed
    priority: int = 0
    started_at: float = 0.0  # this run's start
    expected_end: float | None = None
    preemptible: bool = True  # False: opted out, or it cannot checkpoint
    at_risk_seconds: float = 0.0  # work since its last checkpoint, lost if preempted
    preempt_requested: bool = False


@dataclass(frozen=True)
class Node:
    id: str
    slots: int


@dataclass
class Snapshot:
    """One pool at time `now`: its workers, running jobs, queued jobs (all, or each team's head) and the teams."""

    now: float
    nodes: list[Node]
    running: list[Running]
    queue: list[Waiting]
    teams: dict[str, TeamState]
    pool: str = "default"
    min_run_seconds: float = 300.0  # a job runs this long before it may be preempted; negative: never
    default_run_seconds: float = DEFAULT_RUN_SECONDS
    reserve_after_seconds: float = RESERVE_AFTER_SECONDS
    starving_after_seconds: float = STARVING_AFTER_SECONDS
    draining: list[Node] = field(default_factory=list)  # the pool's hosts that drain: they take no new job


@dataclass
class Plan:
    starts: list[tuple[int, str]] = field(default_factory=list)  # (job, node)
    preempt: list[int] = field(default_factory=list)
    reserved: dict[int, tuple[str, float]] = field(default_factory=dict)  # job -> (node, expected start)
    reasons: dict[int, str] = field(default_factory=dict)  # each team's first waiting job: why it waits


@dataclass
class Forecast:
    position: int  # jobs that start before it (0: next)
    eta: float | None  # expected start on the snapshot's clock; None: not foreseeable (a weekly quota)
    reason: str

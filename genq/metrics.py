"""Metric series: writing points together with their block summaries, and reading a series downsampled in SQL.

A chart of a 1,000,000-point series asks for ~800 buckets, each with its min, max and last value (M4-style: a
spike always shows as some bucket's max). Aggregating the raw rows for that takes 0.7-1.8 s per series on
SQLite and 0.25-0.55 s on PostgreSQL, so every write also keeps `MetricRollup` summaries of aligned blocks of
16, 256, 4096 and 65536 steps; a read groups the blocks of the coarsest level that still gives the budget of
points (at most ~16 rows per bucket), plus the raw points in the partial blocks at the range's two edges.
A step logged twice (the run resumed from an earlier checkpoint) counts with its latest value only.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, union_all
from sqlalchemy.orm import Session

from genq.db.models import Metric, MetricRollup

BASE = 16  # a block of level L spans BASE**L steps
LEVELS = 4  # 16, 256, 4096 and 65536 steps
MAX_STEP = 2**31 - 1  # the metrics.step column is a 32-bit integer on PostgreSQL
FLOAT_MAX = sys.float_info.max


def finite(value: float | None) -> float | None:
    """`value`, or None for NaN and ±inf (JSON has no such numbers: a chart shows a gap)."""
    return value if value is not None and math.isfinite(value) else None


def record_metrics(session: Session, rows: list[dict[str, Any]], new: Collection[str] = ()) -> None:
    """Insert metric points ({"job_id", "name", "step", "value", ...}) and refresh the summaries they touch.

    `new` names series with no point stored before these (a job's first attempt, first flush of the name):
    their summaries come from `rows` alone, without reading or deleting what is stored."""
    if not rows:
        return
    session.execute(insert(Metric), rows)
    spans: dict[tuple[int, str], tuple[int, int]] = {}
    given: dict[tuple[int, str], dict[int, float]] = {}
    for row in rows:
        key, step = (row["job_id"], row["name"]), int(row["step"])
        lo, hi = spans.get(key, (step, step))
        spans[key] = (min(lo, step), max(hi, step))
        if key[1] in new:
            given.setdefault(key, {})[step] = row["value"]  # the last logged wins
    refresh_series(session, spans, given)


def refresh_rollups(session: Session, job_id: int, name: str, lo: int, hi: int) -> None:
    """Recompute the summaries of steps lo..hi of one series."""
    refresh_series(session, {(job_id, name): (lo, hi)})


def refresh_series(session: Session, spans: dict[tuple[int, str], tuple[int, int]],
                   given: dict[tuple[int, str], dict[int, float]] | None = None) -> None:
    """Recompute every level's blocks that hold steps lo..hi of each series, spans {(job_id, name): (lo, hi)}, in
    four statements for all of them: the points of the level-1 blocks touched, the stored blocks beside them
    that the higher levels also summarise, then one delete and one insert (a generation job's three series took
    36 statements level by level, series by series, about a third of a tiny job's time in the worker).

    A series in `given` ({step: value}) has only those points: nothing stored is read or deleted for it, and
    a tiny job's end, whose series are all new, takes the insert alone."""
    given = given or {}
    touched = {(key, level): (lo // BASE**level, hi // BASE**level)
               for key, (lo, hi) in spans.items() for level in range(1, LEVELS + 1)}
    stored = {(key, level): span for (key, level), span in touched.items() if key not in given}
    blocks: dict[tuple, dict[int, tuple]] = {}  # (series, level) -> {block: (lo, hi, last_step, last_value)}
    for key, points in given.items():
        blocks[key, 0] = {step: (finite(v), finite(v), step, v) for step, v in sorted(points.items())}
    if stored:
        points = session.execute(
            select(Metric.job_id, Metric.name, Metric.step, Metric.value)
            .where(or_(*(and_(Metric.job_id == job_id, Metric.name.in_(names),
                              Metric.step.between(first * BASE, last * BASE + BASE - 1))
                         for (job_id, level, first, last), names in _by_span(stored).items() if level == 1)))
            .order_by(Metric.step, Metric.id)
        )
        latest = {(job_id, name, step): value for job_id, name, step, value in points}  # the last logged wins
        for (job_id, name, step), v in latest.items():
            blocks.setdefault(((job_id, name), 0), {})[step] = (finite(v), finite(v), step, v)
        # a level-L block summarises BASE blocks of level L - 1: those not touched now are read as stored
        r = MetricRollup.__table__.c
        for job_id, name, level, block, *summary in session.execute(
            select(r.job_id, r.name, r.level, r.block, r.lo, r.hi, r.last_step, r.last_value)
            .where(or_(*(and_(r.job_id == job_id, r.name.in_(names), r.level == level - 1,
                              r.block.between(first * BASE, last * BASE + BASE - 1))
                         for (job_id, level, first, last), names in _by_span(stored).items() if level > 1)))
        ):
            first, last = touched[(job_id, name), level]
            if not first <= block <= last:
                blocks.setdefault(((job_id, name), level), {})[block] = tuple(summary)
    for level in range(1, LEVELS + 1):
        unit = BASE ** (level - 1)  # steps in a block of the level below
        for key in spans:
            below = blocks.get((key, level - 1), {})
            parts = ((block * unit, *summary) for block, summary in below.items())
            blocks.setdefault((key, level), {}).update(_summarise(parts, unit * BASE))
    if stored:
        session.execute(delete(MetricRollup).where(or_(*(
            and_(MetricRollup.job_id == job_id, MetricRollup.name.in_(names), MetricRollup.level == level,
                 MetricRollup.block.between(first, last))
            for (job_id, level, first, last), names in _by_span(stored).items()))))
    new = [{"job_id": job_id, "name": name, "level": level, "block": block, "lo": lo, "hi": hi,
            "last_step": last_step, "last_value": last_value}
           for ((job_id, name), level), (first, last) in touched.items()
           for block, (lo, hi, last_step, last_value) in blocks.get(((job_id, name), level), {}).items()
           if first <= block <= last]
    if new:
        session.execute(insert(MetricRollup), new)


def _by_span(spans: dict[tuple, tuple[int, int]]) -> dict[tuple, list[str]]:
    """{((job_id, name), level): (first, last)} as {(job_id, level, first, last): [names]}: the series one flush
    touches share their spans, and one condition for them all is a fifth of the statement to build."""
    grouped: dict[tuple, list[str]] = {}
    for ((job_id, name), level), (first, last) in spans.items():
        grouped.setdefault((job_id, level, first, last), []).append(name)
    return grouped


def _summarise(parts: Iterable[tuple], width: int) -> dict[int, tuple]:
    """(first_step, lo, hi, last_step, last_value) pieces grouped into blocks of `width` steps."""
    blocks: dict[int, tuple] = {}
    for first_step, lo, hi, last_step, last_value in parts:
        block = first_step // width
        old = blocks.get(block)
        if old is None:
            blocks[block] = (lo, hi, last_step, last_value)
            continue
        blocks[block] = (
            lo if old[0] is None else old[0] if lo is None else min(old[0], lo),
            hi if old[1] is None else old[1] if hi is None else max(old[1], hi),
            *((last_step, last_value) if last_step > old[2] else old[2:]),
        )
    return blocks


@dataclass
class Downsampled:
    """One series over a step range: per bucket of `bucket` steps, the last point and the min and max."""

    points: list[list[Any]] = field(default_factory=list)  # [[last step, last value], ...]
    bands: list[list[Any]] = field(default_factory=list)  # [[last step, min, max], ...] (finite values only)
    bucket: int = 1


def bucket_width(lo: int, hi: int, points: int) -> tuple[int, int]:
    """(steps per bucket, rollup level): buckets aligned to multiples of the width, at most `points` of them
    over steps lo..hi, each a whole number of blocks of the coarsest level that fits."""
    span = hi - lo + 1
    narrowest = -(-span // points)
    level = max((lv for lv in range(LEVELS + 1) if BASE**lv <= narrowest), default=0)
    unit = BASE**level
    if points == 1:
        return -(-(hi + 1) // unit) * unit, level  # one bucket from step 0 holds them all
    for width in (narrowest, (hi - lo) // (points - 1) + 1):  # the second always fits; try the tighter first
        width = -(-width // unit) * unit
        if hi // width - lo // width + 1 <= points:
            return width, level
    raise AssertionError("unreachable: the second width always fits")


def downsample(session: Session, job_id: int, name: str, start: int, end: int, points: int) -> Downsampled:
    """Series `name` of the job within steps start..end as at most `points` buckets (see Downsampled)."""
    where = (Metric.job_id == job_id, Metric.name == name, Metric.step.between(start, end))
    lo, hi = session.execute(select(
        select(func.min(Metric.step)).where(*where).scalar_subquery(),
        select(func.max(Metric.step)).where(*where).scalar_subquery(),
    )).one()
    if lo is None:
        return Downsampled()
    width, level = bucket_width(lo, hi, points)
    unit = BASE**level
    first, last = -(-lo // unit), (hi + 1) // unit - 1  # the blocks wholly inside lo..hi
    parts = []
    if level and first <= last:
        r = MetricRollup.__table__.c
        parts.append(
            select((r.block * unit // width).label("k"), r.lo, r.hi, r.last_step, r.last_value)
            .where(r.job_id == job_id, r.name == name, r.level == level, r.block.between(first, last))
        )
        edges = [(lo, first * unit - 1), ((last + 1) * unit, hi)]
    else:
        edges = [(lo, hi)]
    parts += [_raw_points(job_id, name, a, b, width) for a, b in edges if a <= b]
    pieces = union_all(*parts).subquery("pieces")
    # The bucket's last value is the value at its largest last_step: first_value over the bucket, newest first.
    last = func.first_value(pieces.c.last_value).over(partition_by=pieces.c.k, order_by=pieces.c.last_step.desc())
    ranked = select(pieces, last.label("last_of_bucket")).subquery("ranked")
    rows = session.execute(
        select(func.max(ranked.c.last_step), func.max(ranked.c.last_of_bucket),
               func.min(ranked.c.lo), func.max(ranked.c.hi))
        .group_by(ranked.c.k)
        .order_by(ranked.c.k)
    )
    out = Downsampled(bucket=width)
    for step, value, lo_, hi_ in rows:
        out.points.append([step, finite(value)])
        out.bands.append([step, lo_, hi_])
    return out


def _raw_points(job_id: int, name: str, a: int, b: int, width: int):
    """The points of steps a..b as pieces (the latest value of a step logged twice), bucketed by `width`."""
    next_step = func.lead(Metric.step).over(order_by=(Metric.step, Metric.id))
    raw = (
        select(Metric.step, Metric.value, next_step.label("next_step"))
        .where(Metric.job_id == job_id, Metric.name == name, Metric.step.between(a, b))
        .subquery()
    )
    value = case((raw.c.value.between(-FLOAT_MAX, FLOAT_MAX), raw.c.value))  # NULL for NaN and ±inf
    return select((raw.c.step // width).label("k"), value.label("lo"), value.label("hi"),
                  raw.c.step.label("last_step"), raw.c.value.label("last_value")).where(
        or_(raw.c.next_step.is_(None), raw.c.next_step != raw.c.step))


def series_names(session: Session, job_ids: Iterable[int]) -> dict[int, list[str]]:
    """{job id: its metric names, sorted}, from the coarsest summaries (a series has at least one block)."""
    r = MetricRollup
    rows = session.execute(
        select(r.job_id, r.name).where(r.job_id.in_(list(job_ids)), r.level == LEVELS)
        .group_by(r.job_id, r.name).order_by(r.job_id, r.name)
    )
    names: dict[int, list[str]] = {}
    for job_id, name in rows:
        names.setdefault(job_id, []).append(name)
    return names


def latest_points(session: Session, job_ids: Iterable[int]) -> dict[int, dict[str, tuple[int, float | None]]]:
    """{job id: {name: (step, value)}}: the last point of every series of the jobs, from the coarsest blocks."""
    r = MetricRollup
    top = (
        select(r.job_id, r.name, func.max(r.block).label("block"))
        .where(r.job_id.in_(list(job_ids)), r.level == LEVELS)
        .group_by(r.job_id, r.name)
        .subquery()
    )
    rows = session.execute(
        select(r.job_id, r.name, r.last_step, r.last_value)
        .join(top, and_(r.job_id == top.c.job_id, r.name == top.c.name, r.block == top.c.block))
        .where(r.level == LEVELS)
        .order_by(r.job_id, r.name)
    )
    out: dict[int, dict[str, tuple[int, float | None]]] = {}
    for job_id, name, step, value in rows:
        out.setdefault(job_id, {})[name] = (step, finite(value))
    return out

"""Human evaluation: 1-5 ratings of outputs, blind pairwise preferences between jobs, a Bradley–Terry
leaderboard with intervals, raters' agreement, and the votes as a preference dataset. Torch-free: the web
process runs it.

A rater is an API token (the dashboard's session is one too). Pairs are stored in canonical order (the
smaller output id first, the verdict relative to that order), so A-vs-B and B-vs-A are one pair.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations, permutations
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from genq.db.models import WINNERS, Job, Output, PreferenceVote, Rating, ShownPair, utcnow
from genq.errors import Conflict, InvalidInput, NotFound
from genq.jobs.schemas import MAX_ID, refused
from genq.jobs.service import of_team, owned

MAX_COMPARED_JOBS = 50
PRIOR_SD = 2.0  # N(0, 2²) prior on each job's log-strength: an undefeated job gets a finite rating
ELO_SCALE = 400 / math.log(10)  # rating points per unit of log-strength: 400 points are 10:1 odds
BASE_RATING = 1000.0  # the average of the compared jobs
Z95 = 1.959964
FLIP = {"a": "b", "b": "a", "tie": "tie"}
SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}  # what the first (smaller id) output of a pair scores: ties count half
OUTCOMES = {"a": ("wins", "losses"), "b": ("losses", "wins"), "tie": ("ties", "ties")}  # for the first, the second
METHOD = (
    "Bradley-Terry fitted by Newton's method on the pairwise votes (a tie counts half a win for each side), "
    f"with a N(0, {PRIOR_SD:g}^2) prior on log-strengths; rating = {BASE_RATING:g} + 400*log10(strength), "
    f"{BASE_RATING:g} being the compared jobs' average; interval: 95% from the Fisher information at the "
    "fit (prior included), relative to that average. Agreement: for pairs judged by two raters or more, the "
    "fraction of rater pairs that gave the same verdict, and Krippendorff's alpha (nominal: a, b, tie)."
)


class RatingRequest(BaseModel):
    """PUT /api/v1/outputs/{id}/rating: one rater's score of one output."""

    model_config = ConfigDict(extra="forbid", strict=True)
    score: int = Field(ge=1, le=5, description="1 (bad) to 5 (excellent); a second rating replaces the first")


class VoteRequest(BaseModel):
    """POST /api/v1/preferences: a verdict on a pair that GET /api/v1/preferences/next served."""

    model_config = ConfigDict(extra="forbid", strict=True)
    a: int = Field(ge=1, le=MAX_ID, description="an output id")
    b: int = Field(ge=1, le=MAX_ID, description="the other output id")
    winner: Literal[WINNERS] = Field(description="'a', 'b' or 'tie'")  # type: ignore[valid-type]


@dataclass(frozen=True)
class Pair:
    """A blind pair to judge: two outputs of different jobs for one prompt, in random order."""

    prompt: str | None
    a: int
    b: int
    judged: bool  # this rater already voted on it (every pair is judged; a new vote replaces the old)
    unjudged: int  # pairs of these jobs this rater has not voted on yet


def _parse(model: type[BaseModel], body: object, what: str) -> Any:
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise refused(exc, what) from None


def _upsert(session: Session, model: type, keys: dict[str, Any], values: dict[str, Any]) -> bool:
    """Insert a row, or set `values` on the row with the same unique `keys`; True if the row is new. One
    INSERT .. ON CONFLICT, so two requests at once cannot both insert (SQLite and PostgreSQL)."""
    existed = session.scalar(select(model.id).where(*(getattr(model, k) == v for k, v in keys.items())))
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(model).values(**keys, **values).on_conflict_do_update(index_elements=list(keys), set_=values)
    )
    return existed is None


def visible_output(session: Session, output_id: int, team_id: int | None) -> Output:
    """The output if it belongs to one of the team's jobs (any team's for None: the operator), else NotFound
    (another team's looks missing)."""
    out = session.scalar(
        select(Output).join(Job, Output.job_id == Job.id).where(Output.id == output_id, *of_team(team_id))
    )
    if out is None:
        raise NotFound(f"output {output_id} not found")
    if out.step is not None:  # a gallery sample is replaced when its step is evaluated again: not judged
        raise Conflict(f"output {output_id} is a sample drawn at training step {out.step}; rate the job's "
                       "final outputs")
    if out.status != "ok":
        raise Conflict(f"output {output_id} is a row that failed ({(out.error or 'no output')[:80]}): there is "
                       "nothing to judge")
    return out


def rate(session: Session, token_id: int, team_id: int | None, output_id: int, body: object) -> tuple[dict, bool]:
    """Record the token's 1-5 score of an output (replacing its earlier one); the answer and whether it is new."""
    req: RatingRequest = _parse(RatingRequest, body, "rating")
    visible_output(session, output_id, team_id)
    created = _upsert(
        session, Rating, {"output_id": output_id, "token_id": token_id}, {"score": req.score, "updated_at": utcnow()}
    )
    return {"output_id": output_id, "score": req.score, "replaced": not created}, created


def rating_summary(session: Session, job_id: int) -> dict[str, Any]:
    """{"count", "mean", "histogram"} of the 1-5 ratings of a job's outputs; histogram[0] counts the 1s."""
    histogram = [0] * 5
    rows = session.execute(
        select(Rating.score, func.count())
        .join(Output, Rating.output_id == Output.id)
        .where(Output.job_id == job_id, Output.status == "ok")
        .group_by(Rating.score)
    )
    for score, n in rows:
        histogram[score - 1] = n
    count = sum(histogram)
    mean = sum((i + 1) * n for i, n in enumerate(histogram)) / count if count else None
    return {"count": count, "mean": mean, "histogram": histogram}


def own_scores(session: Session, token_id: int, job_id: int) -> dict[int, int]:
    """{output id: score} of the token's ratings of a job's outputs (the job page marks them)."""
    rows = session.execute(
        select(Rating.output_id, Rating.score)
        .join(Output, Rating.output_id == Output.id)
        .where(Output.job_id == job_id, Rating.token_id == token_id)
    )
    return dict(rows.tuples().all())


def compared_jobs(session: Session, team_id: int | None, job_ids: Sequence[int], least: int = 2) -> list[Job]:
    """The team's jobs `job_ids` (duplicates dropped): InvalidInput for fewer than `least` or too many,
    NotFound for one that is missing or another team's."""
    ids = list(dict.fromkeys(job_ids))
    if len(ids) < least:
        raise InvalidInput(f"query parameter 'jobs' must name at least {least} different jobs, e.g. ?jobs=3,5")
    if len(ids) > MAX_COMPARED_JOBS:
        raise InvalidInput(f"query parameter 'jobs' names {len(ids)} jobs; compare at most {MAX_COMPARED_JOBS}")
    return [owned(session, Job, i, team_id, "job") for i in ids]


def _judged(session: Session, token_id: int, output_ids) -> set[tuple[int, int]]:
    """The canonical pairs among `output_ids` (a subquery) the token has voted on."""
    rows = session.execute(
        select(PreferenceVote.a_output_id, PreferenceVote.b_output_id).where(
            PreferenceVote.token_id == token_id,
            PreferenceVote.a_output_id.in_(output_ids),
            PreferenceVote.b_output_id.in_(output_ids),
        )
    )
    return set(rows.tuples().all())


def next_pair(
    session: Session, token_id: int, team_id: int | None, job_ids: Sequence[int], rng: random.Random | None = None
) -> Pair:
    """A pair to judge: outputs of one kind (text, image, audio) of two different jobs answering the same prompt
    (None matches None), drawn uniformly from the pairs this rater has not judged (from all pairs once none is
    left), in random order.
    The pair is recorded as shown to the token: votes are only taken for shown pairs."""
    rng = rng or random.SystemRandom()
    jobs = compared_jobs(session, team_id, job_ids)
    ids = [j.id for j in jobs]
    job_of: dict[int, int] = {}
    prompt_of: dict[int, tuple[str | None, str]] = {}  # (prompt, kind): an image is not judged against a text
    groups: dict[tuple[str | None, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))  # job: outputs
    for output_id, job_id, prompt, kind in session.execute(
        # Final outputs only: gallery samples drawn during training (a step) are not what the job produced.
        select(Output.id, Output.job_id, Output.prompt, Output.kind)
        .where(Output.job_id.in_(ids), Output.step.is_(None), Output.status == "ok")  # a failed row has nothing
        .order_by(Output.id)
    ):
        job_of[output_id], prompt_of[output_id] = job_id, (prompt, kind)
        groups[prompt, kind][job_id].append(output_id)
    # Only served pairs take votes, so each of these is two outputs of different jobs for one prompt.
    judged = _judged(session, token_id, select(Output.id).where(Output.job_id.in_(ids)))
    judged_with: Counter[int] = Counter(o for pair in judged for o in pair)
    # For each output: how many outputs of other jobs answer its prompt, and how many of those it was not
    # judged against. Drawing the first output by that weight, then its partner uniformly, draws pairs uniformly.
    partners = {
        o: sum(len(outs) for j, outs in groups[prompt_of[o]].items() if j != job_of[o]) for o in job_of
    }
    unjudged = {o: n - judged_with[o] for o, n in partners.items()}
    left = sum(unjudged.values()) // 2
    weights = unjudged if left else partners
    if not any(weights.values()):
        listed = ", ".join(map(str, ids))
        raise NotFound(f"no pair to judge: jobs {listed} have no outputs of two different jobs of one kind for the "
                       "same prompt")
    first = rng.choices(list(weights), weights=list(weights.values()))[0]
    others = [
        o
        for j, outs in groups[prompt_of[first]].items()
        if j != job_of[first]
        for o in outs
        if not left or (min(o, first), max(o, first)) not in judged
    ]
    second = rng.choice(others)
    a, b = (first, second) if rng.random() < 0.5 else (second, first)
    key = {"token_id": token_id, "a_output_id": min(a, b), "b_output_id": max(a, b)}
    _upsert(session, ShownPair, key, {"shown_at": utcnow()})
    return Pair(prompt_of[a][0], a, b, (key["a_output_id"], key["b_output_id"]) in judged, left)


def vote(session: Session, token_id: int, team_id: int | None, body: object) -> tuple[dict, bool]:
    """Record the token's verdict on a pair it was shown (replacing its earlier one on that pair); the answer
    and whether the vote is new."""
    req: VoteRequest = _parse(VoteRequest, body, "vote")
    if req.a == req.b:
        raise InvalidInput("'a' and 'b' must be two different outputs")
    for output_id in (req.a, req.b):
        visible_output(session, output_id, team_id)
    low, high = sorted((req.a, req.b))
    key = {"token_id": token_id, "a_output_id": low, "b_output_id": high}
    shown = session.scalar(select(ShownPair.id).filter_by(**key))
    if shown is None:
        raise Conflict(
            f"outputs {req.a} and {req.b} were not shown to you as a pair: vote on the pairs that "
            "GET /api/v1/preferences/next serves"
        )
    winner = req.winner if req.a == low else FLIP[req.winner]
    created = _upsert(session, PreferenceVote, key, {"winner": winner, "updated_at": utcnow()})
    return {"a": req.a, "b": req.b, "winner": req.winner, "replaced": not created}, created


def _votes(session: Session, job_ids: Sequence[int]):
    """(a output, b output, winner, a's job, b's job) of every vote between outputs of `job_ids`."""
    first, second = aliased(Output), aliased(Output)
    return session.execute(
        select(
            PreferenceVote.a_output_id,
            PreferenceVote.b_output_id,
            PreferenceVote.winner,
            first.job_id,
            second.job_id,
        )
        .join(first, PreferenceVote.a_output_id == first.id)
        .join(second, PreferenceVote.b_output_id == second.id)
        .where(first.job_id.in_(job_ids), second.job_id.in_(job_ids), first.status == "ok", second.status == "ok")
        .order_by(PreferenceVote.id)
    ).all()


def leaderboard(session: Session, team_id: int | None, job_ids: Sequence[int]) -> dict[str, Any]:
    """The compared jobs ranked by their Bradley–Terry rating from the pairwise votes, with a 95% interval,
    their vote tallies and 1-5 score summaries, and the raters' agreement (see METHOD)."""
    jobs = compared_jobs(session, team_id, job_ids)
    index = {job.id: i for i, job in enumerate(jobs)}
    games: list[tuple[int, int, float]] = []
    tally = [Counter() for _ in jobs]
    verdicts: dict[tuple[int, int], list[str]] = defaultdict(list)
    for a, b, winner, job_a, job_b in _votes(session, list(index)):
        i, j = index[job_a], index[job_b]  # two different jobs: only such pairs are served, and voted on
        games.append((i, j, SCORE[winner]))
        tally[i][OUTCOMES[winner][0]] += 1
        tally[j][OUTCOMES[winner][1]] += 1
        verdicts[(a, b)].append(winner)
    theta, se = bradley_terry(len(jobs), games)
    rows = []
    for i, job in enumerate(jobs):
        scores = rating_summary(session, job.id)
        rows.append(
            {
                "job": job.id,
                "model": job.model,
                "type": job.type,
                "rating": round(BASE_RATING + ELO_SCALE * theta[i], 1),
                "interval": [
                    round(BASE_RATING + ELO_SCALE * (theta[i] - Z95 * se[i]), 1),
                    round(BASE_RATING + ELO_SCALE * (theta[i] + Z95 * se[i]), 1),
                ],
                "votes": sum(tally[i].values()),
                "wins": tally[i]["wins"],
                "losses": tally[i]["losses"],
                "ties": tally[i]["ties"],
                "scores": {"count": scores["count"], "mean": scores["mean"]},
            }
        )
    rows.sort(key=lambda r: (-r["rating"], r["job"]))
    return {"jobs": rows, "votes": len(games), "agreement": agreement(verdicts.values()), "method": METHOD}


def bradley_terry(
    n: int, games: Iterable[tuple[int, int, float]], prior_sd: float = PRIOR_SD
) -> tuple[np.ndarray, np.ndarray]:
    """Log-strengths of `n` players from games (i, j, s), s = 1 if i won, 0 if j won, 0.5 for a tie, and their
    standard errors. The posterior mode under a N(0, prior_sd²) prior (so it sums to zero), by Newton's method
    with step halving; the errors are those of each log-strength minus their mean, from the inverse of the
    Fisher information (plus the prior's) at the mode."""
    wins = np.zeros((n, n))
    for i, j, s in games:
        wins[i, j] += s
        wins[j, i] += 1 - s
    played = wins + wins.T
    precision = 1 / prior_sd**2

    def log_posterior(t: np.ndarray) -> float:
        return float(-(wins * np.logaddexp(0, t[None, :] - t[:, None])).sum() - precision * (t @ t) / 2)

    def information(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1 / (1 + np.exp(t[None, :] - t[:, None]))  # p[i, j]: the chance that i beats j
        gradient = (wins - played * p).sum(axis=1) - precision * t
        v = played * p * (1 - p)
        return gradient, np.diag(v.sum(axis=1) + precision) - v

    theta = np.zeros(n)
    for _ in range(100):
        gradient, info = information(theta)
        step = np.linalg.solve(info, gradient)
        size, before = 1.0, log_posterior(theta)
        while log_posterior(theta + size * step) < before and size > 1e-6:
            size /= 2
        theta = theta + size * step
        if np.abs(size * step).max() < 1e-10:
            break
    _, info = information(theta)
    centre = np.eye(n) - 1 / n
    covariance = centre @ np.linalg.inv(info) @ centre
    return theta, np.sqrt(np.clip(np.diag(covariance), 0, None))


def agreement(verdicts: Iterable[list[str]]) -> dict[str, Any]:
    """How well raters agree, over the pairs judged by two raters or more: "fraction", the share of rater pairs
    with the same verdict, and "alpha", Krippendorff's alpha for nominal data (1 = perfect, 0 = chance);
    both None when no pair has two verdicts (alpha also when every verdict is the same)."""
    units = [v for v in verdicts if len(v) >= 2]
    same = sum(x == y for v in units for x, y in combinations(v, 2))
    rater_pairs = sum(len(v) * (len(v) - 1) // 2 for v in units)
    coincidences: Counter[tuple[str, str]] = Counter()
    for v in units:
        for x, y in permutations(v, 2):
            coincidences[x, y] += 1 / (len(v) - 1)
    totals: Counter[str] = Counter()
    for (x, _), weight in coincidences.items():
        totals[x] += weight
    values = sum(totals.values())
    observed = sum(w for (x, y), w in coincidences.items() if x != y)
    expected = sum(totals[x] * totals[y] for x in totals for y in totals if x != y)
    return {
        "pairs": len(units),
        "rater_pairs": rater_pairs,
        "fraction": same / rater_pairs if rater_pairs else None,
        "alpha": 1 - (values - 1) * observed / expected if expected else None,
    }


def export_rows(
    session: Session, team_id: int | None, job_ids: Sequence[int] | None, artifact_url: Callable[[int], str]
) -> list[dict[str, Any]]:
    """The team's votes (only between `job_ids` when given) as {"prompt", "chosen", "rejected"}, oldest first,
    one row per vote; ties are skipped. Text outputs give their text; images and audio their artifact's URL."""
    first, second = aliased(Output), aliased(Output)
    teams_jobs = select(Job.id).where(*of_team(team_id))  # both outputs': the operator votes across teams
    query = (
        select(PreferenceVote.winner, first, second)
        .join(first, PreferenceVote.a_output_id == first.id)
        .join(second, PreferenceVote.b_output_id == second.id)
        .where(PreferenceVote.winner != "tie", first.status == "ok", second.status == "ok",
               first.job_id.in_(teams_jobs), second.job_id.in_(teams_jobs))
        .order_by(PreferenceVote.id)
    )
    if job_ids is not None:
        ids = [job.id for job in compared_jobs(session, team_id, job_ids, least=1)]
        query = query.where(first.job_id.in_(ids), second.job_id.in_(ids))

    def content(out: Output) -> str:
        return artifact_url(out.artifact_id) if out.artifact_id is not None else out.text or ""

    rows = []
    for winner, a, b in session.execute(query):
        chosen, rejected = (a, b) if winner == "a" else (b, a)
        rows.append({"prompt": a.prompt, "chosen": content(chosen), "rejected": content(rejected)})
    return rows

"""Helpers for the human evaluation tests: jobs whose outputs answer the same prompts, and raters who judge."""

from __future__ import annotations

from collections.abc import Callable

from tests.web.conftest import add_job, add_output


def text_jobs(db, prompts: list[str | None], names: tuple[str, ...] = ("X", "Y"), team: str = "alpha") -> list[int]:
    """One succeeded generate job per name, each with one text output "NAME:PROMPT" per prompt; the job ids."""
    jobs = []
    for name in names:
        job = add_job(db, team=team, type="generate", status="succeeded")
        for index, prompt in enumerate(prompts):
            add_output(db, job, index, "text", prompt=prompt, text=f"{name}:{prompt}")
        jobs.append(job)
    return jobs


def prefer(name: str) -> Callable[[dict], str]:
    """A rater who always prefers job `name`'s output."""
    return lambda pair: "a" if pair["a"]["text"].startswith(name + ":") else "b"


def judge(client, headers, jobs: list[int], choose: Callable[[dict], str], times: int) -> list[dict]:
    """`times` blind pairs of `jobs` fetched and voted on as `choose(pair)` says; the pairs served."""
    query = ",".join(map(str, jobs))
    pairs = []
    for _ in range(times):
        pair = client.get(f"/api/v1/preferences/next?jobs={query}", headers=headers)
        assert pair.status_code == 200, pair.json
        body = {"a": pair.json["a"]["id"], "b": pair.json["b"]["id"], "winner": choose(pair.json)}
        answer = client.post("/api/v1/preferences", headers=headers, json=body)
        assert answer.status_code in (200, 201), answer.json
        pairs.append(pair.json)
    return pairs

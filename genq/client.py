"""A small client for the HTTP API, used by the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from genq.errors import GenqError

# GETs are retried when a connection drops (a keep-alive connection the server closed as we reused it, a
# restarting server); other methods are not, so a submission is never sent twice. An answer is never retried, a
# 503 with Retry-After neither (the event stream's "poll instead").
RETRY = Retry(total=5, connect=5, read=3, status=0, backoff_factor=0.3, allowed_methods=frozenset({"GET"}),
              respect_retry_after_header=False)

JOBS_PAGE = 200  # the most jobs GET /api/v1/jobs answers at once (its `limit` clamps there)
FINISHED = ("succeeded", "failed", "cancelled")
STREAM_READ_SECONDS = 20.0  # the event stream pings every 15 s: this long without a byte, it is gone


class ApiError(GenqError):
    """The API answered with an error; the message is the server's."""


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(max_retries=RETRY))
        self.session.mount("https://", HTTPAdapter(max_retries=RETRY))
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs) -> Any:
        """Call `path` under /api/v1 and return its JSON, or raise ApiError with the server's message."""
        return self._json(method, path, self._send(method, path, timeout=self.timeout, **kwargs))

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, f"{self.url}/api/v1{path}", **kwargs)
        except requests.ConnectionError:
            raise ApiError(f"cannot reach genq at {self.url} (is `genq up` or `genq web` running? "
                           "set GENQ_URL)") from None
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL):
            raise ApiError(f"'{self.url}' is not the http(s) URL of a genq server (set GENQ_URL)") from None
        except requests.RequestException as exc:  # a timeout, too many redirects...: a line, not a traceback
            raise ApiError(f"calling genq at {self.url} failed: {exc}") from None

    def _json(self, method: str, path: str, response: requests.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # genq answers JSON objects, errors too: this is another server
            raise ApiError(f"{self.url} answered {method} /api/v1{path} with HTTP {response.status_code} and no genq "
                           "JSON: is GENQ_URL the address of a genq server?")
        if response.status_code >= 400:
            error = ApiError(body.get("message", response.reason))
            error.code, error.status = body.get("error", "error"), response.status_code
            raise error
        return body

    def events(self, job_id: int, silence: float = STREAM_READ_SECONDS) -> Iterator[tuple[str, Any]]:
        """Job `job_id`'s server-sent events (GET /api/v1/events?job=ID) as (name, data) until the stream ends;
        ApiError if it cannot be opened (a 503: the server has no Redis or holds its most streams), and
        requests' ConnectionError if it stays silent for `silence` seconds."""
        response = self._send("GET", "/events", params={"job": job_id}, stream=True, timeout=(self.timeout, silence))
        with response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                error = self._json("GET", "/events", response)  # raises the server's error
                raise ApiError(f"{self.url} answered GET /api/v1/events with JSON, not an event stream: {error}")
            response.encoding = "utf-8"  # server-sent events are UTF-8 whatever the header says
            name, data = "message", []
            # chunk_size=None: each chunk as it arrives (a fixed size would wait for that many bytes)
            for line in response.iter_lines(chunk_size=None, decode_unicode=True):
                if not line:  # a blank line ends an event
                    if data:
                        yield name, json.loads("\n".join(data))
                    name, data = "message", []
                elif not line.startswith(":"):  # a comment (a keep-alive for proxies) otherwise
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)

    def watch(self, job_id: int, deadline: float | None = None) -> Iterator[tuple[str, Any]]:
        """Job `job_id`'s events until it has finished: ("status", the job as GET /api/v1/jobs/ID shows it) first,
        then what its event stream sends ("status", "progress", "log", "metrics", "outputs"), or, where the server
        has no stream, ("status", job) polled once a second. A stream that ends before the job (its lifetime, a
        restart) is opened again a second later, starting with a status event. TimeoutError once
        time.monotonic() passes `deadline`."""
        job = self.job(job_id)
        yield "status", job
        stream = True
        while job["status"] not in FINISHED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
            if not stream:
                time.sleep(1)
                job = self.job(job_id)
                yield "status", job
                continue
            try:
                left = STREAM_READ_SECONDS if deadline is None else deadline - time.monotonic()
                for name, data in self.events(job_id, max(0.1, min(STREAM_READ_SECONDS, left))):
                    if name == "status":
                        job = data
                    yield name, data
                    if job["status"] in FINISHED or (deadline is not None and time.monotonic() > deadline):
                        break
            except ApiError as exc:
                if getattr(exc, "status", None) != 503:
                    raise
                stream = False  # no stream here: poll
            except (requests.RequestException, ValueError):  # silent past the read timeout, cut, garbled
                pass
            if stream and job["status"] not in FINISHED and (deadline is None or time.monotonic() < deadline):
                time.sleep(1)

    def follow(self, job_id: int, deadline: float | None = None) -> Iterator[dict]:
        """Job `job_id` as GET /api/v1/jobs/ID shows it, first as it is, then each time its status or progress
        changes, until it has finished (watched as `watch` does)."""
        job: dict = {}
        for name, data in self.watch(job_id, deadline):
            if name == "status" or (name == "progress" and isinstance(data, dict)):
                job = data if name == "status" else {**job, **data}
                yield job

    def wait(self, job_id: int, timeout: float | None = None) -> dict:
        """Job `job_id` once it has finished, followed as `follow` does; TimeoutError after `timeout` seconds."""
        *_, job = self.follow(job_id, None if timeout is None else time.monotonic() + timeout)
        return job

    def upload(self, path: Path, name: str | None = None, team: str | None = None, kind: str | None = None) -> dict:
        """Upload a local file as a dataset (of `team`: the operator's choice; the token's team by default; `kind`:
        what it holds, else what the server reads it as)."""
        with path.open("rb") as f:
            return self.request("POST", "/datasets", files={"file": (path.name, f)},
                                data={"name": name or path.name, **({"team": team} if team else {}),
                                      **({"kind": kind} if kind else {})})

    def datasets(self, kind: str | None = None) -> list[dict]:
        """The datasets the token's team may use (the operator: every team's), newest first; only `kind`'s if given."""
        return self.request("GET", "/datasets", params={"kind": kind} if kind else None)["datasets"]

    def delete_dataset(self, dataset_id: int) -> dict:
        return self.request("DELETE", f"/datasets/{dataset_id}")

    def submit(self, payload: dict) -> dict:
        return self.request("POST", "/jobs", json=payload)

    def job(self, job_id: int) -> dict:
        return self.request("GET", f"/jobs/{job_id}")

    def jobs(self, limit: int = 50, before: int | None = None, **filters) -> list[dict]:
        """The newest `limit` jobs (with `before`: of ids below it), newest first; `filters`: status, type, team."""
        return self.jobs_and_next(limit, before, **filters)[0]

    def jobs_and_next(self, limit: int = 50, before: int | None = None, **filters) -> tuple[list[dict], int | None]:
        """The newest `limit` jobs (of ids below `before`), newest first, and the `before` that lists the jobs
        after them (None: there are none). The API answers at most JOBS_PAGE a request: this follows its "next"."""
        rows: list[dict] = []
        cursor = before
        while len(rows) < limit:
            params = {k: v for k, v in filters.items() if v}
            params["limit"] = min(limit - len(rows), JOBS_PAGE)
            if cursor is not None:
                params["before"] = cursor
            page = self.request("GET", "/jobs", params=params)
            rows.extend(page["jobs"])
            following = page.get("next")
            if following is None or not page["jobs"] or (cursor is not None and following >= cursor):
                return rows, None  # the end (or a cursor that does not go down: stop rather than loop)
            cursor = following
        return rows, cursor

    def cancel(self, job_id: int) -> dict:
        return self.request("POST", f"/jobs/{job_id}/cancel")

    def retry(self, job_id: int, only_failed: bool = True) -> dict:
        return self.request("POST", f"/jobs/{job_id}/retry", json={"only_failed": only_failed})

    def logs(self, job_id: int, after: int | None = None) -> list[dict]:
        return self.request("GET", f"/jobs/{job_id}/logs", params={"after": after} if after else None)["logs"]

    def metrics(self, job_id: int, points: int = 200) -> dict:
        """{name: [[step, value], ...]}: each series in at most `points` buckets (a bucket's last value), so
        points=1 gives the latest value; the server reads stored summaries, not every point."""
        return self.request("GET", f"/jobs/{job_id}/metrics", params={"points": points})["series"]

    def outputs(self, job_id: int) -> list[dict]:
        return self.request("GET", f"/jobs/{job_id}/outputs")["outputs"]


def wait_until_serving(url: str, server: subprocess.Popen | None = None, timeout: float = 60.0) -> bool:
    """Whether `url` answers /healthz within `timeout` seconds; False as soon as `server` (its process) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (server is None or server.poll() is None):
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False

"""Whether the artifact store lets this worker in: a worker whose GENQ_TOKEN the web server's store refuses does
not start, and a job the store refuses mid-run (its token, or S3 credentials) fails saying so, rather than waiting
out lease after lease as if the store were down. Torch-free: the check runs before a worker process loads torch."""

from __future__ import annotations

from genq.store import ArtifactStore, StoreRefused
from genq.store_http import HttpStore

CREATE_WORKER_TOKEN = "genq token create --team admin --role worker"
PROBE_KEY = "genq-worker-access-check"  # no file is stored under it: looking it up only asks to be let in


class CredentialsRefused(Exception):
    """The artifact store refuses this worker's GENQ_TOKEN (or credentials); the message says what to fix."""


def store_refusal(exc: BaseException) -> str | None:
    """What to tell the user if `exc`, or an error behind it, is the artifact store refusing this worker (no retry
    can help), else None. The web server's store answers 401 to an invalid or revoked GENQ_TOKEN and 403 to one
    that is not a worker token; S3 (s3fs) raises PermissionError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StoreRefused):
            why = "it is invalid or revoked" if seen.status == 401 else "it is not a worker token"
            return (f"authentication failed: the artifact store refused this worker's GENQ_TOKEN (HTTP {seen.status} "
                    f"to {seen.request}: {why}); give its host a worker token ({CREATE_WORKER_TOKEN})")
        if isinstance(seen, PermissionError):
            return (f"access denied: the artifact store refused this worker ({seen}); check its credentials "
                    f"(for S3, the AWS variables) or the store's permissions")
        seen = seen.__cause__ or seen.__context__
    return None


def check_store_access(store: ArtifactStore) -> None:
    """Raise CredentialsRefused if the web server's store refuses this worker's GENQ_TOKEN: every job it took
    would fail. A store that cannot be reached now is no reason to refuse: its jobs wait for it as for any outage.
    (S3 is not asked: an unreachable endpoint would hold the start for minutes of retries; a job it refuses fails
    saying so.)"""
    if not isinstance(store, HttpStore):
        return
    try:
        store.size(PROBE_KEY)
    except Exception as exc:  # noqa: BLE001 - only a refusal stops the worker
        if (refused := store_refusal(exc)) is not None:
            raise CredentialsRefused(f"this worker cannot start: {refused}") from None

"""/api/v1/store/KEY: the artifact store, proxied for worker hosts that have none of their own
(GENQ_ARTIFACTS=http(s)://WEB on the worker). Only `worker` tokens and the operator may use it.

GET streams a stored file (`Range: bytes=N-` continues a broken download); HEAD gives its size; PUT takes a
file in pieces, each with `Content-Range: bytes START-END/TOTAL` and the whole file's `X-Content-SHA256`:
the pieces collect in a part file named by key and hash, a piece that does not start where the part ends is
answered 409 with the `offset` to send next (so a client that lost its connection resumes there), and the
last piece checks the hash and moves the file into the store (201). A key names a file: one that names a folder
(other keys are stored under it) is answered 404 by GET, HEAD and DELETE, and 409 by PUT, on every backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path

from flask import Response, g, jsonify, request

from genq.errors import BadRequest, Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from genq.store import CHUNK, check_key, copy_stream, sha256_file
from genq.web import artifact_store as web_store
from genq.web import state
from genq.web.api import api_blueprint

bp = api_blueprint("api_store")
CONTENT_RANGE = re.compile(r"^bytes (?:(\d{1,15})-(\d{1,15})|\*)/(\d{1,15})$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_ARTIFACT_BYTES = 1 << 40  # a bound on what one PUT may announce, far above any checkpoint
ABANDONED_SECONDS = 24 * 3600  # an upload's pieces are kept this long for it to go on


def _allowed() -> None:
    caller = g.caller
    if caller.role != "worker" and not (caller.role == "admin" and caller.team == "admin"):
        raise Forbidden("only worker tokens and the operator use the artifact store directly")


def _key(key: str) -> str:
    _allowed()
    return check_key(key)


def _missing(key: str) -> NotFound:
    return NotFound(f"no stored file at artifact key {key} (absent, or a folder)")


@bp.route("/store/<path:key>", methods=["HEAD"])
def size(key: str):
    """The stored file's size as Content-Length; 404 if absent."""
    stored = web_store().size(_key(key))
    if stored is None:
        raise _missing(key)
    response = Response(status=200)
    response.headers["Content-Length"] = str(stored)
    response.headers["Accept-Ranges"] = "bytes"
    return response


@bp.get("/store/<path:key>")
def download(key: str):
    """The stored file, streamed; `Range: bytes=N-` sends it from byte N (206)."""
    store = web_store()
    total = store.size(_key(key))
    if total is None:
        raise _missing(key)
    offset = 0
    if range_header := request.headers.get("Range"):
        match = re.fullmatch(r"bytes=(\d{1,15})-", range_header.strip())
        if match is None or int(match[1]) > total:
            raise BadRequest("only 'Range: bytes=N-' with N at most the file's size is supported")
        offset = int(match[1])
    try:
        source = store.open(key, offset=offset)
    except FileNotFoundError:  # removed since size() found it
        raise _missing(key) from None

    def chunks():
        with source:
            while chunk := source.read(CHUNK):
                yield chunk

    response = Response(chunks(), status=206 if range_header else 200, mimetype="application/octet-stream")
    response.headers["Content-Length"] = str(total - offset)
    response.headers["Accept-Ranges"] = "bytes"
    if range_header:
        response.headers["Content-Range"] = f"bytes {offset}-{total - 1}/{total}"
    return response


@bp.put("/store/<path:key>")
def upload(key: str):
    """One piece of a file (see the module's docstring): 202 with the new offset, 201 once stored whole."""
    key = _key(key)
    digest = request.headers.get("X-Content-SHA256", "").strip().lower()
    if not SHA256.match(digest):
        raise BadRequest("send the whole file's sha256 (64 hex digits) in X-Content-SHA256")
    match = CONTENT_RANGE.match(request.headers.get("Content-Range", "").strip())
    if match is None:
        raise BadRequest("send Content-Range: bytes START-END/TOTAL (or bytes */TOTAL to ask for the offset)")
    total = int(match[3])
    if total > MAX_ARTIFACT_BYTES:
        raise TooLarge(f"an artifact may be at most {MAX_ARTIFACT_BYTES} bytes")
    if reason := web_store().folder_conflict(key):  # before any byte is taken: a folder cannot become a file
        raise Conflict(reason)
    incoming = state().settings.home / "store-incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    part = incoming / hashlib.sha256(f"{key}\0{digest}\0{total}".encode()).hexdigest()
    if not part.exists():  # an upload begins: the pieces of those nobody went on with are dropped
        _drop_abandoned(incoming)
    held = part.stat().st_size if part.exists() else 0
    if match[1] is not None:
        start, end = int(match[1]), int(match[2])
        if end < start or end >= total:
            raise InvalidInput(f"Content-Range {start}-{end} does not fit a file of {total} bytes")
        if start != held:
            return _offset(held, f"this upload holds {held} bytes; send from there")
        with open(part, "ab") as out:
            received = copy_stream(request.stream, out)
        if received != end - start + 1:
            if held:
                os.truncate(part, held)  # a short piece: drop it whole, so the offset stays exact
            else:
                part.unlink()  # nothing held: no file left in store-incoming
            raise BadRequest(f"Content-Range announced {end - start + 1} bytes but the body had {received}")
        held = end + 1
    if held < total:
        return (jsonify({"offset": held}), 202) if match[1] is not None else _offset(held, "upload in progress")
    part.touch()  # an empty file has no pieces
    if sha256_file(part) != digest:
        part.unlink()
        raise InvalidInput(f"the uploaded bytes of {key} do not match X-Content-SHA256; send the file again")
    try:
        web_store().put(key, part)
    finally:
        part.unlink(missing_ok=True)
    return jsonify({"key": key, "size_bytes": total, "sha256": digest}), 201


@bp.delete("/store/<path:key>")
def delete(key: str):
    """Remove a stored file (204); 404 when none is stored under the key (absent, or a folder)."""
    store = web_store()
    if store.size(_key(key)) is None:
        raise _missing(key)
    store.delete(key)
    return Response(status=204)


def _drop_abandoned(incoming: Path) -> None:
    """Remove the pieces of uploads not continued for ABANDONED_SECONDS (a worker resumes within minutes)."""
    before = time.time() - ABANDONED_SECONDS
    for part in incoming.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another request finished or dropped it meanwhile
            if part.stat().st_mtime < before:
                part.unlink()


def _offset(held: int, message: str):
    return jsonify({"error": "conflict", "message": message, "offset": held}), 409

"""The web server's proxied store (/api/v1/store): only worker tokens (and the operator) reach it, and worker
tokens reach nothing else; uploads resume where the server's part file ends; bad requests get clear 4xx."""

from __future__ import annotations

import hashlib
import os
import time

import requests

from genq.store_http import HttpStore
from tests.web.conftest import make_token


def put_piece(url: str, token: str, key: str, data: bytes, start: int, end: int, total: int, digest: str):
    return requests.put(f"{url}/api/v1/store/{key}", data=data[start:end + 1], timeout=30, headers={
        "Authorization": f"Bearer {token}", "X-Content-SHA256": digest,
        "Content-Range": f"bytes {start}-{end}/{total}"})


def test_an_interrupted_upload_resumes_from_what_the_server_holds(web_url, worker_token, tmp_path, small_chunks,
                                                                    settings):
    data = os.urandom(5 * small_chunks + 11)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "ckpt.bin"
    source.write_bytes(data)
    key = "jobs/3/a1/checkpoints/step-00000040/model.safetensors"
    # a worker sent two chunks, then lost its connection
    for start in (0, small_chunks):
        reply = put_piece(web_url, worker_token, key, data, start, start + small_chunks - 1, len(data), digest)
        assert reply.status_code == 202, reply.text
    store = HttpStore(web_url, worker_token)
    sent = []
    real_put = store.http.put
    store.http.put = lambda url, **kw: sent.append(kw["headers"]["Content-Range"]) or real_put(url, **kw)
    store.put(key, source)
    # it asked from 0, was told the offset, and sent only the rest
    assert sent[0] == f"bytes 0-{small_chunks - 1}/{len(data)}"
    assert sent[1] == f"bytes {2 * small_chunks}-{3 * small_chunks - 1}/{len(data)}"
    assert len(sent) == 5
    assert (settings.artifacts / key).read_bytes() == data
    assert list((settings.home / "store-incoming").iterdir()) == []


def test_worker_tokens_reach_only_the_store_and_only_they_and_the_operator_reach_it(web_url, worker_token, db):
    worker = {"Authorization": f"Bearer {worker_token}"}
    for path in ("/api/v1/jobs", "/api/v1/datasets", "/api/v1/workers", "/"):
        reply = requests.get(web_url + path, headers=worker, timeout=30)
        assert reply.status_code == 403, (path, reply.text)
        if path.startswith("/api/"):
            assert reply.json()["error"] == "forbidden" and "worker tokens" in reply.json()["message"]
    member = {"Authorization": f"Bearer {make_token(db, 'alpha', 'member')}"}
    team_admin = {"Authorization": f"Bearer {make_token(db, 'alpha', 'admin')}"}
    operator = {"Authorization": f"Bearer {make_token(db, 'admin', 'admin')}"}
    url = f"{web_url}/api/v1/store/jobs/1/x"
    assert requests.head(url, headers=worker, timeout=30).status_code == 404  # reached the store: nothing there
    assert requests.head(url, headers=operator, timeout=30).status_code == 404
    for headers in (member, team_admin):
        reply = requests.get(url, headers=headers, timeout=30)
        assert reply.status_code == 403 and reply.json()["error"] == "forbidden"
    assert requests.get(url, timeout=30).status_code == 401


def test_bad_uploads_are_refused_with_the_reason_and_store_nothing(web_url, worker_token, settings):
    headers = {"Authorization": f"Bearer {worker_token}"}
    key_url = f"{web_url}/api/v1/store/jobs/1/out.bin"
    digest = hashlib.sha256(b"hello").hexdigest()

    def put(data: bytes, **extra):
        return requests.put(key_url, data=data, headers={**headers, **extra}, timeout=30)

    reply = put(b"hello", **{"Content-Range": "bytes 0-4/5"})
    assert reply.status_code == 400 and "X-Content-SHA256" in reply.json()["message"]
    reply = put(b"hello", **{"X-Content-SHA256": digest})
    assert reply.status_code == 400 and "Content-Range" in reply.json()["message"]
    reply = put(b"hello", **{"X-Content-SHA256": digest, "Content-Range": "bytes 0-9/5"})
    assert reply.status_code == 422
    reply = put(b"hel", **{"X-Content-SHA256": digest, "Content-Range": "bytes 0-4/5"})
    assert reply.status_code == 400 and "announced 5 bytes" in reply.json()["message"]
    assert list((settings.home / "store-incoming").iterdir()) == []  # a short first piece leaves no empty file
    reply = put(b"jello", **{"X-Content-SHA256": digest, "Content-Range": "bytes 0-4/5"})
    assert reply.status_code == 422 and "do not match" in reply.json()["message"]
    bad_key = requests.put(f"{web_url}/api/v1/store/jobs/1/a%20b", data=b"hello", timeout=30,
                           headers={**headers, "X-Content-SHA256": digest, "Content-Range": "bytes 0-4/5"})
    assert bad_key.status_code == 422 and bad_key.json()["error"] == "invalid_input"
    assert not (settings.artifacts / "jobs").exists()
    assert list((settings.home / "store-incoming").iterdir()) == []

    # and a good one, then a range past its end
    assert put(b"hello", **{"X-Content-SHA256": digest, "Content-Range": "bytes 0-4/5"}).status_code == 201
    assert requests.get(key_url, headers={**headers, "Range": "bytes=9-"}, timeout=30).status_code == 400
    reply = requests.get(key_url, headers={**headers, "Range": "bytes=2-"}, timeout=30)
    assert reply.status_code == 206 and reply.content == b"llo"


def test_the_pieces_of_an_upload_nobody_went_on_with_go_when_another_begins(web_url, worker_token, settings):
    data = b"hello, world"
    digest = hashlib.sha256(data).hexdigest()
    reply = put_piece(web_url, worker_token, "jobs/1/left.bin", data, 0, 4, len(data), digest)
    assert reply.status_code == 202, reply.text
    [left] = (settings.home / "store-incoming").iterdir()
    a_day_ago = time.time() - 24 * 3600 - 60
    os.utime(left, (a_day_ago, a_day_ago))
    reply = put_piece(web_url, worker_token, "jobs/1/next.bin", data, 0, 4, len(data), digest)
    assert reply.status_code == 202, reply.text
    [held] = (settings.home / "store-incoming").iterdir()
    assert held != left and held.stat().st_size == 5


def test_a_folder_key_is_answered_404_or_409_never_500(web_url, worker_token, db, settings):
    stored = settings.artifacts / "jobs" / "4" / "a1" / "model.bin"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"weights")
    digest = hashlib.sha256(b"hello").hexdigest()
    operator = {"Authorization": f"Bearer {make_token(db, 'admin', 'admin')}"}
    for headers in ({"Authorization": f"Bearer {worker_token}"}, operator):
        for key in ("jobs", "jobs/4", "jobs/4/a1", "jobs/4/a1/model.bin/inner"):
            url = f"{web_url}/api/v1/store/{key}"
            for method in ("GET", "DELETE"):
                reply = requests.request(method, url, headers=headers, timeout=30)
                assert reply.status_code == 404, (method, key, reply.text)
                assert "no stored file" in reply.json()["message"]
            assert requests.head(url, headers=headers, timeout=30).status_code == 404, key
            reply = requests.put(url, data=b"hello", timeout=30, headers={
                **headers, "X-Content-SHA256": digest, "Content-Range": "bytes 0-4/5"})
            assert reply.status_code == 409 and "offset" not in reply.json(), (key, reply.text)
            assert "folder" in reply.json()["message"]
    assert stored.read_bytes() == b"weights"
    incoming = settings.home / "store-incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == [], "refused before any byte was taken"

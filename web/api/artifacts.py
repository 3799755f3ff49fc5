"""/api/v1/artifacts/{id}/download: a stored file of one of the team's jobs."""

from __future__ import annotations

from flask import Response, g, request, send_file
from sqlalchemy import select
from werkzeug.http import parse_range_header

from genq.db.models import Artifact, Job
from genq.errors import InvalidInput, NotFound
from genq.jobs.service import of_team
from genq.store import CHUNK, check_key
from genq.web import artifact_store, state
from genq.web.api import api_blueprint

bp = api_blueprint("api_artifacts")


@bp.get("/artifacts/<id:artifact_id>/download")
def download(artifact_id: int):
    """The artifact's file with its media type; 404 for other teams' artifacts and missing files."""
    with state().db.session() as s:
        artifact = s.scalar(
            select(Artifact)
            .join(Job, Artifact.job_id == Job.id)
            .where(Artifact.id == artifact_id, *of_team(g.caller.scope))
        )
    if artifact is None:
        raise NotFound(f"artifact {artifact_id} not found")
    store = artifact_store()
    try:
        key = check_key(artifact.path)
    except InvalidInput:
        raise NotFound(f"artifact {artifact_id} has no stored file") from None
    name = artifact.name or key.rsplit("/", 1)[-1]
    local = store.local_path(key)
    if local is not None:
        if not local.is_file():
            raise NotFound(f"artifact {artifact_id} has no stored file")
        range_ = parse_range_header(request.headers.get("Range"))
        if range_ is None or range_.units != "bytes":  # RFC 9110 14.2: a Range not read is ignored, not a 416
            request.environ.pop("HTTP_RANGE", None)
        response = send_file(local, mimetype=artifact.media_type, download_name=name, conditional=True, max_age=0)
    else:
        size = store.size(key)
        if size is None:
            raise NotFound(f"artifact {artifact_id} has no stored file")
        source = store.open(key)

        def chunks():
            with source:
                while chunk := source.read(CHUNK):
                    yield chunk

        response = Response(chunks(), mimetype=artifact.media_type)
        response.headers["Content-Length"] = str(size)
        response.headers["Content-Disposition"] = f'inline; filename="{name}"'
    response.headers["Content-Security-Policy"] = "sandbox"  # never run stored content as a page of ours
    return response

"""/api/v1/artifacts/{id}/download: a stored file of one of the team's jobs."""

from __future__ import annotations

from flask import g, send_file
from sqlalchemy import select

from genq.db.models import Artifact, Job
from genq.errors import NotFound
from genq.web import state
from genq.web.api import api_blueprint

bp = api_blueprint("api_artifacts")


@bp.get("/artifacts/<id:artifact_id>/download")
def download(artifact_id: int):
    """The artifact's file with its media type; 404 for other teams' artifacts and missing files."""
    with state().db.session() as s:
        artifact = s.scalar(
            select(Artifact)
            .join(Job, Artifact.job_id == Job.id)
            .where(Artifact.id == artifact_id, *(() if g.caller.scope is None else (Job.team_id == g.caller.scope,)))
        )
    if artifact is None:
        raise NotFound(f"artifact {artifact_id} not found")
    root = state().settings.artifacts.resolve()
    path = (root / artifact.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"artifact {artifact_id} has no stored file")
    response = send_file(
        path,
        mimetype=artifact.media_type,
        download_name=artifact.name or path.name,
        conditional=True,
        max_age=0,
    )
    response.headers["Content-Security-Policy"] = "sandbox"  # never run stored content as a page of ours
    return response

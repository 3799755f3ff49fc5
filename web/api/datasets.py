"""/api/v1/datasets: upload (multipart), list, show, delete."""

from __future__ import annotations

from flask import g, jsonify, request, url_for

from genq.api_tokens import same_team
from genq.datasets import KINDS, dataset_to_dict, datasets_of, delete_dataset, remove_dataset_file, save_upload
from genq.db.models import Dataset
from genq.errors import Forbidden, InvalidInput
from genq.jobs.service import owned
from genq.teams import get_team
from genq.web import artifact_store, state
from genq.web.api import api_blueprint, query_choice
from genq.web.auth import require_writer

bp = api_blueprint("api_datasets")


def store_request_file(team_id: int) -> dict:
    """Store the request's `file` (optional `name`, `kind`) as a dataset of `team_id`; its JSON form."""
    if request.mimetype != "multipart/form-data":
        raise InvalidInput("send the file as multipart/form-data, in a field named 'file' (this request's "
                           f"Content-Type is '{request.mimetype[:60] or 'none'}')")
    if not request.mimetype_params.get("boundary"):
        raise InvalidInput("the request's multipart/form-data Content-Type has no boundary: its parts cannot be read")
    uploads = request.files.getlist("file")
    if len(uploads) > 1:
        raise InvalidInput(f"one file an upload: the request holds {len(uploads)} parts named 'file'")
    if not uploads:
        # werkzeug drops a part whose headers are not UTF-8: a file named in another encoding arrives as no file
        raise InvalidInput("multipart field 'file' is required: the request holds no readable part of that name "
                           "(a body not in multipart form, or a part whose headers, its filename say, are not UTF-8)")
    upload = uploads[0]
    kind = request.form.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"unknown dataset kind '{kind[:40]}' (known: {', '.join(KINDS)})")
    with state().db.session() as s:
        dataset = save_upload(
            s, state().settings, team_id, upload.stream, upload.filename or "", request.form.get("name"), kind,
            store=artifact_store(),
        )
        return dataset_to_dict(dataset)


@bp.post("/datasets")
def upload():
    """Upload a dataset file: 201 {"id", "name", "kind", "size_bytes"}; the operator may name another `team`."""
    caller = require_writer("upload datasets")
    # a part without a name has the name None: an unknown field too, named as such
    unknown = sorted(str(k) for k in set(request.form) - {"name", "kind", "team"} | set(request.files) - {"file"})
    if unknown:
        raise InvalidInput(f"unknown form field '{unknown[0][:40]}' (known: file, name, kind, team)")
    team = request.form.get("team") or caller.team
    own = same_team(team, caller.team)
    if not own and not caller.is_operator:
        raise Forbidden(f"this token belongs to team '{caller.team}'; it cannot upload for team '{team[:40]}'")
    team_id = caller.team_id
    if not own:
        with state().db.session() as s:
            team_id = get_team(s, team).id
    out = store_request_file(team_id)
    return jsonify(out), 201, {"Location": url_for("api_datasets.show", dataset_id=out["id"])}


@bp.get("/datasets")
def index():
    """The team's datasets (the operator's: every team's), newest first; ?kind= filters."""
    kind = query_choice("kind", KINDS)
    with state().db.session() as s:
        return jsonify({"datasets": datasets_of(s, g.caller.scope, kind)})


@bp.get("/datasets/<id:dataset_id>")
def show(dataset_id: int):
    """One dataset."""
    with state().db.session() as s:
        return jsonify(dataset_to_dict(owned(s, Dataset, dataset_id, g.caller.scope, "dataset")))


@bp.delete("/datasets/<id:dataset_id>")
def delete(dataset_id: int):
    """Delete a dataset that no job uses: 200 with what it was; 409 naming the jobs that use it."""
    require_writer("delete datasets")
    return jsonify(delete_request_dataset(dataset_id))


def delete_request_dataset(dataset_id: int) -> dict:
    """Delete the caller's team's dataset `dataset_id` (the operator: any team's; genq.datasets.delete_dataset), then
    its file."""
    with state().db.session() as s:
        dataset = owned(s, Dataset, dataset_id, g.caller.scope, "dataset")
        out = dataset_to_dict(dataset)
        path = delete_dataset(s, dataset)
    remove_dataset_file(artifact_store(), path)  # after the commit: a failure leaves a file no row names, not worse
    return out

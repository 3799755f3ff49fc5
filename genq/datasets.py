"""Uploaded datasets: stored under a generated name, their kind detected from the bytes, never from the name.

Kinds: `text` (UTF-8 without NUL bytes), `images` (a PNG/JPEG or a zip of them, optionally in class
folders), `audio` (a WAV or a zip of WAVs), `prompts` (a .csv with a `prompt` column, columns a job's template
names, or one column of prompts, or .jsonl objects with a "prompt" key). The rules for text, images, audio and
zips are genq.core.data.formats, the ones the training loaders apply, so that what uploads is what trains.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from genq.config import Settings
from genq.core.api import BUILTIN_DATASETS as BUILTIN_DATASETS  # the platform reads core's list (torch-free)
from genq.core.data import formats
from genq.core.data import prompts as prompts_format
from genq.core.data.prompts import PromptRow
from genq.core.data.prompts import bad_string as bad_string  # the API's checks share the prompts'
from genq.db.models import Dataset, Job, iso
from genq.errors import Conflict, InvalidInput, NotFound, TooLarge, refused_as_invalid_input
from genq.store import ArtifactStore

KINDS = ("text", "images", "audio", "prompts")
MAX_PROMPTS = prompts_format.MAX_ROWS
MAX_PROMPT_CHARS = prompts_format.MAX_PROMPT_CHARS
MAX_PROMPTS_BYTES = 32 << 20  # 10,000 rows of a few thousand characters; a bigger file is refused unread
ZIP_EXPANSION = 20  # a zip may unpack to at most this many times the upload limit (zip bombs)
CHUNK = 1 << 20
EXTENSIONS = {
    "text": ".txt",
    "png": ".png",
    "jpeg": ".jpg",
    "wav": ".wav",
    "zip": ".zip",
    "csv": ".csv",
    "jsonl": ".jsonl",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Detected(NamedTuple):
    kind: str
    ext: str  # the stored file's extension
    info: dict[str, Any]


def clean_name(name: object, limit: int = 200, file: bool = True) -> str:
    """A display name: no control characters, at most `limit` characters; for a `file` name, not its folders."""
    text = str(name or "")
    if file:
        text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _CONTROL.sub("", text).encode("utf-8", "replace").decode("utf-8", "replace").strip()
    return text[:limit]


def check_text(path: Path) -> dict[str, Any]:
    """Lines and characters of a UTF-8 text file that holds more than whitespace; InvalidInput naming the first NUL
    or invalid byte otherwise."""
    with refused_as_invalid_input(), open(path, "rb") as f:
        lines, chars = formats.text_stats(f)
    return {"lines": lines, "chars": chars}


def _read_media(path: Path, max_unpacked: int | None) -> tuple[formats.Media, list[Any]]:
    """The media files of an image, a WAV or a zip of them, and their headers: each file read and checked in
    the order and by the rules of the training loaders."""
    headers: list[Any] = []
    seconds = 0.0
    with refused_as_invalid_input(), formats.Media(path, max_unpacked) as media:
        for file in media.files:
            raw = io.BytesIO(media.read(file))
            if media.kind == "images":
                headers.append(formats.image_header(raw, file.what))
            else:
                headers.append(formats.wav_info(raw, file.what))
                seconds += headers[-1].seconds
                formats.check_audio_seconds(seconds)
    return media, headers


def _check_file(path: Path) -> Detected:
    """One PNG/JPEG image or one WAV file."""
    media, [header] = _read_media(path, None)
    if media.kind == "images":
        return Detected("images", EXTENSIONS[media.files[0].type],
                        {"images": 1, "width": header.width, "height": header.height})
    info = {"clips": 1, "channels": header.channels, "sample_rate": header.sample_rate,
            "seconds": round(header.seconds, 3)}
    return Detected("audio", ".wav", info)


def _check_zip(path: Path, max_unpacked: int) -> Detected:
    """A zip of images or of WAV files, with the classes its folders name."""
    media, _ = _read_media(path, max_unpacked)
    info: dict[str, Any] = {("images" if media.kind == "images" else "clips"): len(media.files)}
    if media.classes:
        info["classes"] = media.classes
    return Detected(media.kind, ".zip", info)


def read_prompt_rows(path: Path, ext: str, template: str | None = None, template_later: bool = False
                     ) -> list[PromptRow]:
    """The rows of a .csv or .jsonl prompts file (genq.core.data.prompts.parse_prompts), a bad row carrying its
    error; TooLarge before reading a file over MAX_PROMPTS_BYTES, InvalidInput when no row is usable."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NotFound(f"the prompts file {path.name} is missing from the artifact store") from None
    if size > MAX_PROMPTS_BYTES:
        raise TooLarge(f"the prompts file is {size} bytes; a prompts file may hold at most {MAX_PROMPTS_BYTES}")
    with refused_as_invalid_input():
        return prompts_format.parse_prompts(path.read_bytes(), ext.lstrip("."), template, template_later)


def prompts_info(rows: list[PromptRow]) -> dict[str, Any]:
    """What a prompts dataset shows: its rows, and the bad ones by number and reason (the first 100)."""
    bad = [{"row": r.row, "error": r.error} for r in rows if r.error is not None]
    return {"prompts": len(rows), "bad_rows": len(bad), "errors": bad[:100]} if bad else {"prompts": len(rows)}


def _prompts_format(path: Path) -> str:
    """The format of a prompts file named neither .csv nor .jsonl (rows.txt): JSONL when its first character
    (past a BOM and blank space) opens a JSON object, else CSV."""
    with open(path, "rb") as f:
        start = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return ".jsonl" if start.startswith(b"{") else ".csv"


def detect_kind(
    path: Path, filename: str = "", max_unpacked: int = 4 * 2**30, kind: str | None = None
) -> Detected:
    """What the file at `path` holds; `filename` only hints .csv/.jsonl prompts; `kind` asks for one kind."""
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"unknown dataset kind '{kind}' (known: {', '.join(KINDS)})")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise InvalidInput("the uploaded file is empty")
    suffix = PurePosixPath(clean_name(filename).lower()).suffix
    if kind == "text":
        return Detected("text", ".txt", check_text(path))
    if kind == "prompts" or (kind is None and suffix in (".csv", ".jsonl")):
        ext = suffix if suffix in (".csv", ".jsonl") else _prompts_format(path)
        return Detected("prompts", ext, prompts_info(read_prompt_rows(path, ext, template_later=True)))
    magic = formats.magic(head)
    if magic == "zip":
        found = _check_zip(path, max_unpacked)
    elif magic in formats.MEDIA_KINDS:
        found = _check_file(path)
    else:
        with refused_as_invalid_input():
            formats.refuse_unsupported(head, "the file")
        found = Detected("text", ".txt", check_text(path))
    if kind is not None and found.kind != kind:
        raise InvalidInput(f"the file holds {found.kind}, not {kind}")
    return found


def save_upload(
    session: Session,
    settings: Settings,
    team_id: int,
    stream: BinaryIO,
    filename: str,
    name: str | None = None,
    kind: str | None = None,
    store: ArtifactStore | None = None,
) -> Dataset:
    """Store an upload as a new dataset of `team_id` in `store` (default: the settings' artifact store), or raise
    TooLarge/InvalidInput and keep nothing."""
    root = settings.artifacts / "datasets"
    incoming = root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=incoming)
    tmp = Path(tmp_name)
    try:
        size, digest = 0, hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                digest.update(chunk)
                if size > settings.max_upload_bytes:
                    raise TooLarge(
                        f"the file is larger than the upload limit of {settings.max_upload_bytes} bytes"
                    )
                out.write(chunk)
        found = detect_kind(tmp, filename, ZIP_EXPANSION * settings.max_upload_bytes, kind)
        display = clean_name(filename, 255) or "upload"
        dataset = Dataset(
            team_id=team_id,
            name=clean_name(name, file=False) or display[:200],
            kind=found.kind,
            filename=display,
            path="",
            size_bytes=size,
            info=found.info,
            sha256=digest.hexdigest(),
        )
        session.add(dataset)
        session.flush()  # the id names the folder
        relative = f"datasets/{dataset.id}/data{found.ext}"
        (store or settings.store()).put(relative, tmp)  # a folder store links it into place: no copy
        dataset.path = relative
        session.flush()
        return dataset
    finally:
        tmp.unlink(missing_ok=True)


def delete_dataset(session: Session, dataset: Dataset) -> str:
    """Delete `dataset`'s row, or raise Conflict naming the jobs that use it; returns its file's key in the
    store, for the caller to delete once the row's deletion is committed."""
    dataset_id, path = dataset.id, dataset.path  # read now: a failed flush leaves the row unreadable
    users = session.scalars(select(Job.id).where(Job.dataset_id == dataset_id).order_by(Job.id).limit(6)).all()
    if users:
        listed = ", ".join(map(str, users[:5])) + (", ..." if len(users) > 5 else "")
        raise Conflict(f"dataset {dataset_id} is used by job{'s' if len(users) > 1 else ''} {listed}: a job's "
                       "dataset is kept, as the record of what it ran on")
    session.delete(dataset)
    try:
        session.flush()
    except IntegrityError:  # a job naming it was submitted meanwhile
        raise Conflict(f"dataset {dataset_id} is used by a job submitted just now: a job's "
                       "dataset is kept, as the record of what it ran on") from None
    return path


def remove_dataset_file(store: ArtifactStore, key: str) -> None:
    """Delete a dataset's stored file, and in a folder store its folder (datasets/ID/) once that is empty."""
    store.delete(key)
    if (local := store.local_path(key)) is not None:
        with suppress(OSError):  # not empty, or gone already
            local.parent.rmdir()


@contextmanager
def dataset_file(settings: Settings, dataset: Dataset, store: ArtifactStore | None = None) -> Iterator[Path]:
    """The stored file of `dataset` as a local file while the block runs (a temporary copy when the store is
    not a folder here)."""
    store = store or settings.store()
    local = store.local_path(dataset.path)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(dir=settings.home) as folder:
        copy = Path(folder) / dataset.path.rsplit("/", 1)[-1]
        store.get(dataset.path, copy)
        yield copy


def datasets_of(session: Session, team_id: int | None, kind: str | None = None) -> list[dict[str, Any]]:
    """The JSON forms of team `team_id`'s datasets (every team's for None: the operator), newest first; only those
    of `kind` when given."""
    query = select(Dataset).order_by(Dataset.id.desc())
    if team_id is not None:
        query = query.where(Dataset.team_id == team_id)
    if kind:
        query = query.where(Dataset.kind == kind)
    return [dataset_to_dict(d) for d in session.scalars(query)]


def dataset_to_dict(dataset: Dataset) -> dict[str, Any]:
    """The JSON form of a dataset."""
    return {
        "id": dataset.id,
        "team": dataset.team.name,
        "name": dataset.name,
        "kind": dataset.kind,
        "size_bytes": dataset.size_bytes,
        "filename": dataset.filename,
        "info": dataset.info or {},
        "created_at": iso(dataset.created_at),
    }

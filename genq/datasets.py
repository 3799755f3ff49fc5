"""Uploaded datasets: stored under a generated name, their kind detected from the bytes, never from the name.

Kinds: `text` (UTF-8 without NUL bytes), `images` (a PNG/JPEG or a zip of them, optionally in class
folders), `audio` (a WAV or a zip of WAVs), `prompts` (a .csv with a `prompt` column or prompts in the
first column, or .jsonl objects with a "prompt" key).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import tempfile
import wave
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple

from sqlalchemy.orm import Session

from genq import strict_json
from genq.config import Settings
from genq.core.api import BUILTIN_DATASETS as BUILTIN_DATASETS  # the platform reads core's list (torch-free)
from genq.db.models import Dataset, iso
from genq.errors import InvalidInput, NotFound, TooLarge

KINDS = ("text", "images", "audio", "prompts")
MAX_PROMPTS = 10_000
MAX_PROMPT_CHARS = 10_000
MAX_ZIP_MEMBERS = 200_000
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


def clean_name(name: object, limit: int = 200) -> str:
    """A display name: no path, no control characters, at most `limit` characters."""
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = _CONTROL.sub("", text).encode("utf-8", "replace").decode("utf-8", "replace").strip()
    return text[:limit]


def bad_string(text: str) -> bool:
    """True if `text` cannot be stored as SQL text (NUL) or encoded as UTF-8 (lone surrogates)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _magic(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return None


def check_text(path: Path) -> dict[str, Any]:
    """Line count of a UTF-8 text file; InvalidInput naming the first NUL or invalid byte otherwise."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise InvalidInput(
                    f"the file is not text: NUL byte at offset {offset + nul} "
                    "(a binary file? text datasets must be UTF-8)"
                )
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"the file is not UTF-8 text: invalid byte near offset {offset + exc.start}"
                ) from None
            lines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InvalidInput("the file is not UTF-8 text: it ends inside a multi-byte character") from None
    return {"lines": lines + 1}


def _check_image(path: Path) -> dict[str, Any]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
            width, height = img.size
    except Exception as exc:  # Pillow raises many types for corrupt or oversized images
        raise InvalidInput(f"the file looks like an image but cannot be read: {exc}") from None
    return {"images": 1, "width": width, "height": height}


def _wav_info(f: BinaryIO, what: str) -> dict[str, Any]:
    try:
        with wave.open(f) as w:
            return {
                "channels": w.getnchannels(),
                "sample_rate": w.getframerate(),
                "seconds": round(w.getnframes() / max(1, w.getframerate()), 3),
            }
    except Exception as exc:  # wave.Error, EOFError, struct.error on truncated headers
        raise InvalidInput(f"{what} is not a readable PCM WAV file: {exc}") from None


def _check_zip(path: Path, max_unpacked: int) -> Detected:
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, undecodable names, truncated archives ...
        raise InvalidInput(f"the file is not a valid zip archive: {exc}") from None
    with archive:
        members = [
            m
            for m in archive.infolist()
            if not m.is_dir()
            and not m.filename.startswith("__MACOSX/")
            and not PurePosixPath(m.filename).name.startswith(".")
        ]
        if not members:
            raise InvalidInput("the zip archive holds no files")
        if len(members) > MAX_ZIP_MEMBERS:
            raise InvalidInput(f"the zip archive holds {len(members)} files (at most {MAX_ZIP_MEMBERS})")
        if sum(m.file_size for m in members) > max_unpacked:
            raise InvalidInput(f"the zip archive unpacks to more than {max_unpacked} bytes")
        kinds, folders = set(), []
        for m in members:
            parts = PurePosixPath(m.filename.replace("\\", "/")).parts
            if m.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise InvalidInput(f"zip member '{clean_name(m.filename, 300)}' has an unsafe path")
            try:
                with archive.open(m) as f:
                    head = f.read(16)
            except Exception as exc:  # encrypted, unsupported compression, corrupt
                raise InvalidInput(f"zip member '{clean_name(m.filename)}' cannot be read: {exc}") from None
            kind = _magic(head)
            if kind not in ("png", "jpeg", "wav"):
                raise InvalidInput(
                    f"zip member '{clean_name(m.filename)}' is not a PNG/JPEG image or a WAV file"
                )
            kinds.add("audio" if kind == "wav" else "images")
            folders.append(parts[:-1])
        if len(kinds) > 1:
            raise InvalidInput("the zip archive mixes images and audio; upload one kind per dataset")
        kind = kinds.pop()
        # One shared top folder (zip of a folder) is not a class; the level below it is.
        if (
            all(len(f) >= 1 for f in folders)
            and len({f[0] for f in folders}) == 1
            and any(len(f) > 1 for f in folders)
        ):
            folders = [f[1:] for f in folders]
        info: dict[str, Any] = {("images" if kind == "images" else "clips"): len(members)}
        if all(len(f) == 1 for f in folders):
            info["classes"] = sorted({clean_name(f[0], 100) for f in folders})
        return Detected(kind, ".zip", info)


def read_prompts(path: Path, ext: str) -> list[str]:
    """The prompts in a .csv or .jsonl file; InvalidInput naming the line for anything else."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise NotFound(f"the prompts file {path.name} is missing from the artifact store") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the prompts file is not UTF-8 text (invalid byte near offset {exc.start})"
        ) from None
    prompts: list[str] = []
    if ext == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = strict_json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"prompts line {number} is not JSON: {exc}") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise InvalidInput(f'prompts line {number} must be an object with a string "prompt"')
            prompts.append(row["prompt"])
    else:
        try:
            rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        except csv.Error as exc:
            raise InvalidInput(f"the prompts file is not valid CSV: {exc}") from None
        header = [c.strip().lower() for c in rows[0]] if rows else []
        column = header.index("prompt") if "prompt" in header else 0
        prompts = [r[column] if column < len(r) else "" for r in rows[1 if "prompt" in header else 0 :]]
    for number, prompt in enumerate(prompts, 1):
        if bad_string(prompt) or len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(
                f"prompt {number} has a NUL character, invalid Unicode or more than "
                f"{MAX_PROMPT_CHARS} characters"
            )
    if not prompts:
        raise InvalidInput("the prompts file holds no prompts")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidInput(f"the prompts file holds {len(prompts)} prompts (at most {MAX_PROMPTS})")
    return prompts


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
        ext = suffix if suffix in (".csv", ".jsonl") else ".csv"
        return Detected("prompts", ext, {"prompts": len(read_prompts(path, ext))})
    magic = _magic(head)
    if magic in ("png", "jpeg"):
        found = Detected("images", EXTENSIONS[magic], _check_image(path))
    elif magic == "wav":
        with open(path, "rb") as f:
            found = Detected("audio", ".wav", {"clips": 1, **_wav_info(f, "the file")})
    elif magic == "zip":
        found = _check_zip(path, max_unpacked)
    else:
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
) -> Dataset:
    """Store an upload as a new dataset of `team_id`, or raise TooLarge/InvalidInput and keep nothing."""
    root = settings.artifacts / "datasets"
    incoming = root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=incoming)
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise TooLarge(
                        f"the file is larger than the upload limit of {settings.max_upload_bytes} bytes"
                    )
                out.write(chunk)
        found = detect_kind(tmp, filename, ZIP_EXPANSION * settings.max_upload_bytes, kind)
        display = clean_name(filename, 255) or "upload"
        dataset = Dataset(
            team_id=team_id,
            name=clean_name(name) or display[:200],
            kind=found.kind,
            filename=display,
            path="",
            size_bytes=size,
            info=found.info,
        )
        session.add(dataset)
        session.flush()  # the id names the folder
        relative = f"datasets/{dataset.id}/data{found.ext}"
        (root / str(dataset.id)).mkdir(parents=True, exist_ok=True)
        os.replace(tmp, settings.artifacts / relative)
        dataset.path = relative
        session.flush()
        return dataset
    finally:
        tmp.unlink(missing_ok=True)


def dataset_file(settings: Settings, dataset: Dataset) -> Path:
    """The stored file of `dataset`."""
    return settings.artifacts / dataset.path


def dataset_to_dict(dataset: Dataset) -> dict[str, Any]:
    """The JSON form of a dataset."""
    return {
        "id": dataset.id,
        "name": dataset.name,
        "kind": dataset.kind,
        "size_bytes": dataset.size_bytes,
        "filename": dataset.filename,
        "info": dataset.info or {},
        "created_at": iso(dataset.created_at),
    }

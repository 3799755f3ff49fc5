"""A dataset's files, read from a folder, a zip or a single file without unpacking anything to disk."""

from __future__ import annotations

from pathlib import Path

from genq.core.api import BUILTIN_DATASETS, DataError, DataSource
from genq.core.data.formats import Media


def require_kind(data: DataSource, kind: str, model: str) -> None:
    """Raise DataError unless `data` is a `kind` dataset that exists (a built-in or a file/folder on disk)."""
    if data.builtin:
        found = BUILTIN_DATASETS.get(data.builtin)
        if found is None:
            raise DataError(f"unknown built-in dataset '{data.builtin}' (known: {', '.join(BUILTIN_DATASETS)})")
        if found != kind:
            raise DataError(f"{model} needs an {kind} dataset; the built-in '{data.builtin}' is {found}")
        return
    if data.kind != kind:
        raise DataError(f"{model} needs an {kind} dataset, got a {data.kind} dataset")
    if data.path is None or not Path(data.path).exists():
        raise DataError(f"{kind} dataset not found at {data.path}")


def open_media(path: Path, kind: str) -> Media:
    """The media files of an images or audio dataset under the upload check's rules (genq.core.data.formats):
    typed by magic bytes, never by name, so that what uploaded trains."""
    media = Media(path)
    if media.kind != kind:
        media.close()
        raise DataError(f"the dataset holds {media.kind}, not {kind}")
    return media

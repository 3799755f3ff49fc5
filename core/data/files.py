"""A dataset's files, read from a folder, a zip or a single file without unpacking anything to disk."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from genq.core.api import BUILTIN_DATASETS, DataError, DataSource


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


def iter_files(path: Path, suffixes: set[str], max_bytes: int) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(relative posix name, bytes) of each file with one of `suffixes` in a folder or zip (hidden and
    __MACOSX entries skipped), or of `path` itself when it is a single other file (its decoder judges it)."""
    def too_big(rel: PurePosixPath) -> DataError:
        return DataError(f"{rel} is larger than {max_bytes >> 20} MiB")

    def wanted(rel: PurePosixPath) -> bool:
        hidden = any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)
        return not hidden and rel.suffix.lower() in suffixes

    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = PurePosixPath(p.relative_to(path).as_posix())
            if p.is_file() and wanted(rel):
                if p.stat().st_size > max_bytes:
                    raise too_big(rel)
                yield rel, p.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                rel = PurePosixPath(info.filename)
                if info.is_dir() or not wanted(rel):
                    continue
                if info.file_size > max_bytes:
                    raise too_big(rel)
                yield rel, zf.read(info)
    else:
        if path.stat().st_size > max_bytes:
            raise too_big(PurePosixPath(path.name))
        yield PurePosixPath(path.name), path.read_bytes()


def class_labels(names: list[PurePosixPath], items: str) -> tuple[list[int] | None, list[str]]:
    """Labels from the parent folder names when `names` sit in more than one folder; classes sorted with
    numbers in numeric order ("2" before "10")."""
    if len({n.parent for n in names}) < 2:
        return None, []
    parents = [n.parent.name for n in names]
    if any(p == "" for p in parents):
        raise DataError(f"some {items} sit outside the class folders; put every one in a class sub-folder")
    classes = sorted(set(parents), key=lambda s: (len(s), s) if s.isdigit() else (1 << 30, s))
    index = {c: i for i, c in enumerate(classes)}
    return [index[p] for p in parents], classes

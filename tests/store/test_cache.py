"""A worker's local cache: files by content hash, checked on the way in, bounded in size."""

from __future__ import annotations

import os
import time

import pytest

from genq.store import LocalStore, sha256_file
from genq.worker.artifacts import ArtifactUnusable, ContentCache


def test_the_cache_serves_a_hash_it_holds_without_asking_the_store_and_checks_what_it_downloads(tmp_path):
    store = LocalStore(tmp_path / "store")
    (tmp_path / "store" / "datasets" / "1").mkdir(parents=True)
    path = tmp_path / "store" / "datasets" / "1" / "data.txt"
    path.write_bytes(b"some text\n")
    digest = sha256_file(path)
    cache = ContentCache(tmp_path / "cache", max_bytes=1 << 20)
    first = cache.fetch(store, "datasets/1/data.txt", digest)
    assert first.read_bytes() == b"some text\n" and first.name == digest
    path.unlink()  # the store lost it: the cache still answers by hash
    assert cache.fetch(store, "datasets/1/data.txt", digest) == first
    path.write_bytes(b"tampered\n")
    with pytest.raises(ArtifactUnusable, match="data.txt in the artifact store is damaged: its content hash"):
        cache.fetch(store, "datasets/1/data.txt", "0" * 64)


def random_files(folder, n: int, size: int) -> list[tuple]:
    """(path, sha256) of n new files of `size` random bytes."""
    files = []
    for i in range(n):
        f = folder / f"f{i}"
        f.write_bytes(os.urandom(size))
        files.append((f, sha256_file(f)))
    return files


def test_the_cache_stays_within_its_bound_dropping_the_least_recently_used(tmp_path):
    cache = ContentCache(tmp_path / "cache", max_bytes=3000)
    files = random_files(tmp_path, 5, 1000)
    for f, digest in files[:3]:
        cache.keep(f, digest)
        time.sleep(0.01)
    os.utime(cache.path(files[0][1]))  # the first one was just used again
    time.sleep(0.01)
    cache.keep(*files[3])
    held = {p.name for p in (tmp_path / "cache").glob("??/*")}
    assert held == {files[0][1], files[2][1], files[3][1]}
    assert sum(p.stat().st_size for p in (tmp_path / "cache").glob("??/*")) <= 3000


def test_the_cache_lists_its_folder_once_while_under_its_bound_and_again_for_what_others_added(tmp_path,
                                                                                                monkeypatch):
    cache, other = ContentCache(tmp_path / "cache", 2500), ContentCache(tmp_path / "cache", 2500)
    listed = []
    evict = ContentCache.evict
    monkeypatch.setattr(ContentCache, "evict", lambda self, keep=None: listed.append(self) or evict(self, keep))
    files = random_files(tmp_path, 5, 600)
    for f, digest in files[:3]:
        cache.keep(f, digest)
    assert listed == [cache]  # the first file: the count of what it holds starts there
    other.keep(*files[3])  # another worker of the host fills the folder over its bound
    monkeypatch.setattr("genq.worker.artifacts.RESCAN_SECONDS", 0.0)
    cache.keep(*files[4])
    assert sum(p.stat().st_size for p in (tmp_path / "cache").glob("??/*")) <= 2500

"""The artifact store's contract, run against each backend: files of several chunks go up and come back
byte for byte, a broken download resumes from its part file, keys cannot leave the store."""

from __future__ import annotations

import os

import pytest

from genq.errors import Conflict, InvalidInput
from genq.store import StoreError, check_key, open_store


def random_file(path, size: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_put_get_open_size_delete(store, tmp_path, small_chunks):
    source = random_file(tmp_path / "src" / "model.safetensors", 5 * small_chunks + 123)
    key = "jobs/1/a1/checkpoints/step-00000020/model.safetensors"
    assert store.size(key) is None
    store.put(key, source)
    assert store.size(key) == source.stat().st_size
    target = tmp_path / "dst" / "copy.bin"
    store.get(key, target)
    assert target.read_bytes() == source.read_bytes()
    with store.open(key, offset=small_chunks + 7) as f:
        tail = b"".join(iter(lambda: f.read(small_chunks), b""))
    assert tail == source.read_bytes()[small_chunks + 7:]
    # a second put replaces the file whole
    smaller = random_file(tmp_path / "src" / "other", 10)
    store.put(key, smaller)
    store.get(key, target)
    assert target.read_bytes() == smaller.read_bytes()
    store.delete(key)
    assert store.size(key) is None
    with pytest.raises(FileNotFoundError):
        store.get(key, tmp_path / "dst" / "gone")


def test_an_empty_file_round_trips(store, tmp_path):
    source = random_file(tmp_path / "empty", 0)
    store.put("jobs/1/empty", source)
    store.get("jobs/1/empty", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b""


def test_a_broken_download_resumes_from_its_part_file(store, tmp_path, small_chunks, monkeypatch):
    data = random_file(tmp_path / "d", 4 * small_chunks).read_bytes()
    store.put("datasets/7/data.txt", tmp_path / "d")
    target = tmp_path / "out" / "data.txt"
    target.parent.mkdir()
    # what a download cut after one and a half chunks leaves behind
    (target.parent / "data.txt.part").write_bytes(data[: small_chunks + small_chunks // 2])
    offsets = []
    real_open = store.open
    monkeypatch.setattr(store, "open", lambda key, offset=0: offsets.append(offset) or real_open(key, offset))
    store.get("datasets/7/data.txt", target)
    assert target.read_bytes() == data
    if store.local_path("datasets/7/data.txt") is None:  # a folder store links the file instead of streaming it
        assert offsets == [small_chunks + small_chunks // 2]
    assert not (target.parent / "data.txt.part").exists()


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "jobs/../../x", "jobs//x", "jobs/x\\y", "a/./b",
                                 "jobs/na me", "x" * 501])
def test_keys_that_could_leave_the_store_are_refused(key):
    with pytest.raises(InvalidInput):
        check_key(key)


def test_open_store_picks_the_backend_by_the_address(tmp_path):
    assert type(open_store(str(tmp_path))).__name__ == "LocalStore"
    assert type(open_store(f"file://{tmp_path}")).__name__ == "LocalStore"
    assert type(open_store("memory://genq-test")).__name__ == "FsspecStore"
    assert type(open_store("http://web:8000", token="t")).__name__ == "HttpStore"
    with pytest.raises(InvalidInput, match="GENQ_TOKEN"):
        open_store("https://web:8000")


def test_a_key_naming_a_folder_is_no_stored_file(store, tmp_path):
    """"jobs" holds other keys: it is not a file to read, size, delete or replace, on every backend."""
    source = random_file(tmp_path / "f", 100)
    store.put("jobs/5/a1/out.bin", source)
    for folder in ("jobs", "jobs/5", "jobs/5/a1"):
        assert store.size(folder) is None, folder
        with pytest.raises(FileNotFoundError):
            store.open(folder)
        with pytest.raises(FileNotFoundError):
            store.get(folder, tmp_path / "back" / "x")
        store.delete(folder)  # nothing: the folder and its files stay
        with pytest.raises((Conflict, StoreError), match="folder"):
            store.put(folder, source)
    assert store.size("jobs/5/a1/out.bin") == 100
    assert store.size("jobs/5/a1/out.bin/inner") is None, "a path through a file is no stored file either"
    with pytest.raises(FileNotFoundError):
        store.open("jobs/5/a1/out.bin/inner")


def test_a_folder_store_removes_the_folders_a_delete_empties_and_a_put_makes_them_again(tmp_path, monkeypatch):
    store = open_store(str(tmp_path / "store"))
    source = random_file(tmp_path / "src", 10)
    keys = ["jobs/5/a1/checkpoints/step-00000100/model.safetensors", "jobs/5/a1/checkpoints/step-00000100/state.pt",
            "jobs/5/a1/checkpoints/step-00000200/model.safetensors"]
    for key in keys:
        store.put(key, source)
    root = tmp_path / "store"
    store.delete(keys[0])
    assert (root / "jobs/5/a1/checkpoints/step-00000100").is_dir()  # still holds state.pt
    store.delete(keys[1])
    assert not (root / "jobs/5/a1/checkpoints/step-00000100").exists()  # emptied: gone
    assert (root / "jobs/5/a1/checkpoints/step-00000200/model.safetensors").is_file()
    store.delete(keys[2])
    assert list(root.iterdir()) == []  # every folder under the store's own, which stays
    # a delete that removes the folder a put has just made, before its file lands: the put makes it again
    real_link, raced = os.link, []

    def link_after_a_delete(source, target):
        if not raced:
            raced.append(target)
            os.rmdir(os.path.dirname(target))
        return real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_a_delete)
    store.put(keys[0], source)
    assert raced and (root / keys[0]).read_bytes() == source.read_bytes()

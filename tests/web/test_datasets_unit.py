"""genq.datasets on arbitrary bytes: a Detected kind or InvalidInput, never another exception; corrupt files
are refused naming the problem and leave nothing stored."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from genq.datasets import clean_name, detect_kind
from genq.db.models import Dataset
from genq.errors import InvalidInput
from tests.web.conftest import count, png, upload, wav, zipped

PREFIXES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x10\x00\x00\x00WAVEfmt ", b"PK\x03\x04"]


@fuzz_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.sampled_from(PREFIXES),
    body=st.binary(max_size=300),
    name=st.sampled_from(["x.txt", "x.csv", "x.jsonl", "x.png", "x.zip", ""]),
    kind=st.sampled_from([None, "text", "images", "audio", "prompts"]),
)
def test_arbitrary_bytes_never_crash(tmp_path, prefix, body, name, kind):
    path = tmp_path / "upload"
    path.write_bytes(prefix + body)
    try:
        found = detect_kind(path, name, kind=kind)
    except InvalidInput as exc:
        assert exc.message
    else:
        assert found.kind in ("text", "images", "audio", "prompts") and found.ext.startswith(".")


@pytest.mark.parametrize("data, words", [
    (zipped({"a.png": png()})[:-20], "the file is not a valid zip archive"),
    (wav()[:30], "the file is not a readable PCM WAV file: it ends inside the header"),
    (png()[:-10], "the file looks like an image but cannot be read: truncated PNG file"),
    (zipped({"a.wav": wav()[:40]}), "zip member 'a.wav' is not a readable PCM WAV file"),
    (zipped({"a.png": png()[:-10]}), "zip member 'a.png' looks like an image but cannot be read"),
], ids=["zip", "wav", "png", "wav-in-zip", "png-in-zip"])
def test_truncated_and_corrupt_files_are_refused_and_not_stored(client, auth, settings, data, words):
    answer = upload(client, auth, data, "f")
    assert answer.status_code == 422 and answer.json["error"] == "invalid_input", answer.json
    assert words in answer.json["message"]
    assert count(client.application.extensions["genq"].db, Dataset) == 0
    assert [p for p in (settings.artifacts / "datasets").rglob("*") if p.is_file()] == []


def test_clean_name():
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\\\Users\\\\me\\\\data.txt") == "data.txt"
    assert clean_name("a\x00b\nc.txt") == "abc.txt"
    assert clean_name("\ud800x") == "?x"
    assert len(clean_name("y" * 1000)) == 200

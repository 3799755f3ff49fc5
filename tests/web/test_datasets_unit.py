"""genq.datasets on arbitrary bytes: a Detected kind or InvalidInput, never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genq.datasets import clean_name, detect_kind
from genq.errors import InvalidInput
from tests.web.conftest import png, wav, zipped

PREFIXES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x10\x00\x00\x00WAVEfmt ", b"PK\x03\x04"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


def test_truncated_and_corrupt_containers(tmp_path):
    for data in (zipped({"a.png": png()})[:-20], wav()[:30], png()[:-10], zipped({"a.wav": wav()[:40]})):
        path = tmp_path / "f"
        path.write_bytes(data)
        try:
            detect_kind(path, "f")
        except InvalidInput:
            pass


def test_clean_name():
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\\\Users\\\\me\\\\data.txt") == "data.txt"
    assert clean_name("a\x00b\nc.txt") == "abc.txt"
    assert clean_name("\ud800x") == "?x"
    assert len(clean_name("y" * 1000)) == 200

"""POST/GET /api/v1/datasets: kinds detected from the bytes, limits, names that are never paths."""

from __future__ import annotations

import dataclasses
import os

import pytest

from genq.db.models import Dataset, Job
from genq.web import create_app
from tests.web.conftest import add_job, bearer, count, make_token, png, upload, wav, zipped


def stored_files(settings) -> list[str]:
    root = settings.artifacts / "datasets"
    return sorted(str(p.relative_to(settings.artifacts)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "filename, data, kind, info",
    [
        ("corpus.txt", "hello wörld\nline two\n".encode(), "text", {"lines": 2, "chars": 21}),
        ("corpus.txt", "\ufeffhello wörld\nline two".encode(), "text", {"lines": 2, "chars": 20}),
        ("digit.png", png(), "images", {"images": 1, "width": 8, "height": 8}),
        ("photo.jpg", png(fmt="JPEG"), "images", {"images": 1, "width": 8, "height": 8}),
        ("tone.wav", wav(), "audio", {"clips": 1, "channels": 1, "sample_rate": 8000, "seconds": 0.05}),
        ("prompts.csv", b"prompt,label\nseven,7\na cat,0\n", "prompts", {"prompts": 2}),
        ("prompts.csv", b"seven\nthree\n", "prompts", {"prompts": 2}),
        ("prompts.jsonl", b'{"prompt": "once"}\n\n{"prompt": "upon", "x": 1}\n', "prompts", {"prompts": 2}),
    ],
)
def test_upload_detects_kind(client, auth, settings, filename, data, kind, info):
    answer = upload(client, auth, data, filename, name="my data")
    assert answer.status_code == 201, answer.json
    body = answer.json
    assert (body["kind"], body["name"], body["size_bytes"], body["info"]) == (
        kind,
        "my data",
        len(data),
        info,
    )
    assert set(body) >= {"id", "name", "kind", "size_bytes"}
    [path] = stored_files(settings)
    assert path.startswith(f"datasets/{body['id']}/data.")
    assert (settings.artifacts / path).read_bytes() == data
    assert client.get(f"/api/v1/datasets/{body['id']}", headers=auth).json == body


def test_zip_of_images_with_class_folders(client, auth):
    data = zipped(
        {
            "digits/0/a.png": png(color=0),
            "digits/0/b.png": png(),
            "digits/7/c.jpg": png(fmt="JPEG"),
            "digits/10/d.png": png(),
            "digits/.DS_Store": b"junk",
            "__MACOSX/digits/._a.png": b"junk",
        }
    )
    body = upload(client, auth, data, "digits.zip").json
    # The classes the loaders give, in their order: numbers numerically ("7" before "10"), then names.
    assert body["kind"] == "images" and body["info"] == {"images": 4, "classes": ["0", "7", "10"]}


def test_zip_of_wavs(client, auth):
    body = upload(client, auth, zipped({"a.wav": wav(), "b.wav": wav()}), "clips.zip").json
    assert body["kind"] == "audio" and body["info"]["clips"] == 2


@pytest.mark.parametrize(
    "filename, data, words",
    [
        ("bin.dat", b"\x7fELF\x02\x01\x01\x00\x00\x00", "NUL byte at offset 7"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"  \n\t\n", "empty: it holds no text but whitespace"),
        ("mixed.zip", zipped({"a.png": png(), "b.wav": wav()}), "mixes images and audio"),
        ("other.zip", zipped({"a.png": png(), "notes.txt": b"hi"}), "notes.txt"),
        ("slip.zip", zipped({"../../evil.png": png()}), "unsafe path"),
        ("nothing.zip", zipped({}), "the zip archive holds no files"),
        ("broken.png", png()[:30], "cannot be read"),
        ("bad.jsonl", b'{"text": "no prompt"}\n["not an object"]\n', "no usable row: row 0 (line 1)"),
        ("empty.csv", b"prompt\n", "no prompts"),
        ("riff.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "WAV"),
        ("8bit.wav", wav(width=1), "the file is 8-bit; only 16-bit PCM WAV files are supported"),
        ("24bit.wav", wav(width=3), "the file is 24-bit; only 16-bit PCM WAV files are supported"),
        ("8bit.zip", zipped({"a.wav": wav(), "b.wav": wav(width=1)}), "zip member 'b.wav' is 8-bit"),
        ("24bit.zip", zipped({"a.wav": wav(width=3)}), "zip member 'a.wav' is 24-bit"),
        ("loose.zip", zipped({"cat/a.png": png(), "b.png": png()}), "'b.png' sits outside the class folders"),
        ("one.gif", b"GIF89a\x04\x00\x04\x00\x80\x00\x00", "the file is a GIF image: genq reads PNG and JPEG"),
        ("one.bmp", b"BM\x46\x00\x00\x00\x00\x00\x00\x00\x36\x00", "the file is a BMP image"),
        ("one.webp", b"RIFF\x1a\x00\x00\x00WEBPVP8L", "the file is a WebP image"),
        ("gifs.zip", zipped({"cat/a.gif": b"GIF87a\x01\x00\x01\x00"}), "zip member 'cat/a.gif' is a GIF image"),
    ],
)
def test_upload_refuses_bad_files_naming_the_problem(client, auth, settings, filename, data, words):
    answer = upload(client, auth, data, filename)
    assert answer.status_code == 422, answer.json
    assert answer.json["error"] == "invalid_input" and words in answer.json["message"]
    assert count(client.application.extensions["genq"].db, Dataset) == 0
    assert stored_files(settings) == []  # the temporary copy is gone too


def test_prompts_with_some_bad_rows_upload_naming_them(client, auth):
    data = b'{"prompt": "ok"}\n{"text": "no prompt"}\n{"prompt": "hot", "temperature": -1}\n'
    answer = upload(client, auth, data, "some-bad.jsonl")
    assert answer.status_code == 201, answer.json
    info = answer.json["info"]
    assert (info["prompts"], info["bad_rows"]) == (3, 2)
    assert "row 1 (line 2): it has no prompt" in info["errors"][0]["error"]
    assert '"temperature" must be a number from 1e-06 to 100, got -1' in info["errors"][1]["error"]


def test_prompts_named_neither_csv_nor_jsonl_are_read_by_their_first_line(client, auth, db):
    rows = b'\xef\xbb\xbf\n  {"prompt": "ROMEO:", "id": "a"}\n{"prompt": "JULIET:"}\n'
    jsonl = upload(client, auth, rows, "rows.txt", kind="prompts")
    assert jsonl.status_code == 201 and jsonl.json["info"] == {"prompts": 2}, jsonl.json
    table = upload(client, auth, b"id,prompt\na,ROMEO:\n", "rows.txt", kind="prompts")
    assert table.status_code == 201 and table.json["info"] == {"prompts": 1}, table.json
    with db.session() as s:
        assert [s.get(Dataset, d.json["id"]).path.rsplit(".", 1)[1] for d in (jsonl, table)] == ["jsonl", "csv"]


def test_binary_uploaded_as_text_is_refused(client, auth):
    answer = upload(client, auth, png(), "digit.png", kind="text")
    assert answer.status_code == 422 and "NUL byte" in answer.json["message"]
    answer = upload(client, auth, b"plain words", "x.txt", kind="images")
    assert answer.status_code == 422 and "holds text, not images" in answer.json["message"]
    assert upload(client, auth, b"x", "x.txt", kind="nonsense").status_code == 422


def test_missing_file_field(client, auth):
    answer = client.post(
        "/api/v1/datasets", headers=auth, data={"name": "x"}, content_type="multipart/form-data"
    )
    assert answer.status_code == 422 and "'file'" in answer.json["message"]


def test_upload_too_large(settings, db, auth):
    small = dataclasses.replace(settings, max_upload_bytes=1000)
    client = create_app({"SETTINGS": small, "TESTING": True}).test_client()
    assert upload(client, auth, b"a" * 1000, "ok.txt").status_code == 201
    answer = upload(client, auth, b"a" * 1001, "big.txt")
    assert answer.status_code == 413 and answer.json["error"] == "too_large"
    # A body far over the limit is refused by the request size cap before it is parsed.
    answer = upload(client, auth, b"a" * (3 * 1024 * 1024), "huge.txt")
    assert answer.status_code == 413 and answer.json["error"] == "too_large"
    assert count(db, Dataset) == 1


@pytest.mark.parametrize(
    "filename",
    [
        "../../../../etc/passwd",
        "..\\..\\win.ini",
        "/abs/path.txt",
        "a/../../b.txt",
        "nul\x00name.txt",
        "..",
        "ünï\u202ecode.txt",
    ],
)
def test_filename_is_display_only(client, auth, settings, filename):
    answer = upload(client, auth, b"some text", filename)
    assert answer.status_code == 201, answer.json
    body = answer.json
    assert "/" not in body["filename"] and "\\" not in body["filename"] and "\x00" not in body["filename"]
    assert stored_files(settings) == [f"datasets/{body['id']}/data.txt"]
    outside = [
        p for p in settings.home.parent.rglob("*") if p.is_file() and p.name in ("passwd", "win.ini", "b.txt")
    ]
    assert outside == []


def test_list_is_per_team(client, auth, other_auth):
    mine = upload(client, auth, b"mine", "a.txt").json
    theirs = upload(client, other_auth, b"theirs", "b.txt").json
    assert [d["id"] for d in client.get("/api/v1/datasets", headers=auth).json["datasets"]] == [mine["id"]]
    assert client.get(f"/api/v1/datasets/{theirs['id']}", headers=auth).status_code == 404
    assert client.get("/api/v1/datasets?kind=text", headers=auth).json["datasets"][0]["id"] == mine["id"]
    assert client.get("/api/v1/datasets?kind=images", headers=auth).json["datasets"] == []
    assert client.get("/api/v1/datasets?kind=bogus", headers=auth).status_code == 422


def test_no_leftovers_in_incoming(client, auth, settings):
    upload(client, auth, b"\x00\x01", "x.bin")
    upload(client, auth, b"fine", "x.txt")
    assert os.listdir(settings.artifacts / "datasets" / ".incoming") == []


def test_delete_an_unused_dataset_and_its_file(client, auth, other_auth, db, settings):
    kept, unused = upload(client, auth, b"kept", "a.txt").json, upload(client, auth, b"unused", "b.txt").json
    job_id = add_job(db, dataset_id=kept["id"])
    viewer = bearer(make_token(db, "alpha", "viewer"))
    assert client.delete(f"/api/v1/datasets/{unused['id']}", headers=viewer).status_code == 403
    assert client.delete(f"/api/v1/datasets/{unused['id']}", headers=other_auth).status_code == 404
    used = client.delete(f"/api/v1/datasets/{kept['id']}", headers=auth)
    assert used.status_code == 409 and used.json["message"] == (
        f"dataset {kept['id']} is used by job {job_id}: a job's dataset is kept, as the record of what it ran on")
    gone = client.delete(f"/api/v1/datasets/{unused['id']}", headers=auth)
    assert gone.status_code == 200 and gone.json["name"] == "b.txt"
    assert client.get(f"/api/v1/datasets/{unused['id']}", headers=auth).status_code == 404
    assert stored_files(settings) == [f"datasets/{kept['id']}/data.txt"]
    assert not (settings.artifacts / "datasets" / str(unused["id"])).exists()  # its folder went with it
    assert client.delete(f"/api/v1/datasets/{unused['id']}", headers=auth).status_code == 404


def test_a_deleted_datasets_id_is_never_given_again(client, auth):
    first = upload(client, auth, b"one", "a.txt").json["id"]
    assert client.delete(f"/api/v1/datasets/{first}", headers=auth).status_code == 200
    assert upload(client, auth, b"two", "b.txt").json["id"] == first + 1  # SQLite reused the highest id


def test_a_datasets_name_is_kept_as_given_but_its_file_name_loses_its_folders(client, auth):
    body = upload(client, auth, b"text", "../x/corpus.txt", name="plays/2024 <draft>\x07").json
    assert (body["name"], body["filename"]) == ("plays/2024 <draft>", "corpus.txt")


def test_the_operator_uploads_for_a_team_and_others_only_for_their_own(client, auth, db):
    operator = bearer(make_token(db, "admin", "admin"))
    make_token(db, "beta", "admin")  # the team exists
    theirs = upload(client, operator, b"a text to train on\n" * 40, "a.txt", team="beta")  # a block of 64 fits
    assert theirs.status_code == 201
    mine = upload(client, operator, b"text", "b.txt").json["id"]  # the operator's own team
    refused = client.post("/api/v1/jobs", headers=operator, json={
        "type": "train", "model": "gpt", "dataset": mine, "team": "beta", "params": {"max_steps": 1}})
    assert refused.status_code == 422
    assert f"dataset {mine} belongs to team 'admin', not 'beta'" in refused.json["message"]
    ok = client.post("/api/v1/jobs", headers=operator, json={
        "type": "train", "model": "gpt", "dataset": theirs.json["id"], "team": "beta", "params": {"max_steps": 1}})
    assert ok.status_code == 201, ok.json
    model = add_job(db, status="succeeded")  # a model of team alpha's: the operator sees it, says whose it is
    across = client.post("/api/v1/jobs", headers=operator, json={"type": "generate", "source_job": model,
                                                                 "team": "beta"})
    assert across.status_code == 422 and across.json["message"] == (
        f"source job {model} belongs to team 'alpha', not 'beta': a team generates from its own models (submit it "
        "for team 'alpha')")
    hidden = client.post("/api/v1/jobs", headers=bearer(make_token(db, "beta", "member")),
                         json={"type": "generate", "source_job": model})
    assert hidden.status_code == 404 and hidden.json["message"] == f"source job {model} not found"  # not the operator
    other = upload(client, auth, b"text", "c.txt", team="beta")
    assert other.status_code == 403 and "cannot upload for team 'beta'" in other.json["message"]
    assert upload(client, auth, b"text", "c.txt", team="ALPHA").status_code == 201  # its own, in another case
    bogus = upload(client, auth, b"text", "d.txt", bogus="1")
    assert bogus.status_code == 422 and "unknown form field 'bogus'" in bogus.json["message"]
    body = (b'--B\r\nContent-Disposition: form-data; filename="a.txt"\r\n\r\nhello\r\n'  # a part with no name
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="b.txt"\r\n\r\nhi\r\n--B--\r\n')
    nameless = client.post("/api/v1/datasets", headers=auth, data=body, content_type="multipart/form-data; boundary=B")
    assert nameless.status_code == 422 and "unknown form field 'None'" in nameless.json["message"], nameless.json
    assert upload(client, operator, b"text", "e.txt", team="nosuch").status_code == 404


def test_the_operator_sees_and_deletes_every_teams_datasets(client, auth, other_auth, db):
    operator = bearer(make_token(db, "admin", "admin"))
    ours, theirs = (upload(client, who, b"text", "a.txt").json["id"] for who in (auth, other_auth))
    listed = client.get("/api/v1/datasets", headers=operator).json["datasets"]
    assert [(d["id"], d["team"]) for d in listed] == [(theirs, "beta"), (ours, "alpha")]
    assert client.get(f"/api/v1/datasets/{ours}", headers=operator).json["team"] == "alpha"
    assert client.delete(f"/api/v1/datasets/{theirs}", headers=operator).status_code == 200
    assert client.get(f"/api/v1/datasets/{theirs}", headers=other_auth).status_code == 404
    assert [d["id"] for d in client.get("/api/v1/datasets", headers=auth).json["datasets"]] == [ours]


def test_a_dataset_deleted_while_a_job_naming_it_is_submitted_is_a_404(client, auth, db, monkeypatch):
    from genq.jobs import service

    dataset = upload(client, auth, b"some text to train on\n" * 40, "a.txt").json["id"]
    checked = service._dataset

    def checked_then_deleted(session, *args):  # the DELETE commits between the submission's check and its insert
        found = checked(session, *args)
        with db.session() as other:
            other.delete(other.get(Dataset, dataset))
        return found

    monkeypatch.setattr(service, "_dataset", checked_then_deleted)
    answer = client.post("/api/v1/jobs", headers=auth, json={
        "type": "train", "model": "gpt", "dataset": dataset, "params": {"max_steps": 1}})
    assert answer.status_code == 404 and f"dataset {dataset} not found" in answer.json["message"], answer.json
    assert count(db, Dataset) == 0 and client.get("/api/v1/jobs", headers=auth).json["jobs"] == []


def test_a_job_submitted_while_its_dataset_is_deleted_keeps_the_dataset(client, auth, db, monkeypatch):
    from sqlalchemy.orm import Session

    dataset = upload(client, auth, b"some text to train on", "a.txt").json["id"]
    real_delete = Session.delete

    def job_arrives(session, row):  # a job naming the dataset commits between the DELETE's check and its flush
        add_job(db, dataset_id=dataset, builtin_dataset=None)
        real_delete(session, row)

    monkeypatch.setattr(Session, "delete", job_arrives)
    answer = client.delete(f"/api/v1/datasets/{dataset}", headers=auth)
    assert answer.status_code == 409 and "submitted just now" in answer.json["message"], answer.json
    assert count(db, Dataset) == 1


@pytest.mark.parametrize("model, params, data, filename, words", [
    ("dcgan", {}, png(), "one.png",
     "a dcgan needs at least 2 images (its evaluation compares their spread with the samples')"),
    ("vae", {}, png(fmt="JPEG"), "one.jpg", "a vae needs at least 2 images (one is held out for validation)"),
    ("dcgan", {"conditional": "class"}, zipped({"a.png": png(), "b.png": png(color=9)}), "flat.zip",
     "a conditional dcgan needs labelled images: put the images in one sub-folder per class"),
    ("wavenet", {"conditional": True}, wav(), "tone.wav",
     "a conditional wavenet needs labelled audio: put the WAV files in one sub-folder per label"),
])
def test_data_a_worker_would_refuse_is_refused_at_submission(client, auth, db, model, params, data, filename, words):
    """What the upload's info already says cannot train: a 422 naming the dataset, no job queued for a worker
    to fail."""
    dataset = upload(client, auth, data, filename).json["id"]
    answer = client.post("/api/v1/jobs", headers=auth, json={"type": "train", "model": model, "dataset": dataset,
                                                             "params": params})
    assert answer.status_code == 422 and answer.json["message"] == f"dataset {dataset}: {words}", answer.json
    assert count(db, Job) == 0
    labelled = upload(client, auth, zipped({"x/a.png": png(), "y/b.png": png(color=9)}), "two.zip").json["id"]
    if model != "wavenet":
        assert client.post("/api/v1/jobs", headers=auth, json={"type": "train", "model": model, "dataset": labelled,
                                                               "params": params}).status_code == 201



@pytest.mark.parametrize("model, tokenizer, unit", [("gpt", "char", "characters"), ("gru", "word", "characters"),
                                                    ("gpt", "bpe", "bytes")])
def test_text_too_short_for_block_size_is_refused_at_submission(client, auth, db, model, tokenizer, unit):
    """A text whose held-out tenth cannot fill one block whatever tokens it makes (a character's or a byte's
    worth each): a 422 naming the dataset and the size it needs, no job. A block its characters (its bytes for
    bpe) could fill is accepted: the worker counts the tokens."""
    text = "to be or not to be\n" * 34  # 646 characters: a validation tenth of 65, more than a block of 64
    dataset = upload(client, auth, text.encode(), "short.txt").json["id"]

    def submit(block_size: int):
        return client.post("/api/v1/jobs", headers=auth, json={"type": "train", "model": model, "dataset": dataset,
                                                               "params": {"tokenizer": tokenizer,
                                                                          "block_size": block_size}})

    answer = submit(65)
    assert answer.status_code == 422, answer.json
    assert answer.json["message"] == (
        f"dataset {dataset}: the text is too short for block_size=65: 646 {unit} make at most 646 {tokenizer} "
        f"tokens, and the tenth held out for validation must be longer than block_size (about 660 {unit}); "
        "upload more text or lower block_size")
    assert count(db, Job) == 0
    assert submit(64).status_code == 201

def test_a_file_part_whose_name_is_not_utf8_is_said_to_be_unread(client, auth, db):
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="\xff.txt"\r\nContent-Type: text/plain\r\n'
            b"\r\nhello\r\n--b--\r\n")
    answer = client.post("/api/v1/datasets", headers=auth, data=body, content_type="multipart/form-data; boundary=b")
    assert answer.status_code == 422 and "are not UTF-8" in answer.json["message"], answer.json
    assert count(db, Dataset) == 0


@pytest.mark.parametrize("content_type, body, words", [
    ("application/json", b'{"file": "x"}', "send the file as multipart/form-data, in a field named 'file' (this "
                                           "request's Content-Type is 'application/json')"),
    ("multipart/form-data", b"x", "multipart/form-data Content-Type has no boundary"),
    ("multipart/form-data; boundary=b", b"garbage", "the request holds no readable part of that name"),
    ("multipart/form-data; boundary=b", b"".join(
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="%d.txt"\r\n\r\nhello\r\n' % i
        for i in range(2)) + b"--b--\r\n", "one file an upload: the request holds 2 parts named 'file'"),
])
def test_an_upload_not_of_one_file_part_says_what_it_is(client, auth, db, content_type, body, words):
    answer = client.post("/api/v1/datasets", headers=auth, data=body, content_type=content_type)
    assert answer.status_code == 422 and words in answer.json["message"], answer.json
    assert count(db, Dataset) == 0

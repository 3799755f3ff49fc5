"""GET /api/v1/models and submissions naming a pretrained base: a model of the models folder, never a path out of it."""

from __future__ import annotations

import shutil

import pytest

from genq.db.models import Job
from tests.web.conftest import count, upload


@pytest.fixture
def models(settings, tiny_gpt2, tmp_path):
    """$GENQ_HOME/models with the tiny GPT-2 as "tiny", a folder symlinked out, files symlinked out, a BERT
    config, a folder with no config.json, one whose weights file is garbage and a stray file."""
    folder = settings.models_folder
    shutil.copytree(tiny_gpt2, folder / "tiny")
    outside = tmp_path / "outside"
    shutil.copytree(tiny_gpt2, outside)
    (folder / "escape").symlink_to(outside)
    (folder / "leaky").mkdir()
    for f in outside.iterdir():
        (folder / "leaky" / f.name).symlink_to(f)
    (folder / "bert").mkdir()
    (folder / "bert" / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForMaskedLM"]}')
    (folder / "empty").mkdir()
    shutil.copytree(tiny_gpt2, folder / "corrupt")
    (folder / "corrupt" / "model.safetensors").write_bytes(b"garbage, not the weights it should be")
    (folder / "README.txt").write_text("not a model")
    return folder


def test_models_lists_the_folders(client, auth, models):
    answer = client.get("/api/v1/models", headers=auth)
    assert answer.status_code == 200, answer.json
    listed = {m["name"]: m for m in answer.json["models"]}
    assert sorted(listed) == ["bert", "corrupt", "empty", "escape", "leaky", "tiny"]  # folders only
    tiny = listed["tiny"]
    assert (tiny["model_type"], tiny["architectures"], tiny["causal_lm"], tiny["error"]) == (
        "gpt2", ["GPT2LMHeadModel"], True, None)
    assert 30_000 < tiny["parameters"] < 50_000 and tiny["size_bytes"] > 4 * tiny["parameters"]
    assert listed["bert"]["causal_lm"] is False and listed["bert"]["model_type"] == "bert"
    assert "resolves outside the models folder" in listed["escape"]["error"]
    assert "symlink out of the models folder" in listed["leaky"]["error"]
    assert "has no config.json" in listed["empty"]["error"]
    assert listed["corrupt"]["error"].startswith("base 'corrupt': model.safetensors is not a readable safetensors file")
    assert client.get("/api/v1/models").status_code == 401


def test_models_of_a_missing_folder_is_an_empty_list(client, auth, settings):
    assert not settings.models_folder.exists()
    assert client.get("/api/v1/models", headers=auth).json == {"models": []}


def test_train_and_generate_name_a_base(client, auth, models, db):
    text = upload(client, auth, b"to be or not to be, that is the question\n" * 40, "t.txt").json["id"]
    params = {"base": "tiny", "block_size": 32, "max_steps": 5}
    train = client.post("/api/v1/jobs", headers=auth,
                        json={"type": "train", "model": "hf-causal-lm", "dataset": text, "params": params})
    assert train.status_code == 201, train.json
    assert train.json["params"]["base"] == "tiny" and train.json["params"]["lr"] == 5e-5  # defaults filled in
    generate = client.post("/api/v1/jobs", headers=auth,
                           json={"type": "generate", "base": "tiny", "prompts": ["To be"], "params": {"seed": 1}})
    assert generate.status_code == 201, generate.json
    job = generate.json
    assert (job["model"], job["base"], job["source_job"]) == ("hf-causal-lm", "tiny", None)
    assert job["prompts"] == ["To be"] and job["params"]["seed"] == 1 and job["params"]["max_new_tokens"] == 200
    with db.session() as s:
        assert s.get(Job, job["id"]).base == "tiny"


@pytest.mark.parametrize(("base", "reason"), [
    ("../outside", "is not a folder name"),
    ("/etc", "is not a folder name"),
    ("tiny/../../outside", "is not a folder name"),
    ("..", "is not a folder name"),
    ("escape", "resolves outside the models folder"),
    ("leaky", "is a symlink out of the models folder"),
    ("bert", "is not a causal language model"),
    ("empty", "has no config.json"),
    ("corrupt", "model.safetensors is not a readable safetensors file"),
    ("nowhere", "not found in the models folder"),
])
def test_a_bad_base_is_refused_and_nothing_is_created(client, auth, models, db, base, reason):
    text = upload(client, auth, b"to be or not to be, that is the question\n" * 40, "t.txt").json["id"]
    train = client.post("/api/v1/jobs", headers=auth, json={
        "type": "train", "model": "hf-causal-lm", "dataset": text, "params": {"base": base, "block_size": 32}})
    generate = client.post("/api/v1/jobs", headers=auth,
                           json={"type": "generate", "base": base, "prompts": ["To be"]})
    for answer in (train, generate):
        assert answer.status_code == 422, answer.json
        assert answer.json["error"] and reason in answer.json["message"] and "base" in answer.json["message"]
    assert count(db, Job) == 0


def test_a_generate_job_names_one_source(client, auth, models, db):
    both = client.post("/api/v1/jobs", headers=auth,
                       json={"type": "generate", "base": "tiny", "source_job": 1, "prompts": ["x"]})
    neither = client.post("/api/v1/jobs", headers=auth, json={"type": "generate", "prompts": ["x"]})
    assert both.status_code == 422 and "either 'source_job' or 'base'" in both.json["message"]
    assert neither.status_code == 422 and "needs 'source_job'" in neither.json["message"]
    window = client.post("/api/v1/jobs", headers=auth, json={
        "type": "train", "model": "hf-causal-lm", "dataset": "pydoc", "params": {"base": "tiny"}})
    assert window.status_code == 422 and "exceeds the context window of base 'tiny' (64" in window.json["message"]
    assert count(db, Job) == 0


def test_openapi_describes_the_models_and_base(client):
    doc = client.get("/api/v1/openapi.json").json
    assert "/api/v1/models" in doc["paths"]
    assert "base" in doc["components"]["schemas"]["GenerateJobRequest"]["properties"]
    assert "hf-causal-lm" in doc["components"]["schemas"]["TrainJobRequest"]["properties"]["model"]["enum"]


def test_the_submit_form_offers_the_kind_and_the_bases(client, auth, models, db):
    from tests.web.conftest import csrf_from, login, make_token

    train_form = client.get("/submit", headers=auth).get_data(as_text=True)
    assert 'value="hf-causal-lm" data-kind="text"' in train_form
    generate_form = client.get("/submit?type=generate", headers=auth).get_data(as_text=True)
    assert '<option value="tiny"' in generate_form and '<option value="bert"' not in generate_form
    login(client, make_token(db))
    page = client.get("/submit?type=generate").get_data(as_text=True)
    answer = client.post("/submit", data={"csrf_token": csrf_from(page), "type": "generate", "base": "tiny",
                                          "prompts": "To be\n", "params": "num_samples=2"})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    job_page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "base model tiny" in job_page
    refused = client.post("/submit", data={"csrf_token": csrf_from(page), "type": "generate", "base": "escape",
                                           "prompts": "To be\n"})
    assert refused.status_code == 422 and "resolves outside the models folder" in refused.get_data(as_text=True)
    assert count(db, Job) == 1

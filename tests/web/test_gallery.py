"""GET /api/v1/jobs/{id}/samples and the job page's "Samples by step": the gallery a training job drew at
each evaluation, one step at a time, apart from its final outputs."""

from __future__ import annotations

import pytest

from tests.web.conftest import add_artifact, add_job, add_output, png


def gallery_job(db, settings) -> tuple[int, int, int]:
    """A finished training job with texts drawn at steps 10 and 20, a grid at step 30, and one final output;
    (job id, the grid's artifact id, the grid's output id)."""
    job_id = add_job(db, status="succeeded", step=30)
    for step in (10, 20):
        for i in range(2):
            add_output(db, job_id, i, "text", text=f"sample {i} at step {step}", step=step)
    grid = add_artifact(db, settings, job_id, "step-30-grid.png", png(color=30), "image/png", kind="gallery")
    grid_output = add_output(db, job_id, 0, "image", artifact_id=grid, step=30)
    add_output(db, job_id, 0, "text", text="the final sample")
    return job_id, grid, grid_output


def test_samples_by_step(client, auth, db, settings):
    job_id, grid, grid_output = gallery_job(db, settings)
    url = f"/api/v1/jobs/{job_id}/samples"
    latest = client.get(url, headers=auth).json
    assert latest == {"steps": [10, 20, 30], "step": 30, "samples": [
        {"id": grid_output, "index": 0, "prompt": None, "kind": "image", "url": f"/api/v1/artifacts/{grid}/download",
         "media_type": "image/png", "row": None, "row_id": None, "status": "ok", "error": None}]}
    at_ten = client.get(f"{url}?step=10", headers=auth).json
    assert at_ten["step"] == 10 and [s["text"] for s in at_ten["samples"]] == ["sample 0 at step 10",
                                                                                "sample 1 at step 10"]
    assert client.get(f"{url}?step=15", headers=auth).json == {"steps": [10, 20, 30], "step": 15, "samples": []}
    # The final outputs are only the final ones; the gallery's files are artifacts of their own kind.
    outputs = client.get(f"/api/v1/jobs/{job_id}/outputs", headers=auth).json["outputs"]
    assert [o["text"] for o in outputs] == ["the final sample"]
    kinds = [a["kind"] for a in client.get(f"/api/v1/jobs/{job_id}/artifacts", headers=auth).json["artifacts"]]
    assert kinds == ["gallery"]


def test_a_job_without_samples(client, auth, db):
    job_id = add_job(db, status="running")
    add_output(db, job_id, 0, "text", text="a final output is not a sample")
    answer = client.get(f"/api/v1/jobs/{job_id}/samples", headers=auth)
    assert answer.status_code == 200 and answer.json == {"steps": [], "step": None, "samples": []}


@pytest.mark.parametrize("step", ["-1", "ten", "1.5", str(2**31), "9" * 30])
def test_a_bad_step_is_refused(client, auth, db, step):
    job_id = add_job(db)
    answer = client.get(f"/api/v1/jobs/{job_id}/samples?step={step}", headers=auth)
    assert answer.status_code == 422 and answer.json["error"] == "invalid_input" and "step" in answer.json["message"]


def test_another_teams_samples_are_not_found(client, auth, other_auth, db, settings):
    job_id, _, _ = gallery_job(db, settings)
    assert client.get(f"/api/v1/jobs/{job_id}/samples", headers=other_auth).status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/samples?step=10", headers=other_auth).status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id + 1}/samples", headers=auth).status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/samples", headers=auth).status_code == 200


def test_the_job_page_shows_the_last_steps_samples_under_a_slider(client, auth, db, settings):
    job_id, grid, _ = gallery_job(db, settings)
    page = client.get(f"/jobs/{job_id}", headers=auth).text
    section = page[page.index('id="gallery"'):page.index("</section>", page.index('id="gallery"'))]
    assert "Samples by step" in section and "data-steps='[10, 20, 30]'" in section
    assert 'type="range" id="gallery-slider" min="0" max="2"' in section and 'value="2"' in section
    assert f'<img src="/api/v1/artifacts/{grid}/download"' in section and "step 30" in section
    assert "the final sample" not in section and "the final sample" in page  # the final outputs stay below
    assert "step-30-grid.png" not in page.replace(section, "")  # the gallery's files are not listed again


def test_the_job_page_has_no_samples_section_without_a_gallery(client, auth, db):
    finished = add_job(db, status="succeeded")
    assert 'id="gallery"' not in client.get(f"/jobs/{finished}", headers=auth).text
    running = add_job(db, status="running")  # its first samples may come any time: the section waits, hidden
    page = client.get(f"/jobs/{running}", headers=auth).text
    assert 'id="gallery"' in page and "data-steps='[]'" in page and 'data-live="true" hidden' in page

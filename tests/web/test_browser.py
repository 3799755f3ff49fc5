"""A real browser against a real server: sign in, upload, submit, watch a job, read its chart and error; rate
outputs and judge blind pairs; zoom a chart, compare runs, fit a phone's width."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from genq.db.models import Job, PreferenceVote, Rating
from tests.web.conftest import add_artifact, add_job, add_metrics, add_output, count, png, wav
from tests.web.judging import text_jobs

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect, sync_playwright = sync_api.expect, sync_api.sync_playwright
pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def server(app):
    """The app on a free localhost port, served by a real HTTP server in a thread."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(5)


@pytest.fixture
def page(server):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        outside: list[str] = []

        def guard(route):
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.outside = outside
        yield page
        context.close()
        browser.close()


def test_dashboard_end_to_end(page, server, db, token, tmp_path):
    chart_job = add_job(db, status="running", progress=0.25, step=250)
    add_metrics(db, chart_job, "train/loss", [4.0 * 0.97**i + 0.02 * (i % 3) for i in range(60)], every=10)
    add_metrics(db, chart_job, "val/loss", [4.1 * 0.97 ** (i * 10) for i in range(6)], every=100)
    add_metrics(db, chart_job, "val/perplexity", [60.0, 30.0, 17.5], every=200)
    failed = add_job(db, status="failed", error="RuntimeError: loss became NaN at step 120", attempts=3)

    page.goto(f"{server}/")  # not signed in: the login page
    assert "/login" in page.url
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")
    assert page.locator(".flash.ok").inner_text().startswith("Signed in to team alpha")

    # Upload a dataset through the form.
    page.goto(f"{server}/datasets")
    corpus = tmp_path / "tiny shakespeare.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 20)
    page.set_input_files("#file", str(corpus))
    page.fill("#name", "shakespeare")
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector(".flash.ok")
    assert "stored as text" in page.locator(".flash.ok").inner_text()
    assert "shakespeare" in page.locator("#datasets").inner_text()

    # Submit a training job on it through the form; it shows up queued with a progress bar.
    page.goto(f"{server}/submit")
    page.select_option("#model", "gpt")
    dataset_value = page.locator("#dataset option", has_text="shakespeare").get_attribute("value")
    page.select_option("#dataset", dataset_value)
    page.fill("#params", "max_steps=50\nn_layer=2\nbatch_size=4")
    page.click("#train-form button[type=submit]")
    page.wait_for_url(f"{server}/jobs/*")
    new_id = int(page.url.rsplit("/", 1)[-1])
    with db.session() as s:
        job = s.get(Job, new_id)
        assert (job.status, job.dataset_id, job.params["max_steps"]) == ("queued", int(dataset_value), 50)
    page.goto(f"{server}/")
    row = page.locator(f'tr[data-job-id="{new_id}"]')
    assert row.locator(".status").inner_text() == "queued"
    assert row.locator("progress").count() == 1

    # The list polls the API: a worker's progress shows up without a reload.
    with db.session() as s:
        s.get(Job, chart_job).progress = 0.75
    expect(page.locator(f'tr[data-job-id="{chart_job}"] progress')).to_have_attribute(
        "value", "0.75", timeout=8000
    )

    # The running job's page draws the loss chart.
    page.goto(f"{server}/jobs/{chart_job}")
    page.wait_for_selector("#loss-chart path.line")
    paths = page.locator("#loss-chart path.line")
    assert paths.count() == 2
    assert {paths.nth(i).get_attribute("data-series") for i in range(2)} == {"train/loss", "val/loss"}
    assert all(paths.nth(i).get_attribute("d").count("L") >= 5 for i in range(2))
    table = page.locator("table.evals").inner_text()
    assert "val/perplexity" in table and "val/loss" in table  # the final loss is on the page as a number too
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)  # to look at when the test fails

    # A failed job shows its error.
    page.goto(f"{server}/jobs/{failed}")
    error = page.locator("#job-error")
    assert error.is_visible() and "loss became NaN at step 120" in error.inner_text()
    assert page.locator("#job-status").inner_text() == "failed"

    assert page.outside == [], f"requests left localhost: {page.outside}"


def test_rating_and_blind_votes(page, server, db, token):
    x, y = text_jobs(db, [f"prompt {i}" for i in range(5)])
    page.goto(f"{server}/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")

    # Rate an output on the job page by keyboard: focus its "4" and press Enter.
    page.goto(f"{server}/jobs/{x}")
    four = page.locator(".rate").first.locator('button[data-score="4"]')
    four.focus()
    page.keyboard.press("Enter")
    expect(four).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#rating-mean")).to_have_text("4.00")
    expect(page.locator("#rating-count")).to_have_text("1")
    with db.session() as s:
        assert s.scalars(select(Rating.score)).all() == [4]

    # Five blind votes for X's outputs, by button and by key; each brings a new pair and a new leaderboard.
    page.goto(f"{server}/rate?jobs={x},{y}")
    ratings = page.locator("#leaderboard td.rating")
    assert ratings.all_inner_texts() == ["1000", "1000"]
    for i in range(5):
        expect(page.locator('button[data-winner="tie"]')).to_be_enabled()  # the last vote is done
        prompt = page.locator("#pair-prompt").inner_text()
        side = "a" if page.locator("#side-a pre").inner_text().startswith("X:") else "b"
        if i % 2:
            page.keyboard.press(side)
        else:
            page.click(f'button[data-winner="{side}"]')
        expect(page.locator("#board-votes")).to_have_text(str(i + 1))
        if i < 4:  # unjudged pairs come first: a new prompt each time
            expect(page.locator("#pair-prompt")).not_to_have_text(prompt)
    expect(page.locator("#leaderboard tbody tr").first).to_have_attribute("data-job-id", str(x))
    top, bottom = (int(t) for t in ratings.all_inner_texts())
    assert top > 1150 and bottom < 850 and top + bottom == 2000
    assert "5 / 0 / 0" in page.locator("#leaderboard tbody tr").first.inner_text()
    assert count(db, PreferenceVote) == 5

    # At phone width nothing scrolls sideways.
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.outside == [], f"requests left localhost: {page.outside}"


def test_the_sample_slider_walks_through_the_steps(page, server, db, settings, token):
    job_id = add_job(db, status="succeeded", step=30)
    for step in (10, 20):
        for i in range(2):
            add_output(db, job_id, i, "text", text=f"sample {i} at step {step}", step=step)
    grid = add_artifact(db, settings, job_id, "step-30-grid.png", png(size=16), "image/png", kind="gallery")
    clip = add_artifact(db, settings, job_id, "step-30-clip-000.wav", wav(), "audio/wav", kind="gallery")
    add_output(db, job_id, 0, "image", artifact_id=grid, step=30)
    add_output(db, job_id, 1, "audio", prompt="A3", artifact_id=clip, step=30)
    live = add_job(db, status="running", step=10)
    add_output(db, live, 0, "text", text="early", step=10)

    page.goto(f"{server}/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")

    page.goto(f"{server}/jobs/{job_id}")
    label, shown = page.locator("#gallery-step"), page.locator("#gallery-samples")
    expect(label).to_have_text("step 30")  # the last step first
    expect(shown.locator("img")).to_have_count(1)
    page.wait_for_function("() => document.querySelector('#gallery-samples img').naturalWidth > 0")
    expect(shown.locator("audio[controls]")).to_have_count(1)

    page.locator("#gallery-slider").fill("0")  # dragged to the first step
    expect(label).to_have_text("step 10")
    expect(shown.locator("pre")).to_have_text(["sample 0 at step 10", "sample 1 at step 10"])
    expect(shown.locator("img")).to_have_count(0)
    page.locator("#gallery-slider").press("ArrowRight")  # the keyboard moves one step
    expect(label).to_have_text("step 20")
    expect(shown.locator("pre")).to_have_text(["sample 0 at step 20", "sample 1 at step 20"])
    page.keyboard.press("ArrowRight")
    expect(label).to_have_text("step 30")
    expect(shown.locator("img")).to_have_count(1)
    expect(shown.locator("figcaption q")).to_have_text("A3")

    # A running job's page adds the steps drawn after it was loaded; a slider at the last step follows them.
    page.goto(f"{server}/jobs/{live}")
    expect(label).to_have_text("step 10")
    add_output(db, live, 0, "text", text="later", step=20)
    expect(label).to_have_text("step 20", timeout=12_000)
    expect(shown.locator("pre")).to_have_text(["later"])
    assert page.locator("#gallery-slider").get_attribute("max") == "1"
    assert page.outside == [], f"requests left localhost: {page.outside}"


def sign_in(page, server, token) -> None:
    page.goto(f"{server}/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")


def drawn(page, selector: str) -> int:
    """How many times the chart at `selector` has drawn (its data-drawn counter), once it has."""
    page.wait_for_selector(f"{selector}[data-drawn]")
    return int(page.get_attribute(selector, "data-drawn"))


def test_charts_zoom_compare_and_fit_a_phone(page, server, db, token):
    a, b = add_job(db, status="succeeded"), add_job(db, status="succeeded", params={"lr": 0.01})
    spiky = [3.0 - i / 3000 for i in range(6000)]
    spiky[4321] = 9.0
    add_metrics(db, a, "train/loss", spiky)
    add_metrics(db, a, "val/loss", [3.0, 2.0, 1.5], every=2500)
    add_metrics(db, b, "train/loss", [3.5 - i / 2000 for i in range(4000)])
    sign_in(page, server, token)

    # The job page: the chart asks for as many buckets as it is wide and draws the spike in its band.
    with page.expect_response(lambda r: f"/api/v1/jobs/{a}/metrics?points=" in r.url) as first:
        page.goto(f"{server}/jobs/{a}")
    answer = first.value.json()
    assert 400 <= len(answer["series"]["train/loss"]) < 6000 and answer["bucket"]["train/loss"] > 1
    assert max(band[2] for band in answer["bands"]["train/loss"]) == 9.0
    count = drawn(page, "#loss-chart")
    lines = page.locator("#loss-chart path.line")
    assert {lines.nth(i).get_attribute("data-series") for i in range(lines.count())} == {"train/loss", "val/loss"}
    assert page.locator('#loss-chart path.band[data-series="train/loss"]').count() == 1

    # Drag across a tenth of the plot: the chart asks for that range and shows it one point a step.
    box = page.locator("#loss-chart").bounding_box()
    left, width, y = box["x"] + box["width"] * 58 / 720, box["width"] * 644 / 720, box["y"] + box["height"] / 2
    with page.expect_response(lambda r: "start=" in r.url) as zoomed:
        page.mouse.move(left + width * 0.70, y)
        page.mouse.down()
        page.mouse.move(left + width * 0.75, y, steps=4)
        page.mouse.up()
    answer = zoomed.value.json()
    steps = [step for step, _ in answer["series"]["train/loss"]]
    assert answer["bucket"]["train/loss"] == 1 and 150 < len(steps) < 450 and 4000 < steps[0] < steps[-1] < 4700
    expect(page.locator("#loss-chart")).not_to_have_attribute("data-drawn", str(count))
    assert page.locator("#loss-chart path.line[data-series='train/loss']").get_attribute("d").count("L") >= 150
    reset = page.locator('[data-reset-for="loss-chart"]')
    assert reset.is_visible()
    with page.expect_response(lambda r: "/metrics?points=" in r.url and "start=" not in r.url):
        reset.click()
    expect(reset).to_be_hidden()

    # Compare: one chart per metric, a line per job, a legend naming them.
    page.goto(f"{server}/compare?jobs={a},{b}")
    chart = 'svg[data-metric="train/loss"]'
    drawn(page, chart)
    series = page.locator(f"{chart} path.line")
    assert {series.nth(i).get_attribute("data-series") for i in range(series.count())} == {f"#{a}", f"#{b}"}
    assert page.locator(f"{chart} .legend text").all_text_contents() == [f"#{a}", f"#{b}"]
    assert "lr" in page.locator("#compare-params").inner_text()

    # A param error shows next to the params field.
    page.goto(f"{server}/submit")
    page.fill("#params", "max_stepz=3")
    page.click("#train-form button[type=submit]")
    assert "unknown param 'max_stepz'" in page.locator("#error-params").inner_text()

    # At phone width no page scrolls sideways: wide tables scroll inside their own box.
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", f"/jobs/{a}", "/submit", "/datasets", "/workers", f"/compare?jobs={a},{b}"):
        page.goto(f"{server}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    assert page.outside == [], f"requests left localhost: {page.outside}"


def test_a_polling_job_page_keeps_its_log_and_facts_current(page, server, db, token):
    from datetime import timedelta

    from genq.db.models import JobLog, utcnow

    job_id = add_job(db, status="running", started_at=utcnow(), eta_at=utcnow() + timedelta(hours=1))
    page.route("**/api/v1/events**", lambda route: route.fulfill(status=503, body="busy"))  # no event stream
    page.goto(f"{server}/login?next=/jobs/{job_id}")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/jobs/{job_id}")
    expect(page.locator("body")).to_have_attribute("data-live", "polling")
    assert page.locator("#job-eta").is_visible()
    with db.session() as s:
        s.add(JobLog(job_id=job_id, message="step 100: val/loss 1.9"))
    expect(page.locator("#job-log li", has_text="step 100: val/loss 1.9")).to_be_visible(timeout=15_000)
    with db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.finished_at, job.eta_at = "succeeded", utcnow(), None
        s.add(JobLog(job_id=job_id, message="succeeded"))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#job-log li", has_text="succeeded")).to_be_visible()
    expect(page.locator("#job-eta")).to_be_hidden()  # a finished job expects nothing


def test_deleting_a_dataset_asks_first(page, server, db, token, client, auth):
    from tests.web.conftest import upload

    dataset = upload(client, auth, b"to be or not to be\n", "plays.txt").json["id"]
    page.goto(f"{server}/login?next=/datasets")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/datasets")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click(f'button[aria-label="Delete dataset {dataset}"]')
    assert asked == [f"Delete dataset #{dataset} (plays.txt) and its file?"]
    expect(page.locator("#datasets")).to_contain_text("plays.txt")  # dismissed: nothing sent
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f'button[aria-label="Delete dataset {dataset}"]')
    expect(page.locator(".flash.ok")).to_have_text(f"Dataset {dataset} deleted.")
    expect(page.locator("#datasets")).not_to_contain_text("plays.txt")

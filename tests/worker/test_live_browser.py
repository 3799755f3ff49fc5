"""A real browser on the real platform: a job submitted through the dashboard form is followed live on its
page, through server-sent events, until it has finished, without a reload and without polling."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.web.test_browser import ARGS, CHROMIUM
from tests.worker.platform import CORPUS, tiny_gpt

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect, sync_playwright = sync_api.expect, sync_api.sync_playwright
pytestmark = pytest.mark.browser

# Every value the job page's progress bar takes, recorded from the first paint on.
RECORD_PROGRESS = """
window.__progress = [];
new MutationObserver(function (changes) {
  changes.forEach(function (c) {
    if (c.target.id === "job-progress") window.__progress.push(c.target.getAttribute("value"));
  });
}).observe(document, { attributes: true, attributeFilter: ["value"], subtree: true });
"""


def test_a_job_page_follows_its_job_live_without_reloading_or_polling(platform):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    dataset = platform.upload_text(CORPUS.read_text(), name="shakespeare.txt")
    platform.start_scheduler()
    platform.start_worker()
    params = tiny_gpt(max_steps=1200, eval_interval=300, checkpoint_interval=600)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(RECORD_PROGRESS)
        page = context.new_page()
        page.set_default_timeout(15_000)
        seen: list[tuple[str, str]] = []
        page.on("request", lambda r: seen.append((r.resource_type, r.url)))

        page.goto(f"{platform.url}/login")
        page.fill("#token", platform.token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{platform.url}/")
        listing = context.new_page()  # the job list, open in another tab meanwhile
        listed: list[str] = []
        listing.on("request", lambda r: listed.append(r.url))
        listing.goto(f"{platform.url}/")
        page.goto(f"{platform.url}/submit")
        page.select_option("#model", "gpt")
        page.select_option("#dataset", str(dataset))
        page.fill("#params", "\n".join(f"{k}={v}" for k, v in params.items()))
        page.click("#train-form button[type=submit]")
        page.wait_for_url(f"{platform.url}/jobs/*")
        job = int(page.url.rsplit("/", 1)[-1])
        # The page's requests from its own document on: its stream may open before wait_for_url returns.
        landed = seen.index(("document", page.url))
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.evaluate("window.__same_page = true")

        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=180_000)
        expect(page.locator("#job-pct")).to_have_text("100.0%")
        assert page.locator("#job-progress").get_attribute("value") == "1"
        assert page.evaluate("window.__same_page") is True and navigations == [], "the page was reloaded"
        values = [float(v) for v in page.evaluate("window.__progress")]
        assert len({v for v in values if 0 < v < 1}) >= 2, f"the bar should move on its way to 100%: {values}"
        assert values == sorted(values) and values[-1] == 1.0, values

        assert page.evaluate("document.body.dataset.live") == "events"
        after = seen[landed:]
        assert ("eventsource", f"{platform.url}/api/v1/events?job={job}") in after
        polled = [url for _, url in after if urlsplit(url).path == f"/api/v1/jobs/{job}"]
        assert polled == [], f"the page polled the job: {polled}"
        # What the worker recorded at the end is on the page too, swapped in without a reload.
        first = page.locator("#outputs figure").first
        expect(first).to_be_visible()
        first.locator("button[data-score='4']").click()  # rating.js binds the buttons that came in live
        expect(first.locator(".rate-status")).to_have_text("rated 4")
        assert "succeeded" in page.locator("#job-log").inner_text()
        assert page.locator("#job-step").inner_text() == "1200"
        # The page opened before the first metric point: the curve was drawn after metric events told the chart
        # to fetch its view again (no reload).
        curve = page.locator('#loss-chart path.line[data-series="train/loss"]').get_attribute("d")
        assert curve.count("L") >= 60, curve

        # The list learnt of the new job and followed it to the end through its own stream.
        row = listing.locator(f'tr[data-job-id="{job}"]')
        expect(row.locator(".status")).to_have_text("succeeded")
        assert row.locator("progress").get_attribute("value") == "1" and row.locator(".pct").inner_text() == "100%"
        assert listing.evaluate("document.body.dataset.live") == "events"
        assert [u for u in listed if urlsplit(u).path == "/api/v1/jobs"] == [], "the list polled"
        context.close()
        browser.close()

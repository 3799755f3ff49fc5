"""A real browser on live job pages (a real server in a thread, a real Redis): a page whose event stream is
refused polls meanwhile and goes back to events once a stream is free; new metric points reach the chart
through the function chart.js offers."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from genq.events import Publisher
from genq.web import create_app
from tests.web.conftest import add_job, bearer, team_id
from tests.web.test_browser import expect, page, server  # noqa: F401 - the same browser and server fixtures

pytestmark = pytest.mark.browser


@pytest.fixture
def app(settings, redis_url):
    """Overrides the web fixture the server serves: live events on, one stream at most, 1 s keep-alives."""
    redis.Redis.from_url(redis_url).flushdb()
    live = dataclasses.replace(settings, redis_url=redis_url, max_event_streams=1, event_keepalive_seconds=1)
    app = create_app({"SETTINGS": live, "TESTING": True})
    yield app
    app.extensions["genq"].db.dispose()


def open_signed_in(browser_page, url: str, token: str, path: str) -> None:
    """Sign in and land on `path` straight away (the job list on the way would hold the one stream slot)."""
    browser_page.goto(f"{url}/login?next={path}")
    browser_page.fill("#token", token)
    browser_page.click("button[type=submit]")
    browser_page.wait_for_url(f"{url}{path}")


def test_the_job_page_polls_while_events_are_refused_and_returns_to_them(page, server, app, db, token,  # noqa: F811
                                                                           redis_url):
    from genq.db.models import Job

    job = add_job(db, status="running", progress=0.1)
    held = app.test_client().get(f"/api/v1/events?job={job}", headers=bearer(token), buffered=False)
    assert held.status_code == 200  # the server's only stream slot is taken

    open_signed_in(page, server, token, f"/jobs/{job}")
    body, bar = page.locator("body"), page.locator("#job-progress")
    expect(body).to_have_attribute("data-live", "polling")  # its stream got 503
    with db.session() as s:
        s.get(Job, job).progress = 0.3
    expect(bar).to_have_attribute("value", "0.3")  # polled

    held.close()  # a slot is free: the page's next try (5 s later) gets a stream
    expect(body).to_have_attribute("data-live", "events", timeout=15_000)
    # The row still says 0.3: only the event can move the bar now.
    publisher = Publisher(redis_url)
    publisher.publish(job, team_id(db), [("progress", {"progress": 0.6, "step": 60})])
    expect(bar).to_have_attribute("value", "0.6")
    expect(page.locator("#job-step")).to_have_text("60")
    publisher.close()


# chart.js's own functions stay; an append() beside them records what the live page hands it.
OFFER_APPEND = """
window.__appended = [];
document.addEventListener("DOMContentLoaded", function () {
  window.genqChart.append = function (name, points) { window.__appended.push([name, points]); };
});
"""


def test_new_metric_points_go_to_the_charts_append(page, server, db, token, redis_url):  # noqa: F811
    job = add_job(db, status="running")
    page.context.add_init_script(OFFER_APPEND)
    open_signed_in(page, server, token, f"/jobs/{job}")
    expect(page.locator("body")).to_have_attribute("data-live", "events")
    publisher = Publisher(redis_url)
    publisher.publish(job, team_id(db), [("metrics", {"series": {"train/loss": [[10, 2.5], [20, 2.25]]}})])
    # a function: an expression is eval()ed in the page at each poll, which the page's CSP refuses
    page.wait_for_function("() => window.__appended.length > 0")
    assert page.evaluate("window.__appended") == [["train/loss", [[10, 2.5], [20, 2.25]]]]
    publisher.close()

"""The dashboard's human evaluation: rating buttons and summary on the job page, the blind A/B page /rate."""

from __future__ import annotations

import re

import pytest

from genq.db.models import Rating
from tests.web.conftest import add_artifact, add_job, add_output, count, csrf_from, login, png
from tests.web.judging import judge, prefer, text_jobs


@pytest.fixture
def browser(client, token):
    """A test client signed in through /login."""
    login(client, token)
    return client


def test_job_page_has_rating_buttons_and_the_summary(browser, db, auth):
    x, y = text_jobs(db, ["p0", "p1"])
    outputs = browser.get(f"/api/v1/jobs/{x}/outputs").json["outputs"]
    page = browser.get(f"/jobs/{x}").text
    for out in outputs:
        assert f'data-output-id="{out["id"]}"' in page
    assert page.count('data-score="') == 2 * 5 + 5  # five buttons per output, five histogram bars
    assert 'aria-pressed="true"' not in page and 'id="rating-mean">—<' in page

    csrf = csrf_from(page)
    url = f"/api/v1/outputs/{outputs[1]['id']}/rating"
    refused = browser.put(url, json={"score": 4})  # a cookie without the page's CSRF token cannot rate
    assert refused.status_code == 400 and count(db, Rating) == 0
    assert browser.put(url, json={"score": 4}, headers={"X-CSRFToken": csrf}).status_code == 201
    browser.application.test_client().put(url, json={"score": 2}, headers=auth)  # the same token by Bearer

    page = browser.get(f"/jobs/{x}").text
    group = re.search(rf'data-output-id="{outputs[1]["id"]}">(.*?)</div>', page, re.S).group(1)
    assert re.findall(r'data-score="(\d)" aria-pressed="true"', group) == ["2"]  # its latest score
    assert 'id="rating-mean">2.00<' in page and 'id="rating-count">1<' in page
    assert '<progress max="1" value="1" data-score="2">' in page
    assert 'src="/static/rating.js"' in page


def test_rate_page_without_jobs_offers_the_jobs_with_outputs(browser, db):
    x, y = text_jobs(db, ["p0"])
    no_outputs = add_job(db, status="running")
    page = browser.get("/rate").text
    assert f'name="jobs" value="{x}"' in page and f'name="jobs" value="{y}"' in page
    assert f'value="{no_outputs}"' not in page
    assert 'href="/rate"' in page  # in the navigation


def test_rate_page_shows_a_blind_pair_and_the_leaderboard(browser, db, settings):
    x, y = text_jobs(db, ["Tell me <b>a story</b>"])
    judge(browser, {"X-CSRFToken": csrf_from(browser.get("/rate").text)}, [x, y], prefer("X"), 1)
    answer = browser.get(f"/rate?jobs={x}&jobs={y}")  # the picker's form sends the ids one by one
    assert answer.status_code == 200
    page = answer.text
    assert f'data-jobs="{x},{y}"' in page
    assert "Tell me &lt;b&gt;a story&lt;/b&gt;" in page  # escaped
    sides = re.findall(r'<figure class="side" id="side-(a|b)" data-output-id="(\d+)">', page)
    assert [s for s, _ in sides] == ["a", "b"]
    assert re.search(r"<pre>[XY]:Tell me", page)
    assert "You have judged every pair" in page
    rows = re.findall(r'<tr data-job-id="(\d+)">', page)
    assert rows == [str(x), str(y)]  # X won the one vote
    assert "No pair has been judged by two raters yet." in page
    assert f"/api/v1/preferences/export?jobs={x},{y}" in page

    images = []
    for color in (10, 200):
        job = add_job(db, type="generate", status="succeeded", model="dcgan")
        art = add_artifact(db, settings, job, "o.png", png(color=color), "image/png")
        add_output(db, job, 0, "image", prompt=None, artifact_id=art)
        images.append(job)
    page = browser.get(f"/rate?jobs={images[0]},{images[1]}").text
    assert page.count('<img src="/api/v1/artifacts/') == 2 and "(no prompt: unconditional samples)" in page


@pytest.mark.parametrize("jobs, status", [("1,abc", 422), ("1", 422), ("1,424242", 404)])
def test_rate_page_errors_are_pages(browser, db, jobs, status):
    text_jobs(db, ["p0"])
    answer = browser.get(f"/rate?jobs={jobs}")
    assert answer.status_code == status and answer.mimetype == "text/html"


def test_jobs_without_a_common_prompt_show_their_leaderboard_and_say_why_there_is_no_pair(browser, db):
    x = text_jobs(db, ["p0", "p1"], names=("X",))[0]
    y = text_jobs(db, ["q0"], names=("Y",))[0]
    answer = browser.get(f"/rate?jobs={x},{y}")
    assert answer.status_code == 200, answer.text  # a 404 page said the jobs were not found
    assert 'id="no-pair"' in answer.text and "no outputs of two different jobs of one kind" in answer.text
    assert 'id="judge"' not in answer.text and 'id="leaderboard"' in answer.text

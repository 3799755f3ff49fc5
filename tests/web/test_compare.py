"""/compare?jobs=: runs side by side (params that differ, final metrics, a chart per metric, outputs by prompt),
and what it answers to bad input."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests.web.conftest import add_artifact, add_job, add_metrics, add_output, png, wav

PARAMS = {"n_layer": 2, "lr": 0.001, "tokenizer": "char", "dropout": 0.0}


def test_compare_two_runs(client, auth, db, settings):
    a = add_job(db, status="succeeded", params=PARAMS)
    b = add_job(db, status="succeeded", params={**PARAMS, "lr": 0.01, "dropout": None}, builtin_dataset="tones")
    add_metrics(db, a, "train/loss", [3.0, 2.0, 1.5], every=100)
    add_metrics(db, b, "train/loss", [3.1, 2.5], every=100)
    add_metrics(db, b, "eval/distinct_2", [0.75], start=100)
    add_output(db, a, 0, "text", prompt="ROMEO:", text="a wherefore")
    image = add_artifact(db, settings, b, "r.png", png(), "image/png")
    sound = add_artifact(db, settings, b, "j.wav", wav(), "audio/wav")
    add_output(db, b, 0, "image", prompt="ROMEO:", artifact_id=image)
    add_output(db, b, 1, "audio", prompt="JULIET:", artifact_id=sound)
    answer = client.get(f"/compare?jobs={a},{b}", headers=auth)
    assert answer.status_code == 200, answer.text
    page = answer.text

    params = section(page, "compare-params")
    assert "<td>lr</td><td><code>0.001</code></td><td><code>0.01</code></td>" in params
    assert "<td>dropout</td><td><code>0.0</code></td><td><code>null</code></td>" in params
    assert "<td>dataset</td><td><code>pydoc</code></td><td><code>tones</code></td>" in params
    assert "n_layer" not in params and "tokenizer" not in params and "<td>model</td>" not in params  # the same

    final = section(page, "compare-final")
    assert re.search(r"<td>train/loss</td><td class=\"num\">1\.5 <span[^>]*>@200</span></td>"
                     r"<td class=\"num\">2\.5 <span[^>]*>@100</span></td>", final)
    assert re.search(r"<td>eval/distinct_2</td><td class=\"num\">—</td><td class=\"num\">0\.75", final)

    charts = re.findall(r"data-metric=\"([^\"]+)\" data-sources='([^']*)'", page)
    assert [name for name, _ in charts] == ["train/loss", "eval/distinct_2"]
    assert json.loads(charts[0][1]) == [{"job": a, "name": "train/loss", "label": f"#{a}"},
                                        {"job": b, "name": "train/loss", "label": f"#{b}"}]

    rows = section(page, "compare-outputs").split("<tr>")[2:]  # after the header row
    assert "<q>ROMEO:</q>" in rows[0] and "<pre>a wherefore</pre>" in rows[0] and "<img src=" in rows[0]
    assert "<q>JULIET:</q>" in rows[1] and "<audio controls" in rows[1]
    assert rows[1].split("</td>")[1].strip().endswith('<span class="muted">—</span>')  # job a: nothing for it


def section(page: str, table_id: str) -> str:
    """The HTML of the table with `table_id`."""
    start = page.index(f'id="{table_id}"')
    return page[start:page.index("</table>", start)]


def test_the_job_page_links_to_compare(client, auth, db):
    job_id = add_job(db, status="running")
    page = client.get(f"/jobs/{job_id}", headers=auth).text
    assert 'action="/compare"' in page and f'name="jobs" value="{job_id}"' in page
    # Its form sends ?jobs=ID&jobs=OTHERS: both forms of the parameter work.
    other = add_job(db)
    assert client.get(f"/compare?jobs={job_id}&jobs={other}", headers=auth).status_code == 200
    assert client.get(f"/compare?jobs={job_id}&jobs=", headers=auth).status_code == 200


@pytest.mark.parametrize(
    "query, status, words",
    [
        ("", 422, "'jobs'"),
        ("jobs=", 422, "'jobs'"),
        ("jobs=1,two", 422, "'two' is not"),
        ("jobs=1;2", 422, "'jobs'"),
        ("jobs=-3", 422, "'jobs'"),
        ("jobs=1,2,3,4,5,6,7,8,9,10,11", 422, "at most 10"),
        ("jobs={a},999999", 404, "job 999999 not found"),
        ("jobs={a},{beta}", 404, "job {beta} not found"),
        ("jobs=0", 422, "'0' is not"),
    ],
)
def test_compare_bad_input(client, auth, db, query, status, words):
    a, beta = add_job(db), add_job(db, team="beta")
    query, words = query.format(a=a, beta=beta), words.format(beta=beta)
    page = client.get(f"/compare?{query}", headers=auth)
    assert page.status_code == status and page.mimetype == "text/html" and words in html.unescape(page.text)
    as_json = client.get(f"/compare?{query}", headers={**auth, "Accept": "application/json"})
    assert as_json.status_code == status and words in as_json.json["message"]

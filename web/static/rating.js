/* Human evaluation: the 1-5 rating buttons of the job page, and blind A/B judging with its leaderboard (/rate).
   Both call the JSON API with the session cookie and the page's CSRF token. */
(function () {
  "use strict";
  var KEYS = { a: "a", A: "a", "1": "a", ArrowLeft: "a", t: "tie", T: "tie", "2": "tie",
               b: "b", B: "b", "3": "b", ArrowRight: "b" };

  function api(method, url, csrf, body) {
    var headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (csrf) headers["X-CSRFToken"] = csrf;
    return fetch(url, { method: method, credentials: "same-origin", headers: headers,
                        body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (!r.ok) throw new Error(data.message || "the server answered " + r.status);
          return data;
        });
      });
  }

  function el(tag, props) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) { node[k] = props[k]; });
    return node;
  }

  function setText(id, text) { var n = document.getElementById(id); if (n) n.textContent = text; }

  /* Job page: a click rates the output; ratings of one output go out one after another, so the last wins. */
  function ratingButtons(section) {
    var csrf = section.dataset.csrf, job = section.dataset.jobId;
    section.querySelectorAll(".rate").forEach(function (group) {
      var status = group.querySelector(".rate-status"), queue = Promise.resolve();
      group.addEventListener("click", function (event) {
        var button = event.target.closest("button[data-score]");
        if (!button) return;
        var score = Number(button.dataset.score);
        status.textContent = "saving…";
        queue = queue.then(function () {
          return api("PUT", "/api/v1/outputs/" + group.dataset.outputId + "/rating", csrf, { score: score })
            .then(function () {
              group.querySelectorAll("button[data-score]").forEach(function (b) {
                b.setAttribute("aria-pressed", String(b === button));
              });
              status.textContent = "rated " + score;
              return api("GET", "/api/v1/jobs/" + job + "/ratings");
            })
            .then(showSummary)
            .catch(function (e) { status.textContent = e.message; });
        });
      });
    });
  }

  function showSummary(summary) {
    setText("rating-mean", summary.mean === null ? "—" : summary.mean.toFixed(2));
    setText("rating-count", String(summary.count));
    document.querySelectorAll("#rating-summary progress[data-score]").forEach(function (bar) {
      var n = summary.histogram[Number(bar.dataset.score) - 1];
      bar.max = Math.max(summary.count, 1);
      bar.value = n;
      bar.nextElementSibling.textContent = String(n);
    });
  }

  /* /rate: vote with the buttons or keys, then show the next pair and the new leaderboard. */
  function judge(box) {
    var csrf = box.dataset.csrf, jobs = encodeURIComponent(box.dataset.jobs), busy = false;
    var buttons = box.querySelectorAll("button[data-winner]"), status = document.getElementById("vote-status");

    function cast(winner) {
      if (busy) return;
      busy = true;
      buttons.forEach(function (b) { b.disabled = true; });
      var a = Number(document.getElementById("side-a").dataset.outputId);
      var b = Number(document.getElementById("side-b").dataset.outputId);
      api("POST", "/api/v1/preferences", csrf, { a: a, b: b, winner: winner })
        .then(function () {
          return Promise.all([api("GET", "/api/v1/leaderboard?jobs=" + jobs),
                              api("GET", "/api/v1/preferences/next?jobs=" + jobs)]);
        })
        .then(function (answers) {
          drawBoard(answers[0]);
          drawPair(answers[1]);
          status.textContent = "Vote saved: " + (winner === "tie" ? "a tie." : winner.toUpperCase() + " was better.");
        })
        .catch(function (e) { status.textContent = e.message; })
        .then(function () {
          busy = false;
          buttons.forEach(function (b) { b.disabled = false; });
        });
    }

    buttons.forEach(function (b) { b.addEventListener("click", function () { cast(b.dataset.winner); }); });
    document.addEventListener("keydown", function (event) {
      var target = event.target.tagName;
      if (event.ctrlKey || event.metaKey || event.altKey || /^(INPUT|TEXTAREA|SELECT|AUDIO)$/.test(target)) return;
      if (!KEYS[event.key]) return;
      event.preventDefault();
      cast(KEYS[event.key]);
    });
  }

  function drawPair(pair) {
    setText("pair-prompt", pair.prompt === null ? "(no prompt: unconditional samples)" : pair.prompt);
    setText("pair-progress", pair.judged
      ? "You have judged every pair of these jobs: a new vote on this one replaces your earlier one."
      : pair.unjudged + (pair.unjudged === 1 ? " pair" : " pairs") + " left for you to judge.");
    [["a", pair.a], ["b", pair.b]].forEach(function (item) {
      var figure = document.getElementById("side-" + item[0]), out = item[1];
      var content = figure.querySelector(".side-content"), node;
      figure.dataset.outputId = out.id;
      if (out.kind === "image" && out.url) node = el("img", { src: out.url, alt: "output " + item[0].toUpperCase() });
      else if (out.kind === "audio" && out.url) node = el("audio", { controls: true, preload: "none", src: out.url });
      else if (out.url) node = el("a", { href: out.url, textContent: "download" });
      else node = el("pre", { textContent: out.text });
      content.replaceChildren(node);
    });
  }

  function drawBoard(board) {
    var tbody = document.querySelector("#leaderboard tbody");
    tbody.replaceChildren();
    board.jobs.forEach(function (r, i) {
      var row = tbody.insertRow();
      row.dataset.jobId = r.job;
      row.insertCell().textContent = String(i + 1);
      var cell = row.insertCell();
      cell.appendChild(el("a", { href: "/jobs/" + r.job, textContent: "#" + r.job }));
      cell.appendChild(document.createTextNode(" "));
      cell.appendChild(el("span", { className: "muted", textContent: r.model }));
      [[Math.round(r.rating), "num rating"],
       [Math.round(r.interval[0]) + " – " + Math.round(r.interval[1]), ""],
       [r.votes, "num votes"],
       [r.wins + " / " + r.ties + " / " + r.losses, "num"],
       [r.scores.mean === null ? "—" : r.scores.mean.toFixed(2), "num"]].forEach(function (c) {
        var td = row.insertCell();
        td.textContent = String(c[0]);
        if (c[1]) td.className = c[1];
      });
    });
    setText("board-votes", String(board.votes));
    var a = board.agreement;
    setText("agreement", a.pairs
      ? Math.round(a.fraction * 100) + "% of rater pairs agree, over " + a.pairs + (a.pairs === 1 ? " pair" : " pairs") +
        " judged by two raters or more; Krippendorff's alpha " + (a.alpha === null ? "—" : a.alpha.toFixed(2))
      : "No pair has been judged by two raters yet.");
  }

  function bindOutputs() {
    var outputs = document.getElementById("outputs");
    if (outputs && outputs.dataset.jobId) ratingButtons(outputs);
  }

  document.addEventListener("DOMContentLoaded", function () {
    bindOutputs();
    var box = document.getElementById("judge");
    if (box && box.dataset.jobs) judge(box);
  });
  // A live job page puts the outputs in place when the job ends (app.js): new buttons to bind.
  document.addEventListener("genq:refreshed", bindOutputs);
})();

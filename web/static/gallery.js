/* "Samples by step" on a job page: a slider (arrow keys too) over the training steps that have gallery
   samples. Each step's samples come from /api/v1/jobs/{id}/samples?step=N once, then from memory; while the
   job runs, new steps are added, and a slider at the last step follows them. */
(function () {
  "use strict";
  var PERIOD = 5000;
  var FINISHED = ["succeeded", "failed", "cancelled"];

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function element(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs).forEach(function (k) { node[k] = attrs[k]; });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The same markup as web/templates/_gallery.html.
  function figure(sample) {
    var fig = element("figure", { className: "output output-" + sample.kind }), body;
    if (sample.url && sample.kind === "image") body = element("img", { src: sample.url, alt: "sample " + sample.index });
    else if (sample.url && sample.kind === "audio") body = element("audio", { controls: true, preload: "none", src: sample.url });
    else if (sample.url) body = element("a", { href: sample.url }, "download");
    else body = element("pre", {}, sample.text);
    fig.appendChild(body);
    var caption = element("figcaption", {}, "#" + sample.index);
    if (sample.prompt) {
      caption.appendChild(document.createTextNode(" · "));
      caption.appendChild(element("q", {}, sample.prompt));
    }
    fig.appendChild(caption);
    return fig;
  }

  function gallery(box) {
    var api = "/api/v1/jobs/" + box.dataset.jobId + "/samples";
    var slider = document.getElementById("gallery-slider");
    var label = document.getElementById("gallery-step");
    var list = document.getElementById("gallery-samples");
    var steps = JSON.parse(box.dataset.steps), drawn = {};

    function render(step, samples) {
      if (steps[+slider.value] !== step) return;  // the slider moved on while this step was loading
      list.replaceChildren.apply(list, samples.map(figure));
    }

    function show() {
      var step = steps[+slider.value];
      label.textContent = "step " + step;
      if (drawn[step]) { render(step, drawn[step]); return; }
      getJSON(api + "?step=" + step).then(function (answer) {
        drawn[step] = answer.samples;
        render(step, answer.samples);
      }).catch(function () {});
    }

    function poll() {
      getJSON(api).then(function (answer) {
        if (answer.steps.length > steps.length) {
          var atEnd = !steps.length || +slider.value === steps.length - 1;
          steps = answer.steps;
          drawn[answer.step] = answer.samples;
          slider.max = String(steps.length - 1);
          box.hidden = false;
          if (atEnd) { slider.value = slider.max; show(); }
        }
      }).catch(function () {}).then(function () {
        var status = document.getElementById("job-status");  // app.js keeps the status badge current
        if (!status || FINISHED.indexOf(status.textContent.trim()) < 0) setTimeout(poll, PERIOD);
      });
    }

    slider.addEventListener("input", show);
    if (box.dataset.live === "true") setTimeout(poll, PERIOD);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("gallery");
    if (box) gallery(box);
  });
})();

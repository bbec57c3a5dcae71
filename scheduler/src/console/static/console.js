// Vishwa console: live updates over Server-Sent Events. Every page reads fine without it.
(function () {
  "use strict";
  var body = document.body;
  function byInstance(sel, instance) {
    return document.querySelectorAll(sel + '[data-instance="' + CSS.escape(instance) + '"]');
  }
  function setState(el, state) {
    el.className = el.className.replace(/\b(pending|queued|running|succeeded|failed|upstream_failed|skipped|cancelled)\b/g, "").trim() + " " + state;
  }
  var runEvents = body.dataset.runEvents;
  if (runEvents && window.EventSource) {
    var es = new EventSource(runEvents);
    es.addEventListener("stage", function (e) {
      var d = JSON.parse(e.data);
      byInstance(".stage-state", d.instance).forEach(function (el) { el.textContent = d.state; setState(el, d.state); });
      var g = document.querySelector('.node[data-group="' + CSS.escape(d.group) + '"]');
      if (g) {
        setState(g, d.group_state);
        var c = g.querySelector(".counts");
        if (c) c.textContent = d.group_counts;
      }
    });
    es.addEventListener("run", function (e) {
      var d = JSON.parse(e.data);
      document.querySelectorAll(".run-state").forEach(function (el) { el.textContent = d.state; setState(el, d.state); });
      var cancel = document.getElementById("cancel-form");
      if (cancel && d.final) cancel.remove();
    });
    es.addEventListener("reload", function () { es.close(); location.reload(); });
  }
  var logEvents = body.dataset.logEvents;
  if (logEvents && window.EventSource) {
    var list = document.getElementById("log");
    var follow = document.getElementById("follow");
    var count = list.querySelectorAll("li.line").length;
    var last = list.lastElementChild;
    var open = last && last.dataset.open === "1";
    var atBottom = function () { return list.scrollHeight - list.scrollTop - list.clientHeight < 40; };
    if (follow && follow.checked) list.scrollTop = list.scrollHeight;
    function addLine(text, cls) {
      var li = document.createElement("li");
      li.className = cls;
      var n = document.createElement("span");
      n.className = "n";
      if (cls.indexOf("line") >= 0) { count += 1; n.textContent = count; }
      var t = document.createElement("span");
      t.className = "t";
      t.textContent = text;
      li.appendChild(n); li.appendChild(t); list.appendChild(li);
      return li;
    }
    var les = new EventSource(logEvents);
    les.addEventListener("attempt", function (e) { addLine("attempt " + e.data, "sep"); open = false; });
    les.addEventListener("log", function (e) {
      var d = JSON.parse(e.data);
      var stick = (follow && follow.checked) || atBottom();
      var parts = d.text.split("\n");
      parts.forEach(function (p, i) {
        var end = i === parts.length - 1;
        if (end && p === "") { open = false; return; }
        if (i === 0 && open && list.lastElementChild) {
          list.lastElementChild.querySelector(".t").textContent += p;
        } else {
          addLine(p, "line " + d.stream);
        }
        open = end;
      });
      if (stick) list.scrollTop = list.scrollHeight;
    });
  }
})();

// Vishwa console: live updates over Server-Sent Events. Every page reads fine without it.
(function () {
  "use strict";
  var body = document.body;
  var STATES = ["pending", "queued", "running", "succeeded", "failed", "upstream_failed", "skipped", "cancelled"];
  function setState(el, state) {
    STATES.forEach(function (s) { el.classList.remove(s); });
    el.classList.add(state);
  }
  var runEvents = body.dataset.runEvents;
  if (runEvents && window.EventSource) {
    // One lookup table, so a burst of thousands of updates costs no DOM search each.
    var cells = {};
    document.querySelectorAll(".stage-state").forEach(function (el) { cells[el.dataset.instance] = el; });
    var nodes = {};
    document.querySelectorAll(".node").forEach(function (el) { nodes[el.dataset.group] = el; });
    var es = new EventSource(runEvents);
    es.addEventListener("stages", function (e) {
      var groups = {};
      JSON.parse(e.data).forEach(function (d) {
        var el = cells[d.instance];
        if (el) { el.textContent = d.state; setState(el, d.state); }
        groups[d.group] = d;
      });
      Object.keys(groups).forEach(function (name) {
        var d = groups[name];
        var g = nodes[name];
        if (g) {
          setState(g, d.group_state);
          var c = g.querySelector(".counts");
          if (c) c.textContent = d.group_counts;
        }
      });
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

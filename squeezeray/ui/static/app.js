/* squeezeray front page: draws the front served by `squeezeray ui` (JSON API) or inlined in a report.
 *
 * Data flow: load the front -> fill the axis pickers and sliders -> draw -> show the
 * recommended trial. A slider change filters the points (grey x = outside the limits)
 * and, when served, asks /api/select for the recommendation under the new limits.
 * Clicking a scatter point shows that trial; Export posts it to /api/export.
 */
(function () {
  "use strict";

  var dataEl = document.getElementById("squeezeray-data");
  var STATIC = dataEl ? JSON.parse(dataEl.textContent) : null;
  var SLIDERS = ["max_accuracy_drop", "max_size_bytes", "max_latency_ms"];
  var COLORS = { front: "#1f77b4", dominated: "#1f77b4", outside: "#b8bec4", star: "#ff9900", original: "#222" };

  var state = { front: null, limits: {}, recommended: null, reason: "", shown: null, exporting: false, selectTicket: 0 };

  // ---------------------------------------------------------------- data access
  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error || ("HTTP " + r.status)); }
        return body;
      });
    });
  }

  function postJSON(url, payload) {
    return fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) { throw new Error(body.error || ("HTTP " + r.status)); }
          return body;
        });
      });
  }

  var api = {
    front: function () { return STATIC ? Promise.resolve(STATIC.front) : getJSON("/api/front"); },
    trial: function (n) {
      if (!STATIC) { return getJSON("/api/trial/" + n); }
      var t = STATIC.trials[String(n)];
      return t ? Promise.resolve(t) : Promise.reject(new Error("trial " + n + " is not in this report"));
    },
    select: function (limits) {
      var q = Object.keys(limits).map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(limits[k]); });
      return getJSON("/api/select" + (q.length ? "?" + q.join("&") : ""));
    },
    exportTrial: function (n, limits) { return postJSON("/api/export", { trial: n, constraints: limits }); }
  };

  // ----------------------------------------------------------------- formatting
  function fmt(value, unit) {
    if (value === null || value === undefined) { return "–"; }
    if (unit === "bytes") { return (value / 1048576).toFixed(3) + " MiB"; }
    if (unit === "fraction") { return (100 * value).toPrecision(3) + " %"; }
    var s = Math.abs(value) >= 1e5 || (Math.abs(value) < 1e-3 && value !== 0) ? value.toExponential(3) : value.toPrecision(4);
    return s + (unit ? " " + unit : "");
  }

  function axisTitle(name) {
    var m = state.front.meta[name];
    return name + " (" + (m.unit === "bytes" ? "MiB" : m.unit) + ", " + (m.direction === "minimize" ? "lower" : "higher") + " is better)";
  }

  function axisValue(name, v) {
    return state.front.meta[name].unit === "bytes" ? v / 1048576 : v;
  }

  function el(id) { return document.getElementById(id); }

  // --------------------------------------------------------------- feasibility
  function feasible(row) {
    return SLIDERS.every(function (k) {
      var lim = state.limits[k];
      return lim === undefined || row.checks[k] === undefined || row.checks[k] <= lim;
    });
  }

  function paretoFor(names) {
    var key = names.slice().sort().join(",");
    return state.front.pareto[key] || state.front.rows.map(function () { return true; });
  }

  // ---------------------------------------------------------------------- plot
  function chosenAxes() {
    var view = el("view").value;
    var axes = [el("axis-x").value, el("axis-y").value];
    if (view === "3d") { axes.push(el("axis-z").value); }
    return axes;
  }

  function hoverText(row) {
    var lines = ["trial " + row.trial + (row.baseline_trial ? " (uniform baseline)" : "")];
    state.front.objectives.forEach(function (n) { lines.push(n + ": " + fmt(row.values[n], state.front.meta[n].unit)); });
    lines.push(row.plan);
    return lines.join("<br>");
  }

  function scatterTraces(axes) {
    var rows = state.front.rows;
    var mask = paretoFor(axes);
    var is3d = axes.length === 3;
    var type = is3d ? "scatter3d" : "scatter";
    var groups = { front: [], dominated: [], outside: [] };
    rows.forEach(function (row, i) {
      var g = !feasible(row) ? "outside" : (mask[i] ? "front" : "dominated");
      groups[g].push(row);
    });
    function trace(name, list, marker) {
      var t = {
        type: type, mode: "markers", name: name, marker: marker,
        x: list.map(function (r) { return axisValue(axes[0], r.values[axes[0]]); }),
        y: list.map(function (r) { return axisValue(axes[1], r.values[axes[1]]); }),
        customdata: list.map(function (r) { return r.trial; }),
        text: list.map(hoverText), hoverinfo: "text"
      };
      if (is3d) { t.z = list.map(function (r) { return axisValue(axes[2], r.values[axes[2]]); }); }
      return t;
    }
    var size = is3d ? 6 : 11;
    var traces = [
      trace("not dominated", groups.front, { size: size, color: COLORS.front, opacity: 1, line: { width: 1, color: "#fff" } }),
      trace("dominated (dimmed)", groups.dominated, { size: size, color: COLORS.dominated, opacity: 0.22 }),
      trace("outside the constraints", groups.outside, { size: size, color: COLORS.outside, symbol: "x", opacity: 0.8 })
    ];
    var o = state.front.original;
    var orig = { type: type, mode: "markers", name: "original model", hoverinfo: "text", text: ["original model"],
      x: [axisValue(axes[0], o[axes[0]])], y: [axisValue(axes[1], o[axes[1]])],
      marker: { size: is3d ? 7 : 12, color: COLORS.original, symbol: "diamond" } };
    if (is3d) { orig.z = [axisValue(axes[2], o[axes[2]])]; }
    traces.push(orig);
    var rec = rows.filter(function (r) { return r.trial === state.recommended; });
    if (rec.length) {
      traces.push(trace("recommended", rec, { size: is3d ? 10 : 22, color: COLORS.star, symbol: is3d ? "diamond" : "star",
        line: { width: 1, color: "#7a4a00" } }));
    }
    return traces;
  }

  function parcoordsTrace() {
    var rows = state.front.rows;
    var mask = paretoFor(state.front.objectives);
    var dims = state.front.objectives.map(function (n) {
      return { label: n + (state.front.meta[n].unit === "bytes" ? " (MiB)" : ""),
        values: rows.map(function (r) { return axisValue(n, r.values[n]); }) };
    });
    dims.unshift({ label: "trial", values: rows.map(function (r) { return r.trial; }) });
    var color = rows.map(function (r, i) {
      if (r.trial === state.recommended) { return 3; }
      if (!feasible(r)) { return 0; }
      return mask[i] ? 2 : 1;
    });
    return [{ type: "parcoords", dimensions: dims,
      line: { color: color, cmin: 0, cmax: 3, showscale: false,
        colorscale: [[0, "#e3e6e9"], [0.33, "#b9cde0"], [0.66, COLORS.front], [1, COLORS.star]] } }];
  }

  function draw() {
    var view = el("view").value;
    el("axis-z-label").hidden = view !== "3d";
    ["axis-x", "axis-y"].forEach(function (id) { el(id).disabled = view === "parcoords"; });
    var plot = el("plot");
    var layout = { margin: { l: 70, r: 20, t: 20, b: 60 }, hovermode: "closest", legend: { orientation: "h", y: -0.15 },
      uirevision: view === "parcoords" ? view : view + ":" + chosenAxes().join(",") };
    var traces;
    if (view === "parcoords") {
      traces = parcoordsTrace();
      layout.margin = { l: 60, r: 60, t: 50, b: 30 };
    } else {
      var axes = chosenAxes();
      traces = scatterTraces(axes);
      if (view === "3d") {
        layout.scene = { xaxis: { title: { text: axes[0] } }, yaxis: { title: { text: axes[1] } }, zaxis: { title: { text: axes[2] } } };
      } else {
        layout.xaxis = { title: { text: axisTitle(axes[0]) }, zeroline: false };
        layout.yaxis = { title: { text: axisTitle(axes[1]) }, zeroline: false };
      }
    }
    Plotly.react(plot, traces, layout, { displaylogo: false, responsive: true });
    if (!plot.dataset.bound) {
      plot.on("plotly_click", function (ev) {
        var p = ev && ev.points && ev.points[0];
        if (p && p.customdata !== undefined && p.customdata !== null) { showTrial(Number(p.customdata)); }
      });
      plot.dataset.bound = "1";
    }
  }

  // ------------------------------------------------------------------- sliders
  function setupSliders() {
    SLIDERS.forEach(function (field) {
      var spec = state.front.sliders[field];
      var input = el("slider-" + field);
      var box = input.closest(".slider");
      if (!spec || spec.off) {
        input.disabled = true;
        box.classList.add("off");
        el("out-" + field).textContent = spec && spec.off ? spec.off : "not available";
        return;
      }
      input.max = String(spec.stops.length);
      input.value = String(spec.stops.length);
      input.addEventListener("input", function () { showSliderValue(field); });
      input.addEventListener("change", function () { onLimits(); });
      showSliderValue(field);
    });
  }

  function sliderLimit(field) {
    var spec = state.front.sliders[field];
    var input = el("slider-" + field);
    if (!spec || spec.off) { return undefined; }
    var i = Number(input.value);
    return i >= spec.stops.length ? undefined : spec.stops[i];
  }

  function showSliderValue(field) {
    var spec = state.front.sliders[field];
    var lim = sliderLimit(field);
    el("out-" + field).textContent = lim === undefined ? "no limit" : "≤ " + fmt(lim, spec.unit);
  }

  function onLimits() {
    var limits = {};
    SLIDERS.forEach(function (f) { var v = sliderLimit(f); if (v !== undefined) { limits[f] = v; } });
    state.limits = limits;
    if (STATIC) {
      draw();
      el("mode-note").hidden = Object.keys(limits).length === 0;
      el("mode-note").textContent = "Static report: the points are filtered here, but the ★ stays the search's pick " +
        "(no constraints); run `squeezeray ui STUDY` to re-select under new limits.";
      return;
    }
    var ticket = ++state.selectTicket;  // answers can arrive out of order: only the latest one counts
    api.select(limits).then(function (rec) {
      if (ticket === state.selectTicket) { setRecommendation(rec); }
    }).catch(function (err) {
      if (ticket === state.selectTicket) { setRecommendation({ selected: null, reason: "", error: String(err.message || err) }); }
    });
  }

  function setRecommendation(rec) {
    state.recommended = rec.selected;
    state.reason = rec.reason;
    var box = el("recommended");
    box.dataset.trial = rec.selected === null ? "" : String(rec.selected);
    if (rec.selected === null) {
      box.textContent = "no recommendation";
      box.classList.add("none");
      el("reason").textContent = rec.error;
    } else {
      box.textContent = "recommended: trial " + rec.selected;
      box.classList.remove("none");
      el("reason").textContent = rec.reason;
    }
    draw();
  }

  // -------------------------------------------------------------------- detail
  function heat(id, table, field, title) {
    var z = table[field];
    var step = Math.max(1, Math.ceil(table.blocks.length / 16));
    var layout = { title: { text: title, font: { size: 12 } }, margin: { l: 120, r: 10, t: 26, b: 40 },
      xaxis: { title: { text: "block", standoff: 4 }, type: "category", tickangle: 0, dtick: step },
      yaxis: { type: "category", automargin: true } };
    var trace = { type: "heatmap", x: table.blocks, y: table.kinds, z: z, text: table.technique,
      hovertemplate: "%{y} block %{x}<br>" + field + " %{z}<br>%{text}<extra></extra>", xgap: 1, ygap: 1 };
    if (field === "bits") {
      trace.colorscale = "Viridis"; trace.zmin = 2; trace.zmax = 16; trace.colorbar = { title: { text: "bits" }, thickness: 10 };
    } else if (field === "sparsity") {
      trace.colorscale = "Blues"; trace.reversescale = true; trace.zmin = 0; trace.zmax = 1; trace.colorbar = { title: { text: "sparsity" }, thickness: 10 };
    } else {
      var labels = [];
      table.technique.forEach(function (row) { row.forEach(function (l) { if (l !== null && labels.indexOf(l) < 0) { labels.push(l); } }); });
      labels.sort();
      var palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"];
      trace.z = table.technique.map(function (row) { return row.map(function (l) { return l === null ? null : labels.indexOf(l); }); });
      var n = Math.max(labels.length, 1);
      var scale = [];
      labels.forEach(function (l, i) {
        var c = palette[i % palette.length];
        scale.push([i / n, c]); scale.push([(i + 1) / n, c]);
      });
      if (!scale.length) { scale = [[0, palette[0]], [1, palette[0]]]; }
      trace.colorscale = scale; trace.zmin = -0.5; trace.zmax = n - 0.5;
      trace.colorbar = { tickvals: labels.map(function (_, i) { return i; }), ticktext: labels, thickness: 10 };
      trace.hovertemplate = "%{y} block %{x}<br>%{text}<extra></extra>";
    }
    Plotly.react(el(id), [trace], layout, { displaylogo: false, responsive: true, displayModeBar: false });
  }

  function showTrial(n) {
    return api.trial(n).then(function (t) {
      state.shown = t.trial;
      var detail = el("detail");
      detail.dataset.trial = String(t.trial);
      el("detail-trial").textContent = String(t.trial);
      el("detail-tag").textContent = (t.trial === state.recommended ? "recommended · " : "") + (t.baseline_trial ? "uniform baseline" : "searched");
      var body = el("objectives-table").querySelector("tbody");
      body.innerHTML = "";
      t.objectives.forEach(function (o) {
        var tr = document.createElement("tr");
        var change = "–";
        var cls = "";
        if (o.change !== null && o.change !== undefined) {
          change = (o.change >= 0 ? "+" : "") + (100 * o.change).toFixed(2) + " %";
          var better = o.direction === "minimize" ? o.change < 0 : o.change > 0;
          cls = o.change === 0 ? "" : (better ? "better" : "worse");
        }
        [[o.name, ""], [fmt(o.value, o.unit), "num"], [fmt(o.original, o.unit), "num"], [change, "num " + cls],
          [o.provenance + ": " + o.where, "how"]].forEach(function (cell) {
          var td = document.createElement("td");
          td.textContent = cell[0];
          td.className = cell[1];
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      el("plan-json").textContent = JSON.stringify(t.plan, null, 1);
      heat("heat-bits", t.layers, "bits", "bits per weight");
      heat("heat-sparsity", t.layers, "sparsity", "sparsity");
      heat("heat-technique", t.layers, "technique", "technique");
      var btn = el("export-btn");
      btn.textContent = "Export trial " + t.trial;
      btn.disabled = !!STATIC || state.exporting;
      if (STATIC) { btn.title = "export with `squeezeray ui` or `squeezeray export`"; }
    }).catch(function (err) {
      el("plan-json").textContent = "error: " + (err.message || err);
    });
  }

  function onExport() {
    if (state.shown === null || STATIC) { return; }
    var status = el("export-status");
    var btn = el("export-btn");
    state.exporting = true;
    btn.disabled = true;
    status.dataset.state = "running";
    status.dataset.path = "";
    status.textContent = "compressing and writing trial " + state.shown + " …";
    api.exportTrial(state.shown, state.limits).then(function (res) {
      status.dataset.state = "done";
      status.dataset.path = res.path;
      var ppl = (res.card.objectives || []).filter(function (o) { return o.name === "perplexity"; })[0];
      status.textContent = "written to " + res.path + (ppl ? " (perplexity " + fmt(ppl.value, "") + " measured on the files)" : "");
    }).catch(function (err) {
      status.dataset.state = "error";
      status.textContent = "export failed: " + (err.message || err);
    }).then(function () {
      state.exporting = false;
      btn.disabled = false;
    });
  }

  // ---------------------------------------------------------------------- init
  function fillAxes() {
    var names = state.front.objectives;
    ["axis-x", "axis-y", "axis-z"].forEach(function (id, k) {
      var sel = el(id);
      sel.innerHTML = "";
      names.forEach(function (n) {
        var opt = document.createElement("option");
        opt.value = n; opt.textContent = n;
        sel.appendChild(opt);
      });
      sel.value = names[Math.min(k, names.length - 1)];
      sel.addEventListener("change", draw);
    });
    var view = el("view");
    if (names.length < 3) { view.querySelector('option[value="3d"]').disabled = true; }
    view.addEventListener("change", draw);
  }

  function drawSensitivity(sens) {
    if (!sens) { return; }
    el("sensitivity").hidden = false;
    el("sensitivity-proxy").textContent = sens.proxy;
    var z = sens.kl.map(function (row) {
      return row.map(function (v) { return v === null ? null : Math.log10(Math.max(v, 1e-7)); });
    });
    var text = sens.kl.map(function (row) { return row.map(function (v) { return v === null ? "" : v.toExponential(2); }); });
    Plotly.newPlot(el("sensitivity-plot"), [{ type: "heatmap", x: sens.options, y: sens.units, z: z, text: text,
      hovertemplate: "%{y}<br>%{x}: KL %{text}<extra></extra>", colorscale: "Viridis",
      colorbar: { title: { text: "log10 KL" } } }],
      { margin: { l: 260, r: 20, t: 10, b: 90 }, height: Math.max(300, 14 * sens.units.length + 120),
        yaxis: { autorange: "reversed", tickfont: { size: 9 } } }, { displaylogo: false, responsive: true });
  }

  function init(front) {
    state.front = front;
    el("study").textContent = front.study;
    el("meta").textContent = "model " + front.model + " · hardware " + front.hardware + " · space " + front.space +
      " · " + front.n_trials + " trials, " + front.rows.length + " re-measured on " + front.objectives.join(", ") +
      (STATIC ? " · static report" : "");
    fillAxes();
    setupSliders();
    el("export-btn").addEventListener("click", onExport);
    setRecommendation(front.recommendation);
    drawSensitivity(front.sensitivity);
    var first = front.recommendation.selected !== null ? front.recommendation.selected : front.rows[0].trial;
    return showTrial(first);
  }

  api.front().then(init).then(function () {
    document.body.dataset.ready = "1";
  }).catch(function (err) {
    el("meta").textContent = "error: " + (err.message || err);
    document.body.dataset.ready = "error";
  });
})();

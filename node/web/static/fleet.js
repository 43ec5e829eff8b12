"use strict";
// The hub's fleet page: nodes (table and map), alerts, 24-hour SoC and PV charts per node, jobs with their
// states and reasons, a form that sends a print to a node or to the best node. Reads /api/fleet every few
// seconds; sends actions with the session's CSRF token; says every error as a sentence. Text is always set
// as text, never as HTML; the map and the charts are SVG built here (no CDN, no tiles: works offline).
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 5000;
  const CHART_REFRESH_MS = 60000;
  const FINAL = ["completed", "cancelled", "rejected", "timed_out"];
  let csrf = null;
  let nodes = [];
  let chartsAt = 0;
  const drawn = {};  // what each part shows now: rebuilt only when it changes (no button swapped under a finger)

  const $ = (id) => document.getElementById(id);
  function once(key, value, build) {
    const text = JSON.stringify(value);
    if (drawn[key] === text) return;
    drawn[key] = text;
    build();
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function say(text, isError) {
    const box = $("message");
    box.textContent = text;
    box.className = isError ? "message error" : "message";
    box.hidden = !text;
  }
  const num = (v, digits, unit) => (v === null || v === undefined) ? "–" : v.toFixed(digits) + (unit || "");
  function when(t) {
    if (t === null || t === undefined) return "never";
    return new Date(t * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  function temps(now, target) {
    if (now === null || now === undefined) return "–";
    return now.toFixed(0) + (target ? "/" + target.toFixed(0) : "") + " °C";
  }

  async function call(method, url, body) {
    let response;
    try {
      response = await fetch(url, { method, body, credentials: "same-origin", headers: { "X-CSRF-Token": csrf || "" } });
    } catch (err) {
      throw new Error("The hub did not answer: is it running, and is this device on its network?");
    }
    if (response.status === 401) {
      window.location.href = "/login";
      throw new Error("Your login has expired.");
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || ("The hub refused the request (HTTP " + response.status + ")."));
    return data;
  }

  // --- nodes ------------------------------------------------------------------------------------
  function jobWords(n) {
    if (!n.current_job) return "–";
    let words = (n.current_job_name || n.current_job) + " · " + (n.current_job_state || "").replace("_", " ");
    if (n.percent !== null && n.percent !== undefined) words += " " + n.percent.toFixed(0) + " %";
    return words;
  }
  function renderNodes(list) {
    once("nodes", list, () => {
      const rows = list.map((n) => {
        const tr = el("tr", n.alerts.length ? "alerting" : null);
        tr.dataset.nodeId = n.node_id;
        const cells = [n.node_id, n.online ? "yes" : "no", num(n.soc_pct, 0, " %"), num(n.pv_w, 0, " W"),
          num(n.battery_v, 1, " V"), temps(n.hotend_c, n.hotend_target_c), temps(n.bed_c, n.bed_target_c), jobWords(n),
          String(n.queue_length), n.next_window_start_s ? when(n.next_window_start_s) : "–", when(n.last_seen_s)];
        const names = ["node", "online", "soc", "pv", "battery", "hotend", "bed", "job", "queue", "window", "seen"];
        cells.forEach((text, i) => { const td = el("td", names[i], text); td.dataset.label = names[i]; tr.append(td); });
        return tr;
      });
      $("node-rows").replaceChildren(...(rows.length ? rows : [emptyRow(11, "No node has said hello yet.")]));
      const select = $("submit-node");
      const chosen = select.value;
      const options = [select.options[0]];
      for (const n of list) {
        const opt = el("option", null, n.node_id + (n.online ? "" : " (offline)"));
        opt.value = n.node_id;
        options.push(opt);
      }
      select.replaceChildren(...options);
      select.value = chosen;
      drawMap(list);
    });
  }
  function emptyRow(span, text) {
    const tr = el("tr");
    const td = el("td", "empty", text);
    td.colSpan = span;
    tr.append(td);
    return tr;
  }

  // --- map: equirectangular, fitted to the nodes (the whole world without them), with a graticule ----
  function drawMap(list) {
    const map = $("map");
    const placed = list.filter((n) => n.site);
    let west = -180, east = 180, south = -90, north = 90;
    if (placed.length) {
      const lons = placed.map((n) => n.site.longitude_deg), lats = placed.map((n) => n.site.latitude_deg);
      const midLon = (Math.min(...lons) + Math.max(...lons)) / 2, midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
      const spanLon = Math.max(20, (Math.max(...lons) - Math.min(...lons)) * 1.4);
      const spanLat = Math.max(10, (Math.max(...lats) - Math.min(...lats)) * 1.4, spanLon / 2);
      west = Math.max(-180, midLon - spanLon / 2); east = Math.min(180, midLon + spanLon / 2);
      south = Math.max(-90, midLat - spanLat / 2); north = Math.min(90, midLat + spanLat / 2);
    }
    // equirectangular: x and y proportional to longitude and latitude, 360 units across whatever the span
    const W = 360, H = Math.max(120, Math.min(360, W * (north - south) / (east - west)));
    const px = (lon) => ((lon - west) / (east - west)) * W, py = (lat) => ((north - lat) / (north - south)) * H;
    map.setAttribute("viewBox", "0 0 " + W + " " + H);
    Object.assign(map.dataset, { west, east, south, north });
    const parts = [svg("rect", { x: 0, y: 0, width: W, height: H, class: "sea" })];
    const step = [1, 2, 5, 10, 15, 30, 45].find((s) => (east - west) / s <= 8) || 60;
    for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
      parts.push(svg("line", { x1: px(lon), y1: 0, x2: px(lon), y2: H, class: "graticule" }));
      parts.push(svg("text", { x: px(lon) + 2, y: H - 3, class: "grid-label" }, Math.abs(lon) + (lon < 0 ? "°W" : lon > 0 ? "°E" : "°")));
    }
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      parts.push(svg("line", { x1: 0, y1: py(lat), x2: W, y2: py(lat), class: "graticule" }));
      parts.push(svg("text", { x: 2, y: py(lat) - 2, class: "grid-label" }, Math.abs(lat) + (lat < 0 ? "°S" : lat > 0 ? "°N" : "°")));
    }
    for (const n of placed) {
      const g = svg("g", { class: "site " + (n.alerts.length ? "alert" : n.online ? "online" : "offline") });
      g.dataset.nodeId = n.node_id;
      const x = px(n.site.longitude_deg), y = py(n.site.latitude_deg);
      g.append(svg("circle", { cx: x.toFixed(2), cy: y.toFixed(2), r: 5 }));
      g.append(svg("text", { x: x + 7, y: y + 4 }, n.node_id));
      g.append(svg("title", {}, n.node_id + ": " + n.site.latitude_deg.toFixed(3) + ", " + n.site.longitude_deg.toFixed(3) +
        " · " + n.site.array_peak_w.toFixed(0) + " W array"));
      parts.push(g);
    }
    map.replaceChildren(...parts);
    $("map-note").hidden = false;
    if (!placed.length) $("map-note").textContent = "No node has sent its place yet (nodes send it in their hello).";
  }

  // --- charts: one per node, SoC line over a PV area, from the hub's telemetry ---------------------
  async function refreshCharts() {
    chartsAt = Date.now();
    const box = $("charts");
    const cards = [];
    for (const n of nodes) {
      let data;
      try { data = await call("GET", "/api/fleet/nodes/" + encodeURIComponent(n.node_id) + "/telemetry?hours=24"); }
      catch (err) { continue; }
      cards.push(chart(n.node_id, data));
    }
    box.replaceChildren(...(cards.length ? cards : [el("p", "small", "No telemetry yet.")]));
  }
  function chart(nodeId, data) {
    const fig = el("figure", "chart");
    fig.dataset.nodeId = nodeId;
    fig.append(el("figcaption", null, nodeId));
    if (!data.points.length) {
      fig.append(el("p", "small", "No telemetry in the last 24 hours."));
      return fig;
    }
    const W = 300, H = 90, top = 6, span = Math.max(1, data.to_s - data.from_s);
    const s = svg("svg", { viewBox: "0 0 " + W + " " + (H + 22), class: "mini" });
    s.append(svg("line", { x1: 0, y1: top + H, x2: W, y2: top + H, class: "grid" }));
    s.append(svg("line", { x1: 0, y1: top, x2: W, y2: top, class: "grid" }));
    const pts = data.points;
    const x = (t) => ((t - data.from_s) / span) * W;
    const maxPv = Math.max(1, ...pts.map((p) => p.pv_w || 0));
    const gap = span / 20;
    const pvRuns = [], socRuns = [];
    let last = null;
    for (const p of pts) {
      if (last === null || p.t_s - last > gap) { pvRuns.push([]); socRuns.push([]); }
      if (p.pv_w !== null) pvRuns[pvRuns.length - 1].push([x(p.t_s), top + H - (p.pv_w / maxPv) * H]);
      if (p.soc_pct !== null) socRuns[socRuns.length - 1].push([x(p.t_s), top + H - (p.soc_pct / 100) * H]);
      last = p.t_s;
    }
    for (const run of pvRuns) {
      if (run.length < 2) continue;
      const d = "M" + run[0][0].toFixed(1) + "," + (top + H) + " " + run.map((q) => "L" + q[0].toFixed(1) + "," + q[1].toFixed(1)).join(" ") +
        " L" + run[run.length - 1][0].toFixed(1) + "," + (top + H) + " Z";
      s.append(svg("path", { d, class: "pv" }));
    }
    for (const run of socRuns) {
      if (run.length < 2) continue;
      s.append(svg("polyline", { points: run.map((q) => q[0].toFixed(1) + "," + q[1].toFixed(1)).join(" "), class: "soc" }));
    }
    s.append(svg("text", { x: 2, y: top + H + 14 }, when(data.from_s)));
    s.append(svg("text", { x: W - 2, y: top + H + 14, "text-anchor": "end" }, when(data.to_s)));
    s.append(svg("text", { x: W - 2, y: top + 10, "text-anchor": "end" }, "PV max " + maxPv.toFixed(0) + " W"));
    fig.append(s);
    return fig;
  }

  // --- jobs -------------------------------------------------------------------------------------
  function renderJobs(jobs) {
    once("jobs", jobs, () => {
      const rows = jobs.map((j) => {
        const tr = el("tr");
        tr.dataset.jobId = j.job_id;
        tr.dataset.state = j.state;
        const name = el("td", "job");
        name.append(el("div", "name", j.name), el("div", "small", j.job_id));
        const node = el("td", null, j.node_id || (j.requested_node ? "for " + j.requested_node : "not chosen yet"));
        const state = el("td", "state", j.state.replace("_", " ") + (j.percent !== null && j.percent !== undefined && !FINAL.includes(j.state) ? " " + j.percent.toFixed(0) + " %" : ""));
        const reason = el("td", "reason", j.reason || "");
        const actions = el("td", "actions");
        const history = el("button", "secondary", "History");
        history.type = "button";
        history.addEventListener("click", () => showHistory(j.job_id, tr));
        actions.append(history);
        if (!FINAL.includes(j.state) && !["CANCELED", "SUCCEEDED", "REJECTED", "TIMED_OUT"].includes(j.wire_state)) {
          const cancel = el("button", "danger", "Cancel");
          cancel.type = "button";
          cancel.addEventListener("click", async () => {
            if (!window.confirm("Cancel " + j.name + "?")) return;
            try { say((await call("POST", "/api/fleet/jobs/" + encodeURIComponent(j.job_id) + "/cancel")).message, false); refresh(); }
            catch (err) { say(err.message, true); }
          });
          actions.append(cancel);
        }
        tr.append(name, node, state, reason, actions);
        return tr;
      });
      $("job-rows").replaceChildren(...(rows.length ? rows : [emptyRow(5, "No job yet: send one above.")]));
    });
  }
  async function showHistory(jobId, row) {
    try {
      const job = await call("GET", "/api/fleet/jobs/" + encodeURIComponent(jobId));
      const next = row.nextSibling;
      if (next && next.classList && next.classList.contains("history")) { next.remove(); return; }
      const tr = el("tr", "history");
      const td = el("td");
      td.colSpan = 5;
      if (job.waiting) td.append(el("p", "why", "Waiting: " + job.waiting));
      const list = el("ol");
      for (const e of job.events) list.append(el("li", null, "v" + e.version + " · " + when(e.t_s) + " · " + e.node_state.replace("_", " ") + (e.reason ? " — " + e.reason : "")));
      if (!job.events.length) list.append(el("li", null, "The node has not reported this job yet."));
      td.append(list);
      tr.append(td);
      row.after(tr);
    } catch (err) { say(err.message, true); }
  }

  // --- the loop ---------------------------------------------------------------------------------
  function renderAlerts(alerts) {
    once("alerts", alerts, () => {
      $("alert-list").replaceChildren(...alerts.map((a) => { const li = el("li", a.kind, a.text); li.dataset.kind = a.kind; li.dataset.nodeId = a.node_id; return li; }));
      $("alerts").hidden = alerts.length === 0;
    });
  }
  async function refresh() {
    try {
      const data = await call("GET", "/api/fleet");
      nodes = data.nodes;
      $("clock").textContent = when(data.t_s);
      renderAlerts(data.alerts);
      renderNodes(data.nodes);
      renderJobs(data.jobs);
      $("live").textContent = "live";
      $("live").className = "live";
      if (Date.now() - chartsAt > CHART_REFRESH_MS) refreshCharts();
    } catch (err) {
      $("live").textContent = "offline";
      $("live").className = "live off";
      say(err.message, true);
    }
  }

  $("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData($("submit-form"));
    $("submit-button").disabled = true;
    try {
      const data = await call("POST", "/api/fleet/jobs", form);
      say(data.message, false);
      $("submit-form").reset();
      refresh();
    } catch (err) {
      say(err.message, true);
    } finally {
      $("submit-button").disabled = false;
    }
  });

  async function start() {
    try { csrf = (await call("GET", "/api/fleet/session")).csrf; } catch (err) { say(err.message, true); }
    await refresh();
    window.setInterval(refresh, REFRESH_MS);
  }
  start();
})();

"use strict";
// The node's page: renders the state the node sends over server-sent events, sends commands with the
// session's CSRF token, and says every error as a sentence. Text is always set as text, never as HTML.
(function () {
  let csrf = null;
  let planVersion = null;
  let lastState = null;
  const drawn = {};  // what each list shows now: rebuilt only when it changes, so a button is not swapped under a finger

  function once(key, value, build) {
    const text = JSON.stringify(value);
    if (drawn[key] === text) return;
    drawn[key] = text;
    build();
  }
  const $ = (id) => document.getElementById(id);

  function say(text, isError) {
    const box = $("message");
    box.textContent = text;
    box.className = isError ? "message error" : "message";
    box.hidden = !text;
  }

  async function call(method, url, body) {
    const headers = { "X-CSRF-Token": csrf || "" };
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    } catch (err) {
      throw new Error("The node did not answer: is it on, and is this device on its network?");
    }
    if (response.status === 401) {
      window.location.href = "/login";
      throw new Error("Your login has expired.");
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      throw new Error((data && data.error) || ("The node refused the request (HTTP " + response.status + ")."));
    }
    return data;
  }

  async function act(method, url, body, done) {
    try {
      const data = await call(method, url, body);
      say(done ? done(data) : "", false);
    } catch (err) {
      say(err.message, true);
    }
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function button(label, cls, onClick) {
    const b = el("button", cls, label);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function jobButtons(job, place) {
    const box = el("div", "buttons");
    const url = "/api/node/jobs/" + encodeURIComponent(job.id) + "/";
    if (place && job.actions.includes("move")) {
      // up/down buttons, not dragging: they work the same with a thumb on a phone
      const move = (by, words) => act("POST", url + "move", { by: by }, () => job.name + " moved " + words + ".");
      const up = button("↑ Up", "secondary move-up", () => move(-1, "up"));
      const down = button("↓ Down", "secondary move-down", () => move(1, "down"));
      up.disabled = place.first;
      down.disabled = place.last;
      up.setAttribute("aria-label", "Move " + job.name + " up the queue");
      down.setAttribute("aria-label", "Move " + job.name + " down the queue");
      box.append(up, down);
    }
    if (job.actions.includes("pause")) box.append(button("Pause", "secondary", () => act("POST", url + "pause", undefined, () => "Pausing " + job.name + " at the next safe point.")));
    if (job.actions.includes("resume")) box.append(button("Resume", "secondary", () => act("POST", url + "resume", undefined, () => "Resuming " + job.name + ".")));
    if (job.actions.includes("cancel")) box.append(button("Cancel", "danger", () => {
      if (window.confirm("Cancel " + job.name + "?")) act("POST", url + "cancel", undefined, () => job.name + " cancelled.");
    }));
    return box;
  }

  function jobItem(job, withButtons, place) {
    const li = el("li");
    li.dataset.jobId = job.id;
    li.dataset.state = job.state;
    li.append(el("div", "name", job.name));
    let words = job.words;
    if (job.percent !== null && job.percent !== undefined) words += " · " + job.percent.toFixed(1) + " %";
    if (job.time_left) words += " · " + job.time_left;
    if (job.finished) words += " · " + job.finished;
    li.append(el("div", "state", words));
    if (job.waits) li.append(el("div", "why", "Waits: " + job.waits));
    if (job.expected) li.append(el("div", "when", job.expected));
    if (job.reason && ["rejected", "failed", "paused", "suspended", "interrupted", "cancelled"].includes(job.state)) {
      li.append(el("div", "why", job.reason));
    }
    if (withButtons) li.append(jobButtons(job, place));
    return li;
  }

  function render(state) {
    lastState = state;
    $("title").textContent = "Solar Print Node · " + state.node_id;
    $("clock").textContent = state.now + (state.time_scale !== 1 ? " (simulated, ×" + state.time_scale + ")" : "");
    $("printer").textContent = state.printer;
    $("temperatures").textContent = state.temperatures || "no reading yet";
    $("power").textContent = state.power || "no reading yet";
    $("battery").textContent = state.battery || "no reading yet";
    $("plan").textContent = state.plan;
    $("plate").textContent = state.plate;
    $("plate-button").hidden = state.plate_clear;

    const alerts = $("alert-list");
    alerts.replaceChildren(...state.alerts.map((text) => el("li", null, text)));
    $("alerts").hidden = state.alerts.length === 0;

    const current = state.current;
    once("current", current, () => {
      $("current").replaceChildren();
      if (current) {
        const list = el("ul", "jobs");
        list.append(jobItem(current, false));
        $("current").append(list);
      } else {
        $("current").textContent = "Nothing is printing.";
      }
    });
    once("current-buttons", current && [current.id, current.actions], () => {
      $("current-buttons").replaceChildren(...(current ? [jobButtons(current)] : []));
    });
    $("bar-box").hidden = !current || current.percent === null;
    $("bar").style.width = ((current && current.percent) || 0) + "%";
    const pending = state.jobs.filter((job) => !current || job.id !== current.id);
    once("jobs", pending, () => {
      const movable = pending.filter((job) => job.actions.includes("move")).map((job) => job.id);
      const place = (job) => ({ first: movable[0] === job.id, last: movable[movable.length - 1] === job.id });
      $("jobs").replaceChildren(...(pending.length ? pending.map((job) => jobItem(job, true, place(job))) : [el("li", "state", "No job is waiting.")]));
    });
    once("history", state.history, () => {
      $("history").replaceChildren(...(state.history.length ? state.history.map((job) => jobItem(job, false)) : [el("li", "state", "No finished job yet.")]));
    });
    $("uploaded-box").hidden = state.uploaded.length === 0;
    once("uploaded", state.uploaded, () => {
      $("uploaded").replaceChildren(...state.uploaded.map((name) => {
        const li = el("li");
        li.append(el("div", "name", name));
        const box = el("div", "buttons");
        box.append(button("Print", "secondary", () => act("POST", "/api/files/local/" + encodeURIComponent(name),
          { command: "select", print: true }, (data) => name + ": " + data.printnode.when)));
        li.append(box);
        return li;
      }));
    });
    $("footer").textContent = "printnode " + state.version;
    if (state.plan_version !== planVersion) {
      planVersion = state.plan_version;
      loadPlan();
    } else if (window.lastPlan) {
      drawChart(window.lastPlan, state);
    }
  }

  async function loadPlan() {
    if (planVersion === null) { $("chart").replaceChildren(); return; }
    try {
      window.lastPlan = await call("GET", "/api/node/plan");
      drawChart(window.lastPlan, lastState);
    } catch (err) {
      $("chart").replaceChildren();
    }
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawChart(plan, state) {
    const chart = $("chart");
    const t = plan.trajectory;
    const n = t.soc_pct.length;
    if (!n) { chart.replaceChildren(); return; }
    const W = 600, H = 220, left = 34, right = 8, top = 8, bottom = 24;
    const t0 = t.t0_s, t1 = t.t0_s + n * t.step_s;
    const x = (ts) => left + (W - left - right) * (ts - t0) / (t1 - t0);
    const y = (pct) => top + (H - top - bottom) * (1 - pct / 100);
    const pvMax = Math.max(1, ...t.pv_w);
    const yPv = (w) => top + (H - top - bottom) * (1 - w / pvMax);
    const nodes = [];
    for (const pct of [0, 25, 50, 75, 100]) {
      nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(pct), y2: y(pct) }));
      nodes.push(svg("text", { x: 2, y: y(pct) + 4 }, pct + "%"));
    }
    const hour = new Intl.DateTimeFormat([], { hour: "2-digit", hourCycle: "h23", timeZone: state ? state.timezone : undefined });
    const firstHour = Math.ceil(t0 / 3600) * 3600;
    const every = (t1 - t0) > 30 * 3600 ? 6 : 3;
    for (let ts = firstHour; ts < t1; ts += 3600) {
      const label = hour.format(new Date(ts * 1000));
      if (parseInt(label, 10) % every !== 0) continue;
      nodes.push(svg("line", { class: "grid", x1: x(ts), x2: x(ts), y1: top, y2: H - bottom }));
      nodes.push(svg("text", { x: x(ts) - 8, y: H - 8 }, label + ":00"));
    }
    for (const job of t.planned) {
      nodes.push(svg("rect", { class: "window", x: x(job.start_s), y: top, width: Math.max(1, x(job.end_s) - x(job.start_s)),
        height: H - top - bottom }, undefined));
    }
    let pvPath = "M" + x(t0) + "," + yPv(0);
    t.pv_w.forEach((w, k) => { pvPath += " L" + x(t0 + (k + 0.5) * t.step_s) + "," + yPv(w); });
    pvPath += " L" + x(t1) + "," + yPv(0) + " Z";
    nodes.push(svg("path", { class: "pv", d: pvPath }));
    let socPath = "";
    t.soc_pct.forEach((pct, k) => { socPath += (k ? " L" : "M") + x(t0 + (k + 0.5) * t.step_s) + "," + y(pct); });
    nodes.push(svg("path", { class: "soc", d: socPath }));
    nodes.push(svg("line", { class: "reserve", x1: left, x2: W - right, y1: y(t.reserve_pct), y2: y(t.reserve_pct) }));
    if (state && state.now_s >= t0 && state.now_s <= t1) {
      nodes.push(svg("line", { class: "now", x1: x(state.now_s), x2: x(state.now_s), y1: top, y2: H - bottom }));
    }
    chart.replaceChildren(...nodes);
  }

  function connect() {
    const source = new EventSource("/api/node/events");
    source.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "live"; });
    source.addEventListener("state", (event) => {
      const state = JSON.parse(event.data);
      if (state.error) { say(state.error, true); return; }
      render(state);
    });
    source.addEventListener("logout", () => { window.location.href = "/login"; });
    source.addEventListener("error", () => {
      $("live").textContent = "reconnecting…";
      $("live").className = "live off";
      if (source.readyState === EventSource.CLOSED) {
        // the server refused the stream (a login that expired): check, then start again
        call("GET", "/api/node/session").then(() => setTimeout(connect, 2000), () => {});
      }
    });
  }

  async function upload(file) {
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    say("Uploading " + file.name + "…", false);
    await act("POST", "/api/node/jobs", form, (data) => file.name + ": " + data.when);
  }

  function setUpDrop() {
    const drop = $("drop");
    ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
      event.preventDefault(); drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, (event) => {
      event.preventDefault(); drop.classList.remove("over");
    }));
    drop.addEventListener("drop", (event) => upload(event.dataTransfer.files[0]));
    $("file-input").addEventListener("change", (event) => { upload(event.target.files[0]); event.target.value = ""; });
  }

  async function start() {
    try {
      csrf = (await call("GET", "/api/node/session")).csrf;
    } catch (err) {
      say(err.message, true);
      return;
    }
    $("plate-button").addEventListener("click", () => act("POST", "/api/node/plate-cleared", undefined,
      () => "Thank you: the plate is clear, the next print may start."));
    setUpDrop();
    $("logout-form").addEventListener("submit", (event) => {
      event.preventDefault();
      fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf || "" }, credentials: "same-origin" })
        .finally(() => { window.location.href = "/login"; });
    });
    connect();
  }

  start();
})();

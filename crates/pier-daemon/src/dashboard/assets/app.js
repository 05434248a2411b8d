// Pier dashboard: a client of the native API on the same origin. Pages are shown by the
// URL's hash (#/overview, #/instances, #/instances/NAME); the events stream keeps them
// current. Data goes into the page as text only (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let containers = [];
let logsAbort = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

async function api(method, path) {
  const r = await fetch(path, { method, headers: { Accept: "application/json" } });
  if (r.status === 401) { location.reload(); throw new Error("logged out"); }
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((body && body.message) || r.statusText);
  return body;
}

// Reads an ndjson response line by line until it ends or `signal` aborts it.
async function ndjson(path, signal, onLine) {
  const r = await fetch(path, { signal });
  if (!r.ok) throw new Error(r.statusText);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim()) onLine(JSON.parse(line));
    }
  }
}

function fillFacts(dl, facts) {
  dl.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
}

// ---- overview ----

function renderStates() {
  const counts = {};
  for (const c of containers) counts[c.state] = (counts[c.state] || 0) + 1;
  const facts = Object.keys(counts).sort().map((s) => [s, counts[s]]);
  fillFacts($("states"), facts.length ? facts : [["instances", 0]]);
}

async function loadHost() {
  const i = await api("GET", "/v1/info");
  fillFacts($("host"), [
    ["name", i.hostname], ["CPUs", i.cpus], ["memory", bytes(i.memory)],
    ["disk free", bytes(i.root_free_bytes) + " of " + bytes(i.root_total_bytes)],
    ["images", i.images], ["Pier", i.version],
  ]);
}

// Redrawn at each new sample while the overview is shown.
let graphTimer = null;
async function loadMemoryGraph() {
  clearTimeout(graphTimer);
  const h = await api("GET", "/v1/metrics/history");
  const period = Math.min(Math.max(h.period_seconds || 15, 1), 60);
  graphTimer = setTimeout(() => {
    if (!$("page-overview").hidden) loadMemoryGraph().catch(() => {});
  }, period * 1000);
  const fig = $("memory-graph");
  const pts = h.samples.map((s) => [s.time, s.host_memory_available_bytes]);
  fig.querySelector("svg")?.remove();
  if (pts.length < 2) { $("memory-caption").textContent = "Not enough samples yet."; return; }
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0], max = h.host_memory_bytes || 1;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 300 100");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const last = pts[pts.length - 1][1];
  svg.setAttribute("aria-label", "Available memory over time, now " + bytes(last) + " of " + bytes(max));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.map(([t, v]) =>
    ((t - t0) / Math.max(t1 - t0, 1) * 300).toFixed(1) + "," + (100 - v / max * 100).toFixed(1)).join(" "));
  svg.append(line);
  fig.prepend(svg);
  $("memory-caption").textContent = "Now " + bytes(last) + " available of " + bytes(max) + "; " + pts.length + " samples.";
}

function addEvent(e) {
  const name = (e.attributes && e.attributes.name) || (e.id || "").slice(0, 12);
  const li = el("li", {}, e.time.slice(11, 19) + "  " + e.kind + " " + e.action + " " + name);
  const list = $("events");
  list.prepend(li);
  while (list.children.length > 20) list.lastChild.remove();
}

// ---- instances ----

async function act(c, action) {
  const status = $("action-status");
  status.textContent = action + " " + c.name + "…";
  try {
    if (action === "remove") {
      if (!confirm("Remove " + c.name + "?")) { status.textContent = ""; return; }
      await api("DELETE", "/v1/containers/" + encodeURIComponent(c.id) + "?force=true");
    } else {
      await api("POST", "/v1/containers/" + encodeURIComponent(c.id) + "/" + action);
    }
    status.textContent = action + " " + c.name + ": done";
  } catch (err) {
    status.textContent = action + " " + c.name + " failed: " + err.message;
  }
}

function renderInstances() {
  const rows = containers.map((c) => {
    const running = c.state === "running";
    const btn = (label, action, enabled) => {
      const b = el("button", { type: "button", "aria-label": label + " " + c.name, "data-action": action }, label);
      b.disabled = !enabled;
      b.addEventListener("click", () => act(c, action));
      return b;
    };
    return el("tr", { id: "row-" + c.name, "data-state": c.state },
      el("th", { scope: "row" }, el("a", { href: "#/instances/" + encodeURIComponent(c.name) }, c.name)),
      el("td", {}, c.image),
      el("td", { class: "state state-" + c.state }, c.state),
      el("td", {}, c.status),
      el("td", {}, btn("Start", "start", !running), btn("Stop", "stop", running),
        btn("Restart", "restart", true), btn("Remove", "remove", true)));
  });
  $("instances").tBodies[0].replaceChildren(...rows);
}

async function loadContainers() {
  containers = await api("GET", "/v1/containers?all=true");
  renderInstances();
  renderStates();
}

async function showInstance(name) {
  const c = await api("GET", "/v1/containers/" + encodeURIComponent(name));
  $("h-instance").textContent = name;
  fillFacts($("instance-facts"), [["id", (c.id || "").slice(0, 12)], ["image", c.image || (c.config && c.config.image) || ""], ["state", (c.state && (c.state.status || c.state)) || ""]]);
  const pre = $("logs");
  pre.textContent = "";
  logsAbort = new AbortController();
  ndjson("/v1/containers/" + encodeURIComponent(name) + "/logs?follow=true&tail=500", logsAbort.signal, (l) => {
    pre.append(l.log);
    pre.scrollTop = pre.scrollHeight;
  }).catch(() => {});
}

// ---- pages and live updates ----

// On a page change (not the first load), keyboard and screen-reader users land on its heading.
async function route(ev) {
  if (logsAbort) { logsAbort.abort(); logsAbort = null; }
  const hash = location.hash || "#/overview";
  const [, page, arg] = hash.split("/");
  const shown = page === "instances" && arg ? "instance" : page === "instances" ? "instances" : "overview";
  for (const p of ["overview", "instances", "instance"]) $("page-" + p).hidden = p !== shown;
  for (const n of ["overview", "instances"]) {
    const a = $("nav-" + n);
    if (shown.startsWith(n.slice(0, 8))) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = $("h-" + shown).textContent + " · Pier";
  if (ev) { const h = $("h-" + shown); h.tabIndex = -1; h.focus(); }
  try {
    if (shown === "instance") await showInstance(decodeURIComponent(arg));
    else if (shown === "overview") await Promise.all([loadHost(), loadMemoryGraph()]);
  } catch (err) {
    $("live").textContent = "Error: " + err.message;
  }
}

let refresh = null;
function refreshSoon() {
  clearTimeout(refresh);
  refresh = setTimeout(() => loadContainers().catch(() => {}), 100);
}

async function follow() {
  for (;;) {
    try {
      const since = Math.floor(Date.now() / 1000) - 3600;
      $("live").textContent = "Live";
      $("events").replaceChildren();
      await ndjson("/v1/events?since=" + since, undefined, (e) => {
        addEvent(e);
        if (e.kind === "container") refreshSoon();
      });
    } catch (err) { /* reconnect below */ }
    $("live").textContent = "Reconnecting…";
    await new Promise((r) => setTimeout(r, 2000));
    refreshSoon();
  }
}

window.addEventListener("hashchange", route);
loadContainers().catch((err) => { $("live").textContent = "Error: " + err.message; });
route();
follow();

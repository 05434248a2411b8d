// Pier dashboard, the shared part: a client of the native API on the same origin.
// Each page (pages/ID.js) registers itself with Pier.page("ID", {show, hide}); the URL's
// hash (#/ID/ARG) picks the page shown. The events stream keeps pages current: a page
// subscribes with Pier.onEvent. Data goes into the page as text only (textContent or
// Pier.el), never as HTML.
"use strict";

const Pier = (() => {
  const $ = (id) => document.getElementById(id);
  const pages = new Map();
  const eventListeners = [];
  const containerListeners = [];
  let current = null;

  // A new element with attributes and children (strings become text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== undefined && c !== null) e.append(c);
    return e;
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    n = Number(n) || 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  // Calls the native API; `body` (if any) goes as JSON. Resolves to the parsed answer,
  // rejects with the API's own message.
  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 401) { location.reload(); throw new Error("logged out"); }
    const text = await r.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = { message: text }; }
    if (!r.ok) throw new Error((parsed && parsed.message) || r.statusText);
    return parsed;
  }

  // Aborted when the document goes away. A stream still open then would keep its
  // connection (the browser's 6 per host) for about a minute, stalling the next loads.
  const leaving = new AbortController();
  window.addEventListener("pagehide", () => leaving.abort());

  // Reads an ndjson answer line by line until it ends, `signal` aborts it or the
  // document goes away.
  async function ndjson(path, signal, onLine, init) {
    signal = signal ? AbortSignal.any([signal, leaving.signal]) : leaving.signal;
    const r = await fetch(path, Object.assign({}, init || {}, { signal }));
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = JSON.parse(await r.text()).message || msg; } catch (e) { /* keep statusText */ }
      throw new Error(msg);
    }
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

  // Draws `points` ([time, value] pairs) as a line in `figure` (scaled to `max`), with an
  // accessible label; `caption` gets `describe(last value)`.
  function lineGraph(figure, points, max, label, describe) {
    figure.querySelector("svg")?.remove();
    const caption = figure.querySelector("figcaption");
    if (points.length < 2) { if (caption) caption.textContent = "Not enough samples yet."; return; }
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    max = max || Math.max(...points.map((p) => p[1]), 1);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 300 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const last = points[points.length - 1][1];
    svg.setAttribute("aria-label", label + ", now " + describe(last));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(([t, v]) =>
      ((t - t0) / Math.max(t1 - t0, 1) * 300).toFixed(1) + "," + (100 - Math.min(v / max, 1) * 100).toFixed(1)).join(" "));
    svg.append(line);
    figure.prepend(svg);
    if (caption) caption.textContent = "Now " + describe(last) + "; " + points.length + " samples.";
  }

  // The pool's instances (containers and VMs), kept current from the events stream.
  let containers = [];
  let refresh = null;
  async function loadContainers() {
    containers = await api("GET", "/v1/containers?all=true");
    for (const f of containerListeners) f(containers);
    // For bench/dashboard.py: when the pages first showed the instances.
    if (!performance.getEntriesByName("pier:instances-shown").length) performance.mark("pier:instances-shown");
  }
  // Reloads the list in `delay` ms (coalescing bursts of events); a failed load says so
  // and is tried again every 2 s, so that one lost request never leaves the list empty.
  const LIST_FAILED = "Could not list the instances";
  function refreshSoon(delay = 100) {
    clearTimeout(refresh);
    refresh = setTimeout(() => loadContainers().then(() => {
      if ($("live").textContent.startsWith(LIST_FAILED)) status("Live");
    }, (err) => {
      status(LIST_FAILED + " (" + err.message + "); trying again");
      refreshSoon(2000);
    }), delay);
  }

  function status(text) { $("live").textContent = text; }

  // Shows the page the hash names. On a page change (not the first load), keyboard and
  // screen-reader users land on its heading.
  async function route(ev) {
    const parts = (location.hash || "").replace(/^#\/?/, "").split("/");
    const id = pages.has(parts[0]) ? parts[0] : pages.keys().next().value;
    const arg = parts.slice(1).map(decodeURIComponent).join("/") || null;
    if (current && current.hide) current.hide();
    for (const [pid, p] of pages) {
      $("page-" + pid).hidden = pid !== id;
      const a = $("nav-" + pid);
      if (pid === id) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
      if (pid === id) current = p;
    }
    try {
      await current.show(arg);
    } catch (err) {
      status("Error: " + err.message);
    }
    const h = [...$("page-" + id).querySelectorAll("h1")].find((x) => x.offsetParent !== null);
    if (h) {
      document.title = h.textContent + " · Pier";
      if (ev) { h.tabIndex = -1; h.focus(); }
    }
  }

  async function follow() {
    for (;;) {
      try {
        const since = Math.floor(Date.now() / 1000) - 3600;
        status("Live");
        for (const f of eventListeners) f(null);
        await ndjson("/v1/events?since=" + since, undefined, (e) => {
          if (e.kind === "container") refreshSoon();
          for (const f of eventListeners) f(e);
        });
      } catch (err) { /* reconnect below */ }
      status("Reconnecting…");
      await new Promise((r) => setTimeout(r, 2000));
      refreshSoon();
    }
  }

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => {
    refreshSoon(0);
    route();
    follow();
  });

  return {
    $, el, bytes, api, ndjson, fillFacts, lineGraph, status,
    // Registers a page: `show(arg)` when the hash names it (arg: what follows #/ID/),
    // `hide()` (optional) when another page is shown.
    page(id, p) { pages.set(id, p); },
    // `f(event)` for each event; `f(null)` when the stream (re)starts from an hour ago.
    onEvent(f) { eventListeners.push(f); },
    // `f(list)` each time the instance list is reloaded.
    onContainers(f) { containerListeners.push(f); },
    containers: () => containers,
    refreshContainers: refreshSoon,
  };
})();

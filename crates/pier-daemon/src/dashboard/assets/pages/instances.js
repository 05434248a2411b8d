// Instances (containers and VMs): the list with filters (in the address: #/instances/?state=
// &kind=&q=) and start, stop, restart and remove; the create form (POST /v1/containers as
// `pier create` sends it, then start); one instance's details with its facts, its CPU and
// memory over the last hour and its live logs (#/instances/NAME).
"use strict";

(() => {
  const { $, el, bytes, api, ndjson, fillFacts } = Pier;
  let logsAbort = null;

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

  // ---- The list and its filters ----

  // The rows of the last reload, with what the filters match them on.
  let rows = [];

  function render(containers) {
    rows = containers.map((c) => {
      const running = c.state === "running";
      const btn = (label, action, enabled) => {
        const b = el("button", { type: "button", "aria-label": label + " " + c.name, "data-action": action }, label);
        b.disabled = !enabled;
        b.addEventListener("click", () => act(c, action));
        return b;
      };
      const tr = el("tr", { id: "row-" + c.name, "data-state": c.state, "data-kind": c.kind || "" },
        el("th", { scope: "row" }, el("a", { href: "#/instances/" + encodeURIComponent(c.name) }, c.name)),
        el("td", {}, c.image),
        el("td", { class: "state state-" + c.state }, c.state),
        el("td", {}, c.status),
        el("td", {}, btn("Start", "start", !running), btn("Stop", "stop", running),
          btn("Restart", "restart", true), btn("Remove", "remove", true)));
      return { tr, state: c.state, kind: c.kind || "", text: (c.name + "\n" + c.image).toLowerCase() };
    });
    applyFilters();
    $("instances").tBodies[0].replaceChildren(...rows.map((r) => r.tr));
    countOptions($("filter-state"), "state");
    countOptions($("filter-kind"), "kind");
  }

  // Each filter choice says how many instances it has: "running (12)".
  function countOptions(select, key) {
    const n = {};
    for (const r of rows) n[r[key]] = (n[r[key]] || 0) + 1;
    for (const o of select.options) {
      if (!o.dataset.label) o.dataset.label = o.textContent;
      o.textContent = o.dataset.label + " (" + (o.value ? n[o.value] || 0 : rows.length) + ")";
    }
  }

  function filters() {
    return { state: $("filter-state").value, kind: $("filter-kind").value, q: $("filter-text").value.trim() };
  }

  // Hides the rows the filters leave out (no rebuild) and says how many are shown.
  function applyFilters() {
    const f = filters();
    const q = f.q.toLowerCase();
    let shown = 0;
    for (const r of rows) {
      const keep = (!f.state || r.state === f.state) && (!f.kind || r.kind === f.kind) && (!q || r.text.includes(q));
      if (r.tr.hidden === keep) r.tr.hidden = !keep;
      if (keep) shown++;
    }
    const narrowed = f.state || f.kind || q;
    $("instance-count").textContent = narrowed
      ? shown + " of " + rows.length + " instances match the filters"
      : rows.length + " instances";
  }

  // Keeps the filters in the address (without a new history entry or a re-route), so
  // that a reload or a shared link shows the same list.
  function saveFilters() {
    const f = filters();
    const p = new URLSearchParams();
    for (const k of ["state", "kind", "q"]) if (f[k]) p.set(k, f[k]);
    const qs = p.toString();
    history.replaceState(null, "", "#/instances" + (qs ? "/?" + qs : ""));
  }

  function loadFilters() {
    const h = location.hash;
    const i = h.indexOf("?");
    const p = new URLSearchParams(i >= 0 ? h.slice(i + 1) : "");
    const pick = (sel, v) => { sel.value = [...sel.options].some((o) => o.value === v) ? v : ""; };
    pick($("filter-state"), p.get("state") || "");
    pick($("filter-kind"), p.get("kind") || "");
    $("filter-text").value = p.get("q") || "";
  }

  let typing = null;
  function onFilter(ev) {
    clearTimeout(typing);
    // Selects at once; the text box once typing pauses.
    const delay = ev.target.id === "filter-text" ? 80 : 0;
    typing = setTimeout(() => { applyFilters(); saveFilters(); }, delay);
  }

  // ---- The create form ----

  // Splits a command line into words as a shell would: quotes ('...' and "..."), and
  // backslash escapes outside single quotes.
  function shellWords(s) {
    const words = [];
    let w = null, q = null;
    for (let i = 0; i < s.length; i++) {
      const ch = s[i];
      if (q === "'") { if (ch === "'") q = null; else w += ch; continue; }
      if (q === '"') {
        if (ch === '"') q = null;
        else if (ch === "\\" && i + 1 < s.length && '"\\$`'.includes(s[i + 1])) w += s[++i];
        else w += ch;
        continue;
      }
      if (/\s/.test(ch)) { if (w !== null) { words.push(w); w = null; } continue; }
      if (w === null) w = "";
      if (ch === "'" || ch === '"') q = ch;
      else if (ch === "\\" && i + 1 < s.length) w += s[++i];
      else w += ch;
    }
    if (q) throw new Error("the command has an unclosed " + q + " quote");
    if (w !== null) words.push(w);
    return words;
  }

  // Docker's sizes: 64m, 1g, 512k, 1024b or bytes; units of 1024.
  function parseSize(s) {
    const m = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$/i.exec(s.trim());
    if (!m) return null;
    const exp = { "": 0, b: 0, k: 1, m: 2, g: 3, t: 4 }[m[2].toLowerCase()];
    return Math.floor(Number(m[1]) * Math.pow(1024, exp));
  }

  const lines = (id) => $(id).value.split("\n").map((l) => l.trim()).filter((l) => l);

  // The create request from the form, as `pier create` builds it; throws a list of
  // what is wrong, each with the field it is about.
  function request() {
    const errors = [];
    const bad = (field, msg) => errors.push([field, msg]);
    const body = { image: $("create-image").value.trim() };
    if (!body.image) bad("create-image", "Give an image: pick one or type a reference.");
    const name = $("create-name").value.trim();
    if (name) {
      if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) bad("create-name", "A name is letters, digits, '_', '.' and '-', starting with a letter or digit.");
      else body.name = name;
    }
    const command = $("create-command").value.trim();
    if (command) {
      try { body.cmd = shellWords(command); } catch (e) { bad("create-command", "Command: " + e.message + "."); }
    }
    body.env = lines("create-env");
    for (const l of body.env) if (!/^[^=\s]+=/.test(l)) bad("create-env", "Environment line “" + l + "” is not KEY=VALUE.");
    body.publish = lines("create-ports");
    for (const l of body.publish) if (!/^(\[[0-9a-fA-F:.]+\]:|[0-9.]+:)?(\d+(-\d+)?:)?\d+(-\d+)?(\/(tcp|udp))?$/.test(l)) bad("create-ports", "Port line “" + l + "” is not HOST:CONTAINER[/udp].");
    const mem = $("create-memory").value.trim();
    if (mem) {
      const n = parseSize(mem);
      if (!n) bad("create-memory", "Memory “" + mem + "” is not a size such as 64m or 1g.");
      else body.memory = n;
    }
    const cpus = $("create-cpus").value.trim();
    if (cpus) {
      const n = Number(cpus);
      if (!(n > 0)) bad("create-cpus", "CPUs must be a number above 0, e.g. 0.5.");
      else body.cpus = n;
    }
    body.restart_policy = { name: $("create-restart").value };
    if ($("create-network").value) body.network = $("create-network").value;
    body.mounts = [];
    for (const l of lines("create-volumes")) {
      const parts = l.split(":");
      const ro = parts.length === 3 && parts[2] === "ro";
      if (!(parts.length === 2 || (parts.length === 3 && (ro || parts[2] === "rw"))) || !parts[0] || !parts[1].startsWith("/")) {
        bad("create-volumes", "Volume line “" + l + "” is not NAME:/path or /host/path:/path (with :ro to mount read-only).");
        continue;
      }
      body.mounts.push({ type: parts[0].startsWith("/") ? "bind" : "volume", source: parts[0], target: parts[1], read_only: ro });
    }
    if ($("create-kind-vm").checked) body.runtime = "pier-vm";
    if (errors.length) throw errors;
    return body;
  }

  function showErrors(errors) {
    const box = $("create-errors");
    for (const f of $("create-form").querySelectorAll("[aria-invalid]")) f.removeAttribute("aria-invalid");
    if (!errors.length) { box.replaceChildren(); return; }
    for (const [field] of errors) if (field) $(field).setAttribute("aria-invalid", "true");
    box.replaceChildren(el("p", {}, errors.length === 1 ? "The instance was not created:" : "The instance was not created (" + errors.length + " problems):"),
      el("ul", {}, ...errors.map(([, msg]) => el("li", {}, msg))));
    const first = errors.find(([f]) => f);
    if (first) $(first[0]).focus();
  }

  async function openCreate() {
    showErrors([]);
    $("create-dialog").showModal();
    $("create-image-select").focus();
    // The images, networks and whether VMs can run, fresh each time the form opens.
    const [images, networks, info] = await Promise.all([
      api("GET", "/v1/images").catch(() => []),
      api("GET", "/v1/networks").catch(() => []),
      api("GET", "/v1/info").catch(() => ({})),
    ]);
    const sel = $("create-image-select");
    const tags = [...new Set(images.flatMap((i) => i.repo_tags || []))].sort();
    sel.replaceChildren(el("option", { value: "" }, "(type a reference below)"), ...tags.map((t) => el("option", { value: t }, t)));
    if (tags.includes($("create-image").value)) sel.value = $("create-image").value;
    const net = $("create-network");
    const keep = net.value;
    net.replaceChildren(el("option", { value: "" }, "default"),
      ...networks.map((n) => n.name).sort().map((n) => el("option", { value: n }, n)));
    net.value = [...net.options].some((o) => o.value === keep) ? keep : "";
    const vm = $("create-kind-vm");
    const why = !info.vm ? "VMs cannot run on this host." : info.vm.problem ? "VMs cannot run here now: " + info.vm.problem : "";
    vm.disabled = !!why;
    if (why && vm.checked) $("create-kind-container").checked = true;
    $("create-vm-help").textContent = why;
  }

  // Pulls `reference` (POST /v1/images/pull, ndjson progress); rejects with the pull's
  // own error.
  async function pull(reference, status) {
    let result = null;
    await ndjson("/v1/images/pull", undefined, (p) => {
      if (p.blob && p.total) status.textContent = "Pulling " + reference + ": " + bytes(p.current) + " of " + bytes(p.total);
      if (!p.blob && (p.status === "complete" || p.status === "error")) result = p;
    }, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reference }) });
    if (!result || result.status !== "complete") throw new Error((result && result.message) || "the pull ended without a result");
  }

  // Creates as `pier create` does with its default `--pull missing`: an image that is
  // not here is pulled, and the create made again.
  async function createPulling(body, status) {
    try {
      return await api("POST", "/v1/containers", body);
    } catch (err) {
      if (!/no such image/i.test(err.message)) throw err;
      status.textContent = "Pulling " + body.image + "…";
      try { await pull(body.image, status); } catch (e) { throw new Error(err.message + " (and it could not be pulled: " + e.message + ")"); }
      status.textContent = "Creating " + (body.name || "an instance") + "…";
      return await api("POST", "/v1/containers", body);
    }
  }

  async function submitCreate(ev) {
    ev.preventDefault();
    let body;
    try { body = request(); } catch (errors) { showErrors(errors); return; }
    showErrors([]);
    const button = $("create-submit");
    button.disabled = true;
    const status = $("action-status");
    try {
      status.textContent = "Creating " + (body.name || "an instance") + "…";
      const made = await createPulling(body, status);
      if ($("create-start").checked) {
        try {
          await api("POST", "/v1/containers/" + encodeURIComponent(made.id) + "/start");
        } catch (err) {
          // It exists: its page says more; say why it did not start.
          status.textContent = made.name + " was created but did not start: " + err.message;
          $("create-dialog").close();
          location.hash = "#/instances/" + encodeURIComponent(made.name);
          return;
        }
      }
      status.textContent = made.name + " created" + ($("create-start").checked ? " and started" : "");
      $("create-form").reset();
      $("create-dialog").close();
      Pier.refreshContainers();
      location.hash = "#/instances/" + encodeURIComponent(made.name);
    } catch (err) {
      status.textContent = "";
      showErrors([[null, err.message]]);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("instance-filters").addEventListener("input", onFilter);
    $("instance-filters").addEventListener("change", onFilter);
    $("instance-filters").addEventListener("submit", (ev) => ev.preventDefault());
    $("create-open").addEventListener("click", () => openCreate().catch((err) => showErrors([[null, err.message]])));
    $("create-cancel").addEventListener("click", () => $("create-dialog").close());
    $("create-form").addEventListener("submit", submitCreate);
    $("create-image-select").addEventListener("change", (ev) => { if (ev.target.value) $("create-image").value = ev.target.value; });
    $("create-dialog").addEventListener("close", () => $("create-open").focus());
  });

  // ---- One instance ----

  // A word as a shell would need it written.
  const quote = (w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : "'" + w.replace(/'/g, "'\\''") + "'");
  const when = (t) => (t && !t.startsWith("0001-") ? new Date(t).toLocaleString() : "—");

  function facts(c) {
    const cfg = c.config || {};
    const state = (c.state && (c.state.status || c.state)) || "";
    const nets = Object.entries(c.networks || {}).map(([n, e]) =>
      n + (e.ip_address ? " " + e.ip_address + (e.prefix_len ? "/" + e.prefix_len : "") : ""));
    // Bound ports while it runs; what it asks for otherwise.
    let ports = (c.ports || []).map((p) => (p.host_ip ? p.host_ip + ":" : "") + p.host_port + " → " + p.container_port + "/" + p.proto);
    if (!ports.length && (cfg.publish || []).length) ports = [cfg.publish.join(", ") + " (when it runs)"];
    const mounts = (c.mounts || []).map((m) => (m.source || "(anonymous " + m.type + ")") + " → " + m.target + (m.read_only ? " (read-only)" : ""));
    const limits = [
      cfg.memory ? "memory " + bytes(cfg.memory) : null,
      cfg.cpus ? cfg.cpus + " CPUs" : null,
      cfg.pids_limit > 0 ? cfg.pids_limit + " processes" : null,
    ].filter((x) => x);
    const restart = cfg.restart_policy ? cfg.restart_policy.name + (cfg.restart_policy.max_retries ? " (" + cfg.restart_policy.max_retries + " tries)" : "") : "no";
    const f = [
      ["id", (c.id || "").slice(0, 12)],
      ["kind", cfg.runtime === "pier-vm" ? "VM" : "container"],
      ["image", c.image || cfg.image || ""],
      ["state", state + (state === "exited" && c.state.exit_code !== null && c.state.exit_code !== undefined ? " (" + c.state.exit_code + ")" : "")],
      ["command", (c.command || []).map(quote).join(" ") || "—"],
      ["created", when(c.created)],
      ["started", when(c.state && c.state.started_at)],
    ];
    if (state === "exited") f.push(["finished", when(c.state.finished_at)]);
    f.push(["restarts", (c.state && c.state.restart_count) || 0], ["restart policy", restart],
      ["networks", nets.join(", ") || "none"], ["ports", ports.join(", ") || "none"],
      ["mounts", mounts.join(", ") || "none"], ["limits", limits.join(", ") || "none"]);
    return f;
  }

  // The instance's CPU (cores in use, from consecutive samples) and memory, redrawn at
  // each new sample while its page is shown.
  let usageTimer = null;
  async function loadUsage(name, memoryLimit) {
    clearTimeout(usageTimer);
    const h = await api("GET", "/v1/metrics/history?instance=" + encodeURIComponent(name));
    const period = Math.min(Math.max(h.period_seconds || 15, 1), 60);
    usageTimer = setTimeout(() => loadUsage(name, memoryLimit).catch(() => {}), period * 1000);
    const s = h.samples.filter((x) => x.instance);
    const cpu = [];
    for (let i = 1; i < s.length; i++) {
      const dt = s[i].time - s[i - 1].time;
      const dc = s[i].instance.cpu_seconds - s[i - 1].instance.cpu_seconds;
      if (dt > 0 && dc >= 0) cpu.push([s[i].time, dc / dt]);
    }
    Pier.lineGraph($("instance-cpu-graph"), cpu, null, "CPU in use over time", (v) => v.toFixed(2) + " CPUs");
    Pier.lineGraph($("instance-memory-graph"), s.map((x) => [x.time, x.instance.memory_bytes]), memoryLimit || null,
      "Memory in use over time", (v) => bytes(v) + (memoryLimit ? " of " + bytes(memoryLimit) : ""));
  }

  async function showInstance(name) {
    const c = await api("GET", "/v1/containers/" + encodeURIComponent(name));
    $("h-instance").textContent = name;
    $("terminal-link").href = "#/terminal/" + encodeURIComponent(name);
    fillFacts($("instance-facts"), facts(c));
    loadUsage(name, c.config && c.config.memory).catch(() => {});
    const pre = $("logs");
    pre.textContent = "";
    logsAbort = new AbortController();
    ndjson("/v1/containers/" + encodeURIComponent(name) + "/logs?follow=true&tail=500", logsAbort.signal, (l) => {
      pre.append(l.log);
      pre.scrollTop = pre.scrollHeight;
    }).catch(() => {});
  }

  // The details follow the instance's own events (started, stopped, restarted).
  let shown = null;
  Pier.onEvent((e) => {
    if (!shown || !e || e.kind !== "container") return;
    const n = e.attributes && e.attributes.name;
    if (n !== shown || !["start", "die", "stop", "restart", "pause", "unpause", "update"].includes(e.action)) return;
    api("GET", "/v1/containers/" + encodeURIComponent(shown)).then((c) => {
      if (shown === c.name) fillFacts($("instance-facts"), facts(c));
    }).catch(() => {});
  });

  Pier.onContainers(render);
  Pier.page("instances", {
    async show(arg) {
      const name = arg && !arg.startsWith("?") ? arg : null;
      $("instances-list").hidden = !!name;
      $("instance-detail").hidden = !name;
      shown = name;
      if (name) await showInstance(name);
      else { loadFilters(); applyFilters(); }
    },
    hide() {
      shown = null;
      clearTimeout(usageTimer);
      if (logsAbort) { logsAbort.abort(); logsAbort = null; }
    },
  });
})();

// Hosts: when this daemon is in a pool, the pool's hosts (GET /v1/hosts) with their
// state, capacity and what is reserved on them, cordon and uncordon, kept current by the
// host events; then this host's facts (GET /v1/info) and its CPU, memory, disk and
// network over the last hour (GET /v1/metrics/history; rates from consecutive samples).
"use strict";

(() => {
  const { $, el, bytes, api, fillFacts } = Pier;

  // [time, rate] of a counter between consecutive samples (a reset gives no point).
  function rates(samples, value) {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = samples[i].time - samples[i - 1].time;
      const dv = value(samples[i]) - value(samples[i - 1]);
      if (dt > 0 && dv >= 0) out.push([samples[i].time, dv / dt]);
    }
    return out;
  }

  // Draws one host's graphs into the figures whose ids start with `prefix`.
  function drawHost(prefix, info, h) {
    const s = h.samples;
    const cpus = info.cpus || 1;
    Pier.lineGraph($(prefix + "-cpu"), rates(s, (x) => x.host_cpu_seconds).map(([t, v]) => [t, v / cpus * 100]), 100,
      "CPU in use over time", (v) => v.toFixed(1) + " % of " + cpus + " CPUs");
    const mem = h.host_memory_bytes || info.memory || 1;
    Pier.lineGraph($(prefix + "-memory"), s.map((x) => [x.time, mem - x.host_memory_available_bytes]), mem,
      "Memory in use over time", (v) => bytes(v) + " of " + bytes(mem));
    const disk = h.host_disk_bytes || info.root_total_bytes || 1;
    Pier.lineGraph($(prefix + "-disk"), s.map((x) => [x.time, disk - x.host_disk_free_bytes]), disk,
      "Disk in use over time", (v) => bytes(v) + " of " + bytes(disk));
    Pier.lineGraph($(prefix + "-rx"), rates(s, (x) => x.host_network_receive_bytes), null,
      "Network bytes received a second over time", (v) => bytes(v) + "/s");
    Pier.lineGraph($(prefix + "-tx"), rates(s, (x) => x.host_network_transmit_bytes), null,
      "Network bytes sent a second over time", (v) => bytes(v) + "/s");
  }

  const share = (used, total, fmt) => fmt(used) + " of " + fmt(total) +
    (total ? " (" + Math.round(used / total * 100) + " %)" : "");
  const cpus = (m) => (m / 1000).toFixed(m % 1000 ? 1 : 0);

  async function setCordon(h, cordon) {
    const status = $("pool-status");
    const verb = cordon ? "cordon" : "uncordon";
    status.textContent = verb + " " + h.id + "…";
    try {
      await api("POST", "/v1/hosts/" + encodeURIComponent(h.id) + "/" + verb);
      status.textContent = verb + " " + h.id + ": done";
      await loadPool();
    } catch (err) {
      status.textContent = verb + " " + h.id + " failed: " + err.message;
    }
  }

  // The pool's hosts; the section stays hidden when this daemon is in no pool (409).
  async function loadPool() {
    let hosts, me;
    try {
      [hosts, me] = await Promise.all([api("GET", "/v1/hosts"), api("GET", "/v1/cluster")]);
    } catch (err) {
      $("pool").hidden = true;
      return 1;
    }
    $("pool").hidden = false;
    const rows = hosts.map((h) => {
      const b = el("button", { type: "button", "data-action": h.schedulable ? "cordon" : "uncordon",
        "aria-label": (h.schedulable ? "Cordon " : "Uncordon ") + h.id }, h.schedulable ? "Cordon" : "Uncordon");
      b.disabled = h.state === "down";
      b.addEventListener("click", () => setCordon(h, h.schedulable));
      const labels = Object.entries(h.labels || {}).map(([k, v]) => k + "=" + v).join(", ");
      const beat = h.last_heartbeat ? new Date(h.last_heartbeat * 1000).toLocaleTimeString() : "none";
      return el("tr", { id: "pool-host-" + h.id, "data-state": h.state },
        el("th", { scope: "row" }, h.id + (h.id === me.host ? " (this host)" : "") + (h.etcd_member ? " (etcd)" : "") + (h.keeps_ca_key ? " (admits hosts)" : "")),
        el("td", { class: "state state-" + h.state }, h.state),
        el("td", {}, h.address || ""),
        el("td", {}, labels),
        el("td", {}, share(h.allocated.cpu_millis, h.capacity.cpu_millis, cpus)),
        el("td", {}, share(h.allocated.memory_bytes, h.capacity.memory_bytes, bytes)),
        el("td", {}, String(h.instances)),
        el("td", {}, beat),
        el("td", {}, b));
    });
    $("pool-hosts").tBodies[0].replaceChildren(...rows);
    return hosts.length;
  }

  Pier.onEvent((e) => {
    if (e && e.kind === "host" && !$("page-hosts").hidden) loadPool().catch(() => {});
  });

  let timer = null;
  async function load() {
    clearTimeout(timer);
    const [info, h, count] = await Promise.all([api("GET", "/v1/info"), api("GET", "/v1/metrics/history"), loadPool()]);
    const period = Math.min(Math.max(h.period_seconds || 15, 1), 60);
    timer = setTimeout(() => load().catch(() => {}), period * 1000);
    $("h-host-this").textContent = info.hostname || "This host";
    fillFacts($("host-this-facts"), [
      ["name", info.hostname], ["system", info.os + " (" + info.arch + ")"], ["kernel", info.kernel],
      ["CPUs", info.cpus], ["memory", bytes(info.memory)],
      ["disk free", bytes(info.root_free_bytes) + " of " + bytes(info.root_total_bytes)],
      ["instances", info.containers + " (" + info.containers_running + " running)"],
      ["images", info.images], ["VMs", info.vm ? (info.vm.problem ? "no: " + info.vm.problem : "yes, " + info.vm.accel) : "no"],
      ["Pier", info.version],
    ]);
    const span = h.samples.length ? h.samples[h.samples.length - 1].time - h.samples[0].time : 0;
    const minutes = Math.max(1, Math.round(span / 60));
    const graphs = "this host's graphs span the last " + (minutes === 1 ? "minute." : minutes + " minutes.");
    $("hosts-summary").textContent = count === 1 ? "1 host; " + graphs : count + " hosts in the pool; " + graphs;
    drawHost("host-this", info, h);
  }

  Pier.page("hosts", {
    async show() { await load(); },
    hide() { clearTimeout(timer); },
  });
})();

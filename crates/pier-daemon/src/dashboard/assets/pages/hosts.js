// Hosts: each host's facts (GET /v1/info) and its CPU, memory, disk and network over the
// last hour (GET /v1/metrics/history; rates from consecutive samples of its counters).
// One host today, this daemon's; a pool's hosts will each get an article like it.
"use strict";

(() => {
  const { $, bytes, api, fillFacts } = Pier;

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

  let timer = null;
  async function load() {
    clearTimeout(timer);
    const [info, h] = await Promise.all([api("GET", "/v1/info"), api("GET", "/v1/metrics/history")]);
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
    $("hosts-summary").textContent = "1 host; its graphs span the last " + (minutes === 1 ? "minute." : minutes + " minutes.");
    drawHost("host-this", info, h);
  }

  Pier.page("hosts", {
    async show() { await load(); },
    hide() { clearTimeout(timer); },
  });
})();

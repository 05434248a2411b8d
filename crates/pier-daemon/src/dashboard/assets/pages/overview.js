// The overview: instances by state, the host's facts, its memory over the last hour, and
// recent events.
"use strict";

(() => {
  const { $, el, bytes, api, fillFacts } = Pier;

  function renderStates(containers) {
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
    graphTimer = setTimeout(() => loadMemoryGraph().catch(() => {}), period * 1000);
    const max = h.host_memory_bytes || 1;
    Pier.lineGraph($("memory-graph"), h.samples.map((s) => [s.time, s.host_memory_available_bytes]),
      max, "Available memory over time", (v) => bytes(v) + " available of " + bytes(max));
  }

  Pier.onContainers(renderStates);
  Pier.onEvent((e) => {
    const list = $("events");
    if (!e) { list.replaceChildren(); return; }
    const name = (e.attributes && e.attributes.name) || (e.id || "").slice(0, 12);
    list.prepend(el("li", {}, e.time.slice(11, 19) + "  " + e.kind + " " + e.action + " " + name));
    while (list.children.length > 20) list.lastChild.remove();
  });

  Pier.page("overview", {
    async show() { await Promise.all([loadHost(), loadMemoryGraph()]); },
    hide() { clearTimeout(graphTimer); },
  });
})();

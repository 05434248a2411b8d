// Instances (containers and VMs): the list with start, stop, restart and remove, and one
// instance's details with its live logs (#/instances/NAME).
"use strict";

(() => {
  const { $, el, api, ndjson, fillFacts } = Pier;
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

  function render(containers) {
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

  async function showInstance(name) {
    const c = await api("GET", "/v1/containers/" + encodeURIComponent(name));
    $("h-instance").textContent = name;
    $("terminal-link").href = "#/terminal/" + encodeURIComponent(name);
    fillFacts($("instance-facts"), [["id", (c.id || "").slice(0, 12)], ["image", c.image || (c.config && c.config.image) || ""], ["state", (c.state && (c.state.status || c.state)) || ""]]);
    const pre = $("logs");
    pre.textContent = "";
    logsAbort = new AbortController();
    ndjson("/v1/containers/" + encodeURIComponent(name) + "/logs?follow=true&tail=500", logsAbort.signal, (l) => {
      pre.append(l.log);
      pre.scrollTop = pre.scrollHeight;
    }).catch(() => {});
  }

  Pier.onContainers(render);
  Pier.page("instances", {
    async show(name) {
      $("instances-list").hidden = !!name;
      $("instance-detail").hidden = !name;
      if (name) await showInstance(name);
    },
    hide() { if (logsAbort) { logsAbort.abort(); logsAbort = null; } },
  });
})();

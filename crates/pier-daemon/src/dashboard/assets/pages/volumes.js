// Volumes: the project's quota as usage bars (editable), the list with each volume's use
// against its size limit, create and remove, and one volume's details with its snapshots
// (take, restore, delete) at #/volumes/NAME.
"use strict";

(() => {
  const { $, el, bytes, api, fillFacts } = Pier;
  const enc = encodeURIComponent;
  let shown = null; // null while hidden, "" for the list, else the volume's name
  let project = null;
  let timer = null;
  // What each view last drew: unchanged data keeps its elements (and keyboard focus).
  const drawn = {};
  function changed(view, data) {
    const key = JSON.stringify(data);
    if (drawn[view] === key) return false;
    drawn[view] = key;
    return true;
  }

  function say(id, text) { $(id).textContent = text; }

  // A size as the API's options take it (`64m`, `1.5g`, `512`: binary units), in bytes;
  // null for an empty field. Throws on anything else.
  function parseSize(s) {
    s = s.trim();
    if (!s || s.toLowerCase() === "none") return null;
    const m = /^(\d+(?:\.\d+)?)\s*([bkmgtp]?)(?:i?b)?$/i.exec(s);
    if (!m) throw new Error("invalid size " + JSON.stringify(s) + ": give a number with an optional unit k, m, g or t, such as 64m");
    const pow = " kmgtp".indexOf((m[2] || " ").toLowerCase().replace("b", " "));
    return Math.floor(Number(m[1]) * Math.pow(1024, Math.max(pow, 0)));
  }

  // The shortest way to write `n` bytes that parseSize reads back exactly.
  function sizeText(n) {
    for (const [u, p] of [["t", 4], ["g", 3], ["m", 2], ["k", 1]]) {
      const d = Math.pow(1024, p);
      if (n >= d && n % d === 0) return n / d + u;
    }
    return String(n);
  }

  // Fills a usage bar: `used` of `limit` (no limit: the bar is hidden, the text says so).
  function bar(meter, text, used, limit, fmt) {
    meter.hidden = limit === null || limit === undefined;
    if (!meter.hidden) {
      meter.max = Math.max(limit, 1);
      meter.value = Math.min(used, limit);
      meter.high = limit * 0.9;
      meter.optimum = 0;
      meter.setAttribute("data-used", String(used));
      meter.setAttribute("data-limit", String(limit));
      const pct = limit ? Math.round(used / limit * 100) : 100;
      text.textContent = fmt(used) + " of " + fmt(limit) + " (" + pct + "%)";
    } else {
      meter.removeAttribute("data-limit");
      meter.setAttribute("data-used", String(used));
      text.textContent = fmt(used) + ", no quota";
    }
  }

  async function loadQuota() {
    if (!project) project = (await api("GET", "/v1/info")).project || "default";
    $("volumes-project").textContent = project;
    const q = await api("GET", "/v1/projects/" + enc(project) + "/quota");
    bar($("quota-bytes-meter"), $("quota-bytes-text"), q.committed_bytes, q.volume_bytes, bytes);
    bar($("quota-count-meter"), $("quota-count-text"), q.volumes, q.volume_count, (n) => n + (n === 1 ? " volume" : " volumes"));
    // Not while someone types in them.
    const form = $("quota-form");
    if (!form.contains(document.activeElement)) {
      $("quota-bytes").value = q.volume_bytes === null || q.volume_bytes === undefined ? "" : sizeText(q.volume_bytes);
      $("quota-count").value = q.volume_count === null || q.volume_count === undefined ? "" : String(q.volume_count);
    }
  }

  async function removeVolume(v) {
    if (!confirm("Remove volume " + v.name + "?")) return;
    say("volumes-status", "Removing " + v.name + "…");
    try {
      await api("DELETE", "/v1/volumes/" + enc(v.name));
      say("volumes-status", "Removed " + v.name + ".");
    } catch (err) {
      say("volumes-status", "Cannot remove " + v.name + ": " + err.message);
    }
    refreshSoon();
  }

  // The "used" cell: a bar against the limit when there is one, else bytes alone.
  function usedCell(v) {
    const used = v.usage ? v.usage.bytes : null;
    if (used === null) return el("td", {}, "unknown");
    if (!v.size_limit) return el("td", { "data-used": String(used) }, bytes(used));
    const m = el("meter", { min: "0", max: String(v.size_limit), value: String(Math.min(used, v.size_limit)),
      high: String(v.size_limit * 0.9), optimum: "0", "aria-label": v.name + " used of its limit", "data-used": String(used) });
    return el("td", {}, m, " " + bytes(used) + " of " + bytes(v.size_limit) + " (" + Math.round(used / v.size_limit * 100) + "%)");
  }

  function row(v) {
    const rm = el("button", { type: "button", "aria-label": "Remove " + v.name, "data-action": "remove" }, "Remove");
    rm.addEventListener("click", () => removeVolume(v));
    const users = (v.used_by || []).map((n) => el("a", { href: "#/instances/" + enc(n) }, n));
    return el("tr", { id: "vol-row-" + v.name },
      el("th", { scope: "row" }, el("a", { href: "#/volumes/" + enc(v.name) }, v.name)),
      el("td", {}, v.driver),
      el("td", {}, v.size_limit ? bytes(v.size_limit) : "none"),
      usedCell(v),
      el("td", {}, el("code", {}, v.mountpoint)),
      el("td", {}, ...(users.length ? users.flatMap((a, i) => (i ? [", ", a] : [a])) : ["—"])),
      el("td", {}, rm));
  }

  async function loadList() {
    const [vols] = await Promise.all([api("GET", "/v1/volumes?usage=true"), loadQuota()]);
    if (!changed("list", vols)) return;
    const rows = vols.map(row);
    $("volumes").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: "7" }, "No volumes yet."))]));
  }

  async function snapshotAction(vol, snap, action) {
    say("snapshots-status", action + " " + snap + "…");
    try {
      if (action === "Delete") {
        if (!confirm("Delete snapshot " + snap + "?")) { say("snapshots-status", ""); return; }
        await api("DELETE", "/v1/volumes/" + enc(vol) + "/snapshots/" + enc(snap));
      } else {
        if (!confirm("Put snapshot " + snap + " back into " + vol + "? What the volume holds now is replaced.")) { say("snapshots-status", ""); return; }
        await api("POST", "/v1/volumes/" + enc(vol) + "/snapshots/" + enc(snap) + "/restore");
      }
      say("snapshots-status", action + " " + snap + ": done.");
    } catch (err) {
      say("snapshots-status", action + " " + snap + " failed: " + err.message);
    }
    refreshSoon();
  }

  async function loadDetail(name) {
    const [v, snaps] = await Promise.all([
      api("GET", "/v1/volumes/" + enc(name)),
      api("GET", "/v1/volumes/" + enc(name) + "/snapshots"),
    ]);
    if (!changed("detail", [v, snaps])) return;
    $("h-volume").textContent = "Volume " + v.name;
    const used = v.usage ? v.usage.bytes : null;
    fillFacts($("volume-facts"), [
      ["driver", v.driver], ["created", v.created], ["size limit", v.size_limit ? bytes(v.size_limit) : "none"],
      ["used", used === null ? "unknown" : bytes(used)],
      ["files limit", v.inode_limit || "none"], ["mountpoint", v.mountpoint],
      ["used by", (v.used_by || []).join(", ") || "—"],
      ["labels", Object.entries(v.labels || {}).map(([k, x]) => k + "=" + x).join(", ") || "—"],
    ]);
    bar($("volume-meter"), $("volume-meter-text"), used || 0, v.size_limit || null, bytes);
    const rows = snaps.map((s) => {
      const btn = (label) => {
        const b = el("button", { type: "button", "aria-label": label + " snapshot " + s.name, "data-action": label.toLowerCase() }, label);
        b.addEventListener("click", () => snapshotAction(v.name, s.name, label));
        return b;
      };
      return el("tr", { id: "snap-row-" + s.name },
        el("th", { scope: "row" }, s.name), el("td", {}, s.created), el("td", {}, bytes(s.size)),
        el("td", {}, btn("Restore"), btn("Delete")));
    });
    $("snapshots").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: "4" }, "No snapshots."))]));
  }

  function load() {
    if (shown === null) return Promise.resolve();
    return shown ? loadDetail(shown) : loadList();
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(() => load().catch((err) => say(shown ? "snapshots-status" : "volumes-status", "Error: " + err.message)), 150);
  }

  $("volume-create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { options: {} };
    const name = $("vol-name").value.trim();
    if (name) body.name = name;
    try {
      const size = parseSize($("vol-size").value);
      if (size !== null) body.options.size = String(size);
    } catch (err) { say("vol-create-status", err.message); return; }
    say("vol-create-status", "Creating " + (name || "a volume") + "…");
    try {
      const v = await api("POST", "/v1/volumes", body);
      say("vol-create-status", "Created " + v.name + (v.size_limit ? " (" + bytes(v.size_limit) + ")" : "") + ".");
      ev.target.reset();
    } catch (err) {
      say("vol-create-status", "Cannot create " + (name || "the volume") + ": " + err.message);
    }
    refreshSoon();
  });

  $("quota-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let body;
    try {
      const count = $("quota-count").value.trim();
      if (count && !/^\d+$/.test(count)) throw new Error("invalid volume count " + JSON.stringify(count) + ": give a whole number, or nothing for no quota");
      body = { volume_bytes: parseSize($("quota-bytes").value), volume_count: count ? Number(count) : null };
    } catch (err) { say("quota-status", err.message); return; }
    say("quota-status", "Saving…");
    try {
      await api("PUT", "/v1/projects/" + enc(project) + "/quota", body);
      say("quota-status", "Saved.");
      document.activeElement.blur();
    } catch (err) {
      say("quota-status", "Cannot save the quota: " + err.message);
    }
    refreshSoon();
  });

  $("snapshot-create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const snap = $("snap-name").value.trim();
    say("snapshots-status", "Taking " + snap + "…");
    try {
      await api("POST", "/v1/volumes/" + enc(shown) + "/snapshots", { name: snap });
      say("snapshots-status", "Took snapshot " + snap + ".");
      ev.target.reset();
    } catch (err) {
      say("snapshots-status", "Cannot take " + snap + ": " + err.message);
    }
    refreshSoon();
  });

  // Volumes come and go (and change what the quota counts); containers mount them;
  // another client may set the quota.
  Pier.onEvent((e) => {
    if (shown !== null && (!e || e.kind === "volume" || (e.kind === "project" && e.action === "quota") || (e.kind === "container" && /^(create|destroy|start|die)$/.test(e.action)))) refreshSoon();
  });

  Pier.page("volumes", {
    async show(name) {
      shown = name || "";
      $("volumes-list").hidden = !!name;
      $("volume-detail").hidden = !name;
      await load();
    },
    hide() { shown = null; clearTimeout(timer); for (const k in drawn) delete drawn[k]; },
  });
})();

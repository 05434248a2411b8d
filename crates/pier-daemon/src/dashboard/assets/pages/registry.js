// The daemon's registry: its repositories with sizes, traffic and garbage collection
// (#/registry), a repository's tags (#/registry/REPO), and one tag (#/registry/REPO:TAG):
// its facts, a form for its config that edits it in place (a new config and manifest over
// the same layers, no re-push), its layers, the history of its versions with a roll back to
// an earlier one, and its removal. Registry events keep every view current.
"use strict";

(() => {
  const { $, el, bytes, api, fillFacts } = Pier;
  const enc = encodeURIComponent;
  const shortDigest = (d) => (d || "").replace(/^sha256:/, "").slice(0, 12);
  const when = (t) => (t ? t.slice(0, 19).replace("T", " ") : "");
  const tagPath = (repo, tag) => "/v1/registry/repositories/" + enc(repo) + "/tags/" + enc(tag);
  const tagHref = (repo, tag) => "#/registry/" + repo + ":" + tag;

  let view = null; // {repo, tag} of what is shown (both null: the repositories)
  let current = null; // the tag shown, as inspected
  let dirty = false; // the config form has edits not saved
  let active = false;
  let reload = null;
  let keepStatus = false; // the next view keeps the status line (an action moved to it)

  function say(text) { $("registry-status").textContent = text; }

  // Fills `parent` with `build()`'s children unless `data` is what it shows already, so
  // an unchanged view keeps its elements (and the keyboard focus on them).
  function fill(parent, data, build) {
    const key = JSON.stringify(data);
    if (parent.dataset.key === key) return;
    parent.dataset.key = key;
    parent.replaceChildren(...build());
  }

  function button(label, aria, onClick, cls) {
    const b = el("button", { type: "button", "aria-label": aria, class: cls }, label);
    b.addEventListener("click", onClick);
    return b;
  }

  async function loadRepos() {
    const [repos, stats] = await Promise.all([
      api("GET", "/v1/registry/repositories"), api("GET", "/v1/registry/stats")]);
    fill($("registry-repo-table").tBodies[0], repos, () => {
      const rows = repos.map((r) => el("tr", { "data-repo": r.name },
        el("th", { scope: "row" }, el("a", { href: "#/registry/" + r.name }, r.name)),
        el("td", {}, String(r.tags)), el("td", {}, String(r.manifests)),
        el("td", {}, bytes(r.size)), el("td", {}, when(r.updated))));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5" }, "No repositories: push an image to the daemon's registry.")));
      return rows;
    });
    fillFacts($("registry-stats"), [["received", bytes(stats.blob_bytes_received)], ["sent", bytes(stats.blob_bytes_sent)]]);
  }

  async function deleteTag(repo, tag) {
    if (!confirm("Delete the tag " + repo + ":" + tag + "? Its manifest stays, reachable by digest.")) return false;
    try {
      await api("DELETE", tagPath(repo, tag));
      say("Deleted the tag " + repo + ":" + tag + ".");
      return true;
    } catch (err) { say("Cannot delete " + repo + ":" + tag + ": " + err.message); return false; }
  }

  async function loadRepo(repo) {
    const tags = await api("GET", "/v1/registry/repositories/" + enc(repo) + "/tags");
    if (!view || view.repo !== repo || view.tag) return;
    $("h-registry-repo").textContent = repo;
    fill($("registry-tag-table").tBodies[0], [repo, tags], () => {
      const rows = tags.map((t) => el("tr", { "data-tag": t.tag },
        el("th", { scope: "row" }, el("a", { href: tagHref(repo, t.tag) }, t.tag)),
        el("td", {}, el("code", { title: t.digest }, shortDigest(t.digest))),
        el("td", {}, bytes(t.size)), el("td", {}, when(t.updated)), el("td", {}, when(t.created)),
        el("td", {}, t.platforms.join(", ")),
        el("td", {}, button("Delete", "Delete tag " + t.tag, async () => {
          if (await deleteTag(repo, t.tag)) await loadRepo(repo);
        }, "danger"))));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "7" }, "No tags left.")));
      return rows;
    });
  }

  // An argv list as the form shows it: words, or JSON when a word would not survive.
  function argvText(a) {
    if (!Array.isArray(a) || !a.length) return "";
    return a.every((w) => w && !/[\s"'[\]\\]/.test(w)) ? a.join(" ") : JSON.stringify(a);
  }
  function parseArgv(text, what) {
    text = text.trim();
    if (!text) return [];
    if (text.startsWith("[")) {
      let v;
      try { v = JSON.parse(text); } catch (e) { throw new Error(what + " is not a JSON array: " + e.message); }
      if (!Array.isArray(v) || v.some((w) => typeof w !== "string")) throw new Error(what + " must be an array of strings");
      return v;
    }
    return text.split(/\s+/);
  }
  // `KEY=VALUE` lines as a Map (in order).
  function parsePairs(text, what) {
    const m = new Map();
    for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const i = line.indexOf("=");
      if (i <= 0) throw new Error(what + " " + JSON.stringify(line) + " is not KEY=VALUE");
      m.set(line.slice(0, i), line.slice(i + 1));
    }
    return m;
  }
  const normPort = (p) => (p.includes("/") ? p.toLowerCase() : p + "/tcp");
  const portsOf = (text) => text.split(/[\s,]+/).filter(Boolean).map(normPort).sort();

  function setField(id, value) {
    const f = $(id);
    f.defaultValue = value;
    f.value = value;
  }

  function fillForm(c) {
    setField("edit-env", (c.Env || []).join("\n"));
    setField("edit-labels", Object.entries(c.Labels || {}).map(([k, v]) => k + "=" + v).join("\n"));
    setField("edit-entrypoint", argvText(c.Entrypoint));
    setField("edit-cmd", argvText(c.Cmd));
    setField("edit-workdir", c.WorkingDir || "");
    setField("edit-user", c.User || "");
    setField("edit-ports", Object.keys(c.ExposedPorts || {}).join(" "));
    setField("edit-new-tag", "");
    dirty = false;
  }

  // The edit request of the form's changes against `c`, or null when nothing changed.
  function changes(c) {
    const req = { reference: view.repo + ":" + view.tag, env: [], labels: [], unset_env: [], unset_labels: [] };
    let changed = false;
    const curEnv = new Map((c.Env || []).map((e) => { const i = e.indexOf("="); return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)]; }));
    const env = parsePairs($("edit-env").value, "environment variable");
    for (const [k, v] of env) if (curEnv.get(k) !== v) { req.env.push(k + "=" + v); changed = true; }
    for (const k of curEnv.keys()) if (!env.has(k)) { req.unset_env.push(k); changed = true; }
    const curLabels = c.Labels || {};
    const labels = parsePairs($("edit-labels").value, "label");
    for (const [k, v] of labels) if (curLabels[k] !== v) { req.labels.push(k + "=" + v); changed = true; }
    for (const k of Object.keys(curLabels)) if (!labels.has(k)) { req.unset_labels.push(k); changed = true; }
    for (const [id, key, field, what] of [["edit-entrypoint", "Entrypoint", "entrypoint", "the entrypoint"], ["edit-cmd", "Cmd", "cmd", "the command"]]) {
      const v = parseArgv($(id).value, what);
      if (JSON.stringify(v) !== JSON.stringify(c[key] || [])) { req[field] = v; changed = true; }
    }
    for (const [id, key, field] of [["edit-workdir", "WorkingDir", "working_dir"], ["edit-user", "User", "user"]]) {
      const v = $(id).value.trim();
      if (v !== (c[key] || "")) { req[field] = v; changed = true; }
    }
    const ports = portsOf($("edit-ports").value);
    if (JSON.stringify(ports) !== JSON.stringify(Object.keys(c.ExposedPorts || {}).map(normPort).sort())) {
      req.exposed_ports = ports;
      changed = true;
    }
    const newTag = $("edit-new-tag").value.trim();
    if (newTag) { req.new_tag = newTag; changed = true; }
    return changed ? req : null;
  }

  async function save(ev) {
    ev.preventDefault();
    const result = $("registry-edit-result");
    let req;
    try { req = changes(current.config); } catch (err) { result.textContent = "Not saved: " + err.message; return; }
    if (!req) { result.textContent = "Nothing to save: the form matches the tag's config."; return; }
    $("edit-save").disabled = true;
    result.textContent = "Saving…";
    try {
      const r = await api("POST", "/v1/registry/edit", req);
      result.replaceChildren("Saved: " + r.repository + ":" + r.tag + " is now ",
        el("code", { id: "registry-edit-digest" }, r.digest), " (config " + shortDigest(r.config) + ").");
      if (r.tag === view.tag) { dirty = false; await loadTag(view.repo, view.tag, true); }
      else { result.append(" ", el("a", { href: tagHref(r.repository, r.tag) }, "Open " + r.repository + ":" + r.tag)); }
    } catch (err) {
      result.textContent = "Not saved: " + err.message;
    } finally {
      $("edit-save").disabled = false;
    }
  }

  async function rollBack(digest) {
    if (!confirm("Point " + view.repo + ":" + view.tag + " at " + digest + "?")) return;
    try {
      const t = await api("PUT", tagPath(view.repo, view.tag), { digest });
      say("Rolled " + t.repository + ":" + t.tag + " back to " + t.digest + ".");
      dirty = false;
      await loadTag(view.repo, view.tag, true);
    } catch (err) { say("Cannot roll back: " + err.message); }
  }

  async function loadTag(repo, tag, refill) {
    const [t, hist] = await Promise.all([api("GET", tagPath(repo, tag)), api("GET", tagPath(repo, tag) + "/history")]);
    if (!view || view.repo !== repo || view.tag !== tag) return;
    const first = !current || current.digest !== t.digest;
    current = t;
    $("h-registry-tag").textContent = repo + ":" + tag;
    $("registry-tag-up").href = "#/registry/" + repo;
    const facts = $("registry-tag-facts");
    fillFacts(facts, [
      ["digest", t.digest], ["size", bytes(t.size)], ["pushed", when(t.updated)], ["created", when(t.created)],
      ["platforms", t.platforms.join(", ") || "—"], ["media type", t.media_type], ["config", t.config_digest || "—"],
    ]);
    facts.dataset.digest = t.digest;
    if (refill || first || !dirty) fillForm(t.config);
    $("registry-edit-form").hidden = !t.config_digest;
    const layers = t.layers.map((l, i) => el("tr", { "data-digest": l.digest },
      el("td", {}, String(i + 1)), el("td", {}, el("code", { title: l.digest }, shortDigest(l.digest))),
      el("td", {}, bytes(l.size)), el("td", { class: "wrap" }, l.created_by || "—")));
    for (const m of t.manifests) {
      layers.push(el("tr", {}, el("td", {}, "image"), el("td", {}, el("code", { title: m.digest }, shortDigest(m.digest))),
        el("td", {}, bytes(m.size)), el("td", {}, m.platform || "")));
    }
    $("registry-layers").tBodies[0].replaceChildren(...layers);
    fill($("registry-history").tBodies[0], [repo, tag, t.digest, hist], () => hist.slice().reverse().map((h) => el("tr", { "data-action": h.action, "data-digest": h.digest || "" },
      el("td", {}, when(h.at)), el("td", {}, h.action),
      el("td", {}, h.digest ? el("code", { title: h.digest }, shortDigest(h.digest)) : "—"),
      el("td", {}, h.digest && h.digest !== t.digest
        ? button("Roll back to this", "Roll back to " + shortDigest(h.digest) + " of " + when(h.at), () => rollBack(h.digest))
        : (h.digest === t.digest ? "current" : "")))));
    $("registry-steps").replaceChildren(...t.history.map((s) => el("li", {}, when(s.created) + "  " + s.created_by + (s.empty_layer ? "" : "  (layer)"))));
  }

  async function gc(ev) {
    ev.preventDefault();
    const out = $("registry-gc-result");
    out.textContent = "Collecting…";
    try {
      const grace = Math.max(0, Math.floor(Number($("registry-gc-grace").value) || 0));
      const r = await api("POST", "/v1/registry/gc?grace_secs=" + grace);
      out.textContent = "Unlinked " + r.unlinked + " blob(s); freed " + bytes(r.reclaimed_bytes) + ".";
      await loadRepos();
    } catch (err) { out.textContent = "GC failed: " + err.message; }
  }

  function load(refill) {
    if (!view) return Promise.resolve();
    if (view.tag) return loadTag(view.repo, view.tag, refill);
    if (view.repo) return loadRepo(view.repo);
    return loadRepos();
  }

  function refreshSoon() {
    clearTimeout(reload);
    reload = setTimeout(() => load(false).catch((err) => say("Cannot refresh: " + err.message)), 150);
  }

  $("registry-edit-form").addEventListener("submit", save);
  $("registry-edit-form").addEventListener("input", () => { dirty = true; });
  $("registry-edit-form").addEventListener("reset", () => { dirty = false; $("registry-edit-result").textContent = ""; });
  $("registry-gc-form").addEventListener("submit", gc);
  $("registry-tag-delete").addEventListener("click", async () => {
    const { repo, tag } = view;
    if (await deleteTag(repo, tag)) { keepStatus = true; location.hash = "#/registry/" + repo; }
  });
  Pier.onEvent((e) => { if (active && (!e || e.kind === "registry")) refreshSoon(); });

  Pier.page("registry", {
    async show(arg) {
      active = true;
      const colon = arg ? arg.lastIndexOf(":") : -1;
      view = !arg ? { repo: null, tag: null }
        : colon > arg.lastIndexOf("/") ? { repo: arg.slice(0, colon), tag: arg.slice(colon + 1) }
          : { repo: arg, tag: null };
      current = null;
      $("registry-repos").hidden = !!view.repo;
      $("registry-repo").hidden = !view.repo || !!view.tag;
      $("registry-tag").hidden = !view.tag;
      $("registry-edit-result").textContent = "";
      if (!keepStatus) say("");
      keepStatus = false;
      await load(true);
    },
    hide() { active = false; clearTimeout(reload); },
  });
})();

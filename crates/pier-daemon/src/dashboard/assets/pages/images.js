// Images: the local images with a filter and a prune of dangling ones (#/images), and one
// image's details (#/images/REF): tags (add, remove), its config, the steps that made its
// layers, the instances using it, and its removal. Image and instance events keep both
// current.
"use strict";

(() => {
  const { $, el, bytes, api, fillFacts } = Pier;
  const enc = encodeURIComponent;
  let images = [];
  let shown = null; // the reference of the image shown in detail, or null for the list
  let detail = null; // its inspect answer
  let reload = null;
  let active = false;

  const shortId = (id) => (id || "").replace(/^sha256:/, "").slice(0, 12);
  const when = (t) => (t ? t.slice(0, 19).replace("T", " ") : "");
  const nameOf = (i) => i.repo_tags[0] || shortId(i.id);

  // The instances whose image is `img` (by one of its tags, its ID or an ID prefix).
  function usersOf(img) {
    const names = new Set(img.repo_tags);
    for (const t of img.repo_tags) if (t.endsWith(":latest")) names.add(t.slice(0, -7));
    const hex = img.id.replace(/^sha256:/, "");
    return Pier.containers().filter((c) => names.has(c.image) ||
      (c.image.length >= 12 && hex.startsWith(c.image.replace(/^sha256:/, ""))));
  }

  function say(id, text) { $(id).textContent = text; }

  // Fills `parent` with `build()`'s children unless `data` is what it shows already, so
  // an unchanged view keeps its elements (and the keyboard focus on them).
  function fill(parent, data, build) {
    const key = JSON.stringify(data);
    if (parent.dataset.key === key) return;
    parent.dataset.key = key;
    parent.replaceChildren(...build());
  }

  function renderList() {
    const q = $("images-filter").value.trim().toLowerCase();
    fill($("images-table").tBodies[0], [q, images], () => {
      const rows = images
        .filter((i) => !q || i.id.includes(q) || i.repo_tags.some((t) => t.toLowerCase().includes(q)))
        .map((i) => el("tr", { "data-id": i.id, "data-name": nameOf(i) },
          el("th", { scope: "row" }, el("a", { href: "#/images/" + enc(nameOf(i)) },
            i.repo_tags.length ? i.repo_tags.join(", ") : "<none>")),
          el("td", {}, el("code", {}, shortId(i.id))),
          el("td", {}, bytes(i.size)),
          el("td", {}, when(i.created)),
          el("td", {}, String(i.containers))));
      if (!rows.length) {
        rows.push(el("tr", {}, el("td", { colspan: "5" },
          images.length ? "No image matches the filter." : "No images.")));
      }
      return rows;
    });
  }

  async function loadList() {
    images = await api("GET", "/v1/images");
    renderList();
  }

  // `a`, an argv list or a string, as one line.
  const argv = (a) => (Array.isArray(a) ? a.map((x) => (/\s/.test(x) ? JSON.stringify(x) : x)).join(" ") : a || "");

  function renderUsers() {
    if (!detail) return;
    const users = usersOf(detail);
    fill($("image-users"), [detail.id, detail.containers, users], () => (users.length
      ? users.map((c) => el("li", {}, el("a", { href: "#/instances/" + enc(c.name) }, c.name), " (" + c.state + ")"))
      : [el("li", {}, detail.containers ? detail.containers + " instance(s)" : "No instance uses it.")]));
  }

  async function loadDetail(ref) {
    const [i, steps] = await Promise.all([
      api("GET", "/v1/images/" + enc(ref)),
      api("GET", "/v1/images/" + enc(ref) + "/history"),
    ]);
    if (shown !== ref) return;
    detail = i;
    $("h-image").textContent = ref;
    fillFacts($("image-facts"), [
      ["ID", i.id], ["size", bytes(i.size)], ["created", when(i.created)],
      ["platform", i.os + "/" + i.architecture], ["layers", i.layers.length],
      ["manifest", i.manifest_digest],
    ]);
    fill($("image-tags"), [i.id, i.repo_tags], () => (i.repo_tags.length ? i.repo_tags.map((t) => {
      const b = el("button", { type: "button", "aria-label": "Remove tag " + t }, "Remove tag");
      b.addEventListener("click", () => untag(t));
      return el("li", {}, el("code", {}, t), " ", b);
    }) : [el("li", {}, "No tags.")]));
    const c = i.config || {};
    const labels = Object.entries(c.Labels || {}).map(([k, v]) => k + "=" + v);
    fillFacts($("image-config"), [
      ["entrypoint", argv(c.Entrypoint) || "—"], ["command", argv(c.Cmd) || "—"],
      ["environment", (c.Env || []).join("\n") || "—"], ["labels", labels.join("\n") || "—"],
      ["exposed ports", Object.keys(c.ExposedPorts || {}).join(" ") || "—"],
      ["user", c.User || "—"], ["working directory", c.WorkingDir || "—"],
    ]);
    fill($("image-layers").tBodies[0], steps, () => steps.map((s) => el("tr", {},
      el("td", { class: "wrap" }, s.created_by), el("td", {}, bytes(s.size)),
      el("td", {}, s.layer ? el("code", {}, shortId(s.layer)) : "—"), el("td", {}, when(s.created)))));
    renderUsers();
  }

  async function untag(t) {
    if (!confirm("Remove the tag " + t + "?")) return;
    try {
      const r = await api("DELETE", "/v1/images/" + enc(t));
      say("image-status", "Removed the tag " + t + ".");
      if (r.deleted.length) { say("images-status", "Removed " + t + " and its image."); location.hash = "#/images"; }
      else if (shown === t) location.hash = "#/images/" + enc(detail.id);
      else await loadDetail(shown);
    } catch (err) { say("image-status", "Cannot remove " + t + ": " + err.message); }
  }

  async function remove() {
    const users = detail.containers;
    const tags = detail.repo_tags.length;
    const force = users > 0 || tags > 1;
    let q = "Delete the image " + shortId(detail.id) + (tags ? " and its tags " + detail.repo_tags.join(", ") : "") + "?";
    if (users) q += "\n" + users + " instance(s) use it: its tags go, the image stays until they are removed.";
    if (!confirm(q)) return;
    try {
      const r = await api("DELETE", "/v1/images/" + enc(detail.id) + (force ? "?force=true" : ""));
      say("images-status", "Deleted " + r.deleted.length + " image(s), untagged " + r.untagged.length + ".");
      location.hash = "#/images";
    } catch (err) { say("image-status", "Cannot delete: " + err.message); }
  }

  async function prune() {
    say("images-status", "Pruning dangling images…");
    try {
      const r = await api("POST", "/v1/images/prune");
      say("images-status", "Pruned " + r.deleted.length + " image(s); freed " + bytes(r.reclaimed_bytes) + ".");
      await loadList();
    } catch (err) { say("images-status", "Cannot prune: " + err.message); }
  }

  async function addTag(ev) {
    ev.preventDefault();
    const target = $("image-tag-target").value.trim();
    try {
      await api("POST", "/v1/images/" + enc(detail.id) + "/tag", { target });
      $("image-tag-target").value = "";
      say("image-status", "Tagged " + target + ".");
      await loadDetail(shown);
    } catch (err) { say("image-status", "Cannot tag " + target + ": " + err.message); }
  }

  function refreshSoon() {
    clearTimeout(reload);
    reload = setTimeout(() => {
      const work = shown ? loadDetail(shown) : loadList();
      work.catch((err) => say(shown ? "image-status" : "images-status", "Cannot refresh: " + err.message));
    }, 150);
  }

  $("images-filter").addEventListener("input", renderList);
  $("images-prune").addEventListener("click", prune);
  $("image-tag-form").addEventListener("submit", addTag);
  $("image-delete").addEventListener("click", remove);
  Pier.onEvent((e) => {
    if (!active) return;
    if (!e || e.kind === "image" || (e.kind === "container" && /^(create|destroy)$/.test(e.action))) refreshSoon();
  });
  Pier.onContainers(() => { if (active) { renderUsers(); } });

  Pier.page("images", {
    async show(ref) {
      active = true;
      shown = ref;
      detail = null;
      $("images-list").hidden = !!ref;
      $("image-detail").hidden = !ref;
      say("image-status", "");
      if (ref) await loadDetail(ref); else await loadList();
    },
    hide() { active = false; clearTimeout(reload); },
  });
})();

// Networks: the list with create and remove, the topology picture, and one network's
// details with its endpoints, connect and disconnect (#/networks/NAME).
//
// The topology is a model first (nodes by kind, links between them), then drawn as an SVG
// and written out as a list of the same links (its text alternative). Each kind has a
// column, left to right, in COLUMNS: routers and floating IPs, when the API has them, are
// more kinds (a column and the links `model` finds for them), not a new drawing.
"use strict";

(() => {
  const { $, el, api, fillFacts } = Pier;
  const SVG = "http://www.w3.org/2000/svg";
  const enc = encodeURIComponent;
  const COLUMNS = ["network", "instance"];
  let shown = null; // null while hidden, "" for the list, else the network's name
  let timer = null;
  // What each view last drew: unchanged data keeps its elements (and keyboard focus).
  const drawn = {};
  function changed(view, data) {
    const key = JSON.stringify(data);
    if (drawn[view] === key) return false;
    drawn[view] = key;
    return true;
  }

  // Nodes (by key "kind:name") and links of the networks' running instances.
  function model(networks) {
    const nodes = new Map();
    const links = [];
    for (const n of networks) {
      const from = "network:" + n.name;
      nodes.set(from, { kind: "network", name: n.name, detail: n.subnet + (n.ipv6 && n.subnet6 ? ", " + n.subnet6 : ""), href: "#/networks/" + enc(n.name) });
      for (const [id, ep] of Object.entries(n.containers || {})) {
        const name = ep.name || id.slice(0, 12);
        const to = "instance:" + name;
        if (!nodes.has(to)) nodes.set(to, { kind: "instance", name, detail: "", href: "#/instances/" + enc(name) });
        links.push({ from, to, label: [ep.ip_address, ep.ip6_address].filter(Boolean).join(", ") });
      }
    }
    return { nodes, links };
  }

  function svgEl(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c);
    return e;
  }

  const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

  // Draws the model: one column of nodes per kind, a line per link labelled at its
  // instance end; every node is a link to its page (focusable, named by its text).
  function draw(figure, m) {
    figure.querySelector("svg")?.remove();
    const cols = COLUMNS.map((k) => [...m.nodes.values()].filter((n) => n.kind === k));
    const W = 900, NW = 230, NH = 40, GAP = 18;
    const rows = Math.max(1, ...cols.map((c) => c.length));
    const H = rows * (NH + GAP) + GAP;
    const pos = new Map();
    cols.forEach((col, i) => {
      const x = GAP + i * (W - NW - 2 * GAP) / Math.max(cols.length - 1, 1);
      const top = (H - col.length * (NH + GAP) + GAP) / 2;
      col.forEach((n, j) => pos.set(n.kind + ":" + n.name, { x, y: top + j * (NH + GAP) }));
    });
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "group", "aria-labelledby": "h-topology", "aria-describedby": "topology-caption" });
    svg.style.aspectRatio = W + " / " + H;
    for (const l of m.links) {
      const a = pos.get(l.from), b = pos.get(l.to);
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2;
      const f = m.nodes.get(l.from), t = m.nodes.get(l.to);
      const g = svgEl("g", { class: "topo-link", id: "topo-link-" + f.name + "-" + t.name, "data-ip": l.label });
      g.append(svgEl("line", { x1, y1, x2, y2 }));
      const lx = x1 + (x2 - x1) * 0.7, ly = y1 + (y2 - y1) * 0.7 - 6;
      g.append(svgEl("text", { x: lx, y: ly, "text-anchor": "middle", class: "topo-label" }, l.label));
      svg.append(g);
    }
    for (const [key, n] of m.nodes) {
      const p = pos.get(key);
      const a = svgEl("a", { href: n.href, id: "topo-" + n.kind + "-" + n.name, class: "topo-node topo-" + n.kind });
      a.append(svgEl("title", {}, n.kind + " " + n.name + (n.detail ? " (" + n.detail + ")" : "")));
      a.append(svgEl("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: n.kind === "network" ? 4 : 14 }));
      a.append(svgEl("text", { x: p.x + 10, y: p.y + NH / 2 + 5 }, short(n.name + (n.detail ? "  " + n.detail : ""), 30)));
      svg.append(a);
    }
    figure.prepend(svg);
  }

  // The text alternative: each network with links to it and to its instances.
  function listing(ul, m) {
    const items = [...m.nodes.values()].filter((n) => n.kind === "network").map((n) => {
      const key = "network:" + n.name;
      const inner = m.links.filter((l) => l.from === key).map((l) => {
        const t = m.nodes.get(l.to);
        return el("li", {}, el("a", { href: t.href }, t.name), " — " + (l.label || "no address"));
      });
      return el("li", {}, el("a", { href: n.href }, n.name), " (" + n.detail + ")",
        inner.length ? el("ul", {}, ...inner) : " — no running instances");
    });
    ul.replaceChildren(...(items.length ? items : [el("li", {}, "No networks.")]));
  }

  function say(id, text) { $(id).textContent = text; }

  async function removeNetwork(n) {
    if (!confirm("Remove network " + n.name + "?")) return;
    say("networks-status", "Removing " + n.name + "…");
    try {
      await api("DELETE", "/v1/networks/" + enc(n.name));
      say("networks-status", "Removed " + n.name + ".");
    } catch (err) {
      say("networks-status", "Cannot remove " + n.name + ": " + err.message);
    }
    refreshSoon();
  }

  function row(n) {
    const count = Object.keys(n.containers || {}).length;
    const rm = el("button", { type: "button", "aria-label": "Remove " + n.name, "data-action": "remove" }, "Remove");
    rm.addEventListener("click", () => removeNetwork(n));
    return el("tr", { id: "net-row-" + n.name },
      el("th", { scope: "row" }, el("a", { href: "#/networks/" + enc(n.name) }, n.name)),
      el("td", {}, n.driver),
      el("td", {}, n.subnet),
      el("td", {}, n.ipv6 && n.subnet6 ? n.subnet6 : "—"),
      el("td", {}, n.gateway + (n.ipv6 && n.gateway6 ? ", " + n.gateway6 : "")),
      el("td", {}, n.internal ? "yes" : "no"),
      el("td", { class: "num", "data-count": String(count) }, String(count)),
      el("td", {}, rm));
  }

  let project = null;
  async function loadList() {
    const nets = await api("GET", "/v1/networks?containers=true");
    if (!project) project = (await api("GET", "/v1/info")).project;
    $("networks-project").textContent = project;
    if (!changed("list", nets)) return;
    $("networks").tBodies[0].replaceChildren(...nets.map(row));
    const m = model(nets);
    draw($("topology"), m);
    listing($("topology-list"), m);
  }

  async function disconnect(net, id, name) {
    say("network-status", "Disconnecting " + name + "…");
    try {
      await api("POST", "/v1/networks/" + enc(net) + "/disconnect", { container: id });
      say("network-status", "Disconnected " + name + ".");
    } catch (err) {
      say("network-status", "Cannot disconnect " + name + ": " + err.message);
    }
    refreshSoon();
  }

  function fillConnectChoices(n) {
    const on = new Set(Object.values(n.containers || {}).map((ep) => ep.name));
    const sel = $("connect-instance");
    const keep = sel.value;
    const choices = Pier.containers().filter((c) => !on.has(c.name))
      .map((c) => el("option", { value: c.id, "data-name": c.name }, c.name + " (" + c.state + ")"));
    sel.replaceChildren(...(choices.length ? choices : [el("option", { value: "" }, "No other instance")]));
    sel.disabled = !choices.length;
    $("connect-button").disabled = !choices.length;
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }

  let detail = null;
  async function loadDetail(name) {
    const n = await api("GET", "/v1/networks/" + enc(name));
    detail = n;
    fillConnectChoices(n);
    if (!changed("detail", n)) return;
    $("h-network").textContent = "Network " + n.name;
    fillFacts($("network-facts"), [
      ["id", n.id.slice(0, 12)], ["driver", n.driver], ["IPv4 subnet", n.subnet], ["gateway", n.gateway],
      ["IPv6 subnet", n.ipv6 && n.subnet6 ? n.subnet6 : "—"], ["IPv6 gateway", n.ipv6 && n.gateway6 ? n.gateway6 : "—"],
      ["internal", n.internal ? "yes" : "no"], ["mode", n.mode], ["MTU", n.mtu], ["bridge", n.bridge], ["created", n.created],
    ]);
    const rows = Object.entries(n.containers || {}).map(([id, ep]) => {
      const cname = ep.name || id.slice(0, 12);
      const b = el("button", { type: "button", "aria-label": "Disconnect " + cname, "data-action": "disconnect" }, "Disconnect");
      b.addEventListener("click", () => disconnect(n.name, id, cname));
      return el("tr", { id: "ep-row-" + cname },
        el("th", { scope: "row" }, el("a", { href: "#/instances/" + enc(cname) }, cname)),
        el("td", {}, ep.ip_address ? ep.ip_address + "/" + ep.prefix_len : "—"),
        el("td", {}, ep.ip6_address ? ep.ip6_address + "/" + ep.prefix6_len : "—"),
        el("td", {}, ep.mac_address || "—"),
        el("td", {}, (ep.aliases || []).join(", ") || "—"),
        el("td", {}, b));
    });
    $("endpoints").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: "6" }, "No running instance is on this network."))]));
  }

  function load() {
    if (shown === null) return Promise.resolve();
    return shown ? loadDetail(shown) : loadList();
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(() => load().catch((err) => say(shown ? "network-status" : "networks-status", "Error: " + err.message)), 150);
  }

  $("network-create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (id) => $(id).value.trim();
    const body = { name: v("net-name"), ipv6: $("net-ipv6").checked, internal: $("net-internal").checked };
    if (v("net-subnet")) body.subnet = v("net-subnet");
    if (v("net-gateway")) body.gateway = v("net-gateway");
    if (v("net-subnet6")) body.subnet6 = v("net-subnet6");
    say("net-create-status", "Creating " + body.name + "…");
    try {
      const n = await api("POST", "/v1/networks", body);
      say("net-create-status", "Created " + n.name + " (" + n.subnet + ").");
      ev.target.reset();
    } catch (err) {
      say("net-create-status", "Cannot create " + body.name + ": " + err.message);
    }
    refreshSoon();
  });

  $("network-connect").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const sel = $("connect-instance");
    const opt = sel.selectedOptions[0];
    if (!opt || !opt.value || !detail) return;
    const body = { container: sel.value };
    if ($("connect-ip").value.trim()) body.ip = $("connect-ip").value.trim();
    say("network-status", "Connecting " + opt.textContent + "…");
    try {
      await api("POST", "/v1/networks/" + enc(detail.name) + "/connect", body);
      say("network-status", "Connected " + opt.textContent + ".");
      $("connect-ip").value = "";
    } catch (err) {
      say("network-status", "Cannot connect " + opt.textContent + ": " + err.message);
    }
    refreshSoon();
  });

  Pier.onEvent((e) => {
    if (shown !== null && (!e || e.kind === "network" || e.kind === "container")) refreshSoon();
  });
  Pier.onContainers(() => { if (shown && detail) fillConnectChoices(detail); });

  Pier.page("networks", {
    async show(name) {
      shown = name || "";
      $("networks-list").hidden = !!name;
      $("network-detail").hidden = !name;
      await load();
    },
    hide() { shown = null; detail = null; clearTimeout(timer); for (const k in drawn) delete drawn[k]; },
  });
})();

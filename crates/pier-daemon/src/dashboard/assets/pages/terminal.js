// Terminal (#/terminal/NAME): a command in a running container (exec over a websocket,
// GET /v1/containers/{id}/exec/ws) or a VM's serial console (.../console/ws), on a small
// terminal emulator: a screen of rows x cols cells with a cursor and a scrollback, the
// control characters and the CSI/ESC sequences a shell and common tools send (unknown
// ones are skipped, OSC strings ignored), and the keyboard mapped to a terminal's bytes.
"use strict";

(() => {
  const { $, el, api } = Pier;
  const SCROLLBACK = 500;
  const CSI = "\x1b[";

  // A cell's attributes in one number: foreground 0-8 (0: default), background << 4,
  // bold 256, inverse 512.
  const BOLD = 256, INVERSE = 512;

  class Term {
    constructor(box, reply) {
      this.back = el("div", { class: "back" });
      this.view = el("div", { class: "view" });
      box.replaceChildren(this.back, this.view);
      this.box = box;
      this.autoTop = 0; // where the view was last scrolled to follow the output
      this.reply = reply; // answers to the terminal's queries (cursor position)
      this.rows = 0; this.cols = 0; this.lines = []; this.divs = [];
      this.resize(24, 80);
      this.reset();
    }
    blank() { return { c: Array(this.cols).fill(" "), a: Array(this.cols).fill(0) }; }
    reset() {
      this.lines = Array.from({ length: this.rows }, () => this.blank());
      this.x = this.y = this.attr = 0; this.wrap = false; this.state = 0; this.params = "";
      this.saved = { x: 0, y: 0, attr: 0 }; this.appCursor = false; this.cursorOn = true; this.alt = null;
      this.back.replaceChildren(); this.all();
    }
    resize(rows, cols) {
      for (const l of this.lines) {
        l.c.length = l.a.length = cols;
        for (let i = this.cols; i < cols; i++) { l.c[i] = " "; l.a[i] = 0; }
      }
      this.cols = cols;
      while (this.lines.length > rows) { // the top goes to the scrollback
        if (this.y > 0) { this.toBack(this.lines.shift()); this.y--; } else this.lines.pop();
      }
      while (this.lines.length < rows) this.lines.push(this.blank());
      this.rows = rows;
      this.x = Math.min(this.x, cols - 1); this.y = Math.min(this.y, rows - 1);
      this.divs = this.lines.map(() => el("div"));
      this.view.replaceChildren(...this.divs);
      this.all();
    }
    all() { this.dirty = new Set(this.lines.keys()); this.schedule(); }
    touch(y) { this.dirty.add(y); this.schedule(); }
    schedule() { if (!this.frame) this.frame = requestAnimationFrame(() => this.draw()); }
    // Draws the changed rows (and the cursor's). The view follows the output unless the
    // reader scrolled up from where it last put it (and not back to the bottom).
    draw() {
      this.frame = 0;
      const b = this.box;
      const follow = b.scrollTop >= this.autoTop - 1 || b.scrollTop + b.clientHeight >= b.scrollHeight - 4;
      this.dirty.add(this.y);
      for (const y of this.dirty) if (this.divs[y]) this.paint(this.divs[y], this.lines[y], y === this.y ? this.x : -1);
      if (this.lastY !== undefined && this.lastY !== this.y && this.divs[this.lastY]) this.paint(this.divs[this.lastY], this.lines[this.lastY], -1);
      this.lastY = this.y; this.dirty.clear();
      if (follow) { b.scrollTop = b.scrollHeight; this.autoTop = b.scrollTop; }
    }
    // One row as runs of text of the same attributes (the cursor's cell its own run).
    paint(div, line, cx) {
      const runs = [];
      let text = "", attr = -1;
      const flush = (cursor) => {
        if (!text) return;
        const cls = [];
        if (attr & 15) cls.push("f" + (attr & 15));
        if ((attr >> 4) & 15) cls.push("b" + ((attr >> 4) & 15));
        if (attr & BOLD) cls.push("bo");
        if (attr & INVERSE) cls.push("inv");
        if (cursor) cls.push("cur");
        runs.push(cls.length ? el("span", { class: cls.join(" ") }, text) : text);
        text = "";
      };
      for (let i = 0; i < line.c.length; i++) {
        const cur = i === cx && this.cursorOn;
        if (line.a[i] !== attr || cur) { flush(false); attr = line.a[i]; }
        text += line.c[i];
        if (cur) { flush(true); attr = -1; }
      }
      flush(false);
      div.replaceChildren(...runs);
    }
    toBack(line) {
      const d = el("div");
      this.paint(d, line, -1);
      this.back.append(d);
      if (this.back.childElementCount > SCROLLBACK) this.back.firstElementChild.remove();
    }
    // Scrolls the screen up by one line (the top one into the scrollback).
    up() { const l = this.lines.shift(); if (!this.alt) this.toBack(l); this.lines.push(this.blank()); this.all(); }
    lf() { if (this.y === this.rows - 1) this.up(); else { this.y++; this.touch(this.y); } }
    ri() {
      if (this.y === 0) { this.lines.pop(); this.lines.unshift(this.blank()); this.all(); } else this.y--;
    }
    put(ch) {
      if (this.wrap) { this.x = 0; this.lf(); this.wrap = false; }
      const l = this.lines[this.y];
      l.c[this.x] = ch; l.a[this.x] = this.attr; this.touch(this.y);
      if (this.x === this.cols - 1) this.wrap = true; else this.x++;
    }
    erase(y, from, to) {
      const l = this.lines[y];
      for (let i = Math.max(from, 0); i < Math.min(to, this.cols); i++) { l.c[i] = " "; l.a[i] = 0; }
      this.touch(y);
    }
    move(y, x) {
      this.touch(this.y);
      this.y = Math.max(0, Math.min(this.rows - 1, y)); this.x = Math.max(0, Math.min(this.cols - 1, x));
      this.wrap = false;
    }
    // Takes decoded text from the command.
    feed(s) {
      for (const ch of s) {
        const c = ch.codePointAt(0);
        if (this.state === 3) { // OSC: up to BEL or ESC \
          if (c === 7) this.state = 0; else if (c === 27) this.state = 4;
        } else if (this.state === 4) { this.state = 0; // the character after ESC ( or ESC ]..ESC
        } else if (c < 32 || c === 127) this.control(c);
        else if (this.state === 1) this.esc(ch);
        else if (this.state === 2) {
          if (c >= 0x40 && c <= 0x7e) { this.state = 0; this.csi(this.params, ch); } else this.params += ch;
        } else this.put(ch);
      }
    }
    control(c) {
      if (c === 27) { this.state = 1; return; }
      if (c === 13) this.move(this.y, 0);
      else if (c === 10 || c === 11 || c === 12) { this.wrap = false; this.lf(); }
      else if (c === 8) this.move(this.y, this.x - 1);
      else if (c === 9) this.move(this.y, Math.floor(this.x / 8) * 8 + 8);
      else if (c === 7) { this.box.classList.add("bell"); setTimeout(() => this.box.classList.remove("bell"), 150); }
    }
    esc(ch) {
      this.state = 0;
      if (ch === "[") { this.state = 2; this.params = ""; }
      else if (ch === "]") this.state = 3;
      else if ("()*+#%".includes(ch)) this.state = 4;
      else if (ch === "7") this.saved = { x: this.x, y: this.y, attr: this.attr };
      else if (ch === "8") { this.move(this.saved.y, this.saved.x); this.attr = this.saved.attr; }
      else if (ch === "D") this.lf();
      else if (ch === "E") { this.lf(); this.move(this.y, 0); }
      else if (ch === "M") this.ri();
      else if (ch === "c") this.reset();
    }
    csi(p, f) {
      const priv = /^[?>=]/.test(p);
      const ns = p.replace(/^[?>=]/, "").split(";").map((v) => parseInt(v, 10) || 0);
      const n = Math.max(ns[0] || 1, 1);
      const { x, y, cols, rows } = this;
      switch (f) {
        case "A": this.move(y - n, x); break;
        case "B": this.move(y + n, x); break;
        case "C": this.move(y, x + n); break;
        case "D": this.move(y, x - n); break;
        case "E": this.move(y + n, 0); break;
        case "F": this.move(y - n, 0); break;
        case "G": case "`": this.move(y, n - 1); break;
        case "d": this.move(n - 1, x); break;
        case "H": case "f": this.move((ns[0] || 1) - 1, (ns[1] || 1) - 1); break;
        case "J":
          if (ns[0] === 0) { this.erase(y, x, cols); for (let i = y + 1; i < rows; i++) this.erase(i, 0, cols); }
          else if (ns[0] === 1) { this.erase(y, 0, x + 1); for (let i = 0; i < y; i++) this.erase(i, 0, cols); }
          else for (let i = 0; i < rows; i++) this.erase(i, 0, cols);
          break;
        case "K": this.erase(y, ns[0] === 0 ? x : 0, ns[0] === 1 ? x + 1 : cols); break;
        case "X": this.erase(y, x, x + n); break;
        case "@": case "P": {
          const l = this.lines[y], k = Math.min(n, cols - x);
          if (f === "@") { l.c.splice(x, 0, ...Array(k).fill(" ")); l.a.splice(x, 0, ...Array(k).fill(0)); l.c.length = l.a.length = cols; }
          else { l.c.splice(x, k); l.a.splice(x, k); while (l.c.length < cols) { l.c.push(" "); l.a.push(0); } }
          this.touch(y); break;
        }
        case "L": case "M":
          for (let i = 0; i < Math.min(n, rows - y); i++) {
            if (f === "L") { this.lines.splice(y, 0, this.blank()); this.lines.pop(); }
            else { this.lines.splice(y, 1); this.lines.push(this.blank()); }
          }
          this.all(); break;
        case "S": for (let i = 0; i < n; i++) this.up(); break;
        case "T": for (let i = 0; i < n; i++) { this.lines.pop(); this.lines.unshift(this.blank()); } this.all(); break;
        case "m": this.sgr(ns); break;
        case "n": if (ns[0] === 6) this.reply(CSI + (y + 1) + ";" + (x + 1) + "R"); else if (ns[0] === 5) this.reply(CSI + "0n"); break;
        case "c": if (!priv || p[0] !== ">") this.reply(CSI + "?1;2c"); break;
        case "s": this.saved = { x, y, attr: this.attr }; break;
        case "u": this.move(this.saved.y, this.saved.x); break;
        case "h": case "l": if (priv) this.mode(ns, f === "h"); break;
        default: break; // unknown: skipped
      }
    }
    mode(ns, on) {
      for (const m of ns) {
        if (m === 1) this.appCursor = on;
        else if (m === 25) { this.cursorOn = on; this.touch(this.y); }
        else if (m === 1049 || m === 47 || m === 1047) { // the alternate screen
          if (on && !this.alt) { this.alt = { lines: this.lines, x: this.x, y: this.y }; this.lines = this.lines.map(() => this.blank()); }
          else if (!on && this.alt) {
            this.lines = this.alt.lines.map((l) => { const b = this.blank(); l.c.slice(0, this.cols).forEach((ch, i) => { b.c[i] = ch; b.a[i] = l.a[i] || 0; }); return b; });
            this.lines.length = this.rows; for (let i = 0; i < this.rows; i++) this.lines[i] ||= this.blank();
            this.move(this.alt.y, this.alt.x); this.alt = null;
          }
          this.all();
        }
      }
    }
    sgr(ns) {
      for (let i = 0; i < ns.length; i++) {
        const v = ns[i];
        let a = this.attr;
        if (v === 0) a = 0;
        else if (v === 1) a |= BOLD; else if (v === 22) a &= ~BOLD;
        else if (v === 7) a |= INVERSE; else if (v === 27) a &= ~INVERSE;
        else if ((v >= 30 && v <= 37) || (v >= 90 && v <= 97)) a = (a & ~15) | ((v % 10) + 1);
        else if (v === 39) a &= ~15;
        else if ((v >= 40 && v <= 47) || (v >= 100 && v <= 107)) a = (a & ~240) | (((v % 10) + 1) << 4);
        else if (v === 49) a &= ~240;
        else if (v === 38 || v === 48) i += ns[i + 1] === 5 ? 2 : 4; // 256 and true colours: skipped
        this.attr = a;
      }
    }
  }

  // The bytes a key sends; null: the browser keeps it (Shift+Tab leaves, Ctrl+V pastes).
  const KEYS = { Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", Home: CSI + "H", End: CSI + "F",
    Insert: CSI + "2~", Delete: CSI + "3~", PageUp: CSI + "5~", PageDown: CSI + "6~",
    ArrowUp: "A", ArrowDown: "B", ArrowRight: "C", ArrowLeft: "D" };
  function keyBytes(e, appCursor) {
    if (e.metaKey || (e.key === "Tab" && e.shiftKey)) return null;
    if (e.key.startsWith("Arrow")) return (appCursor ? "\x1bO" : CSI) + KEYS[e.key];
    if (e.ctrlKey && !e.altKey && e.key.length === 1) {
      const k = e.key.toLowerCase();
      if (k === "v" || (e.shiftKey && k === "c")) return null;
      if (k >= "a" && k <= "z") return String.fromCharCode(k.charCodeAt(0) - 96);
      const i = "@[\\]^_ ".indexOf(e.key);
      return i >= 0 ? String.fromCharCode([0, 27, 28, 29, 30, 31, 0][i]) : null;
    }
    if (KEYS[e.key]) return KEYS[e.key];
    // A character (AltGr's too, which browsers report as Ctrl+Alt); Alt alone: ESC first.
    if ([...e.key].length === 1) return (e.altKey && !e.ctrlKey ? "\x1b" : "") + e.key;
    return null;
  }

  const enc = new TextEncoder();
  let term = null, ws = null, name = null, isVm = false, size = null;
  const status = (t) => { $("term-status").textContent = t; };
  const send = (s) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(s)); };

  // The terminal's size from its element's: whole character cells.
  function fit() {
    const box = $("term-screen");
    const probe = el("span", { class: "probe" }, "MMMMMMMMMM");
    box.append(probe);
    const r = probe.getBoundingClientRect();
    probe.remove();
    const cw = r.width / 10, ch = r.height;
    if (!cw || !ch || !term) return;
    const cols = Math.max(20, Math.floor((box.clientWidth - 16) / cw));
    const rows = Math.max(5, Math.floor((box.clientHeight - 16) / ch));
    if (size && size.cols === cols && size.rows === rows) return;
    size = { cols, rows };
    term.resize(rows, cols);
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: size }));
  }

  function disconnect() { if (ws) { ws.close(); ws = null; } }

  function connect() {
    disconnect();
    term.reset();
    fit();
    const base = "/v1/containers/" + encodeURIComponent(name);
    let path = base + "/console/ws";
    if (!isVm) {
      const words = $("term-cmd").value.trim().split(/\s+/).filter(Boolean);
      if (!words.length) { status("Give a command to run, such as /bin/sh."); return; }
      path = base + "/exec/ws?" + words.map((w) => "cmd=" + encodeURIComponent(w)).join("&") +
        "&cols=" + size.cols + "&rows=" + size.rows;
    }
    const sock = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + path);
    sock.binaryType = "arraybuffer";
    const dec = new TextDecoder();
    let ended = false;
    ws = sock;
    status("Connecting…");
    sock.onopen = () => {
      status("Connected to " + name + (isVm ? " (serial console)" : " (" + $("term-cmd").value.trim() + ")"));
      $("term-connect").disabled = true; $("term-disconnect").disabled = false;
      $("term-screen").focus();
    };
    sock.onmessage = (m) => {
      if (typeof m.data !== "string") { term.feed(dec.decode(new Uint8Array(m.data), { stream: true })); return; }
      const j = JSON.parse(m.data);
      if (j.exit_code !== undefined) { ended = true; status("Exited with code " + j.exit_code); }
      else if (j.detached) { ended = true; status("Detached: the command runs on"); }
      else if (j.error) status("Refused: " + j.error);
    };
    sock.onclose = () => {
      if (ws !== sock && ws !== null) return; // a newer session replaced this one
      ws = null;
      if (!ended) status("Disconnected");
      $("term-connect").disabled = false; $("term-disconnect").disabled = true;
    };
    sock.onerror = () => { if (!ended) { ended = true; status("Could not connect to " + name + ": is it running?"); } };
  }

  function showChooser(list) {
    const running = list.filter((c) => c.state === "running");
    $("term-instances").replaceChildren(...(running.length ? running.map((c) =>
      el("li", {}, el("a", { href: "#/terminal/" + encodeURIComponent(c.name) }, c.name))) : [el("li", {}, "None is running.")]));
  }

  function setup() {
    const box = $("term-screen");
    term = new Term(box, send);
    box.addEventListener("keydown", (e) => {
      const b = keyBytes(e, term.appCursor);
      if (b === null) return;
      e.preventDefault();
      send(b);
    });
    box.addEventListener("paste", (e) => {
      e.preventDefault();
      send(e.clipboardData.getData("text").replace(/\r?\n/g, "\r"));
    });
    $("term-form").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
    $("term-disconnect").addEventListener("click", () => { disconnect(); status("Disconnected"); });
    new ResizeObserver(() => { if (!$("page-terminal").hidden) fit(); }).observe(box);
  }

  Pier.onContainers((list) => { if (!name) showChooser(list); });
  Pier.page("terminal", {
    async show(arg) {
      if (!term) setup();
      name = arg;
      $("term-choose").hidden = !!arg;
      $("term-session").hidden = !arg;
      $("h-terminal").textContent = arg ? "Terminal: " + arg : "Terminal";
      $("term-back").href = arg ? "#/instances/" + encodeURIComponent(arg) : "#/instances";
      if (!arg) { showChooser(Pier.containers()); return; }
      $("term-screen").setAttribute("aria-label", "Terminal of " + arg + ": keys typed here go to it");
      const c = await api("GET", "/v1/containers/" + encodeURIComponent(arg));
      isVm = (c.config && c.config.runtime) === "pier-vm";
      $("term-cmd").disabled = isVm;
      term.reset();
      size = null;
      fit();
      const state = (c.state && c.state.status) || "";
      status(state === "running" ? "Not connected: press Connect." : arg + " is " + state + ": start it first.");
    },
    hide() { disconnect(); name = null; },
  });
})();

"""The dashboard's one page (fleet/dashboard.py serves it): HTML, CSS and script in one string,
with nothing loaded from elsewhere (conversion hosts are often offline).

The script polls api/plan about once a second and the selected guest's log, and writes what it
gets into the page as text only (textContent, never innerHTML): guest names, messages, errors
and log lines come from the guests and the conversions, so they are untrusted. The server's
Content-Security-Policy allows exactly this script and this style (their digests), nothing else.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root {
  --bg: #f6f7f9; --fg: #1d2330; --muted: #667085; --card: #fff; --line: #e3e6eb;
  --queued: #8a94a6; --busy: #6b4fbb; --copying: #1f6feb; --done: #1a7f37;
  --failed: #cf222e; --cancelled: #57606a; --interrupted: #b35900; --bar: #e8ebf0;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1218; --fg: #e6e9ef; --muted: #98a2b3; --card: #171b23; --line: #2a303c;
    --bar: #2a303c;
  }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { padding: 14px 20px 10px; border-bottom: 1px solid var(--line); background: var(--card); }
h1 { font-size: 18px; margin: 0 0 2px; }
h2 { font-size: 15px; margin: 0 0 8px; }
.path, .muted { color: var(--muted); }
.path { font-size: 12px; word-break: break-all; }
#status { float: right; font-size: 12px; color: var(--muted); }
#status.stale { color: var(--failed); font-weight: 600; }
#counts { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; }
.count { border-radius: 12px; padding: 1px 10px; color: #fff; background: var(--busy);
  font-size: 12px; font-weight: 600; }
main { padding: 16px 20px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; white-space: nowrap; }
tr.guest { cursor: pointer; }
tr.guest:hover { background: color-mix(in srgb, var(--copying) 6%, transparent); }
tr.guest.selected { background: color-mix(in srgb, var(--copying) 14%, transparent); }
tr.guest:focus-visible { outline: 2px solid var(--copying); outline-offset: -2px; }
td.name { font-weight: 600; word-break: break-all; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; border-radius: 4px; padding: 0 7px; color: #fff;
  background: var(--busy); font-size: 12px; font-weight: 600; }
.count[data-stage="total"] { background: var(--fg); color: var(--bg); }
:is(.badge, .count)[data-stage="queued"] { background: var(--queued); }
:is(.badge, .count, .fill)[data-stage="copying"] { background: var(--copying); }
:is(.badge, .count, .fill)[data-stage="done"] { background: var(--done); }
:is(.badge, .count, .fill)[data-stage="failed"] { background: var(--failed); }
:is(.badge, .count)[data-stage="cancelled"] { background: var(--cancelled); }
:is(.badge, .count)[data-stage="interrupted"] { background: var(--interrupted); }
.message { font-size: 12px; color: var(--muted); margin-top: 2px; word-break: break-word; }
td.progress { min-width: 220px; }
.meter { white-space: nowrap; }
.bar { display: inline-block; vertical-align: middle; width: 140px; height: 10px;
  border-radius: 5px; background: var(--bar); overflow: hidden; }
.fill { height: 100%; width: 0; background: var(--busy); transition: width .4s; }
.pct { display: inline-block; width: 48px; text-align: right; font-variant-numeric: tabular-nums; }
.bytes { font-size: 12px; color: var(--muted); }
td.error { color: var(--failed); white-space: pre-wrap; word-break: break-word; max-width: 40ch; }
#log-card { margin-top: 16px; padding: 12px 14px; }
#log { margin: 0; max-height: 420px; overflow: auto; white-space: pre-wrap; word-break: break-all;
  font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--bg);
  border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
"""

SCRIPT = """
"use strict";
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
const rows = new Map();
let selected = null;
let logSeen = null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n) || 0, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? v.toFixed(0) + " B" : v.toFixed(1) + " " + units[i];
}

function duration(s) {
  if (s === null || s === undefined || !isFinite(s) || s < 0) return "\\u2013";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h) return h + "h " + String(m).padStart(2, "0") + "m";
  if (m) return m + "m " + String(r).padStart(2, "0") + "s";
  return r + "s";
}

function percent(g) {
  if (g.stage === "done") return 100;
  if (g.total > 0) return Math.min(100, Math.floor((g.done * 100) / g.total));
  return null;
}

function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function newRow(name) {
  // One guest's row and the nodes each poll rewrites.
  const tr = el("tr", "guest");
  tr.dataset.name = name;
  tr.tabIndex = 0;
  const row = { tr: tr };
  for (const c of ["name", "stage", "progress", "rate num", "time num", "attempts num",
                   "worker", "error"]) {
    row[c.split(" ")[0]] = tr.appendChild(el("td", c));
  }
  row.name.textContent = name;
  row.badge = row.stage.appendChild(el("span", "badge"));
  row.message = row.stage.appendChild(el("div", "message"));
  const meter = row.progress.appendChild(el("div", "meter"));
  row.bar = meter.appendChild(el("div", "bar"));
  row.bar.setAttribute("role", "progressbar");
  row.bar.setAttribute("aria-valuemin", "0");
  row.bar.setAttribute("aria-valuemax", "100");
  row.fill = row.bar.appendChild(el("div", "fill"));
  row.pct = meter.appendChild(el("span", "pct"));
  row.bytes = row.progress.appendChild(el("div", "bytes"));
  tr.addEventListener("click", () => select(name));
  tr.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(name); }
  });
  return row;
}

function fillRow(row, g, now) {
  row.tr.dataset.stage = g.stage;
  set(row.badge, g.stage);
  row.badge.dataset.stage = g.stage;
  set(row.message, g.stage === "done" || g.stage === "failed" ? "" : (g.message || ""));
  const p = percent(g);
  row.fill.dataset.stage = g.stage;
  row.fill.style.width = (p === null ? 0 : p) + "%";
  if (p === null) row.bar.removeAttribute("aria-valuenow");
  else row.bar.setAttribute("aria-valuenow", String(p));
  set(row.pct, p === null ? "\\u2013" : p + " %");
  let detail = "";
  if (g.total > 0 && g.stage !== "done") {
    detail = bytes(g.done) + " of " + bytes(g.total);
    if (g.stage === "copying" && g.rate > 0) {
      detail += " \\u00b7 " + duration((g.total - g.done) / g.rate) + " left";
    }
  } else if (g.stage === "done" && g.total > 0) {
    detail = bytes(g.total);
  }
  set(row.bytes, detail);
  set(row.rate, g.stage === "copying" && g.rate > 0 ? bytes(g.rate) + "/s" : "\\u2013");
  const end = g.finished_at !== null && g.finished_at !== undefined ? g.finished_at : now;
  set(row.time, g.started_at ? duration(end - g.started_at) : "\\u2013");
  set(row.attempts, String(g.attempts || 0));
  set(row.worker, g.worker || "\\u2013");
  set(row.error, g.error || "");
  row.tr.classList.toggle("selected", g.name === selected);
}

function showCounts(data) {
  const box = $("counts");
  const shown = [];
  const total = el("span", "count", "total " + data.guests.length);
  total.dataset.stage = "total";
  shown.push(total);
  for (const stage of data.stages) {
    const n = data.counts[stage] || 0;
    if (!n) continue;
    const chip = el("span", "count", stage + " " + n);
    chip.dataset.stage = stage;
    shown.push(chip);
  }
  box.replaceChildren(...shown);
}

function show(data) {
  set($("plan-id"), data.plan.id);
  set($("plan-path"), data.plan.path);
  document.title = "vmshift plan " + data.plan.id;
  showCounts(data);
  const body = $("guests");
  const seen = new Set();
  data.guests.forEach((g, i) => {
    let row = rows.get(g.name);
    if (!row) { row = newRow(g.name); rows.set(g.name, row); }
    seen.add(g.name);
    fillRow(row, g, data.now);
    if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
  });
  for (const [name, row] of rows) {
    if (!seen.has(name)) { row.tr.remove(); rows.delete(name); }
  }
  $("empty").hidden = data.guests.length > 0;
}

function status(text, stale) {
  const s = $("status");
  set(s, text);
  s.classList.toggle("stale", stale);
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

async function pollPlan() {
  try {
    show(await getJson("api/plan"));
    status("updated " + new Date().toLocaleTimeString(), false);
  } catch (e) {
    status("no answer from vmshift plan serve (" + e.message + "): retrying", true);
  }
}

async function pollLog() {
  if (selected === null) return;
  const name = selected;
  try {
    const data = await getJson("api/guests/" + encodeURIComponent(name) + "/log");
    if (name !== selected) return;
    const pre = $("log");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const text = data.lines.length ? data.lines.join("\\n") : "(no log lines yet)";
    if (text !== logSeen) {
      pre.textContent = text;
      logSeen = text;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (name === selected) set($("log"), "(cannot read its log: " + e.message + ")");
    logSeen = null;
  }
}

function select(name) {
  selected = name;
  logSeen = null;
  history.replaceState(null, "", "#" + encodeURIComponent(name));
  for (const [n, row] of rows) row.tr.classList.toggle("selected", n === name);
  set($("log-title"), "Log of " + name);
  set($("log"), "(loading)");
  pollLog();
}

async function loop() {
  await Promise.all([pollPlan(), pollLog()]);
  setTimeout(loop, document.hidden ? 5 * POLL_MS : POLL_MS);
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) pollPlan(); });
if (location.hash.length > 1) {
  try { select(decodeURIComponent(location.hash.slice(1))); } catch (e) { /* a bad hash */ }
}
loop();
"""

BODY = """
<header>
  <span id="status">connecting</span>
  <h1>Plan <span id="plan-id"></span></h1>
  <div class="path" id="plan-path"></div>
  <div id="counts"></div>
</header>
<main>
  <div class="card">
    <table>
      <thead><tr>
        <th>Guest</th><th>Stage</th><th>Progress</th><th>Throughput</th><th>Time</th>
        <th>Attempts</th><th>Worker</th><th>Error</th>
      </tr></thead>
      <tbody id="guests"></tbody>
    </table>
    <p id="empty" class="muted" hidden>&nbsp;No guests in this plan's state yet.</p>
  </div>
  <div class="card" id="log-card">
    <h2 id="log-title">Log</h2>
    <pre id="log">Click a guest to show its log.</pre>
  </div>
</main>
"""


# The tab's icon, inline: otherwise the browser asks for /favicon.ico, which is not here.
ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='3' fill='%231f6feb'/%3E"
    "%3Crect x='3' y='7' width='7' height='3' fill='white'/%3E%3C/svg%3E"
)


def page() -> str:
    """The whole page, as served at /."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="icon" href="{ICON}">\n<title>vmshift plan</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>{BODY}<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy() -> str:
    """Only this page's own script and style run, and it talks to its own server only."""
    return (
        f"default-src 'none'; script-src {_digest(SCRIPT)}; style-src {_digest(STYLE)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )

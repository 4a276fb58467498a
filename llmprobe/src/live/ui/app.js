// The llmprobe trace page: the recent calls (filterable, refreshed every 2 s) and one call's
// timeline. Reads the agent's JSON API on the same origin (/api/v1/...).
//
// Process and model names come from other processes: every value is inserted as text
// (textContent, createTextNode, setAttribute of numbers), never parsed as HTML.
//
// State lives in the URL hash: #model=..&process=..&provider=..&role=..&status=..&call=SEQ,
// so a view can be linked and reloaded.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 2000;
const FILTERS = ["model", "process", "provider", "role", "status"];

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

function ms(s) {
  const v = num(s);
  if (v === null) return "–";
  const m = v * 1000;
  return m >= 10000 ? (m / 1000).toFixed(2) + " s" : m.toFixed(m < 10 ? 2 : 1) + " ms";
}

function count(v) {
  return num(v) === null ? "–" : String(v);
}

function hashParams() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

function setHash(p) {
  const s = p.toString();
  history.replaceState(null, "", s ? "#" + s : location.pathname + location.search);
}

function statusOf(r) {
  if (r.aborted) return ["aborted", "aborted"];
  if (r.error_type != null) return ["error", "error " + r.error_type];
  return ["ok", "ok"];
}

function clock(rfc3339) {
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return String(rfc3339 || "");
  const p = (n, w) => String(n).padStart(w, "0");
  return `${p(d.getHours(), 2)}:${p(d.getMinutes(), 2)}:${p(d.getSeconds(), 2)}.${p(d.getMilliseconds(), 3)}`;
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store", credentials: "omit" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body && body.error) || r.status + " " + r.statusText);
  return body;
}

// ---- the call list ----

let listBusy = false;

async function refreshList() {
  if (listBusy) return;
  listBusy = true;
  try {
    const p = hashParams();
    const q = new URLSearchParams({ limit: "200" });
    for (const f of FILTERS) if (p.get(f)) q.set(f, p.get(f));
    const [list, fl] = await Promise.all([
      getJson("/api/v1/calls?" + q.toString()),
      getJson("/api/v1/in-flight").catch(() => null),
    ]);
    renderList(Array.isArray(list.calls) ? list.calls : []);
    if (fl && num(fl.total) !== null) $("inflight").textContent = fl.total + " in flight";
    $("state").textContent = "updated " + clock(new Date().toISOString());
  } catch (e) {
    $("state").textContent = "agent unreachable: " + e.message;
  } finally {
    listBusy = false;
  }
}

function renderList(calls) {
  const selected = hashParams().get("call");
  const rows = calls.map((r) => {
    const [cls, label] = statusOf(r);
    const tr = el(
      "tr",
      { "data-seq": Number(r.seq) },
      el("td", {}, clock(r.start_time)),
      el("td", { class: "process" }, r.comm),
      el("td", { class: "role" }, r.role),
      el("td", { class: "model" }, r.response_model || r.request_model || "–"),
      el("td", { class: "provider" }, r.provider),
      el("td", { class: "num" }, ms(r.ttft_s)),
      el("td", { class: "num" }, ms(r.duration_s)),
      el("td", { class: "num" }, count(r.input_tokens) + " / " + count(r.output_tokens)),
      el("td", { class: "st-" + cls }, label),
    );
    if (String(r.seq) === selected) tr.classList.add("selected");
    return tr;
  });
  $("calls").tBodies[0].replaceChildren(...rows);
  $("empty").hidden = calls.length > 0;
}

// ---- one call ----

let shownSeq = null;

async function showCall() {
  const seq = hashParams().get("call");
  for (const tr of $("calls").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.seq === seq);
  }
  if (!seq || !/^[0-9]+$/.test(seq)) {
    $("call").hidden = true;
    shownSeq = null;
    return;
  }
  if (seq === shownSeq) return;
  shownSeq = seq;
  $("call").hidden = false;
  $("call-title").textContent = "call " + seq;
  $("call-facts").replaceChildren();
  $("timeline").replaceChildren();
  try {
    const d = await getJson("/api/v1/calls/" + seq);
    if (shownSeq !== seq) return;
    renderCall(d);
  } catch (e) {
    $("call-title").textContent = "call " + seq + ": " + e.message;
  }
}

function renderCall(d) {
  const r = d.record || {};
  const t = d.timeline || {};
  const [, label] = statusOf(r);
  $("call-title").textContent =
    `call ${d.seq}: ${r.comm} (pid ${r.pid}) → ${r.response_model || r.request_model || "unknown model"}`;
  const facts = [
    ["role", r.role],
    ["provider", r.provider],
    ["api", r.api],
    ["server", r.server_address],
    ["started", r.start_time],
    ["status", label + (r.http_status != null ? ` (HTTP ${r.http_status})` : "")],
    ["finish", r.finish_reason],
    ["TTFT", ms(r.ttft_s)],
    ["duration", ms(r.duration_s)],
    ["TPOT", ms(r.tpot_s)],
    ["TBT p50 / p95", ms(r.tbt_p50_s) + " / " + ms(r.tbt_p95_s)],
    ["tokens in / out", count(r.input_tokens) + " / " + count(r.output_tokens)],
    ["reasoning tokens", r.reasoning_tokens],
    ["chunks", r.chunks],
    ["connect", r.connect_s != null ? ms(r.connect_s) : null],
    ["TLS handshake", r.tls_handshake_s != null ? ms(r.tls_handshake_s) : null],
    ["request upload", r.request_upload_s != null ? ms(r.request_upload_s) : null],
    ["reasoning", r.reasoning_s != null ? ms(r.reasoning_s) : null],
    ["GPU util (mean)", r.gpu_util_mean != null ? r.gpu_util_mean.toFixed(1) + " %" : null],
  ];
  $("call-facts").replaceChildren(
    ...facts
      .filter(([, v]) => v != null && v !== "")
      .map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))),
  );
  $("timeline").replaceChildren(timeline(t));
}

// The per-call timeline, in ms from the call's start (its first request byte). Connection
// setup happened before that start, so it is drawn left of 0.
function timeline(t) {
  const connect = num(t.connect_s);
  const tls = num(t.tls_handshake_s);
  const upload = num(t.request_upload_s);
  const ttft = num(t.ttft_s);
  const reasoning = num(t.reasoning_s);
  const duration = num(t.duration_s) ?? 0;
  const ticks = (Array.isArray(t.ticks_s) ? t.ticks_s : []).map(num).filter((v) => v !== null);
  const gpu = num(t.gpu_util_mean);

  const setup = (connect ?? 0) + (tls ?? 0);
  const lo = -setup * 1000;
  const hi = Math.max(duration, ticks.length ? ticks[ticks.length - 1] : 0, ttft ?? 0) * 1000;
  const W = 1200, L = 110, R = 24;
  const lanes = ["connection", "request", "response"];
  if (gpu !== null) lanes.push("GPU");
  const laneH = 30, top = 24, axisY = top + lanes.length * laneH + 6, H = axisY + 34;
  const span = Math.max(hi - lo, 1);
  const pxPerMs = (W - L - R) / span;
  const x = (m) => L + (m - lo) * pxPerMs;
  const laneY = (name) => top + lanes.indexOf(name) * laneH;
  const x0 = x(0);

  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": "call timeline",
    "data-x0": x0.toFixed(3),
    "data-px-per-ms": pxPerMs.toPrecision(9),
    "data-duration-ms": (duration * 1000).toFixed(3),
  });

  // Axis: ms from the call's start, with about 10 gridlines at a round step.
  const axis = svg("g", { class: "axis" });
  const raw = span / 10;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) || raw;
  for (let m = Math.ceil(lo / step) * step; m <= hi + 1e-9; m += step) {
    const gx = x(m);
    root.append(svg("line", { class: "grid", x1: gx, x2: gx, y1: top, y2: axisY }));
    axis.append(svg("line", { x1: gx, x2: gx, y1: axisY, y2: axisY + 5 }));
    axis.append(svg("text", { x: gx, y: axisY + 18, "text-anchor": "middle" }, `${+m.toFixed(3)}`));
  }
  axis.append(svg("line", { x1: L, x2: W - R, y1: axisY, y2: axisY }));
  axis.append(svg("text", { x: W - R, y: axisY + 32, "text-anchor": "end", class: "lane-label" }, "ms from the first request byte"));
  root.append(axis);
  for (const name of lanes) {
    root.append(svg("text", { class: "lane-label", x: 8, y: laneY(name) + laneH / 2 + 4 }, name));
  }

  const band = (kind, cls, lane, fromMs, toMs, label) => {
    const g = svg("g", {
      class: "marker " + cls,
      "data-kind": kind,
      "data-start-ms": fromMs.toFixed(3),
      "data-end-ms": toMs.toFixed(3),
    });
    const bx = x(fromMs), bw = Math.max(x(toMs) - bx, 1);
    g.append(svg("title", {}, `${label}: ${(toMs - fromMs).toFixed(1)} ms`));
    g.append(svg("rect", { x: bx, y: laneY(lane) + 6, width: bw, height: laneH - 12, rx: 2 }));
    root.append(g);
    return g;
  };
  const line = (kind, cls, atMs, label) => {
    const g = svg("g", { class: "marker " + cls, "data-kind": kind, "data-offset-ms": atMs.toFixed(3) });
    const lx = x(atMs);
    g.append(svg("title", {}, `${label} at ${atMs.toFixed(1)} ms`));
    g.append(svg("line", { x1: lx, x2: lx, y1: top, y2: axisY }));
    const right = lx > W - R - 160;
    g.append(svg("text", { x: right ? lx - 4 : lx + 4, y: top - 8, "text-anchor": right ? "end" : "start" }, label));
    markers.append(g);
  };
  // Bands, then the first-token and end lines, then the ticks on top.
  const markers = svg("g", { class: "markers" });

  // A figure beside its lane's band (bands of a few ms are thin on a long call).
  const note = (lane, atMs, text) =>
    root.append(svg("text", { class: "note", x: x(atMs) + 6, y: laneY(lane) + laneH / 2 + 4 }, text));
  if (connect !== null) band("connect", "conn", "connection", lo, lo + connect * 1000, "TCP connect");
  if (tls !== null) band("tls", "tls", "connection", -tls * 1000, 0, "TLS handshake");
  if (connect !== null || tls !== null) {
    const parts = [];
    if (connect !== null) parts.push("connect " + ms(connect));
    if (tls !== null) parts.push("TLS handshake " + ms(tls));
    note("connection", 0, parts.join(" · ") + " before the request");
  } else {
    note("connection", 0, "reused connection (no setup measured)");
  }
  if (upload !== null) {
    band("request", "request", "request", 0, upload * 1000, "request sent");
    note("request", upload * 1000, "request sent in " + ms(upload));
  }
  if (reasoning !== null && ttft !== null) {
    band("reasoning", "reasoning", "response", ttft * 1000, (ttft + reasoning) * 1000, "reasoning");
  }
  if (gpu !== null) {
    const g = band("gpu", "gpu", "GPU", 0, duration * 1000, `GPU utilization ${gpu.toFixed(1)} % (mean over the call)`);
    g.setAttribute("data-util-percent", gpu.toFixed(1));
    const rect = g.querySelector("rect");
    rect.setAttribute("fill-opacity", (0.1 + 0.6 * Math.min(Math.max(gpu, 0), 100) / 100).toFixed(3));
    g.append(svg("text", { x: x0 + 6, y: laneY("GPU") + laneH / 2 + 4 }, `GPU ${gpu.toFixed(1)} % mean`));
  }

  // Every output event as a tick; hover (or focus) shows its offset.
  const ticksG = svg("g", { class: "ticks" });
  const ty = laneY("response");
  ticks.forEach((s, i) => {
    const m = s * 1000;
    const tx = x(m);
    const gap = i > 0 ? ` (+${(m - ticks[i - 1] * 1000).toFixed(1)} ms)` : "";
    const text = `token ${i + 1} at ${m.toFixed(1)} ms${gap}`;
    const g = svg("g", { class: "tick", "data-offset-ms": m.toFixed(3), "data-index": i, tabindex: -1 });
    g.append(svg("title", {}, text));
    g.append(svg("line", { x1: tx.toFixed(3), x2: tx.toFixed(3), y1: ty + 4, y2: ty + laneH - 4 }));
    g.append(svg("rect", { x: (tx - 3).toFixed(3), y: ty, width: 6, height: laneH }));
    g.addEventListener("mouseenter", () => {
      $("readout").textContent = text;
      g.classList.add("hot");
    });
    g.addEventListener("mouseleave", () => g.classList.remove("hot"));
    ticksG.append(g);
  });
  if (ttft !== null) line("ttft", "ttft", ttft * 1000, `first token ${(ttft * 1000).toFixed(1)} ms`);
  line("end", "end", duration * 1000, "end " + ms(duration));
  if (reasoning !== null && ttft !== null) {
    note("request", ttft * 1000, "reasoning " + ms(reasoning) + " from the first token");
  }
  root.append(markers, ticksG);
  if (t.ticks_dropped > 0) {
    root.append(svg("text", { x: L, y: axisY + 32, class: "lane-label" },
      `${t.ticks_dropped} later tokens not kept`));
  }
  return root;
}

// ---- wiring ----

function syncForm() {
  const p = hashParams();
  const form = $("filters");
  for (const f of FILTERS) {
    const input = form.elements.namedItem(f);
    if (input && document.activeElement !== input) input.value = p.get(f) || "";
  }
}

function onFilter() {
  const p = hashParams();
  const form = $("filters");
  for (const f of FILTERS) {
    const v = form.elements.namedItem(f).value.trim();
    if (v) p.set(f, v);
    else p.delete(f);
  }
  setHash(p);
  refreshList();
}

let filterTimer = 0;
let refreshTimer = 0;

function schedule() {
  clearInterval(refreshTimer);
  if ($("auto").checked) refreshTimer = setInterval(refreshList, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = $("filters");
  form.addEventListener("submit", (e) => e.preventDefault());
  form.addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(onFilter, 300);
  });
  form.addEventListener("change", onFilter);
  $("calls").tBodies[0].addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-seq]");
    if (!tr) return;
    const p = hashParams();
    p.set("call", tr.dataset.seq);
    setHash(p);
    showCall();
  });
  $("auto").addEventListener("change", schedule);
  window.addEventListener("hashchange", () => {
    syncForm();
    refreshList();
    showCall();
  });
  syncForm();
  refreshList();
  showCall();
  schedule();
});

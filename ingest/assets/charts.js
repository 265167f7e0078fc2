// A connection's charts, drawn as inline SVG by this script (no library, nothing from another
// origin; colours come from herald.css classes, so the page's Content-Security-Policy holds).
// Input: the points of GET .../connections/{id}/stats, oldest first.

import { h } from "/assets/common.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 520;          // viewBox width (text is drawn at this scale: keep it near the shown size)
const H = 150;          // viewBox height of one chart
const PAD = { left: 46, right: 10, top: 10, bottom: 24 };

/** An SVG element: s("rect", {x: 1}, child...). */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A readable number of ms: 950 ms, 1.2 s. */
function ms(v) {
  if (v === null || v === undefined) return "-";
  return v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(v < 10_000 ? 1 : 0)} s`;
}

function pct(v) {
  return v === null || v === undefined ? "-" : `${Math.round(v * 1000) / 10}%`;
}

function clock(at) {
  return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** A round axis maximum at or above `v`. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * One chart: a frame with a y axis from 0 to `max` (labelled by `fmt`), time ticks every few
 * hours, and what `draw(x, y, slot)` adds. `x(i)` is the left edge of point i, `slot` its width.
 */
function frame(points, max, fmt, label, draw) {
  const n = Math.max(points.length, 1);
  const slot = (W - PAD.left - PAD.right) / n;
  const x = (i) => PAD.left + i * slot;
  const y = (v) => PAD.top + (H - PAD.top - PAD.bottom) * (1 - Math.min(v, max) / max);
  const grid = [0, 0.5, 1].map((f) => s("g", { class: "grid" },
    s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(max * f), y2: y(max * f) }),
    f === 0.5 ? null : s("text", { x: PAD.left - 6, y: y(max * f) + 4, "text-anchor": "end" }, fmt(max * f))));
  // A tick every 4 hours of 5-minute points (fewer, wider points: every 6th).
  const every = points.length > 60 ? 48 : Math.max(1, Math.ceil(points.length / 6));
  const ticks = points.map((p, i) => (i % every === 0 && i <= points.length - every / 2 ? s("g", { class: "tick" },
    s("line", { x1: x(i), x2: x(i), y1: H - PAD.bottom, y2: H - PAD.bottom + 4 }),
    s("text", { x: x(i), y: H - 6, "text-anchor": "middle" }, clock(p.at))) : null));
  return s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart" },
    s("title", {}, label), grid, ticks, draw(x, y, slot));
}

/** A polyline over the points with a value, broken where there is none. */
function line(points, value, x, y, slot, cls) {
  let d = "";
  let pen = false;
  points.forEach((p, i) => {
    const v = value(p);
    if (v === null || v === undefined) { pen = false; return; }
    d += `${pen ? "L" : "M"}${(x(i) + slot / 2).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  });
  // A lone point gets a dot, so a single busy bucket still shows.
  const dots = points.map((p, i) => {
    const v = value(p);
    const alone = v !== null && v !== undefined
      && [points[i - 1], points[i + 1]].every((q) => !q || value(q) === null || value(q) === undefined);
    return alone ? s("circle", { cx: (x(i) + slot / 2).toFixed(1), cy: y(v).toFixed(1), r: 3, class: cls }) : null;
  });
  return [s("path", { d, class: `${cls} line` }), dots];
}

function figure(title, legend, svg) {
  return h("figure", { class: "chart-panel" },
    h("figcaption", {}, title, " ", legend.map(([cls, text]) => h("span", { class: `key ${cls}` }, text))),
    svg);
}

/**
 * The charts of a connection: deliveries and failures, success rate, p50 and p95 latency, dead
 * letters; with the totals above them. Every point's numbers are in its tooltip.
 */
export function statsView(points, bucketMs) {
  const sum = (f) => points.reduce((a, p) => a + p[f], 0);
  const deliveries = sum("deliveries");
  const failures = sum("failures");
  const dead = sum("dead_letters");
  const worstP95 = points.reduce((a, p) => (p.p95_ms !== null && p.p95_ms > a ? p.p95_ms : a), 0);
  const minutes = Math.round((bucketMs || 300_000) / 60_000);
  const tip = (p) => `${new Date(p.at).toLocaleString()} (${minutes} min): ${p.deliveries} deliveries, ${p.failures} failed, `
    + `success ${pct(p.success_rate)}, p50 ${ms(p.p50_ms)}, p95 ${ms(p.p95_ms)}, ${p.dead_letters} dead letters`;

  const top = niceMax(Math.max(...points.map((p) => p.deliveries), 0));
  const volume = frame(points, top, (v) => Math.round(v), `Deliveries and failures: ${deliveries} deliveries, ${failures} failed`,
    (x, y, slot) => points.map((p, i) => (p.deliveries === 0 ? null : s("g", {},
      s("title", {}, tip(p)),
      s("rect", { x: x(i) + slot * 0.1, width: Math.max(slot * 0.8, 1.5), y: y(p.deliveries), height: y(0) - y(p.deliveries), class: "ok" }),
      p.failures ? s("rect", { x: x(i) + slot * 0.1, width: Math.max(slot * 0.8, 1.5), y: y(p.failures), height: y(0) - y(p.failures), class: "bad" }) : null))));

  const rate = frame(points, 1, (v) => `${Math.round(v * 100)}%`, `Success rate: ${pct(deliveries ? (deliveries - failures) / deliveries : null)} overall`,
    (x, y, slot) => [line(points, (p) => p.success_rate, x, y, slot, "ok"),
      points.map((p, i) => s("rect", { x: x(i), width: slot, y: PAD.top, height: H - PAD.top - PAD.bottom, class: "hit" }, s("title", {}, tip(p))))]);

  const slowest = niceMax(Math.max(...points.map((p) => p.p95_ms || 0), 0));
  const latency = frame(points, slowest, ms, `Latency: p95 up to ${ms(worstP95 || null)}`,
    (x, y, slot) => [line(points, (p) => p.p95_ms, x, y, slot, "p95"), line(points, (p) => p.p50_ms, x, y, slot, "p50"),
      points.map((p, i) => s("rect", { x: x(i), width: slot, y: PAD.top, height: H - PAD.top - PAD.bottom, class: "hit" }, s("title", {}, tip(p))))]);

  const deadTop = niceMax(Math.max(...points.map((p) => p.dead_letters), 0));
  const deadChart = frame(points, deadTop, (v) => Math.round(v), `Dead letters: ${dead}`,
    (x, y, slot) => points.map((p, i) => (p.dead_letters === 0 ? null : s("g", {},
      s("title", {}, tip(p)),
      s("rect", { x: x(i) + slot * 0.1, width: Math.max(slot * 0.8, 1.5), y: y(p.dead_letters), height: y(0) - y(p.dead_letters), class: "bad" })))));

  const total = (label, value, name) => h("div", { class: "total", "data-total": name }, h("span", { class: "muted" }, label), h("strong", {}, value));
  return h("div", { class: "stats" },
    h("div", { class: "totals" },
      total("Deliveries", deliveries, "deliveries"),
      total("Failed", failures, "failures"),
      total("Success rate", pct(deliveries ? (deliveries - failures) / deliveries : null), "success_rate"),
      total("Dead letters", dead, "dead_letters"),
      total("Worst p95", ms(worstP95 || null), "p95")),
    h("div", { class: "chart-grid" },
      figure("Deliveries", [["ok", "delivered"], ["bad", "failed"]], volume),
      figure("Success rate", [["ok", "successful attempts"]], rate),
      figure("Latency", [["p50", "p50"], ["p95", "p95"]], latency),
      figure("Dead letters", [["bad", "dead-lettered"]], deadChart)));
}

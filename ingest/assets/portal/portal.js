// The tenant portal: runs in an iframe of the SaaS's app with a short-lived session token.
//
// Messages to the parent (window.parent.postMessage):
//   {type: "herald:ready", role, expires_at}        the portal has loaded its session
//   {type: "herald:resize", height}                 the content's height in CSS pixels
//   {type: "herald:session-refreshed", expires_at}  the portal refreshed its own token
//   {type: "herald:session-expiring", expires_at}   refreshing failed; the session ends soon
//   {type: "herald:session-expired"}                the session is over; send a new one
// Message from the parent (accepted only from the workspace's frame_ancestors origins):
//   {type: "herald:session", token}                 use this (newly minted) session token

import {
  api, setToken, h, fill, when, badge, showError, clearErrors, field, tabs, deliveriesView, ApiError,
} from "/assets/common.js";
import { statsView } from "/assets/charts.js";

const STORE = "herald.portal.session";
let session = null;
let connections = [];
let rules = [];
let refreshTimer = null;
let pollTimer = null;
let openEvent = null;
let current = "connections";
let statsOf = null;

const $ = (id) => document.getElementById(id);
const editor = () => session && session.role === "editor";

function fatal(message) {
  $("fatal").textContent = message;
  $("fatal").hidden = false;
  $("app").hidden = true;
  resize();
}

// ---- talking to the host page ----------------------------------------------------------

function parentOrigin() {
  const allowed = (session && session.frame_ancestors) || [];
  const ancestor = location.ancestorOrigins && location.ancestorOrigins[0];
  if (ancestor && allowed.includes(ancestor)) return ancestor;
  return allowed.length === 1 ? allowed[0] : "*";
}

function tell(message) {
  if (window.parent === window) return;
  // Nothing secret is ever sent: sizes, roles and times.
  window.parent.postMessage(message, parentOrigin());
}

let lastHeight = 0;
function resize() {
  const height = Math.ceil(document.body.getBoundingClientRect().height);
  if (height !== lastHeight) {
    lastHeight = height;
    tell({ type: "herald:resize", height });
  }
}

window.addEventListener("message", async (e) => {
  if (e.source !== window.parent || !session) return;
  if (!(session.frame_ancestors || []).includes(e.origin)) return;
  const m = e.data;
  if (m && m.type === "herald:session" && typeof m.token === "string") {
    await adopt(m.token);
  }
});

// ---- the session --------------------------------------------------------------------------

function workspaceInPath() {
  const parts = location.pathname.split("/").filter(Boolean);
  return parts[0] === "portal" && parts[1] ? decodeURIComponent(parts[1]) : null;
}

async function adopt(token) {
  setToken(token);
  try {
    const s = await api("GET", "/v1/sessions/current");
    const ws = workspaceInPath();
    if (ws && s.workspace_id !== ws) {
      fatal("This session belongs to another workspace.");
      return false;
    }
    session = s;
    sessionStorage.setItem(STORE, token);
    showSession();
    scheduleRefresh();
    return true;
  } catch (err) {
    sessionStorage.removeItem(STORE);
    fatal(err.status === 401
      ? "This session has expired. Reload the page in your app to open a new one."
      : `The portal could not start: ${err.message}`);
    tell({ type: "herald:session-expired" });
    return false;
  }
}

function showSession() {
  $("session-status").textContent =
    `${session.role === "editor" ? "Editor" : "Viewer"} session, until ${new Date(session.expires_at).toLocaleTimeString()}`;
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const left = session.expires_at - Date.now();
  // Refresh a minute before expiry, or after two thirds of a short session.
  const wait = Math.max(1000, Math.min(left - 60_000, (left * 2) / 3));
  refreshTimer = setTimeout(refresh, wait);
}

async function refresh() {
  try {
    const next = await api("POST", "/v1/sessions/refresh");
    setToken(next.token);
    sessionStorage.setItem(STORE, next.token);
    session = { ...session, expires_at: next.expires_at };
    showSession();
    scheduleRefresh();
    tell({ type: "herald:session-refreshed", expires_at: next.expires_at });
  } catch (err) {
    if (Date.now() < session.expires_at) {
      tell({ type: "herald:session-expiring", expires_at: session.expires_at });
      refreshTimer = setTimeout(() => {
        tell({ type: "herald:session-expired" });
        fatal("This session has expired. Reload the page in your app to open a new one.");
      }, Math.max(0, session.expires_at - Date.now()));
    } else {
      tell({ type: "herald:session-expired" });
      fatal("This session has expired. Reload the page in your app to open a new one.");
    }
  }
}

// Any call that comes back 401 means the session is gone.
async function call(method, path, body, raw) {
  try {
    return await api(method, path, body, raw);
  } catch (err) {
    if (err.status === 401) {
      tell({ type: "herald:session-expired" });
      fatal("This session has expired. Reload the page in your app to open a new one.");
    }
    throw err;
  }
}

// ---- connections --------------------------------------------------------------------------

function nameOf(id) {
  const c = connections.find((x) => x.id === id);
  return c ? c.name : id;
}

async function loadConnections() {
  connections = (await call("GET", "/v1/connections")).data;
}

function headersText(headers) {
  return Object.entries(headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
}

function parseHeaders(text) {
  const out = {};
  for (const [i, line] of text.split("\n").entries()) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at < 1) throw new ApiError(400, { field: "headers", message: `line ${i + 1} must read "Name: value"` });
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function showSecretOnce(title, secret) {
  const box = $("secret-once");
  const code = h("code", { id: "new-secret" }, secret);
  const copy = h("button", { type: "button", onclick: async () => {
    try { await navigator.clipboard.writeText(secret); copy.textContent = "Copied"; } catch (_) { copy.textContent = "Select and copy it"; }
  } }, "Copy");
  const done = h("button", { type: "button", class: "primary", onclick: () => { fill(box); box.hidden = true; resize(); } }, "I have saved it");
  fill(box,
    h("h3", {}, title),
    h("p", {}, "Copy this signing secret now and keep it with your receiver. It is shown this once: it cannot be read again, only rotated."),
    code, copy, " ", done);
  box.hidden = false;
  done.focus();
}

function renderConnections() {
  const list = $("connections-list");
  if (connections.length === 0) {
    fill(list, h("p", { class: "empty" }, "No connection yet."));
  } else {
    fill(list, h("table", { id: "connections-table" },
      h("thead", {}, h("tr", {}, ["Name", "URL", "State", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, connections.map((c) => h("tr", { "data-id": c.id },
        h("td", {}, c.name),
        h("td", { class: "mono" }, c.url),
        h("td", {}, badge(c.enabled ? "enabled" : "disabled")),
        h("td", { class: "actions" },
          h("button", { type: "button", onclick: () => showStats(c).catch((err) => notice(list, err.message, "bad")), "aria-label": `Stats of ${c.name}` }, "Stats"),
          editor() ? [
            h("button", { type: "button", onclick: () => editConnection(c), "aria-label": `Edit ${c.name}` }, "Edit"),
            h("button", { type: "button", onclick: () => rotate(c), "aria-label": `Rotate the secret of ${c.name}` }, "Rotate secret"),
            h("button", { type: "button", onclick: () => toggle(c), "aria-label": `${c.enabled ? "Disable" : "Enable"} ${c.name}` }, c.enabled ? "Disable" : "Enable"),
            confirmButton("Delete", `Delete ${c.name}`, async () => { await call("DELETE", `/v1/connections/${c.id}`); await showConnections(); }),
          ] : null))))));
  }
  if (editor()) fill($("connection-form-slot"), newConnectionForm());
  const open = statsOf && connections.find((c) => c.id === statsOf);
  if (open) showStats(open).catch(() => {});
  else fill($("connection-stats-slot"));
  resize();
}

// The charts of one connection: the last 24 hours in 5-minute points.
async function showStats(c) {
  statsOf = c.id;
  const slot = $("connection-stats-slot");
  const stats = await call("GET", `/v1/connections/${encodeURIComponent(c.id)}/stats`);
  if (statsOf !== c.id) return;
  fill(slot, h("div", { class: "panel", id: "connection-stats", "data-id": c.id, "aria-live": "polite" },
    h("h3", {}, `${c.name}: the last 24 hours`, " ",
      h("button", { type: "button", onclick: () => showStats(c).catch((err) => notice(slot, err.message, "bad")) }, "Refresh"), " ",
      h("button", { type: "button", onclick: () => { statsOf = null; fill(slot); resize(); } }, "Close")),
    statsView(stats.data, stats.bucket_ms)));
  resize();
}

function confirmButton(label, aria, action) {
  const b = h("button", { type: "button", class: "danger", "aria-label": aria }, label);
  let armed = false;
  b.addEventListener("click", async () => {
    if (!armed) { armed = true; b.textContent = `Confirm ${label.toLowerCase()}`; return; }
    b.disabled = true;
    try { await action(); } catch (err) { b.disabled = false; b.textContent = err.message; }
  });
  b.addEventListener("blur", () => { if (armed && !b.disabled) { armed = false; b.textContent = label; } });
  return b;
}

// The delivery order of a connection (see the README, "Ordered delivery").
const ORDERINGS = [
  ["none", "As fast as possible (no order)"],
  ["per_resource", "In order per resource"],
  ["per_connection", "In order for the whole connection"],
];

function orderingSelect(value) {
  return h("select", {}, ORDERINGS.map(([v, label]) => {
    const o = h("option", { value: v }, label);
    if (v === value) o.selected = true;
    return o;
  }));
}

const ORDERING_HINT = "In order: one request at a time per resource (or for the whole connection), in the order the events were accepted; a failing event holds back the later ones until it is delivered or dead-lettered";

function newConnectionForm() {
  const secretMode = h("select", {},
    h("option", { value: "generate" }, "Generate one for me"),
    h("option", { value: "own" }, "Use my own (whsec_...)"));
  const secret = h("input", { type: "password", autocomplete: "off", spellcheck: "false" });
  const secretRow = field("new-connection", "secret", "Your signing secret", secret, "whsec_ followed by base64 of at least 24 bytes");
  secretRow.hidden = true;
  secretMode.addEventListener("change", () => { secretRow.hidden = secretMode.value !== "own"; resize(); });
  const form = h("form", { class: "panel", id: "new-connection", "aria-labelledby": "new-connection-title", novalidate: true },
    h("h3", { id: "new-connection-title" }, "Add a connection"),
    field("new-connection", "name", "Name", h("input", { type: "text", autocomplete: "off" })),
    field("new-connection", "url", "Endpoint URL", h("input", { type: "text", inputmode: "url", autocomplete: "off", placeholder: "https://example.com/webhooks" })),
    field("new-connection", "secret_mode", "Signing secret", secretMode),
    secretRow,
    field("new-connection", "headers", "Custom headers", h("textarea", { rows: 3, placeholder: "X-Team: billing" }), "One per line, as Name: value"),
    field("new-connection", "ordering", "Delivery order", orderingSelect("none"), ORDERING_HINT),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, "Create connection"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const f = form.elements;
    try {
      const body = { name: f.name.value, url: f.url.value.trim() };
      const headers = parseHeaders(f.headers.value);
      if (Object.keys(headers).length) body.headers = headers;
      if (f.secret_mode.value === "own") body.secret = f.secret.value.trim();
      if (f.ordering.value !== "none") body.ordering = f.ordering.value;
      const created = await call("POST", "/v1/connections", body);
      form.reset();
      secretRow.hidden = true;
      await loadConnections();
      renderConnections();
      showSecretOnce(`Connection "${created.name}" created`, created.secret);
      resize();
    } catch (err) { showError(form, err); resize(); }
  });
  return form;
}

function editConnection(c) {
  const form = h("form", { class: "panel", id: "edit-connection", "aria-labelledby": "edit-connection-title", novalidate: true },
    h("h3", { id: "edit-connection-title" }, `Edit ${c.name}`),
    field("edit-connection", "url", "Endpoint URL", h("input", { type: "text", inputmode: "url", value: c.url })),
    field("edit-connection", "headers", "Custom headers", h("textarea", { rows: 3 }), "One per line; a value shown as ******** stays as it is"),
    field("edit-connection", "ordering", "Delivery order", orderingSelect(c.ordering || "none"), ORDERING_HINT),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, "Save"), " ",
    h("button", { type: "button", onclick: () => renderConnections() }, "Cancel"));
  form.elements.headers.value = headersText(c.headers);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try {
      await call("PATCH", `/v1/connections/${c.id}`, { url: form.elements.url.value.trim(), headers: parseHeaders(form.elements.headers.value), ordering: form.elements.ordering.value });
      await showConnections();
    } catch (err) { showError(form, err); resize(); }
  });
  fill($("connection-form-slot"), form);
  form.elements.url.focus();
  resize();
}

async function rotate(c) {
  try {
    const r = await call("POST", `/v1/connections/${c.id}/rotate-secret`);
    showSecretOnce(`New secret for "${c.name}" (the old one keeps working for 24 hours)`, r.secret);
    resize();
  } catch (err) { notice($("connections-list"), err.message, "bad"); }
}

async function toggle(c) {
  try {
    await call("PATCH", `/v1/connections/${c.id}`, { enabled: !c.enabled });
    await showConnections();
  } catch (err) { notice($("connections-list"), err.message, "bad"); }
}

function notice(where, text, kind) {
  where.prepend(h("div", { class: `notice ${kind || ""}`, role: kind === "bad" ? "alert" : "status" }, text));
  resize();
}

async function showConnections() {
  await loadConnections();
  renderConnections();
}

// ---- rules --------------------------------------------------------------------------------

async function loadRules() {
  rules = (await call("GET", "/v1/rules")).data;
}

function connectionSelect() {
  return h("select", {}, connections.map((c) => h("option", { value: c.id }, c.name)));
}

async function showRules() {
  await Promise.all([loadConnections(), loadRules()]);
  const list = $("rules-list");
  if (rules.length === 0) fill(list, h("p", { class: "empty" }, "No rule yet: events go nowhere until a rule sends them to a connection."));
  else fill(list, h("table", { id: "rules-table" },
    h("thead", {}, h("tr", {}, ["Event", "Resource", "Filter", "Connection", "State", editor() ? "Actions" : null].filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rules.map((r) => h("tr", { "data-id": r.id },
      h("td", { class: "mono" }, r.event),
      h("td", { class: "mono" }, r.resource),
      h("td", { class: "filter" }, r.filter ? h("code", {}, JSON.stringify(r.filter)) : "every event"),
      h("td", {}, nameOf(r.connection_id)),
      h("td", {}, badge(r.enabled ? "enabled" : "disabled")),
      editor() ? h("td", { class: "actions" },
        h("button", { type: "button", onclick: async () => { await call("PATCH", `/v1/rules/${r.id}`, { enabled: !r.enabled }); await showRules(); } }, r.enabled ? "Disable" : "Enable"),
        h("button", { type: "button", "aria-label": `Edit filter of the rule for ${r.event}`, onclick: () => { fill($("rule-form-slot"), filterForm(r)); resize(); $("edit-filter-filter").focus(); } }, "Edit filter"),
        confirmButton("Delete", `Delete the rule for ${r.event}`, async () => { await call("DELETE", `/v1/rules/${r.id}`); await showRules(); })) : null)))));
  if (editor()) {
    if (connections.length === 0) fill($("rule-form-slot"), h("p", { class: "notice" }, "Add a connection first."));
    else fill($("rule-form-slot"), newRuleForm());
  }
  resize();
}

function newRuleForm() {
  const form = h("form", { class: "panel", id: "new-rule", "aria-labelledby": "new-rule-title", novalidate: true },
    h("h3", { id: "new-rule-title" }, "Add a rule"),
    h("div", { class: "inline" },
      field("new-rule", "event", "Event type", h("input", { type: "text", value: "*" }), "order.completed, order.* or *"),
      field("new-rule", "resource", "Resource", h("input", { type: "text", value: "*" }), "order or *"),
      field("new-rule", "connection_id", "Send to", connectionSelect())),
    field("new-rule", "filter", "Filter (JSON, optional)", filterInput(null), FILTER_HINT),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, "Create rule"));
  watchFilter(form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const f = form.elements;
    try {
      const body = { event: f.event.value.trim(), resource: f.resource.value.trim(), connection_id: f.connection_id.value, action: "send_webhook" };
      const filter = parseFilter(f.filter.value);
      if (filter !== null) body.filter = filter;
      await call("POST", "/v1/rules", body);
      await showRules();
    } catch (err) { showError(form, err); resize(); }
  });
  return form;
}

// A rule's filter is edited as JSON; the server checks it and names the part at fault
// (`filter.payload.plan.$in`), which shows under the text area.
const FILTER_HINT = 'Only events that pass it match, e.g. {"payload.plan": {"$in": ["pro", "team"]}, "payload.total_cents": {"$gte": 1000}}. Empty: every event.';

function filterInput(filter) {
  const input = h("textarea", { rows: 4, spellcheck: "false" });
  input.value = filter ? JSON.stringify(filter, null, 2) : "";
  return input;
}

/** The filter typed in a form: `null` when empty, else its JSON (a 400-like error if not JSON). */
function parseFilter(text) {
  const t = text.trim();
  if (!t) return null;
  try { return JSON.parse(t); } catch (e) { throw new ApiError(400, { field: "filter", message: `not valid JSON: ${e.message}` }); }
}

/** Says while typing when the filter is not JSON yet. */
function watchFilter(form) {
  const input = form.elements.filter;
  input.addEventListener("input", () => {
    const slot = form.querySelector('[data-error-for="filter"]');
    try { parseFilter(input.value); slot.textContent = ""; input.removeAttribute("aria-invalid"); } catch (err) { slot.textContent = err.message; }
    resize();
  });
}

function filterForm(rule) {
  const form = h("form", { class: "panel", id: "edit-filter", "aria-labelledby": "edit-filter-title", novalidate: true },
    h("h3", { id: "edit-filter-title" }, `Filter of the rule for ${rule.event} / ${rule.resource} → ${nameOf(rule.connection_id)}`),
    field("edit-filter", "filter", "Filter (JSON)", filterInput(rule.filter), FILTER_HINT),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }),
    h("div", { class: "inline" },
      h("button", { type: "submit", class: "primary" }, "Save filter"),
      h("button", { type: "button", onclick: () => showRules() }, "Cancel")));
  watchFilter(form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try {
      await call("PATCH", `/v1/rules/${rule.id}`, { filter: parseFilter(form.elements.filter.value) });
      await showRules();
    } catch (err) { showError(form, err); resize(); }
  });
  return form;
}

// ---- test events --------------------------------------------------------------------------

async function showTest() {
  await Promise.all([loadConnections(), loadRules()]);
  const slot = $("test-slot");
  if (rules.length === 0) { fill(slot, h("p", { class: "notice" }, "Add a rule first: a test event goes through one rule to its connection.")); resize(); return; }
  const payload = h("textarea", { rows: 8, spellcheck: "false" });
  payload.value = JSON.stringify({ hello: "world", sent_from: "portal" }, null, 2);
  const form = h("form", { class: "panel", id: "test-event", "aria-labelledby": "test-event-title", novalidate: true },
    h("h3", { id: "test-event-title" }, "Test event"),
    field("test-event", "rule", "Rule", h("select", {}, rules.map((r) => h("option", { value: r.id }, `${r.event} / ${r.resource} → ${nameOf(r.connection_id)}`)))),
    field("test-event", "body", "Payload (JSON)", payload, "Sent as the event's payload, signed like any other delivery"),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, "Send test event"),
    h("div", { id: "test-result", "aria-live": "polite" }));
  payload.addEventListener("input", () => {
    clearErrors(form);
    try { JSON.parse(payload.value); } catch (e) { showError(form, { field: "body", message: `not valid JSON yet: ${e.message}` }); payload.focus(); }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try {
      try { JSON.parse(payload.value); } catch (e2) { throw new ApiError(400, { field: "body", message: `the payload is not valid JSON: ${e2.message}` }); }
      const sent = await call("POST", `/v1/rules/${form.elements.rule.value}/test`, undefined, payload.value);
      const see = h("button", { type: "button", onclick: () => { openEvent = sent.uuid; show("history"); } }, "See it in the history");
      fill($("test-result"), sent.filtered
        ? h("p", { class: "notice", id: "test-filtered" }, "The rule's filter rejected test event ", h("code", {}, sent.uuid),
          " (at ", h("code", {}, sent.rejected_by), "): it was recorded, not sent. ", see)
        : h("p", { class: "notice ok" }, "Sent test event ", h("code", {}, sent.uuid), ". ", see));
      resize();
    } catch (err) { showError(form, err); resize(); }
  });
  fill(slot, form);
  resize();
}

// ---- history ------------------------------------------------------------------------------

async function showHistory() {
  await loadConnections();
  const slot = $("history-slot");
  if (!slot.firstChild) {
    const status = h("select", { id: "history-status", name: "status" },
      h("option", { value: "" }, "All"),
      ["delivered", "pending", "retrying", "dead", "skipped", "no_match"].map((s) => h("option", { value: s }, s.replace("_", " "))));
    status.addEventListener("change", () => renderHistory());
    fill(slot,
      h("div", { class: "inline" }, h("label", { for: "history-status" }, "Status "), status, " ",
        h("button", { type: "button", onclick: () => renderHistory() }, "Refresh")),
      h("div", { id: "history-list", "aria-live": "polite" }),
      h("div", { id: "event-detail" }));
  }
  await renderHistory();
  clearInterval(pollTimer);
  pollTimer = setInterval(() => { if (current === "history") renderHistory().catch(() => {}); }, 2000);
}

async function renderHistory() {
  const status = $("history-status").value;
  const q = status ? `?status=${encodeURIComponent(status)}&limit=50` : "?limit=50";
  const events = (await call("GET", `/v1/events${q}`)).data;
  const list = $("history-list");
  if (events.length === 0) fill(list, h("p", { class: "empty" }, "No event yet."));
  else fill(list, h("table", { id: "history-table" },
    h("thead", {}, h("tr", {}, ["Created", "Event", "Status", "Event id", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, events.map((ev) => h("tr", { "data-uuid": ev.uuid, "data-status": ev.status },
      h("td", {}, when(ev.time_created)),
      h("td", { class: "mono" }, ev.event),
      h("td", {}, badge(ev.status)),
      h("td", { class: "mono" }, ev.uuid),
      h("td", { class: "actions" }, h("button", { type: "button", onclick: () => { openEvent = ev.uuid; renderDetail(); }, "aria-label": `Attempts of ${ev.uuid}` }, "Attempts")))))));
  await renderDetail();
  resize();
}

async function renderDetail() {
  const slot = $("event-detail");
  if (!openEvent) { fill(slot); return; }
  const ev = await call("GET", `/v1/events/${encodeURIComponent(openEvent)}`);
  const names = Object.fromEntries(connections.map((c) => [c.id, c.name]));
  fill(slot, h("div", { class: "panel", id: "event", "data-status": ev.status },
    h("h3", {}, ev.event, " ", badge(ev.status)),
    h("p", { class: "mono" }, ev.uuid, " · ", when(ev.time_created)),
    deliveriesView(ev, names)));
  resize();
}

// ---- dead letters -------------------------------------------------------------------------

async function showDead() {
  await loadConnections();
  const slot = $("dead-slot");
  const data = (await call("GET", "/v1/dead-letters?limit=100")).data;
  const items = [];
  if (editor() && data.length > 0) {
    const pick = h("select", { id: "replay-all-connection" }, h("option", { value: "" }, "every connection"), connections.map((c) => h("option", { value: c.id }, c.name)));
    items.push(h("div", { class: "inline panel" }, h("label", { for: "replay-all-connection" }, "Replay all for "), pick, " ",
      h("button", { type: "button", onclick: async () => {
        const body = pick.value ? { connection_id: pick.value } : {};
        const r = await call("POST", "/v1/dead-letters/replay", body);
        notice(slot, r.status === "accepted"
          ? `Replay ${r.replay_id} started in the background: ${r.count} dead letter(s) to look at.`
          : `${r.count} dead letter(s) sent again.`, "ok");
        setTimeout(() => showDead(), 800);
      } }, "Replay all")));
  }
  if (data.length === 0) items.push(h("p", { class: "empty" }, "No dead letter. Deliveries that run out of attempts land here."));
  else items.push(h("table", { id: "dead-table" },
    h("thead", {}, h("tr", {}, ["Dead since", "Event", "Connection", "Reason", "Attempts", editor() ? "Actions" : null].filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, data.map((d) => h("tr", { "data-id": d.id },
      h("td", {}, when(d.dead_at)),
      h("td", { class: "mono" }, d.event.event, " ", d.event.uuid),
      h("td", {}, nameOf(d.connection_id)),
      h("td", {}, d.reason),
      h("td", {}, d.attempts.length),
      editor() ? h("td", { class: "actions" },
        h("button", { type: "button", onclick: async () => { await call("POST", `/v1/dead-letters/${encodeURIComponent(d.id)}/replay`); notice(slot, `Replayed ${d.event.uuid}.`, "ok"); setTimeout(() => showDead(), 800); } }, "Replay"),
        confirmButton("Discard", `Discard ${d.id}`, async () => { await call("DELETE", `/v1/dead-letters/${encodeURIComponent(d.id)}`); await showDead(); })) : null)))));
  fill(slot, ...items);
  resize();
}

// ---- start ---------------------------------------------------------------------------------

const pages = { connections: showConnections, rules: showRules, test: showTest, history: showHistory, dead: showDead };
let show = () => {};

async function start() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("session");
  if (fromHash) history.replaceState(null, "", location.pathname + location.search);
  const token = fromHash || sessionStorage.getItem(STORE);
  if (!token) {
    fatal("This page needs a session: open it from the webhook settings of the app you use.");
    return;
  }
  if (!(await adopt(token))) return;
  for (const el of document.querySelectorAll('[data-needs="editor"]')) el.hidden = !editor();
  $("app").hidden = false;
  show = tabs($("tabs"), async (name) => {
    current = name;
    try { await pages[name](); } catch (err) { if (err.status !== 401) notice($(`panel-${name}`), err.message, "bad"); }
  });
  new ResizeObserver(resize).observe(document.body);
  show("connections");
  tell({ type: "herald:ready", role: session.role, expires_at: session.expires_at });
  resize();
}

start();

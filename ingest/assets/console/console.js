// The support console: the operator's admin token, across workspaces. The token lives in this
// tab's sessionStorage only, never in a URL.

import {
  api, setToken, h, fill, when, badge, showError, clearErrors, field, tabs, deliveriesView, attemptsTable, ApiError,
} from "/assets/common.js";
import { statsView } from "/assets/charts.js";

const STORE = "herald.console.admin";
const $ = (id) => document.getElementById(id);
let workspaces = [];
const connectionsOf = {};

function notice(where, text, kind) {
  where.prepend(h("div", { class: `notice ${kind || ""}`, role: kind === "bad" ? "alert" : "status" }, text));
}

async function call(method, path, body) {
  try {
    return await api(method, path, body);
  } catch (err) {
    if (err.status === 401) signOut("The admin token was refused.");
    throw err;
  }
}

function signOut(why) {
  sessionStorage.removeItem(STORE);
  setToken(null);
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  const form = $("login-form");
  if (why) showError(form, { field: "token", message: why });
}

async function loadWorkspaces() {
  workspaces = [];
  let cursor = "";
  do {
    const page = await call("GET", `/v1/workspaces?limit=250${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    workspaces.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && workspaces.length < 5000);
}

async function connections(ws) {
  if (!ws) return [];
  if (!connectionsOf[ws]) connectionsOf[ws] = (await call("GET", `/v1/admin/workspaces/${encodeURIComponent(ws)}/connections`)).data;
  return connectionsOf[ws];
}

function workspaceSelect(withAll) {
  return h("select", {},
    withAll ? h("option", { value: "" }, "choose a workspace") : null,
    workspaces.map((w) => h("option", { value: w.id }, `${w.name} (${w.id})`)));
}

async function fillConnections(select, ws, allLabel) {
  const list = await connections(ws);
  fill(select, h("option", { value: "" }, allLabel), list.map((c) => h("option", { value: c.id }, `${c.name} (${c.id})`)));
}

function localToMs(value) {
  if (!value) return null;
  const t = new Date(value).getTime();
  return Number.isNaN(t) ? NaN : t;
}

// ---- events -------------------------------------------------------------------------------

function eventsPage() {
  const slot = $("events-slot");
  const byId = h("form", { class: "panel", id: "find-event", "aria-labelledby": "find-event-title", novalidate: true },
    h("h3", { id: "find-event-title" }, "By event id"),
    h("div", { class: "inline" },
      field("find-event", "uuid", "Event id", h("input", { type: "text", autocomplete: "off", placeholder: "evt_..." })),
      h("button", { type: "submit", class: "primary" }, "Find")),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }));
  const ws = workspaceSelect(true);
  const conn = h("select", {}, h("option", { value: "" }, "any connection"));
  ws.addEventListener("change", () => fillConnections(conn, ws.value, "any connection").catch(() => {}));
  const status = h("select", {}, h("option", { value: "" }, "any status"),
    ["delivered", "pending", "retrying", "dead", "skipped", "no_match"].map((s) => h("option", { value: s }, s.replace("_", " "))));
  const search = h("form", { class: "panel", id: "search-events", "aria-labelledby": "search-events-title", novalidate: true },
    h("h3", { id: "search-events-title" }, "By workspace, connection, status and time"),
    h("div", { class: "inline" },
      field("search-events", "workspace_id", "Workspace", ws),
      field("search-events", "connection_id", "Connection", conn),
      field("search-events", "status", "Status", status),
      field("search-events", "since", "From", h("input", { type: "datetime-local" })),
      field("search-events", "until", "To", h("input", { type: "datetime-local" })),
      h("button", { type: "submit", class: "primary" }, "Search")),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }));
  const results = h("div", { id: "event-results", "aria-live": "polite" });
  const detail = h("div", { id: "event-detail" });

  async function open(uuid) {
    const ev = await call("GET", `/v1/admin/events/${encodeURIComponent(uuid)}`);
    const names = Object.fromEntries((await connections(ev.workspace_id)).map((c) => [c.id, c.name]));
    fill(detail, h("div", { class: "panel", id: "event", "data-status": ev.status },
      h("h3", {}, ev.event, " ", badge(ev.status)),
      h("p", { class: "mono" }, ev.uuid, " · workspace ", ev.workspace_id, " · ", when(ev.time_created)),
      h("details", {}, h("summary", {}, "Payload"), h("pre", { class: "excerpt" }, JSON.stringify(ev.payload, null, 2))),
      deliveriesView(ev, names)));
    detail.querySelector("h3").tabIndex = -1;
    detail.querySelector("h3").focus();
  }

  byId.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(byId);
    try {
      const uuid = byId.elements.uuid.value.trim();
      if (!uuid) throw new ApiError(400, { field: "uuid", message: "enter an event id" });
      await open(uuid);
    } catch (err) {
      showError(byId, err.code === "not_found" ? { field: "uuid", message: "no event with this id in any workspace" } : err);
    }
  });
  search.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(search);
    const f = search.elements;
    try {
      if (!f.workspace_id.value) throw new ApiError(400, { field: "workspace_id", message: "choose a workspace" });
      const q = new URLSearchParams({ workspace_id: f.workspace_id.value, limit: "50" });
      if (f.connection_id.value) q.set("connection_id", f.connection_id.value);
      if (f.status.value) q.set("status", f.status.value);
      for (const k of ["since", "until"]) {
        const ms = localToMs(f[k].value);
        if (Number.isNaN(ms)) throw new ApiError(400, { field: k, message: "is not a date and time" });
        if (ms !== null) q.set(k, String(ms));
      }
      const data = (await call("GET", `/v1/admin/events?${q}`)).data;
      if (data.length === 0) fill(results, h("p", { class: "empty" }, "No event matches."));
      else fill(results, h("table", { id: "events-table" },
        h("thead", {}, h("tr", {}, ["Created", "Event", "Status", "Event id", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, data.map((ev) => h("tr", { "data-uuid": ev.uuid },
          h("td", {}, when(ev.time_created)),
          h("td", { class: "mono" }, ev.event),
          h("td", {}, badge(ev.status)),
          h("td", { class: "mono" }, ev.uuid),
          h("td", { class: "actions" }, h("button", { type: "button", onclick: () => open(ev.uuid) }, "Attempts")))))));
    } catch (err) { showError(search, err); }
  });
  fill(slot, byId, search, results, detail);
}

// ---- dead letters -------------------------------------------------------------------------

function deadPage() {
  const slot = $("dead-slot");
  const ws = workspaceSelect(true);
  const conn = h("select", {}, h("option", { value: "" }, "any connection"));
  ws.addEventListener("change", () => fillConnections(conn, ws.value, "any connection").catch(() => {}));
  const event = h("input", { type: "text", placeholder: "order.completed" });
  const form = h("form", { class: "panel", id: "dead-filter", "aria-labelledby": "dead-filter-title", novalidate: true },
    h("h3", { id: "dead-filter-title" }, "Filter"),
    h("div", { class: "inline" },
      field("dead-filter", "workspace_id", "Workspace", ws),
      field("dead-filter", "connection_id", "Connection", conn),
      field("dead-filter", "event", "Event type", event),
      h("button", { type: "submit", class: "primary" }, "List"),
      h("button", { type: "button", id: "replay-matching" }, "Replay all that match")),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }));
  const list = h("div", { id: "dead-list", "aria-live": "polite" });
  const detail = h("div", { id: "dead-detail" });

  const filter = () => {
    const f = form.elements;
    if (!f.workspace_id.value) throw new ApiError(400, { field: "workspace_id", message: "choose a workspace" });
    const body = {};
    if (f.connection_id.value) body.connection_id = f.connection_id.value;
    if (f.event.value.trim()) body.event = f.event.value.trim();
    return { ws: f.workspace_id.value, body };
  };
  const base = (w) => `/v1/admin/workspaces/${encodeURIComponent(w)}/dead-letters`;

  async function render() {
    const { ws: w, body } = filter();
    const q = new URLSearchParams({ ...body, limit: "100" });
    const data = (await call("GET", `${base(w)}?${q}`)).data;
    const names = Object.fromEntries((await connections(w)).map((c) => [c.id, c.name]));
    if (data.length === 0) { fill(list, h("p", { class: "empty" }, "No dead letter matches.")); return; }
    fill(list, h("table", { id: "dead-table" },
      h("thead", {}, h("tr", {}, ["Dead since", "Event", "Connection", "Reason", "Attempts", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, data.map((d) => h("tr", { "data-id": d.id, "data-event": d.event.uuid },
        h("td", {}, when(d.dead_at)),
        h("td", { class: "mono" }, d.event.event, " ", d.event.uuid),
        h("td", {}, names[d.connection_id] || d.connection_id),
        h("td", {}, d.reason),
        h("td", {}, d.attempts.length),
        h("td", { class: "actions" },
          h("button", { type: "button", onclick: () => fill(detail, h("div", { class: "panel" }, h("h3", {}, "Attempts of ", d.id), attemptsTable(d.attempts))) }, "Attempts"),
          h("button", { type: "button", "aria-label": `Replay ${d.event.uuid}`, onclick: async () => {
            await call("POST", `${base(w)}/${encodeURIComponent(d.id)}/replay`);
            notice(list, `Replayed ${d.event.uuid}: it is being delivered again.`, "ok");
            setTimeout(() => render().catch(() => {}), 1000);
          } }, "Replay"),
          h("button", { type: "button", class: "danger", "aria-label": `Discard ${d.event.uuid}`, onclick: async () => {
            await call("DELETE", `${base(w)}/${encodeURIComponent(d.id)}`);
            await render();
          } }, "Discard")))))));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try { await render(); } catch (err) { showError(form, err); }
  });
  form.querySelector("#replay-matching").addEventListener("click", async () => {
    clearErrors(form);
    try {
      const { ws: w, body } = filter();
      const r = await call("POST", `${base(w)}/replay`, body);
      notice(list, r.status === "accepted"
        ? `Replay ${r.replay_id} started in the background: ${r.count} dead letter(s) to look at.`
        : `${r.count} dead letter(s) sent again.`, "ok");
      setTimeout(() => render().catch(() => {}), 1000);
    } catch (err) { showError(form, err); }
  });
  fill(slot, form, list, detail);
}

// ---- health -------------------------------------------------------------------------------

function healthPage() {
  const slot = $("health-slot");
  const ws = workspaceSelect(true);
  const form = h("form", { class: "panel", id: "health-filter", "aria-labelledby": "health-filter-title", novalidate: true },
    h("h3", { id: "health-filter-title" }, "Connections of a workspace"),
    h("div", { class: "inline" }, field("health-filter", "workspace_id", "Workspace", ws), h("button", { type: "submit", class: "primary" }, "Show")),
    h("p", { class: "error", "data-error-for": "form", role: "alert" }));
  const list = h("div", { id: "health-list", "aria-live": "polite" });
  const detail = h("div", { id: "health-detail" });
  // The charts of one connection of the workspace: the last 24 hours in 5-minute points.
  const charts = async (wsId, c) => {
    const stats = await call("GET", `/v1/admin/workspaces/${encodeURIComponent(wsId)}/connections/${encodeURIComponent(c.id)}/stats`);
    fill(detail, h("div", { class: "panel", id: "connection-stats", "data-id": c.id },
      h("h3", {}, `${c.name}: the last 24 hours`),
      statsView(stats.data, stats.bucket_ms)));
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try {
      if (!ws.value) throw new ApiError(400, { field: "workspace_id", message: "choose a workspace" });
      delete connectionsOf[ws.value];
      const conns = await connections(ws.value);
      const rows = await Promise.all(conns.map(async (c) => [c, await call("GET", `/v1/admin/workspaces/${encodeURIComponent(ws.value)}/connections/${encodeURIComponent(c.id)}/health`)]));
      fill(detail);
      if (rows.length === 0) { fill(list, h("p", { class: "empty" }, "This workspace has no connection.")); return; }
      const wsId = ws.value;
      fill(list, h("table", { id: "health-table" },
        h("thead", {}, h("tr", {}, ["Connection", "URL", "State", "Breaker", "Success rate", "Attempts", "Last attempt", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map(([c, hl]) => h("tr", { "data-id": c.id },
          h("td", {}, c.name),
          h("td", { class: "mono" }, c.url),
          h("td", {}, badge(c.enabled ? "enabled" : "disabled")),
          h("td", {}, badge(hl.breaker)),
          h("td", {}, hl.success_rate === null ? "-" : `${Math.round(hl.success_rate * 1000) / 10}%`),
          h("td", {}, `${hl.succeeded} / ${hl.attempts}`),
          h("td", {}, when(hl.last_attempt_at)),
          h("td", { class: "actions" }, h("button", { type: "button", "aria-label": `Charts of ${c.name}`,
            onclick: () => charts(wsId, c).catch((err) => notice(detail, err.message, "bad")) }, "Charts")))))));
    } catch (err) { showError(form, err); }
  });
  fill(slot, form, list, detail);
}

// ---- start ---------------------------------------------------------------------------------

async function signIn(token) {
  setToken(token);
  await loadWorkspaces();
  sessionStorage.setItem(STORE, token);
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  eventsPage();
  deadPage();
  healthPage();
  tabs($("tabs"), () => {})("events");
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  clearErrors(form);
  const token = form.elements.token.value.trim();
  if (!token) { showError(form, { field: "token", message: "enter the admin token" }); return; }
  try {
    await signIn(token);
    form.reset();
  } catch (err) {
    setToken(null);
    showError(form, { field: "token", message: err.status === 401 || err.status === 403 ? "this is not the admin token" : err.message });
  }
});
$("sign-out").addEventListener("click", () => signOut(null));

const saved = sessionStorage.getItem(STORE);
if (saved) signIn(saved).catch(() => signOut("Sign in again."));
else $("login").hidden = false;

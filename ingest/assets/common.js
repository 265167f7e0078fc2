// Shared by the portal and the console: API calls, element building (text only, never HTML
// strings), errors shown next to their field, tabs that work from the keyboard.

let bearer = null;

/** Sets the token every API call carries. */
export function setToken(token) {
  bearer = token;
}

/** An API error in the API's shape: {code, message, field}. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : `HTTP ${status}`);
    this.status = status;
    this.code = error && error.code;
    this.field = error && error.field;
  }
}

/** Calls the API; resolves with the JSON body, rejects with an ApiError. */
export async function api(method, path, body, raw) {
  const init = { method, headers: {} };
  if (bearer) init.headers.authorization = `Bearer ${bearer}`;
  if (raw !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = raw;
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { code: "network", message: "Herald could not be reached; try again." });
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!res.ok) throw new ApiError(res.status, json && json.error ? json.error : null);
  return json;
}

/** Builds an element: h("td", {class: "x", onclick: f}, "text", child). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
}

/** Unix milliseconds as local time. */
export function when(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toLocaleString();
}

/** A status word as a coloured badge. */
export function badge(word) {
  return h("span", { class: `badge ${word}` }, String(word).replace("_", " "));
}

/**
 * Shows an API error next to its field inside `form`: the element with
 * `data-error-for="<field>"` (or the field's first part, for `headers.x-team`), else the form's
 * `data-error-for="form"` slot. The field's input gets aria-invalid and the focus.
 */
export function showError(form, err) {
  clearErrors(form);
  const field = err && err.field ? String(err.field) : null;
  const candidates = field ? [field, field.split(/[.[]/)[0]] : [];
  let slot = null;
  let name = null;
  for (const c of candidates) {
    slot = form.querySelector(`[data-error-for="${CSS.escape(c)}"]`);
    if (slot) { name = c; break; }
  }
  if (!slot) slot = form.querySelector('[data-error-for="form"]');
  const message = field && name !== field && field !== "body" ? `${field}: ${err.message}` : err.message;
  if (slot) slot.textContent = message;
  const input = name ? form.querySelector(`[name="${CSS.escape(name)}"]`) : null;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    if (slot && slot.id) input.setAttribute("aria-describedby", slot.id);
    input.focus();
  }
}

/** Clears the errors shown in a form. */
export function clearErrors(form) {
  for (const s of form.querySelectorAll("[data-error-for]")) s.textContent = "";
  for (const i of form.querySelectorAll('[aria-invalid="true"]')) i.removeAttribute("aria-invalid");
}

/** A labelled input with its error slot: the building block of every form. */
export function field(form, name, label, input, hint) {
  const id = `${form}-${name}`;
  input.id = id;
  input.name = name;
  return h("div", { class: "row" },
    h("label", { for: id }, label),
    input,
    hint ? h("span", { class: "hint" }, hint) : null,
    h("p", { class: "error", id: `${id}-error`, "data-error-for": name, role: "alert" }));
}

/**
 * Tabs: buttons with role="tab" in `nav`, panels by aria-controls. Arrow keys move between
 * tabs; `onShow(name)` runs when a tab is shown.
 */
export function tabs(nav, onShow) {
  const all = [...nav.querySelectorAll('[role="tab"]')];
  const show = (tab, focus) => {
    for (const t of all) {
      const on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    onShow(tab.dataset.tab);
  };
  for (const t of all) {
    t.addEventListener("click", () => show(t, false));
    t.addEventListener("keydown", (e) => {
      const i = all.indexOf(t);
      if (e.key === "ArrowRight") { e.preventDefault(); show(all[(i + 1) % all.length], true); }
      if (e.key === "ArrowLeft") { e.preventDefault(); show(all[(i - 1 + all.length) % all.length], true); }
      if (e.key === "Home") { e.preventDefault(); show(all[0], true); }
      if (e.key === "End") { e.preventDefault(); show(all[all.length - 1], true); }
    });
  }
  return (name) => show(all.find((t) => t.dataset.tab === name) || all[0], false);
}

/** The attempts of a delivery as a table: time, status, latency, error, response excerpt. */
export function attemptsTable(attempts) {
  if (!attempts || attempts.length === 0) return h("p", { class: "empty" }, "No attempt yet.");
  return h("table", {},
    h("thead", {}, h("tr", {}, ["#", "At", "Status", "Latency", "Error", "Response"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, attempts.map((a, i) => h("tr", {},
      h("td", {}, i + 1),
      h("td", {}, when(a.at)),
      h("td", {}, a.status_code === null || a.status_code === undefined ? "-" : a.status_code),
      h("td", {}, `${a.latency_ms} ms`),
      h("td", {}, a.error || ""),
      h("td", {}, h("pre", { class: "excerpt" }, a.response_excerpt || ""))))));
}

/** Deliveries of an event, each with its attempts. */
export function deliveriesView(record, names) {
  if (!record.deliveries || record.deliveries.length === 0) {
    return h("p", { class: "empty" }, record.status === "no_match" ? "No rule matched this event." : "Not routed yet.");
  }
  return record.deliveries.map((d) => h("div", { class: "panel delivery", "data-connection": d.connection_id },
    h("h3", {}, "To ", (names && names[d.connection_id]) || d.connection_id, " ", badge(d.status)),
    d.next_attempt_at ? h("p", { class: "muted" }, "Next attempt: ", when(d.next_attempt_at)) : null,
    attemptsTable(d.attempts)));
}

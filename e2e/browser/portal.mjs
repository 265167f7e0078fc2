// The portal and the console as people use them, in headless Chromium.
//
// A host page (the SaaS's own app, on another port, so the iframe is cross-origin) mints a
// session from its backend and embeds the portal. In the portal: a connection to a local
// receiver, a rule, a test event, and the history showing it delivered. In the console: a dead
// letter found and replayed, then seen delivered; each place's connection charts. Screenshots of
// every page go to SCREENSHOTS.
//
// Environment: HERALD_URL, HERALD_SECRET_KEY (the portal's workspace), HERALD_ADMIN_TOKEN,
// RECEIVER_URL (answers 200), DEAD_WORKSPACE and DEAD_EVENT (a dead letter to replay),
// SCREENSHOTS (a folder).

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const HERALD = env("HERALD_URL");
const SK = env("HERALD_SECRET_KEY");
const ADMIN = env("HERALD_ADMIN_TOKEN");
const RECEIVER = env("RECEIVER_URL");
const DEAD_WS = env("DEAD_WORKSPACE");
const DEAD_EVENT = env("DEAD_EVENT");
const SHOTS = env("SCREENSHOTS");
fs.mkdirSync(SHOTS, { recursive: true });

const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`);

async function herald(method, p, token, body) {
  const res = await fetch(`${HERALD}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

// ---- the SaaS's app: mints a session on its backend, embeds the portal ----------------------

const hostPage = (src) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme - Webhook settings</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #eef1f6; }
  .bar { background: #1d2330; color: #fff; padding: .8rem 1.2rem; font-weight: 600; }
  .wrap { max-width: 1100px; margin: 1.2rem auto; background: #fff; border-radius: 8px; padding: 1rem 1.2rem; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  iframe { width: 100%; border: 0; height: 400px; display: block; }
</style></head>
<body>
  <div class="bar">Acme Cloud · Settings · Webhooks</div>
  <div class="wrap">
    <iframe id="herald" title="Webhook settings" src="${src}"></iframe>
  </div>
  <script>
    window.heraldMessages = [];
    const frame = document.getElementById("herald");
    const herald = new URL(frame.src).origin;
    window.addEventListener("message", (e) => {
      if (e.origin !== herald || e.source !== frame.contentWindow) return;
      window.heraldMessages.push(e.data);
      if (e.data.type === "herald:resize") frame.style.height = Math.max(200, e.data.height) + "px";
    });
  </script>
</body></html>`;

const host = http.createServer(async (req, res) => {
  try {
    if (req.url === "/favicon.ico") { res.writeHead(204).end(); return; }
    if (req.url !== "/" && req.url !== "/viewer") { res.writeHead(404).end(); return; }
    const role = req.url === "/viewer" ? "viewer" : "editor";
    const s = await herald("POST", "/v1/sessions", SK, { role });
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(hostPage(`${HERALD}${s.url}`));
  } catch (e) {
    res.writeHead(500).end(String(e));
  }
});
await new Promise((r) => host.listen(0, "127.0.0.1", r));
const HOST = `http://127.0.0.1:${host.address().port}`;
await herald("PATCH", "/v1/workspace/settings", SK, { frame_ancestors: [HOST] });
step(`host page at ${HOST}, portal framed from ${HERALD}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
const expect = (ok, what) => { if (!ok) throw new Error(`expected: ${what}`); };

try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  // Refused requests (the 400 this script provokes) are logged too; anything else is a fault,
  // a Content-Security-Policy violation above all.
  const watch = (p) => p.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
  });
  watch(page);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  const shot = async (p, name) => {
    await p.waitForTimeout(150);
    await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
    step(`screenshot ${name}.png`);
  };

  // ---- portal -----------------------------------------------------------------------------
  await page.goto(HOST);
  const portal = page.frameLocator("iframe#herald");
  await portal.getByRole("tab", { name: "Connections" }).waitFor();
  await page.waitForFunction(() => window.heraldMessages.some((m) => m.type === "herald:ready"));
  step("portal loaded in the iframe with its session");

  // The session token is not left in the frame's address.
  const frameUrl = page.frames().find((f) => f.url().includes("/portal/")).url();
  expect(!frameUrl.includes("sess_"), `the session token is removed from the portal's URL (${frameUrl})`);

  // An error comes back next to its field.
  const form = portal.locator("form#new-connection");
  await form.getByLabel("Name").fill("Orders endpoint");
  await form.getByLabel("Endpoint URL").fill("ftp://example.com/hook");
  await form.getByRole("button", { name: "Create connection" }).click();
  await form.locator('[data-error-for="url"]').filter({ hasText: /./ }).waitFor();
  expect(await form.getByLabel("Endpoint URL").getAttribute("aria-invalid") === "true", "the URL field is marked invalid");
  await shot(page, "portal-connection-error");

  await form.getByLabel("Endpoint URL").fill(RECEIVER);
  await form.getByLabel("Delivery order").selectOption("per_resource");
  await form.getByRole("button", { name: "Create connection" }).click();
  const secretBox = portal.locator("#secret-once");
  await secretBox.waitFor();
  const secret = (await portal.locator("#new-secret").innerText()).trim();
  expect(secret.startsWith("whsec_"), `a generated secret is shown once (${secret.slice(0, 8)}...)`);
  await portal.locator("#connections-table").getByText("Orders endpoint").waitFor();
  await shot(page, "portal-connections");
  await secretBox.getByRole("button", { name: "I have saved it" }).click();
  await portal.getByRole("tab", { name: "Connections" }).click();
  await portal.locator("#connections-table").waitFor();
  const after = await portal.locator("body").innerText();
  expect(!after.includes(secret), "the secret is never shown again");
  step("connection created; its secret shown once");

  // The delivery order chosen in the form is kept, and shown when editing the connection.
  await portal.locator("#connections-table").getByRole("button", { name: "Edit Orders endpoint" }).click();
  const editForm = portal.locator("form#edit-connection");
  await editForm.waitFor();
  const order = await editForm.getByLabel("Delivery order").inputValue();
  expect(order === "per_resource", `the delivery order chosen is kept (${order})`);
  await shot(page, "portal-connection-ordering");
  await editForm.getByRole("button", { name: "Cancel" }).click();
  step("delivery order chosen and shown");

  // Rules, by keyboard: arrow keys move between tabs.
  await portal.getByRole("tab", { name: "Connections" }).focus();
  await page.keyboard.press("ArrowRight");
  expect(await portal.getByRole("tab", { name: "Rules" }).getAttribute("aria-selected") === "true", "ArrowRight moves to the Rules tab");
  const ruleForm = portal.locator("form#new-rule");
  await ruleForm.getByLabel("Event type").fill("order.*");
  await ruleForm.getByLabel("Resource").fill("order");
  // A filter: JSON checked while typing, then the server's 400 names the part at fault.
  const filterBox = ruleForm.getByLabel("Filter (JSON, optional)");
  await filterBox.fill('{"payload.total_cents": ');
  await ruleForm.locator('[data-error-for="filter"]').filter({ hasText: /not valid JSON/ }).waitFor();
  await filterBox.fill('{"payload.total_cents": {"$gte": 1000}, "payload.plan": {"$regex": "^p"}}');
  await ruleForm.getByRole("button", { name: "Create rule" }).click();
  await ruleForm.locator('[data-error-for="filter"]').filter({ hasText: "filter.payload.plan.$regex" }).waitFor();
  await filterBox.fill('{"payload.total_cents": {"$gte": 100}}');
  await ruleForm.getByRole("button", { name: "Create rule" }).click();
  await portal.locator("#rules-table").getByText("order.*").waitFor();
  await portal.locator("#rules-table").getByText('{"payload.total_cents":{"$gte":100}}').waitFor();
  step("rule created with a filter; an unknown operator was refused naming its path");
  await portal.locator("#rules-table").getByRole("button", { name: "Edit filter" }).click();
  const filterForm = portal.locator("form#edit-filter");
  await filterForm.getByLabel("Filter (JSON)").fill('{"payload.total_cents": {"$in": 1000}}');
  await filterForm.getByRole("button", { name: "Save filter" }).click();
  await filterForm.locator('[data-error-for="filter"]').filter({ hasText: "filter.payload.total_cents.$in" }).waitFor();
  await filterForm.getByLabel("Filter (JSON)").fill('{"payload.total_cents": {"$gte": 1000}}');
  await filterForm.getByRole("button", { name: "Save filter" }).click();
  await portal.locator("#rules-table").getByText('{"payload.total_cents":{"$gte":1000}}').waitFor();
  await shot(page, "portal-rules");
  step("the rule's filter edited");

  // A test event with a payload typed in the editor.
  await portal.getByRole("tab", { name: "Send test event" }).click();
  const testForm = portal.locator("form#test-event");
  const payload = testForm.getByLabel("Payload (JSON)");
  await payload.fill('{"order_id": "ord_77", ');
  await testForm.locator('[data-error-for="body"]').filter({ hasText: /JSON/ }).waitFor();
  await payload.fill('{"order_id": "ord_77", "total_cents": 12900}');
  await testForm.getByRole("button", { name: "Send test event" }).click();
  const sent = portal.locator("#test-result code");
  await sent.waitFor();
  const uuid = (await sent.innerText()).trim();
  await shot(page, "portal-test-event");
  step(`test event ${uuid} sent`);

  // The history shows it delivered, with the attempt.
  await portal.getByRole("button", { name: "See it in the history" }).click();
  await portal.locator(`#history-table tr[data-uuid="${uuid}"][data-status="delivered"]`).waitFor({ timeout: 20_000 });
  await portal.locator('#event[data-status="delivered"]').waitFor({ timeout: 20_000 });
  await portal.locator("#event td", { hasText: "200" }).first().waitFor();
  await shot(page, "portal-history");
  step("the history shows it delivered");

  // A test event the rule's filter rejects is recorded, not sent, and the portal says so.
  await portal.getByRole("tab", { name: "Send test event" }).click();
  await testForm.getByLabel("Payload (JSON)").fill('{"order_id": "ord_78", "total_cents": 5}');
  await testForm.getByRole("button", { name: "Send test event" }).click();
  await portal.locator("#test-filtered").filter({ hasText: "payload.total_cents" }).waitFor();
  step("a test event the filter rejects is reported as filtered");

  await portal.getByRole("tab", { name: "Dead letters" }).click();
  await portal.locator("#dead-slot").getByText(/No dead letter|Dead since/).first().waitFor();
  await shot(page, "portal-dead-letters");

  // The connection's charts count the test event's one successful attempt.
  await portal.getByRole("tab", { name: "Connections" }).click();
  await portal.getByRole("button", { name: "Stats of Orders endpoint" }).click();
  const stats = portal.locator("#connection-stats");
  await stats.locator("svg.chart").first().waitFor();
  expect(await stats.locator("svg.chart").count() === 4, "four charts: deliveries, success rate, latency, dead letters");
  const total = async (where, name) => (await where.locator(`[data-total="${name}"] strong`).innerText()).trim();
  expect(await total(stats, "deliveries") === "1", `one delivery charted (${await total(stats, "deliveries")})`);
  expect(await total(stats, "success_rate") === "100%", "all of it successful");
  expect(await stats.locator("svg.chart rect.ok").count() >= 1, "a bar for the delivery");
  await stats.scrollIntoViewIfNeeded();
  await shot(page, "portal-stats");
  step("the connection's charts show the test event");

  const resizes = await page.evaluate(() => window.heraldMessages.filter((m) => m.type === "herald:resize").map((m) => m.height));
  expect(resizes.length > 0 && resizes.every((h) => h > 0), `resize messages reach the host (${resizes.join(", ")})`);
  const frameHeight = await page.locator("iframe#herald").evaluate((f) => f.getBoundingClientRect().height);
  expect(frameHeight === Math.max(200, resizes[resizes.length - 1]), `the host sized the iframe to the portal (${frameHeight})`);
  step(`host resized the iframe ${resizes.length} times`);

  // A viewer sees the same workspace and can change nothing.
  const viewer = await context.newPage();
  watch(viewer);
  await viewer.goto(`${HOST}/viewer`);
  const vp = viewer.frameLocator("iframe#herald");
  await vp.locator("#connections-table").getByText("Orders endpoint").waitFor();
  expect(await vp.locator("form#new-connection").count() === 0, "a viewer gets no form to add a connection");
  expect(await vp.getByRole("button", { name: /Edit|Rotate/ }).count() === 0, "a viewer gets no edit or rotate buttons");
  expect(!(await vp.getByRole("tab", { name: "Send test event" }).isVisible()), "a viewer cannot send test events");
  await shot(viewer, "portal-viewer");
  await viewer.close();
  step("a viewer session reads and changes nothing");

  // ---- console ------------------------------------------------------------------------------
  const con = await context.newPage();
  con.on("pageerror", (e) => problems.push(`console page error: ${e.message}`));
  watch(con);
  await con.goto(`${HERALD}/console/`);
  await con.getByLabel("Admin token").fill("not-the-token-at-all");
  await con.getByRole("button", { name: "Sign in" }).click();
  await con.locator('[data-error-for="token"]').filter({ hasText: /not the admin token/ }).waitFor();
  await con.getByLabel("Admin token").fill(ADMIN);
  await shot(con, "console-sign-in");
  await con.getByRole("button", { name: "Sign in" }).click();
  await con.getByRole("tab", { name: "Events" }).waitFor();
  expect(!con.url().includes(ADMIN), "the admin token is not in the URL");

  await con.getByRole("tab", { name: "Dead letters" }).click();
  const dead = con.locator("form#dead-filter");
  await dead.getByLabel("Workspace").selectOption(DEAD_WS);
  await dead.getByRole("button", { name: "List" }).click();
  const row = con.locator(`#dead-table tr[data-event="${DEAD_EVENT}"]`);
  await row.waitFor();
  await row.getByRole("button", { name: "Attempts" }).click();
  await con.locator("#dead-detail table").waitFor();
  await shot(con, "console-dead-letters");
  await row.getByRole("button", { name: `Replay ${DEAD_EVENT}` }).click();
  await con.getByText(`Replayed ${DEAD_EVENT}`).waitFor();
  step("dead letter replayed from the console");

  await con.getByRole("tab", { name: "Events" }).click();
  const find = con.locator("form#find-event");
  await find.getByLabel("Event id").fill(DEAD_EVENT);
  const deadline = Date.now() + 20_000;
  for (;;) {
    await find.getByRole("button", { name: "Find" }).click();
    await con.locator("#event").waitFor();
    if (await con.locator('#event[data-status="delivered"]').count()) break;
    if (Date.now() > deadline) throw new Error("the replayed event was not delivered in 20 s");
    await con.waitForTimeout(500);
  }
  await shot(con, "console-event");
  step("the replayed event is delivered");

  const search = con.locator("form#search-events");
  await search.getByLabel("Workspace").selectOption(DEAD_WS);
  await search.getByRole("button", { name: "Search" }).click();
  await con.locator(`#events-table tr[data-uuid="${DEAD_EVENT}"]`).waitFor();

  await con.getByRole("tab", { name: "Connection health" }).click();
  const health = con.locator("form#health-filter");
  await health.getByLabel("Workspace").selectOption(DEAD_WS);
  await health.getByRole("button", { name: "Show" }).click();
  await con.locator("#health-table tbody tr").first().waitFor();
  await shot(con, "console-health");

  // Its charts: three failed attempts and a dead letter, then the replay delivered.
  await con.getByRole("button", { name: "Charts of Flaky endpoint" }).click();
  const charts = con.locator("#health-detail #connection-stats");
  await charts.locator("svg.chart").first().waitFor();
  const counted = async (name) => (await charts.locator(`[data-total="${name}"] strong`).innerText()).trim();
  const seen = [await counted("deliveries"), await counted("failures"), await counted("dead_letters")].join(" ");
  expect(seen === "4 3 1", `4 deliveries, 3 failed, 1 dead letter charted (${seen})`);
  expect(await charts.locator("svg.chart rect.bad").count() >= 2, "failures and the dead letter drawn");
  await shot(con, "console-stats");
  step("the console charts the dead letter and its replay");

  // A framing attempt of the console is refused by the browser (frame-ancestors 'none').
  const csp = (await (await fetch(`${HERALD}/console/`)).headers.get("content-security-policy")) || "";
  expect(csp.includes("frame-ancestors 'none'"), "the console may not be framed");

  if (problems.length) throw new Error(`the pages reported errors:\n${problems.join("\n")}`);
  step("all good");
} finally {
  await browser.close();
  host.close();
}

// The demo page in headless Chromium: events arrive, the server drops the stream, the browser's own
// EventSource reconnects with Last-Event-ID, and the page's log holds every event exactly once, in order.
// The user is in the team: the page lists the team's members, and team events arrive labelled as such.
//
// Run by tests/browser.rs, which starts the demo server and sets DEMO_URL. Optional: SCREENSHOT (a PNG
// path to write), CHROMIUM (default /usr/bin/chromium).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.DEMO_URL;
assert.ok(base, "DEMO_URL must name the demo server, e.g. http://127.0.0.1:8080");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

// Not 'provider': the filter is part of what is checked.
const categories = ["data_sync", "ai", "import", "portfolio", "security"];
const eventsPerConnection = 8;

async function getJson(path) {
  const response = await fetch(base + path);
  assert.equal(response.status, 200, `${path}: ${await response.clone().text()}`);
  return response.json();
}

const config = await getJson("/config");
const user = config.users[1].id; // not the default user: the page's selector is used
const userDataDir = mkdtempSync(join(tmpdir(), "ssehub-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 820 },
});

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => console.log(`[page error] ${error}`));
  page.on("console", (message) => console.log(`[page ${message.type()}] ${message.text()}`));

  await page.goto(`${base}/?user=${user}&categories=${categories.join(",")}`);
  await page.waitForFunction(
    (n) => window.demo.opens === 1 && window.demo.received.length >= n,
    eventsPerConnection,
    { timeout: 30_000 },
  );
  assert.equal(await page.inputValue("#user"), user, "the page picked the user from its URL");
  assert.equal(await page.isChecked("input[value=provider]"), false, "and the categories");
  // The team card shows the server's membership list; the user is a member, and the page says so.
  const members = await page.$$eval("#team-members li", (items) => items.map((li) => [li.dataset.id, li.dataset.member]));
  assert.deepEqual(members, config.users.map((u) => [u.id, String(u.team)]), "every demo user, with their membership");
  assert.deepEqual(config.team.members, config.users.filter((u) => u.team).map((u) => u.id));
  assert.ok(config.team.members.includes(user), "the test's user is in the team");
  assert.equal(await page.textContent("#groups"), config.team.name);

  // The server ends the stream; nothing in the page reconnects but EventSource itself.
  await page.click("#drop");
  await page.waitForFunction(() => document.getElementById("notice").textContent.includes("dropped 1 stream"), null, {
    timeout: 10_000,
  });
  await page.waitForFunction(
    (n) => window.demo.opens >= 2 && window.demo.received.filter((r) => r.connection >= 2).length >= n,
    eventsPerConnection,
    { timeout: 30_000 },
  );

  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT });
    console.log(`screenshot: ${process.env.SCREENSHOT}`);
  }
  await page.evaluate(() => window.demo.source.close());
  const received = await page.evaluate(() => window.demo.received);
  const opens = await page.evaluate(() => window.demo.opens);
  const gaps = await page.evaluate(() => window.demo.gaps);

  const filter = categories.join(",");
  const published = (await getJson(`/debug/published?user=${user}&categories=${filter}`)).events;
  const connections = (await getJson("/debug/connections")).connections.filter((c) => c.user === user);

  // One reconnect, by the browser, carrying the id of the last event the first stream delivered.
  assert.equal(opens, 2, "exactly one reconnect");
  assert.equal(connections.length, 2, JSON.stringify(connections));
  const lastBeforeDrop = received.filter((r) => r.connection === 1).at(-1).cursor;
  assert.ok(lastBeforeDrop.startsWith(received.filter((r) => r.connection === 1).at(-1).id + "~1~"), "the id is a cursor headed by the event id");
  assert.equal(connections[0].last_event_id, null, "the first request has no Last-Event-ID");
  assert.equal(connections[1].last_event_id, lastBeforeDrop, "the browser reconnected with Last-Event-ID");
  assert.equal(connections[1].replay_status, "complete");
  assert.ok(connections[1].replayed_events >= 1, "events published while disconnected were replayed");
  assert.deepEqual(gaps, [], "no gap reported");

  // Every event exactly once, in publish order, as the server published them.
  const ids = received.map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length, "no event twice");
  const publishedIds = published.map((e) => e.id);
  const start = publishedIds.indexOf(ids[0]);
  assert.ok(start >= 0, `first received id ${ids[0]} was published`);
  assert.deepEqual(ids, publishedIds.slice(start, start + ids.length), "the log is the published sequence");
  for (const r of received) assert.ok(categories.includes(r.type.split(".")[0]), `${r.type} passes the filter`);
  // Team events are among them, each published to the team and labelled in the log.
  const teamIds = new Set(published.filter((e) => e.audience === `group:${config.team.name}`).map((e) => e.id));
  const teamReceived = received.filter((r) => r.team);
  assert.ok(teamReceived.length >= 1, "a team event arrived");
  assert.deepEqual(teamReceived.map((r) => r.id), ids.filter((id) => teamIds.has(id)), "exactly the team's events are labelled");

  console.log(
    JSON.stringify({
      received: ids.length,
      team_events: teamReceived.length,
      before_drop: received.filter((r) => r.connection === 1).length,
      replayed_on_reconnect: connections[1].replayed_events,
      last_event_id_sent_back: connections[1].last_event_id,
    }),
  );
  console.log("browser test passed");
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

// Twelve EventSources on one page, all to the demo's one origin, in headless Chromium.
//
// PROTOCOL=h2: the demo offers HTTP/2; all twelve open and each receives the event published next.
// PROTOCOL=http/1.1: the demo offers only HTTP/1.1, where Chromium opens at most six connections per
// origin. Six streams open; an event is published and the six receive it; only then are the other
// six checked: still CONNECTING, nothing received, and the server has seen six requests. Closing the
// first six lets the others connect, and they receive the next event: they were queued, not failed.
// Every step waits for an event (open, message, a server count), never for time to pass.
//
// Run by tests/servers/browser.rs, which starts the demo over TLS with a self-signed certificate and
// sets DEMO_URL, PROTOCOL and NODE_EXTRA_CA_CERTS (so this script's own fetch trusts the certificate;
// Chromium is launched with --ignore-certificate-errors). Optional: CHROMIUM (default /usr/bin/chromium).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.DEMO_URL;
assert.ok(base?.startsWith("https://"), "DEMO_URL must name the demo over TLS, e.g. https://127.0.0.1:8443");
const protocol = process.env.PROTOCOL;
assert.ok(protocol === "h2" || protocol === "http/1.1", "PROTOCOL must be h2 or http/1.1");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const STREAMS = 12;
/// Chromium's connections per origin over HTTP/1.1.
const HTTP1_LIMIT = 6;
const WAIT = { timeout: 60_000, polling: 50 };

const config = await (await fetch(`${base}/config`)).json();
const user = config.users[0].id;

/// Publishes an event of type "marker" to the user; the demo answers once it is in the hub.
async function publishMarker(n) {
  const response = await fetch(`${base}/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, category: "ai", event_type: "marker", data: { marker: n } }),
  });
  assert.equal(response.status, 200, await response.clone().text());
}

/// How many /events requests the server has served.
async function servedStreams() {
  return (await (await fetch(`${base}/debug/connections`)).json()).connections;
}

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
    "--ignore-certificate-errors",
  ],
});

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => console.log(`[page error] ${error}`));
  // A page of the origin that opens no stream of its own.
  await page.goto(`${base}/config`);
  await page.evaluate(
    ({ url, count }) => {
      window.streams = Array.from({ length: count }, () => {
        const stream = { source: new EventSource(url), opened: false, markers: [] };
        stream.source.onopen = () => (stream.opened = true);
        stream.source.addEventListener("marker", (event) => stream.markers.push(JSON.parse(event.data).marker));
        return stream;
      });
    },
    { url: `${base}/events?user=${user}&categories=ai`, count: STREAMS },
  );
  const states = () =>
    page.evaluate(() => window.streams.map((s) => ({ opened: s.opened, state: s.source.readyState, markers: s.markers })));

  if (protocol === "h2") {
    await page.waitForFunction(() => window.streams.every((s) => s.opened), null, WAIT);
    await publishMarker(0);
    await page.waitForFunction(() => window.streams.every((s) => s.markers.length > 0), null, WAIT);
    const all = await states();
    assert.deepEqual(all.map((s) => s.markers), Array(STREAMS).fill([0]), "each of the twelve received the event once");
    console.log(JSON.stringify({ protocol, open: all.filter((s) => s.state === 1).length, received: all.length }));
  } else {
    await page.waitForFunction((limit) => window.streams.filter((s) => s.opened).length === limit, HTTP1_LIMIT, WAIT);
    await publishMarker(0);
    await page.waitForFunction(
      () => window.streams.filter((s) => s.opened).every((s) => s.markers.length > 0),
      null,
      WAIT,
    );
    // The six open streams have the event; the server has sent it on every stream it serves.
    const held = await states();
    const open = held.filter((s) => s.opened);
    const waiting = held.filter((s) => !s.opened);
    assert.equal(open.length, HTTP1_LIMIT, `at most ${HTTP1_LIMIT} open: ${JSON.stringify(held)}`);
    assert.deepEqual(open.map((s) => s.markers), Array(HTTP1_LIMIT).fill([0]));
    for (const stream of waiting) {
      assert.equal(stream.state, 0, "the 7th..12th are still CONNECTING");
      assert.deepEqual(stream.markers, [], "and received nothing");
    }
    assert.equal((await servedStreams()).length, HTTP1_LIMIT, "the server saw six requests, no more");

    // Closing the six frees their connections: the waiting six connect and get the next event.
    await page.evaluate(() => window.streams.filter((s) => s.opened).forEach((s) => s.source.close()));
    await page.waitForFunction((limit) => window.streams.filter((s) => s.opened).length === 2 * limit, HTTP1_LIMIT, WAIT);
    await publishMarker(1);
    await page.waitForFunction(
      () => window.streams.filter((s) => s.source.readyState === 1).every((s) => s.markers.length > 0),
      null,
      WAIT,
    );
    const after = (await states()).filter((s) => s.state === 1);
    assert.equal(after.length, HTTP1_LIMIT);
    assert.deepEqual(after.map((s) => s.markers), Array(HTTP1_LIMIT).fill([1]), "the queued six got the next event");
    console.log(JSON.stringify({ protocol, openAtOnce: open.length, waited: waiting.length }));
  }
  await page.evaluate(() => window.streams.forEach((s) => s.source.close()));
  console.log("streams browser test passed");
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

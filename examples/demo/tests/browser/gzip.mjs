// A gzip-compressed stream in headless Chromium: the demo answers /events with Content-Encoding: gzip,
// and the page's own EventSource shows each event as soon as it is published, through the one stream
// that stays open: the browser decodes chunk by chunk, nothing waits for the end of the body.
//
// Run by tests/browser.rs, which starts the demo server (gzip on, no generator) and sets DEMO_URL.
// Optional: CHROMIUM (default /usr/bin/chromium).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.DEMO_URL;
assert.ok(base, "DEMO_URL must name the demo server, e.g. http://127.0.0.1:8080");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const events = 5;

const config = await (await fetch(`${base}/config`)).json();
const user = config.users[0].id;
const userDataDir = mkdtempSync(join(tmpdir(), "ssehub-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"],
});

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => console.log(`[page error] ${error}`));
  const streams = [];
  page.on("response", async (response) => {
    if (new URL(response.url()).pathname === "/events") {
      const headers = await response.allHeaders();
      streams.push({ status: response.status(), encoding: headers["content-encoding"] ?? "identity" });
    }
  });

  await page.goto(`${base}/?user=${user}`);
  await page.waitForFunction(() => window.demo.opens === 1, null, { timeout: 30_000 });

  // One event at a time: the next is published only once the page has shown the last.
  const ids = [];
  for (let n = 0; n < events; n++) {
    const response = await fetch(`${base}/publish`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user, category: "ai", data: { marker: n } }),
    });
    assert.equal(response.status, 200, await response.clone().text());
    const { id } = await response.json();
    ids.push(id);
    await page.waitForFunction((id) => window.demo.received.some((r) => r.id === id), id, { timeout: 15_000 });
    assert.equal(await page.evaluate(() => window.demo.opens), 1, "still the first stream");
  }
  const received = await page.evaluate(() => window.demo.received.map((r) => r.id));
  await page.evaluate(() => window.demo.source.close());

  assert.deepEqual(received, ids, "every event once, in order");
  assert.deepEqual(streams, [{ status: 200, encoding: "gzip" }], "one stream, gzip-encoded");
  console.log(JSON.stringify({ events: received.length, streams }));
  console.log("gzip browser test passed");
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

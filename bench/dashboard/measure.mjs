// bench/dashboard/measure.mjs: load one page in Debian's headless Chromium (playwright-core from api/ui/node_modules,
// never a downloaded browser), cold and warm, and print one JSON document with, per load, the bytes the Performance
// API reports and the time from navigation start until the page shows its numbers. bench/dashboard/run.sh runs it
// once for the celeriac dashboard and once for Flower's workers page.
//
//   node bench/dashboard/measure.mjs            # settings in the environment:
//   MEASURE_PAGE      celeriac | flower
//   MEASURE_URL       the page (celeriac: http://127.0.0.1:PORT/ , Flower: http://127.0.0.1:PORT/workers)
//   MEASURE_CHROMIUM  the browser (default /usr/bin/chromium)
//   MEASURE_RUNS      loads of each kind (default 5)
//   MEASURE_KEY       celeriac only: the API key, put in sessionStorage ("celeriac.apiKey") before the page runs
//   MEASURE_TTL_MS    celeriac only: the API's answer cache lifetime; loads that must miss it wait this + 1 s
//   MEASURE_NODES     Flower only: comma-separated worker names its table must list
//
// "Shown" is decided in the page by a MutationObserver installed before any of the page's scripts run
// (addInitScript); at each batch of DOM changes it checks the condition and records performance.now() (ms since
// the navigation started, performance.timeOrigin) the first time it holds:
//   celeriac: the overview view is visible, holds no `.skeleton` placeholder, its seven totals are number links
//             (`[data-total] a[data-field]`), its five tables (top IPs, credentials, commands, downloads, findings)
//             have their header row, the sensor list has no placeholder and the chart has its canvas; that is the
//             moment app.js's loadOverview has rendered every answer (it does so in one task);
//   flower:   every expected worker name is in a row of `#workers-table tbody` (DataTables fills it from
//             /workers?json=1 after the page loads).
// Also recorded: the first animation frame after that moment ("frame": the paint that puts it on screen follows
// that frame's callbacks), the navigation's responseEnd, DOMContentLoaded and load, and the latest responseEnd of a
// fetch/XHR. Bytes: after "shown" and the load event, plus 300 ms, the navigation entry and every resource entry's
// transferSize (bytes on the wire: headers plus the body as sent, so compressed; 0 when served from the HTTP cache,
// only headers for a 304), encodedBodySize (body as sent) and decodedBodySize (body after decompression).
//
// Kinds of load:
//   cold:       a new browser context (empty HTTP cache, no connections);
//   warm:       a second navigation to the same URL in the same context (the HTTP cache primed by the cold load);
//               for celeriac after waiting out the API's answer cache, so the API answers from PostgreSQL as it did
//               for the cold load and only the browser's cache differs;
//   warm_hit:   celeriac only: a third navigation right after the warm one, the API's answers still cached (what
//               a reload within MEASURE_TTL_MS, or a second person opening the page, gets).
import { createRequire } from "node:module";

// playwright-core as `npm ci` installed it for the dashboard's tests (pinned by api/ui/package-lock.json).
const { chromium } = createRequire(new URL("../../api/ui/package.json", import.meta.url))("playwright-core");

const env = (k, d) => {
  const v = process.env[k];
  if (v === undefined || v === "") {
    if (d === undefined) throw new Error(`${k} is not set`);
    return d;
  }
  return v;
};
const PAGE = env("MEASURE_PAGE"), URL_ = env("MEASURE_URL"), RUNS = Number(env("MEASURE_RUNS", "5"));
const CHROMIUM = env("MEASURE_CHROMIUM", "/usr/bin/chromium");
const KEY = PAGE === "celeriac" ? env("MEASURE_KEY") : null;
const TTL_MS = PAGE === "celeriac" ? Number(env("MEASURE_TTL_MS", "5000")) : 0;
const NODES = PAGE === "flower" ? env("MEASURE_NODES").split(",").filter(Boolean) : [];
if (!["celeriac", "flower"].includes(PAGE)) throw new Error(`MEASURE_PAGE must be celeriac or flower, not ${PAGE}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs in the page before its own scripts, at every navigation of the context.
function probe({ page, key, nodes }) {
  // The init script also runs in the context's first about:blank, which has no storage: skip it there.
  if (location.protocol === "about:") return;
  if (key) sessionStorage.setItem("celeriac.apiKey", key);
  const b = (window.__bench = { shown: null, frame: null, checks: 0, error: null });
  const celeriac = () => {
    const ov = document.getElementById("overview");
    if (!ov || ov.hidden) return false;
    const err = document.getElementById("overview-error");
    if (err && err.textContent) b.error = err.textContent;
    if (ov.querySelector(".skeleton")) return false;
    if (ov.querySelectorAll("[data-total] a[data-field]").length !== 7) return false;
    for (const id of ["top-ips", "top-credentials", "top-commands", "downloads", "findings"]) {
      const t = document.getElementById(id);
      if (!t || !t.querySelector("thead")) return false;
    }
    const sensors = document.getElementById("sensors");
    if (!sensors || !sensors.firstElementChild) return false;
    return !!document.querySelector("#chart canvas");
  };
  const flower = () => {
    const rows = document.querySelectorAll("#workers-table tbody tr");
    if (!rows.length) return false;
    const text = [...rows].map((r) => r.textContent).join("\n");
    return nodes.every((n) => text.includes(n));
  };
  const cond = page === "celeriac" ? celeriac : flower;
  const check = () => {
    if (b.shown !== null) return;
    b.checks++;
    if (cond()) {
      b.shown = performance.now();
      obs.disconnect();
      requestAnimationFrame(() => { b.frame = performance.now(); });
    }
  };
  const obs = new MutationObserver(check);
  obs.observe(document, { childList: true, subtree: true, attributes: true, characterData: true });
}

// Bytes and milestones, read in the page once it is shown and loaded.
function collect() {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const entry = (e, kind) => ({
    name: e.name.replace(location.origin, ""),
    kind,
    initiator: e.initiatorType,
    status: e.responseStatus ?? null,
    transfer: e.transferSize,
    encoded: e.encodedBodySize,
    decoded: e.decodedBodySize,
    start_ms: Math.round(e.startTime * 10) / 10,
    end_ms: Math.round(e.responseEnd * 10) / 10,
  });
  const entries = [entry(nav, "navigation"), ...res.map((e) => entry(e, "resource"))];
  const sum = (k) => entries.reduce((s, e) => s + e[k], 0);
  const fetches = res.filter((e) => e.initiatorType === "fetch" || e.initiatorType === "xmlhttprequest");
  const b = window.__bench;
  return {
    shown_ms: b.shown,
    frame_ms: b.frame,
    page_error: b.error,
    nav_response_end_ms: nav.responseEnd,
    dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    load_ms: nav.loadEventEnd,
    last_fetch_end_ms: fetches.length ? Math.max(...fetches.map((e) => e.responseEnd)) : null,
    requests: entries.length,
    from_cache: entries.filter((e) => e.transfer === 0).length,
    transfer_bytes: sum("transfer"),
    encoded_bytes: sum("encoded"),
    decoded_bytes: sum("decoded"),
    entries,
  };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
const out = {
  page: PAGE, url: URL_, runs: RUNS, chromium: browser.version(), started: new Date().toISOString(),
  loads: { cold: [], warm: [], ...(PAGE === "celeriac" ? { warm_hit: [] } : {}) },
  console_errors: [],
};

async function load(page) {
  // From a blank page, so every load is a new navigation to the URL (never a reload, which revalidates).
  await page.goto("about:blank");
  const t0 = Date.now();
  await page.goto(URL_, { waitUntil: "load", timeout: 60000 });
  await page.waitForFunction(() => window.__bench && window.__bench.frame !== null, null, { timeout: 60000, polling: 50 });
  await sleep(300);
  const r = await page.evaluate(collect);
  r.wall_ms = Date.now() - t0;
  return r;
}

try {
  // The browser's own start-up (first renderer, first V8 isolate) is not the page's: one blank page first.
  const warmup = await browser.newContext();
  await (await warmup.newPage()).goto("about:blank");
  await warmup.close();
  let lastApi = 0;
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
    await ctx.addInitScript(probe, { page: PAGE, key: KEY, nodes: NODES });
    const page = await ctx.newPage();
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(`${m.text()}`); });
    page.on("pageerror", (e) => out.console_errors.push(e.message));
    const waitTtl = async () => {
      const wait = lastApi + TTL_MS + 1000 - Date.now();
      if (TTL_MS && wait > 0) await sleep(wait);
    };
    await waitTtl();
    out.loads.cold.push(await load(page));
    lastApi = Date.now();
    await waitTtl();
    out.loads.warm.push(await load(page));
    lastApi = Date.now();
    if (PAGE === "celeriac") out.loads.warm_hit.push(await load(page));
    lastApi = Date.now();
    await ctx.close();
  }
} catch (e) {
  out.failure = String((e && e.stack) || e);
} finally {
  await browser.close();
}
out.finished = new Date().toISOString();
console.log(JSON.stringify(out));
process.exit(out.failure ? 1 : 0);

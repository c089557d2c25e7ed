// api/ui/tests/dashboard.mjs: drive the dashboard in Debian's headless Chromium (playwright-core, never a
// downloaded browser) and print what the page shows as one JSON report on stdout. api/tests/dashboard.rs starts
// the real celeriac-api, a Rust and a Python worker, runs this script, and compares the report with the API.
//
// Environment: DASH_BASE (http://127.0.0.1:PORT), DASH_KEY (a statistics:read key), DASH_CHROMIUM (executable),
// DASH_ARTIFACTS (screenshot directory), DASH_WINDOW (overview query, e.g. start=..&end=..), DASH_SENSOR (a sensor
// to switch to), DASH_NODES (comma-separated worker nodes the cluster view must list); optionally DASH_STOP_PID and
// DASH_STOP_NODE (a worker process to stop at the end, whose row must turn offline without a reload).
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("DASH_BASE"), KEY = env("DASH_KEY"), ART = env("DASH_ARTIFACTS");
const WINDOW = env("DASH_WINDOW"), SENSOR = env("DASH_SENSOR");
const NODES = env("DASH_NODES").split(",").filter(Boolean);
const AXE = readFileSync(join(here, "../node_modules/axe-core/axe.min.js"), "utf8");
mkdirSync(ART, { recursive: true });

const report = { console_errors: [], axe: {}, screenshots: [] };
const browser = await chromium.launch({
  executablePath: env("DASH_CHROMIUM"),
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});

async function newPage(colorScheme, viewport = { width: 1280, height: 900 }, loggedIn = false) {
  const ctx = await browser.newContext({ colorScheme, viewport, reducedMotion: "reduce" });
  if (loggedIn) await ctx.addInitScript((k) => sessionStorage.setItem("celeriac.apiKey", k), KEY);
  const page = await ctx.newPage();
  page.on("console", (m) => { if (m.type() === "error") report.console_errors.push(`${colorScheme}: ${m.text()}`); });
  page.on("pageerror", (e) => report.console_errors.push(`${colorScheme}: ${e.message}`));
  return page;
}

async function axe(page, name) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  report.axe[name] = r.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")}: ${n.failureSummary}`),
  }));
}

async function shot(page, name) {
  const path = join(ART, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  report.screenshots.push(path);
}

async function overviewLoaded(page, after = "0") {
  await page.waitForFunction((a) => (document.body.dataset.overviewLoaded || "0") !== a, after, { timeout: 30000 });
  return page.evaluate(() => document.body.dataset.overviewLoaded);
}

async function readOverview(page) {
  return page.evaluate(() => ({
    hash: location.hash,
    totals: Object.fromEntries([...document.querySelectorAll("[data-total] a")].map((a) =>
      [a.dataset.field, a.dataset.value === "" ? null : Number(a.dataset.value)])),
    total_links: Object.fromEntries([...document.querySelectorAll("[data-total] a")].map((a) => [a.dataset.field, a.getAttribute("href")])),
    top_ips: [...document.querySelectorAll("#top-ips tr[data-ip]")].map((tr) => ({
      ip: tr.dataset.ip,
      sessions: Number(tr.querySelector('[data-field="sessions"]').dataset.value),
      events: Number(tr.querySelector('[data-field="events"]').dataset.value),
    })),
    sensors: [...document.querySelectorAll("#sensors [data-sensor]")].map((li) => ({
      sensor: li.dataset.sensor, status: li.querySelector(".status").textContent,
    })),
    chart_canvas: !!document.querySelector("#chart canvas"),
    commands: document.querySelectorAll("#top-commands tbody tr").length,
  }));
}

async function readCluster(page) {
  return page.evaluate(() => ({
    workers: [...document.querySelectorAll("#workers tr[data-node]")].map((tr) => ({
      node: tr.dataset.node, alive: tr.dataset.alive === "true",
      kind: tr.querySelector(".kind").textContent, queues: tr.querySelector(".queues").textContent,
    })),
    queues: [...document.querySelectorAll("#queues tr[data-queue]")].map((tr) => tr.dataset.queue),
  }));
}

async function waitForNodes(page) {
  await page.waitForFunction((nodes) => nodes.every((n) =>
    document.querySelector(`#workers tr[data-node="${CSS.escape(n)}"][data-alive="true"]`)), NODES, { timeout: 60000 });
}

try {
  // Light, 1280 px: sign in, overview for the window, then one sensor, then the cluster.
  const page = await newPage("light");
  await page.goto(`${BASE}/#/overview?${WINDOW}`);
  await page.waitForSelector("#login-form", { state: "visible" });
  await axe(page, "login-light");
  await shot(page, "login-light");
  await page.fill("#api-key", "cak_wrong");
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("login-error").textContent !== "");
  report.wrong_key_message = await page.textContent("#login-error");
  // Chromium logs the refused request (401) of the wrong key; that one is expected.
  report.console_errors = report.console_errors.filter((e) => !e.includes("status of 401"));
  await page.fill("#api-key", KEY);
  await page.click("#login-form button[type=submit]");
  let seq = await overviewLoaded(page);
  report.overview_all = await readOverview(page);
  await axe(page, "overview-light");
  await shot(page, "overview-light");

  await page.selectOption("#f-sensor", SENSOR);
  seq = await overviewLoaded(page, seq);
  report.overview_sensor = await readOverview(page);

  // The URL keeps the filter: a reload shows the same numbers.
  await page.reload();
  await overviewLoaded(page);
  report.overview_reloaded = await readOverview(page);

  await page.click("#nav-cluster");
  await waitForNodes(page);
  report.cluster = await readCluster(page);
  await page.click("#explain-form button[type=submit]");
  await page.waitForSelector("#explain p strong", { timeout: 10000 });
  report.explain_outcome = await page.textContent("#explain p strong");
  await axe(page, "cluster-light");
  await shot(page, "cluster-light");

  // The toggle switches to dark without a reload.
  const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const before = await bg();
  await page.click("#theme-toggle");
  report.toggle = { before, after: await bg(), theme: await page.evaluate(() => document.documentElement.dataset.theme) };

  // Dark (prefers-color-scheme), 1280 px, already signed in.
  const dark = await newPage("dark", undefined, true);
  await dark.goto(`${BASE}/#/overview?${WINDOW}`);
  await overviewLoaded(dark);
  report.dark_background = await dark.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await axe(dark, "overview-dark");
  await shot(dark, "overview-dark");
  await dark.goto(`${BASE}/#/cluster`);
  await waitForNodes(dark);
  await axe(dark, "cluster-dark");
  await shot(dark, "cluster-dark");

  // Phone width: nothing wider than the screen.
  for (const scheme of ["light", "dark"]) {
    const phone = await newPage(scheme, { width: 390, height: 844 }, true);
    await phone.goto(`${BASE}/#/overview?${WINDOW}`);
    await overviewLoaded(phone);
    report[`phone_overflow_${scheme}`] = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await shot(phone, `overview-phone-${scheme}`);
    await phone.goto(`${BASE}/#/cluster`);
    await waitForNodes(phone);
    await shot(phone, `cluster-phone-${scheme}`);
  }

  // Stopping the Python worker turns it offline on the open cluster page, without a reload.
  const stopPid = Number(process.env.DASH_STOP_PID || 0), stopNode = process.env.DASH_STOP_NODE;
  if (stopPid && stopNode) {
    await page.bringToFront();
    await page.evaluate(() => { window.__sameDocument = true; });
    const started = Date.now();
    process.kill(stopPid, "SIGTERM");
    await page.waitForSelector(`#workers tr[data-node="${stopNode}"][data-alive="false"]`, { timeout: 120000 });
    report.stopped = {
      node: stopNode,
      seconds: (Date.now() - started) / 1000,
      same_document: await page.evaluate(() => window.__sameDocument === true),
      state: await page.textContent(`#workers tr[data-node="${stopNode}"] .status`),
    };
    await shot(page, "cluster-worker-offline-light");
  }
} catch (e) {
  report.failure = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));

// api/ui/tests/dashboard.mjs: drive the dashboard in Debian's headless Chromium (playwright-core, never a
// downloaded browser) and print what the page shows as one JSON report on stdout. api/tests/dashboard.rs starts
// the real celeriac-api, a Rust and a Python worker, runs this script, and compares the report with the API.
//
// Environment: DASH_BASE (http://127.0.0.1:PORT), DASH_KEY (a statistics:read key), DASH_CHROMIUM (executable),
// DASH_ARTIFACTS (screenshot directory), DASH_WINDOW (overview query, e.g. start=..&end=..), DASH_SENSOR (a sensor
// to switch to), DASH_NODES (comma-separated worker nodes the cluster view must list); optionally DASH_STOP_PID and
// DASH_STOP_NODE (a worker process to stop at the end, whose row must turn offline without a reload); DASH_WRITE_KEY
// (a statistics:read,jobs:write key: a longtail analysis is submitted from the form and followed to its result);
// DASH_PAUSE_PIDS (the workers that could run it: stopped with SIGSTOP while the job is submitted and its stream
// opens, then continued, so the page sees every progress step); DASH_REGISTERED_NODE (a node registered at the
// coordinator: its row must say so); DASH_ADMIN_KEY (an admin key: the dead-letter list is read with it) with
// DASH_DEAD_REPLAY and DASH_DEAD_DROP (two of the listed dead letters' ids: the admin page clicks Replay on the first
// and Drop on the second, and reports the note and the list it shows after each).
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

async function newPage(colorScheme, viewport = { width: 1280, height: 900 }, loggedIn = false, jobs = null) {
  const ctx = await browser.newContext({ colorScheme, viewport, reducedMotion: "reduce" });
  if (loggedIn) await ctx.addInitScript((k) => sessionStorage.setItem("celeriac.apiKey", k), loggedIn === true ? KEY : loggedIn);
  if (jobs) await ctx.addInitScript((j) => sessionStorage.setItem("celeriac.jobs", j), jobs);
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
    registered: [...document.querySelectorAll("#workers tr[data-node]")].filter((tr) => tr.querySelector(".registered").textContent === "yes").map((tr) => tr.dataset.node),
    dead_letters: Number(document.querySelector('#dead-count a[data-field="dead_letters"]')?.dataset.value ?? -1),
    dead_letters_href: document.querySelector('#dead-count a[data-field="dead_letters"]')?.getAttribute("href") ?? null,
    updated: document.getElementById("cluster-updated").textContent,
  }));
}

async function waitForNodes(page) {
  await page.waitForFunction((nodes) => nodes.every((n) =>
    document.querySelector(`#workers tr[data-node="${CSS.escape(n)}"][data-alive="true"]`)), NODES, { timeout: 60000 });
}

const PAUSE = (process.env.DASH_PAUSE_PIDS || "").split(",").filter(Boolean).map(Number);
let paused = false;
try {
  // Light, 1280 px: sign in, overview for the window, then one sensor, then the cluster.
  const page = await newPage("light");
  // Every cluster request this page makes (a stream shows in the Performance API only once it ends).
  const clusterRequests = [];
  page.on("request", (r) => { if (r.url().includes("/api/v1/cluster/")) clusterRequests.push(new URL(r.url()).pathname); });
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
  // The stream brings the coordinator's registration and the dead letter without a reload.
  const registeredNode = process.env.DASH_REGISTERED_NODE;
  if (registeredNode) {
    await page.waitForFunction((n) => document.querySelector(`#workers tr[data-node="${CSS.escape(n)}"] .registered`)?.textContent === "yes",
      registeredNode, { timeout: 60000 });
  }
  await page.waitForFunction(() => Number(document.querySelector('#dead-count a[data-field="dead_letters"]')?.dataset.value) > 0, null, { timeout: 60000 });
  report.cluster = await readCluster(page);
  report.cluster_requests = [...clusterRequests];

  // The dead-letter link: a statistics:read key is told it needs admin; an admin key sees the list.
  await page.click("#dead-list-link");
  await page.waitForFunction(() => document.getElementById("dead-letters-note").textContent !== "", null, { timeout: 30000 });
  report.dead_readonly = await page.textContent("#dead-letters-note");
  // Chromium logs the refused request (403) of the statistics:read key; that one is expected.
  report.console_errors = report.console_errors.filter((e) => !e.includes("status of 403"));
  const ADMIN_KEY = process.env.DASH_ADMIN_KEY;
  if (ADMIN_KEY) {
    const adm = await newPage("light", undefined, ADMIN_KEY);
    await adm.goto(`${BASE}/#/dead-letters`);
    await adm.waitForSelector("#dead-letters-table tr[data-dead]", { timeout: 30000 });
    const readDead = () => adm.evaluate(() => ({
      count: Number(document.querySelector('#dead-letters-note a[data-field="count"]')?.dataset.value ?? -1),
      ids: [...document.querySelectorAll("#dead-letters-table tr[data-dead]")].map((tr) => tr.dataset.dead),
      rows: [...document.querySelectorAll("#dead-letters-table tr[data-dead]")].map((tr) => [...tr.children].map((td) => td.textContent)),
    }));
    report.dead_letters = await readDead();
    await axe(adm, "dead-letters-light");
    await shot(adm, "dead-letters-light");
    // Replay one entry and drop another with the page's buttons; after each, wait for the note saying what
    // happened and for the list read again (the table is busy until then), and report both.
    const actions = [["replay", "dead-replay", process.env.DASH_DEAD_REPLAY], ["drop", "dead-drop", process.env.DASH_DEAD_DROP]];
    if (actions.every(([, , id]) => id)) {
      report.dead_actions = {};
      for (const [action, cls, id] of actions) {
        const before = await adm.textContent("#dead-letters-action");
        await adm.click(`#dead-letters-table tr[data-dead="${id}"] button.${cls}`);
        await adm.waitForFunction((prev) => {
          const t = document.getElementById("dead-letters-action").textContent;
          return t !== "" && t !== prev && !document.getElementById("dead-letters-table").hasAttribute("aria-busy");
        }, before, { timeout: 30000 });
        report.dead_actions[action] = {
          id,
          note: await adm.textContent("#dead-letters-action"),
          outcome: await adm.evaluate(() => document.getElementById("dead-letters-action").dataset.outcome ?? null),
          ...(await readDead()),
        };
      }
      await shot(adm, "dead-letters-after-actions-light");
    }
  }
  await page.goBack();
  await waitForNodes(page);
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

  // Analyses (phase 2). A statistics:read key sees the form disabled, with the reason, before any submit.
  const WRITE_KEY = process.env.DASH_WRITE_KEY;
  if (WRITE_KEY) {
    const ro = await newPage("light", undefined, true);
    await ro.goto(`${BASE}/#/analyses`);
    await ro.waitForFunction(() => document.body.dataset.analysesReady, null, { timeout: 30000 });
    report.readonly = await ro.evaluate(() => ({
      ready: document.body.dataset.analysesReady,
      fieldset_disabled: document.getElementById("analysis-fields").disabled,
      submit_enabled: !document.getElementById("a-submit").matches(":disabled"),
      reason: document.getElementById("analysis-disabled").hidden ? "" : document.getElementById("analysis-disabled").textContent,
    }));
    await axe(ro, "analyses-readonly-light");
    await shot(ro, "analyses-readonly-light");

    // A jobs:write key submits a longtail analysis from the form: all sensors, 2018-01-01 to 2025-01-01.
    const w = await newPage("light", undefined, WRITE_KEY);
    await w.goto(`${BASE}/#/analyses`);
    await w.waitForFunction(() => document.body.dataset.analysesReady === "enabled", null, { timeout: 30000 });
    await w.selectOption("#a-kind", "longtail");
    await w.selectOption("#a-sensor", "");
    await w.selectOption("#a-window", "custom");
    await w.fill("#a-start", "2018-01-01");
    await w.fill("#a-end", "2025-01-01");
    // The workers that could take the job wait (SIGSTOP) until the page follows the job, so no step is missed.
    for (const pid of PAUSE) process.kill(pid, "SIGSTOP");
    paused = true;
    await w.click("#a-submit");
    const bar = await w.waitForSelector("#jobs li[data-job] progress", { timeout: 30000 });
    const jobId = await w.evaluate(() => document.querySelector("#jobs li[data-job]").dataset.job);
    await w.waitForSelector(`#jobs li[data-job="${jobId}"][data-state]`, { timeout: 30000 });
    // Every value the bar takes, as the stream moves it (old values from the mutation records: several updates
    // may land between two observer calls).
    await w.evaluate((id) => {
      const li = document.querySelector(`#jobs li[data-job="${id}"]`);
      const p = li.querySelector("progress");
      window.__bar = [[p.getAttribute("value"), p.getAttribute("max")]];
      window.__pct = [];
      new MutationObserver((records) => {
        const q = document.querySelector(`#jobs li[data-job="${id}"] progress`);
        window.__bar.push([q.getAttribute("value"), q.getAttribute("max")]);
        for (const r of records) if (r.attributeName === "data-progress") window.__pct.push(r.oldValue);
      }).observe(document.getElementById("jobs"), { subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ["value", "max", "data-progress"] });
    }, jobId);
    report.analysis = { job_id: jobId, bar_appeared: !!bar, state_before_workers: await w.evaluate((id) => document.querySelector(`#jobs li[data-job="${id}"]`).dataset.state, jobId) };
    for (const pid of PAUSE) process.kill(pid, "SIGCONT");
    paused = false;
    await w.waitForSelector(`#jobs li[data-job="${jobId}"][data-state="SUCCESS"] table.rare-commands`, { timeout: 180000 });
    Object.assign(report.analysis, await w.evaluate((id) => {
      const li = document.querySelector(`#jobs li[data-job="${id}"]`);
      const p = li.querySelector("progress");
      return {
        states: li.dataset.states.split(","),
        bar_values: window.__bar,
        progress_values: [...window.__pct, li.dataset.progress ?? null].filter((v) => v !== null).map(Number),
        bar_final: [Number(p.value), Number(p.max)],
        rare_commands: [...li.querySelectorAll("table.rare-commands .rare-command")].map((e) => e.dataset.command),
        outlier_rows: li.querySelectorAll("table.outlier-sessions tbody tr[data-row]").length,
        session_links: li.querySelectorAll(".result a.session-link").length,
        stored: JSON.parse(sessionStorage.getItem("celeriac.jobs")).map((j) => j.id),
      };
    }, jobId));
    // Sorting by frequency (a click on the header) orders the rows by it.
    await w.click(`#jobs li[data-job="${jobId}"] table.rare-commands button.sort[data-key="frequency"]`);
    report.analysis.sorted_frequencies = await w.evaluate((id) =>
      [...document.querySelectorAll(`#jobs li[data-job="${id}"] table.rare-commands tbody tr`)].map((tr) => Number(tr.children[1].textContent.replaceAll(",", ""))), jobId);
    await axe(w, "analyses-light");
    await shot(w, "analyses-light");

    // Botnet for one sensor, with a threshold: its score, the indicator bars and the recommendation.
    await w.selectOption("#a-kind", "botnet");
    await w.selectOption("#a-sensor", SENSOR);
    await w.click(".thresholds summary");
    await w.fill("#p-credential_reuse_threshold", "2");
    await w.click("#a-submit");
    await w.waitForFunction(() => document.querySelectorAll("#jobs li[data-job]").length === 2, null, { timeout: 30000 });
    const botnetId = await w.evaluate(() => document.querySelector("#jobs li[data-job]").dataset.job);
    await w.waitForSelector(`#jobs li[data-job="${botnetId}"][data-state="SUCCESS"] .result.botnet`, { timeout: 120000 });
    report.botnet = { job_id: botnetId, ...(await w.evaluate((id) => {
      const li = document.querySelector(`#jobs li[data-job="${id}"]`);
      return {
        score: Number(li.querySelector('.result [data-field="score"]').dataset.value),
        bars: [...li.querySelectorAll(".bars li")].map((b) => [b.dataset.indicator, Number(b.querySelector("[role=meter]").getAttribute("aria-valuenow"))]),
        recommendation: li.querySelector(".recommendation")?.textContent ?? "",
      };
    }, botnetId)) };
    await shot(w, "analyses-botnet-light");

    // A session link of the result opens the session page with its events.
    const link = await w.$(`#jobs li[data-job="${jobId}"] table.rare-commands a.session-link`) || await w.$(`#jobs li[data-job="${jobId}"] a.session-link`);
    const sessionId = await link.getAttribute("data-session");
    await link.click();
    await w.waitForFunction((id) => document.body.dataset.sessionLoaded === id, sessionId, { timeout: 30000 });
    const readSession = (pg) => pg.evaluate(() => ({
      hash: location.hash,
      title: document.getElementById("session-title").textContent,
      events: document.querySelectorAll("#session-events tbody tr[data-event]").length,
      event_ids: [...document.querySelectorAll("#session-events tbody tr[data-event]")].map((tr) => Number(tr.dataset.event)),
      commands: [...document.querySelectorAll('#session-events tr[data-type="cowrie.command.input"] td.cmd')].map((td) => td.textContent),
      summary: Object.fromEntries([...document.querySelectorAll("#session-summary div")].map((d) => [d.querySelector("dt").textContent, d.querySelector("dd").textContent])),
    }));
    report.session = { id: sessionId, ...(await readSession(w)) };
    await axe(w, "session-light");
    await shot(w, "session-light");
    // Leaving the session page clears its marker, so opening the same session again waits for the new answer.
    report.session_marker_after_leaving = await w.evaluate(() => new Promise((done) => {
      addEventListener("hashchange", () => done(document.body.dataset.sessionLoaded ?? null), { once: true });
      location.hash = "#/analyses";
    }));

    // The overview's latest longtail finding opens the finding, whose session links open the session page too.
    await w.goto(`${BASE}/#/overview?${WINDOW}`);
    await overviewLoaded(w);
    await w.click('#findings a.finding-link[href^="#/finding/longtail/"]');
    await w.waitForFunction(() => (document.body.dataset.findingLoaded || "").startsWith("longtail/"), null, { timeout: 30000 });
    const fl = await w.$("#finding-body a.session-link");
    report.finding = { loaded: await w.evaluate(() => document.body.dataset.findingLoaded), session_links: await w.$$eval("#finding-body a.session-link", (a) => a.length) };
    await shot(w, "finding-light");
    if (fl) {
      const fid = await fl.getAttribute("data-session");
      await fl.click();
      await w.waitForFunction((id) => document.body.dataset.sessionLoaded === id, fid, { timeout: 30000 });
      report.finding_session = { id: fid, ...(await readSession(w)) };
    }

    // Dark: the same job (this tab's session storage) followed again over SSE to its result; the session page.
    const jobs = await w.evaluate(() => sessionStorage.getItem("celeriac.jobs"));
    const d2 = await newPage("dark", undefined, WRITE_KEY, jobs);
    await d2.goto(`${BASE}/#/analyses`);
    await d2.waitForSelector(`#jobs li[data-job="${jobId}"][data-state="SUCCESS"] table.rare-commands`, { timeout: 60000 });
    await axe(d2, "analyses-dark");
    await shot(d2, "analyses-dark");
    await d2.goto(`${BASE}/#/session/${encodeURIComponent(sessionId)}`);
    await d2.waitForFunction((id) => document.body.dataset.sessionLoaded === id, sessionId, { timeout: 30000 });
    await axe(d2, "session-dark");
    await shot(d2, "session-dark");

    // Phone width: the analyses and session views fit.
    const ph = await newPage("light", { width: 390, height: 844 }, WRITE_KEY, jobs);
    await ph.goto(`${BASE}/#/analyses`);
    await ph.waitForSelector(`#jobs li[data-job="${jobId}"][data-state="SUCCESS"] table.rare-commands`, { timeout: 60000 });
    report.phone_overflow_analyses = await ph.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await shot(ph, "analyses-phone-light");
    await ph.goto(`${BASE}/#/session/${encodeURIComponent(sessionId)}`);
    await ph.waitForFunction((id) => document.body.dataset.sessionLoaded === id, sessionId, { timeout: 30000 });
    report.phone_overflow_session = await ph.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await shot(ph, "session-phone-light");
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
  if (paused) for (const pid of PAUSE) { try { process.kill(pid, "SIGCONT"); } catch { /* gone */ } }
  await browser.close();
}
console.log(JSON.stringify(report));

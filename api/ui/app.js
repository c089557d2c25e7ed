// celeriac operators' dashboard (issue 11, phases 1 and 2): plain ES module, no framework.
// Views: #/overview?days=7&sensor=NAME (or start=..&end=..), #/analyses (the form and this browser session's jobs,
// followed over SSE), #/finding/KIND/ID, #/session/ID, #/cluster (followed over SSE) and #/dead-letters. The API key and the jobs live in sessionStorage.
// Every piece of data from the API is inserted as text (honeypot data is hostile), never as HTML.

const KEY = "celeriac.apiKey";
const THEME = "celeriac.theme";
const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

/** Build an element: h("a", {href}, "text", child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ---------------------------------------------------------------- state in the URL

function route() {
  const raw = location.hash.replace(/^#/, "") || "/overview";
  const [path, qs] = raw.split("?");
  return { view: path.replace(/^\//, "") || "overview", params: new URLSearchParams(qs || "") };
}

function setRoute(view, params) {
  const qs = params.toString();
  const next = `#/${view}${qs ? "?" + qs : ""}`;
  if (location.hash !== next) location.hash = next;
  else render();
}

/** The API query string of the overview's window and sensor filter. */
function scopeQuery(params) {
  const q = new URLSearchParams();
  if (params.get("start")) {
    q.set("start", params.get("start"));
    if (params.get("end")) q.set("end", params.get("end"));
  } else {
    q.set("days", params.get("days") || "7");
  }
  for (const s of params.getAll("sensor")) q.append("sensor", s);
  return q;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  const r = await fetch(path, { headers: { "X-API-Key": key || "" } });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin((body && body.message) || "the key was refused");
    throw new ApiError(401, body);
  }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

/** A number that links to the API query that produced it. */
function numLink(value, href, field) {
  return h("a", { href, title: `GET ${href} (send the key as X-API-Key)`, "data-field": field, "data-value": value ?? "" }, fmt(value));
}

// ---------------------------------------------------------------- theme

function applyTheme() {
  const t = localStorage.getItem(THEME);
  if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
  else delete document.documentElement.dataset.theme;
  const dark = isDark();
  $("theme-toggle").textContent = dark ? "Light theme" : "Dark theme";
}

function isDark() {
  const t = document.documentElement.dataset.theme;
  if (t) return t === "dark";
  return matchMedia("(prefers-color-scheme: dark)").matches;
}

$("theme-toggle").addEventListener("click", () => {
  localStorage.setItem(THEME, isDark() ? "light" : "dark");
  applyTheme();
  if (lastTimeline) drawChart(lastTimeline);
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  applyTheme();
  if (lastTimeline) drawChart(lastTimeline);
});

// ---------------------------------------------------------------- login

function showLogin(message) {
  stopCluster();
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "login";
  $("logout").hidden = true;
  $("login-error").textContent = message || "";
  $("api-key").focus();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("api-key").value.trim();
  $("login-error").textContent = "";
  const r = await fetch("/api/v1/statistics/sensors?days=1", { headers: { "X-API-Key": key } });
  if (r.ok) {
    sessionStorage.setItem(KEY, key);
    $("api-key").value = "";
    render();
  } else {
    let m = `HTTP ${r.status}`;
    try { m = (await r.json()).message || m; } catch { /* keep */ }
    $("login-error").textContent = `Sign-in failed: ${m}`;
  }
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  for (const ctl of streams.values()) ctl.abort();
  mePromise = null;
  showLogin("Signed out.");
});

// ---------------------------------------------------------------- skeletons

function skeletonRows(table, cols, rows = 5) {
  table.replaceChildren(h("tbody", {}, Array.from({ length: rows }, () =>
    h("tr", {}, Array.from({ length: cols }, () => h("td", {}, h("span", { class: "skeleton" })))))));
  table.setAttribute("aria-busy", "true");
}

function fillTable(table, headers, rows, empty = "nothing in this window") {
  table.removeAttribute("aria-busy");
  const head = h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { scope: "col", class: cls }, label))));
  const body = h("tbody", {});
  if (!rows.length) body.append(h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, empty)));
  for (const r of rows) body.append(r);
  table.replaceChildren(head, body);
}

const TOTALS = [
  ["total_sessions", "Sessions"],
  ["unique_ips", "Unique IPs"],
  ["login_attempts", "Login attempts"],
  ["successful_logins", "Successful logins"],
  ["sessions_with_commands", "Sessions with commands"],
  ["file_downloads", "File downloads"],
  ["avg_session_seconds", "Avg session (s)"],
];

function overviewSkeleton() {
  $("totals").replaceChildren(...TOTALS.map(([k, label]) =>
    h("div", { class: "total" }, h("span", { class: "label" }, label), h("span", { class: "value", "data-total": k }, h("span", { class: "skeleton" })))));
  $("sensors").replaceChildren(h("li", { class: "badge" }, h("span", { class: "skeleton" })));
  $("chart").replaceChildren(h("span", { class: "skeleton block" }));
  $("legend").replaceChildren();
  skeletonRows($("top-ips"), 4);
  skeletonRows($("top-credentials"), 4);
  skeletonRows($("top-commands"), 4);
  skeletonRows($("downloads"), 2, 3);
  skeletonRows($("findings"), 4, 3);
}

// ---------------------------------------------------------------- overview

let overviewSeq = 0;
let lastTimeline = null;
let chart = null;

async function loadOverview(params) {
  const seq = ++overviewSeq;
  const scope = scopeQuery(params);
  syncFilters(params);
  $("overview-error").textContent = "";
  overviewSkeleton();
  const days = params.get("start")
    ? (Date.parse(params.get("end") || new Date().toISOString()) - Date.parse(params.get("start"))) / 86400e3
    : Number(params.get("days") || 7);
  const bucket = days <= 3 ? "hour" : "day";
  const sessionsUrl = `/api/v1/statistics/sessions?${scope}&bucket_size=${bucket}`;
  const threatsUrl = `/api/v1/statistics/threats?${scope}`;
  const sensorsUrl = `/api/v1/statistics/sensors?${scope}`;
  const allSensorsUrl = `/api/v1/statistics/sensors?days=1`;
  try {
    const [sessions, threats, sensors, all] = await Promise.all([
      api(sessionsUrl), api(threatsUrl), api(sensorsUrl), api(allSensorsUrl)]);
    if (seq !== overviewSeq) return;
    fillSensorOptions(all.sensors.map((s) => s.sensor), params.getAll("sensor"));
    const w = sessions.window;
    $("window-text").textContent = `${w.start} – ${w.end}${w.sensors.length ? " · " + w.sensors.join(", ") : " · all sensors"} · answered by the ${w.source}`;
    renderSensors(sensors, sensorsUrl);
    renderTotals(sessions, sessionsUrl);
    lastTimeline = sessions.timeline;
    drawChart(lastTimeline);
    renderThreats(threats, threatsUrl, scope);
    document.body.dataset.overviewLoaded = String(seq);
  } catch (e) {
    if (seq !== overviewSeq || e.status === 401) return;
    $("overview-error").textContent = `Could not load the overview: ${e.message}`;
  }
}

function renderSensors(body, url) {
  const items = body.sensors.map((s) => h("li", { class: "badge", "data-sensor": s.sensor },
    h("strong", {}, s.sensor),
    h("span", { class: `status ${s.status}` }, s.status),
    h("span", { class: "muted" }, s.last_ingest_at ? `last ingest ${s.last_ingest_at.replace("T", " ").slice(0, 16)} UTC` : "never ingested"),
    numLink(s.events, url, "sensor_events"), " events"));
  $("sensors").replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "no sensors")]));
}

function renderTotals(body, url) {
  for (const [k] of TOTALS) {
    const el = document.querySelector(`[data-total="${k}"]`);
    const v = k === "avg_session_seconds" && body[k] !== null ? Math.round(body[k] * 10) / 10 : body[k];
    el.replaceChildren(numLink(v, url, k));
  }
}

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function drawChart(timeline) {
  const el = $("chart");
  if (chart) { chart.destroy(); chart = null; }
  el.replaceChildren();
  const xs = timeline.map((b) => Date.parse(b.bucket) / 1000);
  const fg = cssVar("--muted"), grid = cssVar("--line"), s1 = cssVar("--s1"), s2 = cssVar("--s2");
  $("legend").replaceChildren(
    h("span", {}, h("i", { style: `background:${s1}` }), "sessions (left axis)"),
    h("span", {}, h("i", { style: `background:${s2}` }), "events (right axis)"));
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
  const opts = {
    width: el.clientWidth || 600,
    height: el.clientHeight || 300,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, ev: {} },
    series: [
      {},
      { label: "sessions", stroke: s1, width: 2, points: { show: false } },
      { label: "events", stroke: s2, width: 1.5, scale: "ev", points: { show: false } },
    ],
    axes: [axis, { ...axis, size: 60 }, { ...axis, scale: "ev", side: 1, size: 70, grid: { show: false } }],
  };
  chart = new uPlot(opts, [xs, timeline.map((b) => b.sessions), timeline.map((b) => b.events)], el);
}

let resizeTimer = null;
addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (chart) chart.setSize({ width: $("chart").clientWidth, height: $("chart").clientHeight }); }, 100);
});

function renderThreats(t, url, scope) {
  const sessionsOf = (ip) => {
    const q = new URLSearchParams(scope);
    q.set("src_ip", ip);
    return `/api/v1/sessions?${q}`;
  };
  fillTable($("top-ips"), [["IP"], ["Sessions", "num"], ["Events", "num"], ["Last seen"]],
    t.top_source_ips.map((r) => h("tr", { "data-ip": r.ip },
      h("td", { class: "mono" }, h("a", { href: sessionsOf(r.ip), title: "this IP's sessions" }, r.ip)),
      h("td", { class: "num" }, numLink(r.sessions, url, "sessions")),
      h("td", { class: "num" }, numLink(r.events, url, "events")),
      h("td", {}, r.last_seen.replace("T", " ").slice(0, 16)))));
  fillTable($("top-credentials"), [["Username"], ["Password"], ["Attempts", "num"], ["Successes", "num"]],
    t.top_credentials.map((r) => h("tr", {},
      h("td", { class: "wrap mono" }, r.username), h("td", { class: "wrap mono" }, r.password),
      h("td", { class: "num" }, numLink(r.attempts, url, "attempts")),
      h("td", { class: "num" }, numLink(r.successes, url, "successes")))));
  fillTable($("top-commands"), [["Command (defanged)"], ["Count", "num"], ["Risk", "num"], ["Level"]],
    t.top_commands.map((r) => h("tr", {},
      h("td", { class: "cmd" }, r.command),
      h("td", { class: "num" }, numLink(r.count, url, "count")),
      h("td", { class: "num" }, fmt(r.risk_score)), h("td", {}, r.risk_level))));
  fillTable($("downloads"), [["URL / SHA-256"], ["Sessions", "num"]],
    t.downloads.map((r) => h("tr", {},
      h("td", { class: "wrap mono" }, r.url || "(no URL)", h("br"), h("span", { class: "muted" }, r.sha256 || "")),
      h("td", { class: "num" }, numLink(r.count, url, "count")))));
  const f = t.latest_findings;
  fillTable($("findings"), [["Kind"], ["Detected"], ["Score", "num"], ["Summary"]],
    ["longtail", "snowshoe", "botnet"].filter((k) => f[k]).map((k) => {
      const r = f[k];
      return h("tr", {},
        h("td", {}, h("a", { href: `#/finding/${k}/${r.id}`, class: "finding-link", title: `the ${k} finding, with its sessions` }, k)),
        h("td", {}, r.detected_at.replace("T", " ").slice(0, 16)),
        h("td", { class: "num" }, h("a", { href: `/api/v1/findings/${k}/${r.id}`, title: "GET this finding (send the key as X-API-Key)" }, r.score === null ? "–" : r.score.toFixed(3))),
        h("td", {}, r.recommendation || (r.positive ? "positive" : "nothing found")));
    }), "no findings stored yet");
}

function syncFilters(params) {
  const sel = $("f-window");
  if (params.get("start")) {
    if (!sel.querySelector('option[value="custom"]')) sel.append(h("option", { value: "custom" }, "custom"));
    sel.value = "custom";
  } else {
    const d = params.get("days") || "7";
    if (!sel.querySelector(`option[value="${CSS.escape(d)}"]`)) sel.append(h("option", { value: d }, `last ${d} days`));
    sel.value = d;
  }
}

function fillSensorOptions(names, chosen) {
  const sel = $("f-sensor");
  const want = ["", ...names];
  const have = [...sel.options].map((o) => o.value);
  if (want.join("\n") !== have.join("\n")) {
    sel.replaceChildren(h("option", { value: "" }, "all sensors"), ...names.map((n) => h("option", { value: n }, n)));
  }
  sel.value = chosen[0] || "";
}

$("f-window").addEventListener("change", () => {
  const { params } = route();
  const v = $("f-window").value;
  if (v === "custom") {
    if (!params.get("start")) {
      const end = new Date();
      params.set("start", new Date(end - (Number(params.get("days") || 7)) * 86400e3).toISOString().slice(0, 19) + "Z");
      params.set("end", end.toISOString().slice(0, 19) + "Z");
      params.delete("days");
    }
  } else {
    params.delete("start");
    params.delete("end");
    params.set("days", v);
  }
  setRoute("overview", params);
});

$("f-sensor").addEventListener("change", () => {
  const { params } = route();
  params.delete("sensor");
  if ($("f-sensor").value) params.append("sensor", $("f-sensor").value);
  setRoute("overview", params);
});

// ---------------------------------------------------------------- cluster

// The view follows GET /api/v1/cluster/stream: the server sends the workers and the queues at once and then
// whenever they change; a lost stream is reopened after a pause that grows to 30 s.
let clusterStream = null;

function stopCluster() {
  if (clusterStream) clusterStream.abort();
  clusterStream = null;
}

async function followCluster() {
  skeletonRows($("workers"), 9, 2);
  skeletonRows($("queues"), 6, 3);
  const ctl = new AbortController();
  clusterStream = ctl;
  let pause = 1000;
  while (!ctl.signal.aborted) {
    try {
      await readSse("/api/v1/cluster/stream", ctl.signal, (event, payload) => {
        pause = 1000;
        if (event === "workers") renderWorkers(payload.workers);
        else if (event === "queues") renderQueues(payload);
        else if (event === "error") { $("cluster-error").textContent = `The cluster stream reported: ${payload.message}`; return; }
        else return;
        $("cluster-error").textContent = "";
        $("cluster-updated").textContent = `live · last change ${new Date().toLocaleTimeString("en-GB")}`;
        if (document.body.dataset.clusterWorkers && document.body.dataset.clusterQueues) document.body.dataset.clusterLoaded = "1";
      });
      if (ctl.signal.aborted) return;
      $("cluster-updated").textContent = "the stream ended; reconnecting";
    } catch (e) {
      if (e.name === "AbortError" || e.status === 401) return;
      $("cluster-error").textContent = `Could not follow the cluster: ${e.message}; retrying in ${pause / 1000} s`;
    }
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 30000);
  }
}

function renderWorkers(workers) {
  const url = "/api/v1/cluster/workers";
  fillTable($("workers"), [["Node"], ["Kind"], ["State"], ["Queues"], ["Active", "num"], ["Processed", "num"],
    ["Concurrency", "num"], ["Load avg"], ["Registered"], ["Routing weight", "num"]],
    workers.map((w) => h("tr", { "data-node": w.node, "data-alive": String(w.alive) },
      h("td", { class: "mono" }, w.node),
      h("td", {}, h("span", { class: "kind", title: w.sw_ident || "" }, w.implementation)),
      h("td", {}, h("span", { class: `status ${w.alive ? "online" : "offline"}` }, w.alive ? "online" : "offline")),
      h("td", { class: "queues" }, w.queues.join(", ")),
      h("td", { class: "num" }, numLink(w.active, url, "active")),
      h("td", { class: "num" }, numLink(w.processed, url, "processed")),
      h("td", { class: "num" }, fmt(w.concurrency)),
      h("td", {}, w.loadavg.length ? w.loadavg.map((x) => x.toFixed(2)).join(" ") : "–"),
      h("td", { class: "registered" }, w.registered ? "yes" : "no"),
      h("td", { class: "num" }, w.routing_weight.toFixed(2)))),
    "no workers seen yet (they appear with their first event or inspect reply)");
  document.body.dataset.clusterWorkers = "1";
}

function renderQueues({ queues, dead_letters: dead }) {
  const url = "/api/v1/cluster/queues";
  fillTable($("queues"), [["Queue"], ["Priority 0", "num"], ["3", "num"], ["6", "num"], ["9", "num"], ["Total", "num"], ["Unacked", "num"]],
    queues.map((q) => h("tr", { "data-queue": q.name },
      h("td", { class: "mono" }, q.name, q.direct ? h("span", { class: "muted" }, " (direct)") : null),
      q.buckets.map((b) => h("td", { class: "num" }, fmt(b.messages))),
      h("td", { class: "num" }, numLink(q.total, url, "total")),
      h("td", { class: "num" }, numLink(q.unacked, url, "unacked")))));
  $("dead-count").replaceChildren(
    numLink(dead, url, "dead_letters"), dead === 1 ? " message" : " messages",
    " the workers could not process · ", h("a", { href: "#/dead-letters", id: "dead-list-link" }, "list them"));
  document.body.dataset.clusterQueues = "1";
}

// ---------------------------------------------------------------- dead letters

async function loadDeadLetters() {
  const url = "/api/v1/cluster/dead-letters?limit=100";
  skeletonRows($("dead-letters-table"), 6, 3);
  $("dead-letters-note").textContent = "";
  try {
    const d = await api(url);
    $("dead-letters-note").replaceChildren(numLink(d.count, url, "count"),
      ` kept in all${d.count > d.entries.length ? `; the newest ${d.entries.length} are listed` : ""}.`);
    fillTable($("dead-letters-table"), [["Time"], ["Queue"], ["Worker"], ["Reason"], ["Size", "num"], ["Message"], ["Actions"]],
      d.entries.map((e) => h("tr", { "data-dead": e.id },
        h("td", { class: "mono" }, e.time ? e.time.replace("T", " ").slice(0, 19) : "–"),
        h("td", { class: "mono" }, e.queue || "–"),
        h("td", { class: "mono" }, e.node || "–"),
        h("td", {}, e.reason),
        h("td", { class: "num" }, fmt(e.size)),
        h("td", {}, h("code", { class: "message" }, e.message.length > 160 ? e.message.slice(0, 160) + "…" : e.message)),
        h("td", {},
          h("button", { type: "button", class: "dead-replay", "data-id": e.id, "aria-label": `Replay dead letter ${e.id} to ${e.queue || "its queue"}` }, "Replay"),
          " ",
          h("button", { type: "button", class: "dead-drop", "data-id": e.id, "aria-label": `Drop dead letter ${e.id}` }, "Drop")))),
      "no dead letters: every message the workers took could be read");
  } catch (e) {
    if (e.status === 401) return;
    $("dead-letters-table").replaceChildren();
    $("dead-letters-table").removeAttribute("aria-busy");
    $("dead-letters-note").textContent = e.status === 403
      ? "Listing dead letters needs a key with the admin scope: they hold whole task messages, arguments included."
      : `Could not load the dead letters: ${e.message}`;
  }
}

/** Replay or drop one dead letter (admin), say what happened, and list again. */
async function deadLetterAction(action, id) {
  const note = $("dead-letters-action");
  note.textContent = "";
  delete note.dataset.outcome;
  try {
    const r = await fetch(`/api/v1/cluster/dead-letters/${action}`, {
      method: "POST",
      headers: { "X-API-Key": sessionStorage.getItem(KEY) || "", "Content-Type": "application/json" },
      body: JSON.stringify({ ids: [id] }),
    });
    const answer = await r.json().catch(() => null);
    if (!r.ok) {
      note.textContent = `Could not ${action} ${id}: ${(answer && answer.message) || `HTTP ${r.status}`}`;
      return;
    }
    const o = answer.outcomes[0];
    note.textContent = o.outcome === "replayed" ? `Replayed ${id} to ${o.detail}.`
      : o.outcome === "dropped" ? `Dropped ${id}.`
      : `${id}: ${o.outcome}${o.detail ? ` (${o.detail})` : ""}.`;
    note.dataset.outcome = o.outcome;
  } catch (err) {
    note.textContent = `Could not ${action} ${id}: ${err.message}`;
  }
  await loadDeadLetters();
}

$("dead-letters-table").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-id]");
  if (!b) return;
  deadLetterAction(b.classList.contains("dead-replay") ? "replay" : "drop", b.dataset.id);
});

$("explain-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = new URLSearchParams({ task: $("x-task").value.trim() });
  if ($("x-queue").value.trim()) q.set("queue", $("x-queue").value.trim());
  if ($("x-req").value.trim()) q.set("requirements", $("x-req").value.trim());
  const out = $("explain");
  out.replaceChildren(h("span", { class: "skeleton" }));
  try {
    const { decision: d } = await api(`/api/v1/routing/explain?${q}`);
    const outcome = d.outcome || {};
    out.replaceChildren(
      h("p", {}, h("strong", {}, outcome.kind || "?"), " · queue ", h("code", {}, outcome.queue || d.queue || ""),
        outcome.node ? [" · node ", h("code", {}, outcome.node)] : null, " · strategy ", String(d.strategy || "")),
      h("ul", {}, (d.notes || []).map((n) => h("li", {}, n))),
      h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Candidates table" },
        h("table", {}, h("thead", {}, h("tr", {}, ["Candidate", "Chosen", "Priority", "Load", "Skipped because"].map((x) => h("th", { scope: "col" }, x)))),
          h("tbody", {}, (d.candidates || []).map((c) => h("tr", {},
            h("td", { class: "mono" }, c.node || ""), h("td", {}, c.chosen ? "yes" : "no"),
            h("td", {}, String(c.priority ?? "")), h("td", {}, Number(c.load || 0).toFixed(2)),
            h("td", {}, c.skipped || "–")))))),
      outcome.reason ? h("p", { class: "error" }, outcome.reason) : "");
  } catch (err) {
    if (err.status !== 401) out.replaceChildren(h("p", { class: "error" }, err.message));
  }
});

// ---------------------------------------------------------------- the calling key

let mePromise = null;
let meKey = null;

/** GET /api/v1/me, once per key: its scopes decide whether the analyses form is enabled. */
function loadMe() {
  const key = sessionStorage.getItem(KEY);
  if (!mePromise || meKey !== key) {
    meKey = key;
    mePromise = api("/api/v1/me").catch((e) => { mePromise = null; throw e; });
  }
  return mePromise;
}

// ---------------------------------------------------------------- analyses

const JOBS = "celeriac.jobs";
// The detectors' thresholds (crates/analysis: LongtailParams, SnowshoeParams, BotnetParams) with their defaults.
const PARAMS = {
  longtail: [["rarity_threshold", 0.05, "any"], ["sequence_window", 5, "1"], ["cluster_eps", 0.3, "any"],
    ["min_cluster_size", 5, "1"], ["entropy_threshold", 0.8, "any"], ["sensitivity_threshold", 0.95, "any"]],
  snowshoe: [["single_attempt_threshold", 5, "1"], ["time_cluster_eps", 0.1, "any"], ["min_cluster_size", 5, "1"],
    ["geographic_diversity_threshold", 0.7, "any"], ["sensitivity_threshold", 0.7, "any"]],
  botnet: [["credential_reuse_threshold", 3, "1"], ["command_similarity_threshold", 0.7, "any"],
    ["time_cluster_eps", 0.5, "any"], ["min_cluster_size", 3, "1"], ["geographic_cluster_threshold", 0.3, "any"],
    ["sensitivity_threshold", 0.6, "any"]],
};

function storedJobs() {
  try { return JSON.parse(sessionStorage.getItem(JOBS) || "[]"); } catch { return []; }
}

function storeJob(job) {
  sessionStorage.setItem(JOBS, JSON.stringify([job, ...storedJobs().filter((j) => j.id !== job.id)].slice(0, 50)));
}

function renderParamFields() {
  const kind = $("a-kind").value;
  $("a-params").replaceChildren(...PARAMS[kind].map(([name, def, step]) => h("span", { class: "param" },
    h("label", { for: `p-${name}` }, name.replaceAll("_", " ")),
    h("input", { id: `p-${name}`, name, type: "number", step, min: "0", placeholder: String(def), inputmode: "decimal" }))));
}

$("a-kind").addEventListener("change", renderParamFields);
$("a-window").addEventListener("change", () => { $("a-custom").hidden = $("a-window").value !== "custom"; });

async function loadAnalyses() {
  if (!$("a-params").children.length) renderParamFields();
  $("me-text").textContent = "";
  try {
    const [me, sensors] = await Promise.all([loadMe(), api("/api/v1/statistics/sensors?days=1")]);
    const sel = $("a-sensor");
    const names = sensors.sensors.map((s) => s.sensor);
    if ([...sel.options].map((o) => o.value).join("\n") !== ["", ...names].join("\n")) {
      const keep = sel.value;
      sel.replaceChildren(h("option", { value: "" }, "all sensors"), ...names.map((n) => h("option", { value: n }, n)));
      sel.value = names.includes(keep) ? keep : "";
    }
    $("me-text").textContent = `key “${me.name}” · scopes ${me.scopes.join(", ")}`;
    const allowed = me.can_submit_analyses;
    $("analysis-fields").disabled = !allowed;
    $("analysis-disabled").hidden = allowed;
    $("analysis-disabled").textContent = allowed ? "" :
      `This key (“${me.name}”, scopes ${me.scopes.join(", ")}) cannot run analyses: that needs the jobs:write scope. ` +
      "Sign in with a key that has it (celeriac-api key create --scopes statistics:read,jobs:write).";
    document.body.dataset.analysesReady = allowed ? "enabled" : "disabled";
  } catch (e) {
    if (e.status !== 401) $("analysis-error").textContent = `Could not load the form: ${e.message}`;
  }
  renderJobs();
}

function analysisBody() {
  const kind = $("a-kind").value;
  const body = { kind, sensor: $("a-sensor").value || null };
  const w = $("a-window").value;
  if (w === "custom") {
    const start = $("a-start").value, end = $("a-end").value;
    if (!start) throw new Error("choose a start date for the custom window");
    body.time_window = { start: `${start}T00:00:00Z` };
    if (end) body.time_window.end = `${end}T00:00:00Z`;
  } else {
    body.time_window = w;
  }
  const params = {};
  for (const input of $("a-params").querySelectorAll("input")) {
    if (input.value.trim() === "") continue;
    const v = Number(input.value);
    if (!Number.isFinite(v)) throw new Error(`${input.name}: not a number`);
    params[input.name] = v;
  }
  body.params = params;
  return body;
}

$("analysis-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("analysis-error").textContent = "";
  let body;
  try { body = analysisBody(); } catch (err) { $("analysis-error").textContent = err.message; return; }
  $("a-submit").disabled = true;
  try {
    const r = await fetch("/api/v1/analyses", {
      method: "POST",
      headers: { "X-API-Key": sessionStorage.getItem(KEY) || "", "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => null);
    if (r.status !== 202) {
      const m = (answer && answer.message) || `HTTP ${r.status}`;
      $("analysis-error").textContent = `The analysis was refused: ${m}`;
      return;
    }
    const w = body.time_window;
    storeJob({
      id: answer.id, kind: body.kind, sensor: body.sensor, params: body.params,
      window: typeof w === "string" ? `last ${w}` : `${w.start.slice(0, 10)} – ${(w.end || "now").slice(0, 10)}`,
      submitted_at: new Date().toISOString(), node: answer.node, queue: answer.queue,
    });
    renderJobs();
  } catch (err) {
    $("analysis-error").textContent = `The analysis could not be sent: ${err.message}`;
  } finally {
    $("a-submit").disabled = false;
  }
});

// Open streams by job id, so a view switch neither duplicates nor drops one.
const streams = new Map();
const lastState = new Map();

function renderJobs() {
  const list = $("jobs");
  const jobs = storedJobs();
  if (!jobs.length) {
    list.replaceChildren(h("li", { class: "muted" }, "no analyses submitted in this browser session yet"));
    return;
  }
  const items = jobs.map((j) => {
    let li = list.querySelector(`li[data-job="${CSS.escape(j.id)}"]`);
    if (!li) {
      li = h("li", { class: "job", "data-job": j.id, "data-states": "" },
        h("div", { class: "job-head" },
          h("strong", {}, j.kind), " · ", j.sensor || "all sensors", " · ", j.window,
          h("span", { class: "muted" }, ` · submitted ${j.submitted_at.replace("T", " ").slice(0, 19)} UTC · `),
          h("a", { href: `/api/v1/jobs/${encodeURIComponent(j.id)}`, class: "mono", title: "GET this job (send the key as X-API-Key)" }, j.id.slice(0, 8))),
        h("div", { class: "job-progress" },
          h("progress", { max: "1", "aria-label": `Progress of the ${j.kind} job ${j.id.slice(0, 8)}` }),
          h("span", { class: "job-state" }, "waiting for the first state…")),
        h("div", { class: "job-result" }));
    }
    const seen = lastState.get(j.id);
    if (seen) applyState(li, j, seen);
    if (!streams.has(j.id) && !(seen && seen.ready)) follow(j, li);
    return li;
  });
  list.replaceChildren(...items);
}

/** Follow a job's SSE stream with fetch (EventSource cannot send X-API-Key) until a ready state. */
/**
 * Read a server-sent event stream with the key (EventSource cannot send headers): calls onEvent(event, payload) for
 * each event with JSON data, in order; returns when the stream ends. Throws an ApiError for a refused request.
 */
async function readSse(path, signal, onEvent) {
  const r = await fetch(path, {
    headers: { "X-API-Key": sessionStorage.getItem(KEY) || "", Accept: "text/event-stream" },
    signal,
  });
  if (!r.ok) {
    const b = await r.json().catch(() => null);
    if (r.status === 401) {
      sessionStorage.removeItem(KEY);
      showLogin((b && b.message) || "the key was refused");
    }
    throw new ApiError(r.status, b);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replaceAll("\r\n", "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

async function follow(job, li) {
  const ctl = new AbortController();
  streams.set(job.id, ctl);
  try {
    await readSse(`/api/v1/jobs/${encodeURIComponent(job.id)}/events`, ctl.signal, (event, payload) => {
      if (event === "state") {
        lastState.set(job.id, payload);
        applyState(currentLi(job.id) || li, job, payload);
      } else if (event === "error") {
        showJobError(currentLi(job.id) || li, `the stream reported: ${payload.message}`);
      }
    });
    const last = lastState.get(job.id);
    if (!last || !last.ready) showJobError(currentLi(job.id) || li, "the progress stream ended before the job finished; reopen this view to follow it again");
  } catch (e) {
    if (e.name !== "AbortError" && e.status !== 401) showJobError(currentLi(job.id) || li, `could not follow the job: ${e.message}`);
  } finally {
    streams.delete(job.id);
  }
}

function currentLi(id) { return $("jobs").querySelector(`li[data-job="${CSS.escape(id)}"]`); }

function showJobError(li, message) {
  li.querySelector(".job-state").replaceChildren(h("span", { class: "error" }, message));
}

function applyState(li, job, s) {
  const states = li.dataset.states ? li.dataset.states.split(",") : [];
  if (states[states.length - 1] !== s.state) { states.push(s.state); li.dataset.states = states.join(","); }
  li.dataset.state = s.state;
  const bar = li.querySelector("progress");
  const p = s.progress;
  if (s.state === "SUCCESS") { bar.max = 1; bar.value = 1; }
  else if (p && p.total > 0) { bar.max = p.total; bar.value = Math.min(p.current, p.total); }
  else if (s.ready) { bar.max = 1; bar.value = 0; }
  else bar.removeAttribute("value");
  if (p && p.total > 0) {
    const pct = Math.round((100 * Math.min(p.current, p.total)) / p.total);
    li.dataset.progress = String(pct);
  }
  const text = li.querySelector(".job-state");
  const where = s.worker ? ` on ${s.worker}` : "";
  if (s.state === "SUCCESS") {
    text.replaceChildren(h("span", { class: "status ok" }, "success"), ` finished${where}${s.date_done ? " at " + s.date_done.replace("T", " ").slice(0, 19) : ""}`);
    const out = li.querySelector(".job-result");
    if (!out.dataset.rendered) {
      out.dataset.rendered = "1";
      out.replaceChildren(renderResult(job.kind, s.result || {}, `/api/v1/jobs/${encodeURIComponent(job.id)}`));
    }
  } else if (s.state === "FAILURE" || s.state === "REVOKED" || s.state === "REJECTED") {
    const r = s.result || {};
    const why = s.state === "REVOKED" ? "the job was revoked"
      : s.state === "REJECTED" ? "no worker could take the job (routing rejected it)"
        : `${r.exc_type || "error"}: ${r.exc_message || (typeof r === "string" ? r : "the task failed")}`;
    text.replaceChildren(h("span", { class: "status failing" }, s.state.toLowerCase()), " ", h("span", { class: "job-error" }, why));
  } else {
    const stage = p && p.stage ? ` · ${p.stage.replaceAll("_", " ")}${p.total ? ` ${p.current} of ${p.total}` : ""}` : "";
    text.textContent = `${s.state.toLowerCase()}${where}${stage}`;
  }
}

// ---------------------------------------------------------------- results for people

/** A sortable table: columns [label, key, kind ("num"|"text"), cell(row) -> node]. */
function sortableTable(label, columns, rows, cls) {
  const table = h("table", { class: cls });
  let sortKey = null, dir = 1;
  const draw = () => {
    const sorted = sortKey === null ? rows : [...rows].sort((a, b) => {
      const col = columns.find((c) => c[1] === sortKey);
      const x = a[sortKey], y = b[sortKey];
      return (col[2] === "num" ? (Number(x) - Number(y)) : String(x ?? "").localeCompare(String(y ?? ""))) * dir;
    });
    const head = h("thead", {}, h("tr", {}, columns.map(([lab, key, kind]) => h("th", {
      scope: "col", class: kind === "num" ? "num" : null,
      "aria-sort": sortKey === key ? (dir > 0 ? "ascending" : "descending") : "none",
    }, h("button", { type: "button", class: "sort", "data-key": key }, lab, h("span", { "aria-hidden": "true" }, sortKey === key ? (dir > 0 ? " ▲" : " ▼") : " ↕"))))));
    const body = h("tbody", {}, sorted.length ? sorted.map((r) => h("tr", { "data-row": r.__id ?? "" },
      columns.map(([, key, kind, cell]) => h("td", { class: kind === "num" ? "num" : key === "command" ? "cmd" : null }, cell ? cell(r) : fmtCell(r[key])))))
      : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "none")));
    table.replaceChildren(head, body);
    for (const b of head.querySelectorAll("button.sort")) b.addEventListener("click", () => {
      if (sortKey === b.dataset.key) dir = -dir; else { sortKey = b.dataset.key; dir = 1; }
      draw();
    });
  };
  draw();
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": label }, table);
}

function fmtCell(v) {
  if (typeof v === "number") return Number.isInteger(v) ? fmt(v) : v.toFixed(3);
  return v ?? "–";
}

const sessionLink = (id) => h("a", { href: `#/session/${encodeURIComponent(id)}`, class: "mono session-link", "data-session": id }, id);

function renderResult(kind, r, url) {
  if (kind === "longtail") return renderLongtail(r, url);
  return renderScores(kind, r, url);
}

function renderLongtail(r, url) {
  const rare = (r.rare_commands || []).map((c, i) => ({ ...c, __id: i, first_session: (c.sessions || [])[0]?.session_id }));
  const outliers = (r.outlier_sessions || []).map((o, i) => ({ ...o, __id: i }));
  return h("div", { class: "result longtail" },
    h("p", {}, "Analyzed ", numLink(r.total_events_analyzed, url, "total_events_analyzed"), " events in ",
      numLink(r.total_sessions_analyzed, url, "total_sessions_analyzed"), " sessions: ",
      numLink(r.rare_command_count, url, "rare_command_count"), " rare commands, ",
      numLink(r.outlier_session_count, url, "outlier_session_count"), " outlier sessions, ",
      numLink(r.anomalous_sequence_count, url, "anomalous_sequence_count"), " anomalous sequences."),
    r.recommendation ? h("p", { class: "recommendation" }, r.recommendation) : null,
    h("h3", {}, "Rare commands"),
    sortableTable("Rare commands table", [
      ["Command", "command", "text", (c) => h("span", { class: "rare-command", "data-command": c.command }, c.command)],
      ["Frequency", "frequency", "num"],
      ["Rarity", "rarity_score", "num"],
      ["Sessions", "session_count", "num"],
      ["A session", "first_session", "text", (c) => c.first_session ? sessionLink(c.first_session) : "–"],
    ], rare, "rare-commands"),
    h("h3", {}, "Outlier sessions"),
    sortableTable("Outlier sessions table", [
      ["Session", "session_id", "text", (o) => sessionLink(o.session_id)],
      ["Source IP", "src_ip", "text"],
      ["Duration (s)", "duration", "num"],
      ["Commands", "command_count", "num"],
      ["Logins", "login_attempts", "num"],
      ["Files", "file_operations", "num"],
      ["Cluster", "cluster_label", "num"],
      ["Anomaly score", "anomaly_score", "num"],
    ], outliers, "outlier-sessions"));
}

/** Snowshoe and botnet: the score, each indicator group's scores as bars, the recommendation. */
function renderScores(kind, r, url) {
  const score = kind === "snowshoe" ? r.confidence_score : r.coordination_score;
  const likely = kind === "snowshoe" ? r.is_likely_snowshoe : r.is_likely_botnet;
  const bars = [];
  for (const [group, ind] of Object.entries(r.indicators || {})) {
    for (const [k, v] of Object.entries(ind || {})) {
      if (typeof v === "number" && !Number.isInteger(v) || (typeof v === "number" && /score|ratio|diversity|similarity|consistency/.test(k))) {
        if (v >= 0 && v <= 1) bars.push([group, k, v]);
      }
    }
  }
  return h("div", { class: `result ${kind}` },
    h("p", { class: "score" }, h("strong", {}, kind === "snowshoe" ? "Confidence " : "Coordination "),
      h("a", { href: url, "data-field": "score", "data-value": score ?? "" }, score === undefined || score === null ? "–" : score.toFixed(3)),
      " · ", h("span", { class: `status ${likely ? "failing" : "ok"}` }, likely ? `likely ${kind}` : `not ${kind}`),
      r.analysis_metadata ? ` · ${fmt(r.analysis_metadata.total_sessions)} sessions, ${fmt(r.analysis_metadata.unique_ips)} IPs` : ""),
    r.recommendation ? h("p", { class: "recommendation" }, r.recommendation) : null,
    r.error ? h("p", { class: "error" }, r.error) : null,
    h("h3", {}, "Indicators"),
    h("ul", { class: "bars", "aria-label": "Indicator scores from 0 to 1" }, bars.map(([g, k, v]) =>
      h("li", { "data-indicator": `${g}.${k}` },
        h("span", { class: "bar-label" }, `${g} · ${k.replaceAll("_", " ")}`),
        h("span", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": v.toFixed(3), "aria-label": `${g} ${k.replaceAll("_", " ")}` },
          h("span", { class: "fill", style: `width:${(v * 100).toFixed(1)}%` })),
        h("span", { class: "num" }, v.toFixed(3))))));
}

// ---------------------------------------------------------------- a stored finding

let findingSeq = 0;

async function loadFinding(kind, id) {
  const seq = ++findingSeq;
  $("finding-error").textContent = "";
  $("finding-title").textContent = `Finding: ${kind} #${id}`;
  $("finding-body").replaceChildren(h("span", { class: "skeleton block" }));
  const url = `/api/v1/findings/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;
  try {
    const f = await api(url);
    if (seq !== findingSeq) return;
    const s = f.finding || {};
    $("finding-body").replaceChildren(
      h("p", { class: "muted" }, `detected ${String(s.detected_at || "").replace("T", " ").slice(0, 19)} UTC · ${s.sensor || "all sensors"} · `,
        h("a", { href: url }, "the stored finding (API)")),
      h("div", { class: "card" }, renderResult(kind, f.result || {}, url)));
    document.body.dataset.findingLoaded = `${kind}/${id}`;
  } catch (e) {
    if (seq !== findingSeq) return;
    if (e.status !== 401) $("finding-error").textContent = `Could not load the finding: ${e.message}`;
  }
}

// ---------------------------------------------------------------- one session

let sessionSeq = 0;

async function loadSession(id) {
  const seq = ++sessionSeq;
  $("session-error").textContent = "";
  $("session-title").textContent = `Session ${id}`;
  $("session-summary").replaceChildren(h("div", {}, h("dt", {}, "…"), h("dd", {}, h("span", { class: "skeleton" }))));
  $("session-events-note").textContent = "";
  skeletonRows($("session-events"), 5, 8);
  delete document.body.dataset.sessionLoaded;
  const url = `/api/v1/sessions/${encodeURIComponent(id)}`;
  try {
    const d = await api(url);
    if (seq !== sessionSeq) return;
    const s = d.session;
    const item = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value ?? "–"));
    const t = (x) => (x ? x.replace("T", " ").slice(0, 19) + " UTC" : "–");
    $("session-summary").replaceChildren(
      item("Source IP", h("span", { class: "mono" }, s.src_ip || "–")),
      item("Sensor", s.sensor),
      item("Protocol", s.protocol),
      item("Client version", h("span", { class: "mono wrap" }, s.client_version || "–")),
      item("HASSH", h("span", { class: "mono wrap" }, s.hassh || "–")),
      item("Credentials", s.username === null && s.password === null ? "–" :
        h("span", { class: "mono wrap" }, `${s.username ?? ""} / ${s.password ?? ""}`, s.login_success ? " (logged in)" : " (failed)")),
      item("Started", t(s.first_event_at)),
      item("Last event", t(s.last_event_at)),
      item("Duration (s)", s.duration_seconds === null ? "–" : (Math.round(s.duration_seconds * 10) / 10).toString()),
      item("Events", numLink(s.event_count, url, "event_count")),
      item("Login attempts", numLink(s.login_attempts, url, "login_attempts")),
      item("Commands", numLink(s.command_count, url, "command_count")),
      item("File downloads", numLink(s.file_downloads, url, "file_downloads")),
      item("Risk score", s.risk_score === null ? "–" : String(s.risk_score)));
    $("session-events-note").textContent = d.events_truncated ? `the first ${d.events.length} events (the session has more)` : `${d.events.length} events`;
    fillTable($("session-events"), [["Time (UTC)"], ["Event"], ["Detail"], ["Risk", "num"]],
      d.events.map((e) => h("tr", { "data-event": e.id, "data-type": e.event_type },
        h("td", { class: "mono" }, e.timestamp.replace("T", " ").slice(0, 23)),
        h("td", {}, e.event_type.replace(/^cowrie\./, "")),
        h("td", { class: e.command_safe ? "cmd" : "wrap" }, eventDetail(e)),
        h("td", { class: "num" }, e.risk_score === null ? "–" : String(e.risk_score)))),
      "no events");
    document.body.dataset.sessionLoaded = id;
  } catch (e) {
    if (seq !== sessionSeq || e.status === 401) return;
    $("session-error").textContent = e.status === 404 ? `No session ${id}.` : `Could not load the session: ${e.message}`;
    fillTable($("session-events"), [["Time (UTC)"], ["Event"], ["Detail"], ["Risk", "num"]], [], "no events");
  }
}

/** What a person wants to see of an event; commands only defanged. */
function eventDetail(e) {
  if (e.command_safe) return e.command_safe;
  const p = e.payload || {};
  const type = e.event_type;
  if (type.startsWith("cowrie.login")) return `${p.username ?? ""} / ${p.password ?? ""}`;
  if (type.startsWith("cowrie.session.file")) return [p.url, p.shasum].filter(Boolean).join(" · ") || (p.message ?? "");
  if (type === "cowrie.session.connect") return `${p.src_ip ?? ""}:${p.src_port ?? ""} → ${p.dst_ip ?? ""}:${p.dst_port ?? ""}`;
  if (type === "cowrie.client.version") return String(p.version ?? "");
  if (type === "cowrie.session.closed") return p.duration !== undefined ? `after ${p.duration} s` : "";
  if (type === "cowrie.command.input") return "(command not shown: no defanged form)";
  return typeof p.message === "string" ? p.message : Array.isArray(p.message) ? p.message.join(" ") : "";
}

// ---------------------------------------------------------------- views

function render() {
  applyTheme();
  if (!sessionStorage.getItem(KEY)) return showLogin("");
  $("logout").hidden = false;
  const { view, params } = route();
  const [head, ...rest] = view.split("/");
  const name = ["cluster", "analyses", "session", "finding", "dead-letters"].includes(head) ? head : "overview";
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== name;
  // A view's "loaded" marker speaks of the view on screen: leaving it, or opening it again, clears it
  // until the new answer is drawn (the same session opened twice must not look loaded at once).
  delete document.body.dataset.sessionLoaded;
  delete document.body.dataset.findingLoaded;
  const navOf = { overview: "overview", cluster: "cluster", analyses: "analyses", finding: "analyses", session: null, "dead-letters": "cluster" };
  for (const [id, v] of [["nav-overview", "overview"], ["nav-analyses", "analyses"], ["nav-cluster", "cluster"]]) {
    const a = $(id);
    if (v === navOf[name]) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  // The nav keeps the overview's window and sensor.
  const keep = name === "overview" ? params.toString() : (sessionStorage.getItem("celeriac.overviewQuery") || "");
  if (name === "overview") sessionStorage.setItem("celeriac.overviewQuery", keep);
  $("nav-overview").href = `#/overview${keep ? "?" + keep : ""}`;
  if (name !== "cluster") stopCluster();
  if (name === "overview") loadOverview(params);
  else if (name === "analyses") loadAnalyses();
  else if (name === "session") loadSession(decodeURIComponent(rest.join("/")));
  else if (name === "finding") loadFinding(rest[0] || "", rest[1] || "");
  else if (name === "dead-letters") loadDeadLetters();
  else if (!clusterStream) followCluster();
}

addEventListener("hashchange", render);
render();

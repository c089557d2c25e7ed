// celeriac operators' dashboard (issue 11, phase 1): plain ES module, no framework.
// Views: #/overview?days=7&sensor=NAME (or start=..&end=..) and #/cluster. The API key lives in sessionStorage.
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
        h("td", {}, h("a", { href: `/api/v1/findings/${k}/${r.id}` }, k)),
        h("td", {}, r.detected_at.replace("T", " ").slice(0, 16)),
        h("td", { class: "num" }, r.score === null ? "–" : r.score.toFixed(3)),
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

let clusterTimer = null;
const CLUSTER_EVERY_MS = 3000;

function stopCluster() {
  if (clusterTimer) clearInterval(clusterTimer);
  clusterTimer = null;
}

async function loadCluster(first) {
  if (first) {
    skeletonRows($("workers"), 9, 2);
    skeletonRows($("queues"), 6, 3);
  }
  try {
    const [w, q] = await Promise.all([api("/api/v1/cluster/workers"), api("/api/v1/cluster/queues")]);
    $("cluster-error").textContent = "";
    renderWorkers(w.workers);
    renderQueues(q.queues);
    $("cluster-updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")} · refreshed every ${CLUSTER_EVERY_MS / 1000} s`;
    document.body.dataset.clusterLoaded = "1";
  } catch (e) {
    if (e.status === 401) return;
    $("cluster-error").textContent = `Could not load the cluster: ${e.message}`;
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
      h("td", {}, w.registered ? "yes" : "no"),
      h("td", { class: "num" }, w.routing_weight.toFixed(2)))),
    "no workers seen yet (they appear with their first event or inspect reply)");
}

function renderQueues(queues) {
  const url = "/api/v1/cluster/queues";
  fillTable($("queues"), [["Queue"], ["Priority 0", "num"], ["3", "num"], ["6", "num"], ["9", "num"], ["Total", "num"]],
    queues.map((q) => h("tr", { "data-queue": q.name },
      h("td", { class: "mono" }, q.name, q.direct ? h("span", { class: "muted" }, " (direct)") : null),
      q.buckets.map((b) => h("td", { class: "num" }, fmt(b.messages))),
      h("td", { class: "num" }, numLink(q.total, url, "total")))));
}

$("explain-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = new URLSearchParams({ task: $("x-task").value.trim() });
  if ($("x-queue").value.trim()) q.set("queue", $("x-queue").value.trim());
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
      outcome.reason ? h("p", { class: "error" }, outcome.reason) : null);
  } catch (err) {
    if (err.status !== 401) out.replaceChildren(h("p", { class: "error" }, err.message));
  }
});

// ---------------------------------------------------------------- views

function render() {
  applyTheme();
  if (!sessionStorage.getItem(KEY)) return showLogin("");
  $("logout").hidden = false;
  const { view, params } = route();
  const name = view === "cluster" ? "cluster" : "overview";
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== name;
  for (const [id, v] of [["nav-overview", "overview"], ["nav-cluster", "cluster"]]) {
    const a = $(id);
    if (v === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  // The nav keeps the overview's window and sensor.
  const keep = name === "overview" ? params.toString() : (sessionStorage.getItem("celeriac.overviewQuery") || "");
  if (name === "overview") sessionStorage.setItem("celeriac.overviewQuery", keep);
  $("nav-overview").href = `#/overview${keep ? "?" + keep : ""}`;
  if (name === "overview") {
    stopCluster();
    loadOverview(params);
  } else if (!clusterTimer) {
    loadCluster(true);
    clusterTimer = setInterval(() => loadCluster(false), CLUSTER_EVERY_MS);
  }
}

addEventListener("hashchange", render);
render();

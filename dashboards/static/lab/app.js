// Lab session browser: stored sessions, the raw signal with detected steps, summary plots, per-step table,
// exports (the API's export formats) and a printable report (?session=ID&report=1).
import { API, api, el, fmt, hasRoute, requireLogin } from "../common/rf.js";

const params = new URLSearchParams(location.search);
const REPORT = params.get("report") === "1";
const SIDE = { 0: "L", 1: "R", "-1": "" };
// notes written by the system (not by a person): shown under "Session events", collapsed
const SYSTEM_NOTE_KINDS = new Set(["status", "session", "control", "journal_event", "warning"]);
const plots = {};
let current = null;
window.rfLab = { loaded: null, plots };

// Times: the store keeps data times on the recording host's monotonic clock; the page shows seconds since the
// session's first sample (`data_t0_s`) and converts to wall clock with the session's clock pair.
function rel(t) { return t == null ? null : t - current.origin; }
function wall(t) {
  const s = current.sess;
  if (s.clock_utc_unix_s != null && s.clock_monotonic_s != null) return s.clock_utc_unix_s + (t - s.clock_monotonic_s);
  return (current.summary.started_unix_s || 0) + (t - current.origin);
}
function wallText(unixS, ms = false) {
  const d = new Date(unixS * 1000);
  return d.toLocaleTimeString() + (ms ? "." + String(d.getMilliseconds()).padStart(3, "0") : "");
}
// x value readout (legend) of the time plots: seconds since start and the wall-clock time
const timeX = { label: "s since start", value: (u, v) => (v == null ? "–" : `${v.toFixed(2)} s · ${wallText(wall(v + current.origin), true)}`) };

function plot(id, opts, data) {
  const host = document.getElementById(id);
  if (plots[id]) plots[id].destroy();
  host.replaceChildren();
  const width = Math.max(300, host.clientWidth || 500);
  plots[id] = new uPlot({ width, height: opts.height || 200, legend: { show: false }, ...opts }, data, host);
  return plots[id];
}

const relAll = (ts) => Array.from(ts || [], (t) => (t == null ? null : t - current.origin));

async function loadStudies() {
  if (!(await hasRoute("GET", "/studies"))) return;
  let studies = [];
  try { studies = (await api("/studies")).studies || []; } catch (_) { return; }
  if (!studies.length) return;
  const sel = document.getElementById("study");
  for (const st of studies) {
    sel.append(el("option", { value: st.name }, `${st.title || st.name} (${(st.participants || []).length} participants)`));
  }
  document.getElementById("study-box").hidden = false;
  sel.onchange = () => loadList().catch((e) => { document.getElementById("study-msg").textContent = e.message; });
}

async function loadList() {
  const study = document.getElementById("study").value;
  const { sessions } = study ? await api(`/studies/${encodeURIComponent(study)}?limit=200`) : await api("/sessions?limit=200");
  document.getElementById("study-msg").textContent = study ? `${sessions.length} sessions` : "";
  const ul = document.getElementById("sessions");
  ul.replaceChildren(...sessions.map((s) => el("li", { dataset: { session: s.id }, onclick: () => openSession(s.id) },
    el("strong", {}, s.runner_id), " ",
    el("span", { class: "muted" }, new Date((s.started_unix_s || 0) * 1000).toLocaleString()),
    s.ended_unix_s ? "" : el("span", { class: "ok" }, " · recording"))));
  if (!sessions.length) ul.append(el("li", { class: "muted" }, "No sessions yet."));
  return sessions;
}

async function openSession(id) {
  for (const li of document.querySelectorAll("#sessions li")) li.classList.toggle("selected", li.dataset.session === id);
  const enc = encodeURIComponent(id);
  const [sess, summary, steps, metrics, notes] = await Promise.all([
    api(`/sessions/${enc}`), api(`/sessions/${enc}/summary`),
    api(`/sessions/${enc}/steps?layout=columns`), api(`/sessions/${enc}/metrics?layout=columns`),
    api(`/sessions/${enc}/notes`),
  ]);
  const st0 = steps.steps && steps.steps.ic_s && steps.steps.ic_s.length ? steps.steps.ic_s[0] : null;
  const mt0 = metrics.metrics && metrics.metrics.time_s && metrics.metrics.time_s.length ? metrics.metrics.time_s[0] : null;
  const origin = summary.data_t0_s ?? st0 ?? mt0 ?? 0;
  current = { id, sess, summary, steps: steps.steps, metrics: metrics.metrics, origin };
  document.getElementById("detail").hidden = false;
  document.getElementById("s-title").textContent =
    `${summary.runner_id} — ${new Date((summary.started_unix_s || 0) * 1000).toLocaleString()}`;
  const end = summary.data_duration_s != null ? `, last sample at ${fmt(summary.data_duration_s, 1)} s = ${wallText(wall(origin + summary.data_duration_s), true)}` : "";
  document.getElementById("s-clock").textContent =
    `Times are seconds since the first sample (0 s = ${new Date(wall(origin) * 1000).toLocaleString()}${end}; `
    + `clock: ${sess.clock_source || "session start"}).`;
  renderSummary(summary);
  await renderExports(id);
  renderPlots(current);
  renderTable(current.steps);
  renderNotes(notes.notes || []);
  document.getElementById("s-t0").value = 0;
  await loadSignal();
  window.rfLab.loaded = id;
}

function noteTime(n) {
  const t = n.time_s != null ? `${fmt(rel(n.time_s), 1)} s · ${wallText(wall(n.time_s))}` : wallText(n.created_unix_s);
  return el("span", { class: "muted", title: `written ${new Date(n.created_unix_s * 1000).toLocaleString()}` }, t + " ");
}

function renderNotes(notes) {
  const human = notes.filter((n) => !SYSTEM_NOTE_KINDS.has(n.kind));
  const events = notes.filter((n) => SYSTEM_NOTE_KINDS.has(n.kind)).sort((a, b) => a.created_unix_s - b.created_unix_s);
  const ul = document.getElementById("s-notes");
  ul.replaceChildren(...human.map((n) => el("li", { dataset: { kind: n.kind || "" } }, noteTime(n),
    el("strong", {}, `${n.author || "?"}${n.kind && n.kind !== "note" ? " (" + n.kind + ")" : ""}: `), n.text)));
  if (!human.length) ul.append(el("li", { class: "muted" }, "No notes."));
  // repeated identical events (e.g. the edge's periodic "online" status) collapse into one line with a count
  const groups = [];
  for (const n of events) {
    const g = groups[groups.length - 1];
    if (g && g.kind === n.kind && g.text === n.text) { g.n += 1; g.last = n; } else groups.push({ kind: n.kind, text: n.text, first: n, last: n, n: 1 });
  }
  document.getElementById("s-events").replaceChildren(...groups.map((g) => el("li", { dataset: { kind: g.kind } },
    el("span", { class: "muted" }, `${wallText(g.first.created_unix_s)}${g.n > 1 ? "–" + wallText(g.last.created_unix_s) : ""} `),
    el("span", { class: g.kind === "warning" ? "bad" : "" }, `${g.kind}: ${g.text}`), g.n > 1 ? el("span", { class: "muted" }, ` ×${g.n}`) : "")));
  document.getElementById("s-events-title").textContent = `Session events (${events.length})`;
}

function renderSummary(s) {
  const rows = [
    ["Duration", fmt(s.data_duration_s, 0, "s")], ["Steps (running)", `${s.steps} (${s.running_steps})`],
    ["Median cadence", fmt(s.cadence_median_spm, 1, "spm")],
    ["GCT left / right", `${fmt(s.gct_left_mean_ms, 0)} / ${fmt(s.gct_right_mean_ms, 0)} ms`],
    ["Mean impact", fmt(s.peak_accel_mean_g, 2, "g")], ["Raw samples", String(s.raw_samples)],
    ["Sensors", (s.sensors || []).map((x) => `${x.site} ${fmt(x.sampling_rate_hz, 0)} Hz`).join(", ")],
    ["Cues / notes", `${s.cues} / ${s.notes}`],
  ];
  document.getElementById("s-summary").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function renderExports(id) {
  const box = document.getElementById("s-exports");
  box.replaceChildren();
  let formats = [];
  try { formats = (await api("/exports")).formats; } catch (_) { formats = []; }
  for (const f of formats) {
    box.append(el("a", { href: `${API}/sessions/${encodeURIComponent(id)}/export/${encodeURIComponent(f)}`, download: "",
      class: "export", dataset: { format: f } }, el("button", {}, `Export ${f}`)));
  }
  box.append(el("a", { href: `?session=${encodeURIComponent(id)}&report=1`, target: "_blank", id: "report-link" },
    el("button", {}, "Printable report")));
  if (REPORT) box.append(el("button", { onclick: () => window.print() }, "Print"));
}

function stepsBySide(st, side) {
  const xs = [], ys = [];
  for (let i = 0; i < st.ic_s.length; i++) if (st.side[i] === side && st.gct_ms[i] != null) { xs.push(st.ic_s[i]); ys.push(st.gct_ms[i]); }
  return [xs, ys];
}

function renderPlots(c) {
  const m = c.metrics || {}, st = c.steps || {};
  const mt = relAll(m.time_s);
  const ax = [{ label: "s since start" }, {}];
  plot("p-cad", { scales: { x: { time: false } }, axes: ax, series: [{}, { stroke: "#1d2430", width: 1.5, spanGaps: true },
    { stroke: "#1b8a4a", dash: [6, 4], width: 1 }] }, [mt, m.cadence_spm || [], m.cadence_target_spm || mt.map(() => null)]);
  // GCT per step: left and right on one time axis (union of times; nulls where the other side stepped)
  const [lx, ly] = stepsBySide(st, 0), [rx, ry] = stepsBySide(st, 1);
  const xs = [...lx, ...rx].sort((a, b) => a - b);
  const lmap = new Map(lx.map((x, i) => [x, ly[i]])), rmap = new Map(rx.map((x, i) => [x, ry[i]]));
  plot("p-gct", { scales: { x: { time: false } }, axes: ax, series: [{},
    { stroke: "#2f6fde", width: 0, points: { show: true, size: 4, fill: "#2f6fde" } },
    { stroke: "#e0732c", width: 0, points: { show: true, size: 4, fill: "#e0732c" } }] },
  [relAll(xs), xs.map((x) => lmap.get(x) ?? null), xs.map((x) => rmap.get(x) ?? null)]);
  plot("p-bal", { scales: { x: { time: false }, y: { range: [40, 60] } }, axes: ax,
    series: [{}, { stroke: "#6b3fa0", width: 1.5, spanGaps: true }] }, [mt, m.balance_left_pct || []]);
  // impact histogram, 0.25 g bins
  const g = (st.peak_accel_g || []).filter((v) => v != null);
  const bw = 0.25, nb = Math.max(1, Math.ceil((Math.max(...g, 1)) / bw));
  const counts = new Array(nb).fill(0);
  for (const v of g) counts[Math.min(nb - 1, Math.floor(v / bw))] += 1;
  const centers = counts.map((_, i) => (i + 0.5) * bw);
  plot("p-imp", { scales: { x: { time: false } }, series: [{}, { stroke: "#c0392b", fill: "#c0392b55",
    paths: uPlot.paths.bars({ size: [0.9, 100] }), points: { show: false } }] }, [centers, counts]);
}

async function loadSignal() {
  if (!current) return;
  const msg = document.getElementById("s-raw-msg");
  const from = Math.max(0, Number(document.getElementById("s-t0").value) || 0);
  const t0 = current.origin + from;
  const len = Number(document.getElementById("s-len").value);
  const sensors = current.summary.sensors || [];
  const sensor = sensors.find((s) => s.n_samples) || sensors[0];
  if (!sensor || !sensor.n_samples) { msg.textContent = "no raw samples stored for this session"; return; }
  msg.textContent = "loading…";
  let raw;
  try {
    const q = new URLSearchParams({ sensor_id: sensor.sensor_id, t0_s: String(t0), t1_s: String(t0 + len) });
    raw = (await api(`/sessions/${encodeURIComponent(current.id)}/raw?${q}`)).raw;
  } catch (e) { msg.textContent = e.status === 403 ? "raw data needs the lab or runner role" : e.message; return; }
  const ts = relAll(raw.time_s), acc = raw.acc_ms2 || [];
  const mag = acc.map((a) => Math.hypot(a[0], a[1], a[2]) / 9.80665);
  msg.textContent = `${ts.length} samples of ${sensor.site}, ${fmt(from, 0)}–${fmt(from + len, 0)} s `
    + `(${wallText(wall(t0))}–${wallText(wall(t0 + len))})`;
  const st = current.steps || {};
  const marks = [];
  for (let i = 0; i < (st.ic_s || []).length; i++) {
    if (st.ic_s[i] >= t0 && st.ic_s[i] <= t0 + len) marks.push({ ic: rel(st.ic_s[i]), tc: rel(st.tc_s[i]), side: st.side[i] });
  }
  plot("p-signal", {
    height: 260, scales: { x: { time: false } }, cursor: { drag: { x: true, y: false } },
    legend: { show: true }, axes: [{ label: "s since start" }, { label: "g" }],
    series: [timeX, { label: "|a| (g)", stroke: "#1d2430", width: 1, points: { show: false },
      value: (u, v) => (v == null ? "–" : v.toFixed(2)) }],
    hooks: { draw: [(u) => {
      const ctx = u.ctx; ctx.save(); ctx.lineWidth = devicePixelRatio;
      for (const m of marks) {
        ctx.strokeStyle = m.side === 0 ? "#2f6fde" : m.side === 1 ? "#e0732c" : "#888";
        for (const [t, dash] of [[m.ic, []], [m.tc, [4, 3]]]) {
          if (t == null) continue;
          const x = u.valToPos(t, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.setLineDash(dash); ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        }
      }
      ctx.restore();
    }] },
  }, [ts, mag]);
}

function renderTable(st) {
  const cols = [["ic_s", "IC (s since start)", 3], ["side", "side", -1], ["gct_ms", "GCT (ms)", 0], ["flight_ms", "flight (ms)", 0],
    ["step_time_ms", "step (ms)", 0], ["cadence_spm", "cadence", 1], ["duty_factor", "duty", 2],
    ["peak_accel_g", "impact (g)", 2], ["loading_rate_gps", "load rate (g/s)", 0]];
  const table = document.getElementById("s-steps");
  const n = Math.min((st.ic_s || []).length, 2000);
  const head = el("tr", {}, ...cols.map(([, h]) => el("th", {}, h)));
  const rows = [];
  for (let i = 0; i < n; i++) {
    rows.push(el("tr", {}, ...cols.map(([k, , d]) => el("td", {},
      d < 0 ? SIDE[st[k][i]] ?? "" : fmt(st[k] ? (k === "ic_s" ? rel(st[k][i]) : st[k][i]) : null, d)))));
  }
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

async function main() {
  await requireLogin(["lab", "admin", "runner", "therapist"]);
  if (REPORT) {
    document.getElementById("list-col").hidden = true;
    document.getElementById("title").textContent = "runform · session report";
  }
  document.getElementById("s-load").onclick = loadSignal;
  await loadStudies();
  const sessions = await loadList();
  const want = params.get("session") || (sessions[0] && sessions[0].id);
  if (want) await openSession(want);
  window.rfReady = true;
}

main().catch((e) => {
  const b = document.getElementById("banner");
  b.hidden = false;
  b.textContent = `error: ${e.message}`;
});

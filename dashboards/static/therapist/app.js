// Therapist live view: every assigned runner's live metrics; one runner in detail (signal, steps, cues, control).
// Rendering is batched: messages only update state, one requestAnimationFrame pass redraws what changed.
import { api, batteryClass, clock, el, fmt, hasRoute, linkSummary, lossClass, Live, mmss, requireLogin, Ring,
  state as rfState } from "../common/rf.js";

const STALE_MS = 5000; // metrics older than this: not live
const TRACE_S = 5;
const CUES_MAX = 100; // cue history kept per runner (stored + live), newest first on screen
const PROGRAM_REFRESH_MS = 15000;
const runners = new Map(); // name -> {status, metrics, steps: [], cues: [], card, dirty, firstMs}
const features = { program: false, programs: false };
let selected = null;
let live = null;
let rawConn = null;
const trace = { ring: new Ring(8192), plot: null, dirty: false, lastT: NaN, blocks: 0, lostSeq: 0, lastSeq: null };
window.rfStats = { firstMetricsMs: {}, firstRawMs: null, messages: 0, rawBlocks: 0, startMs: performance.now() };

function R(name) {
  let r = runners.get(name);
  if (!r) {
    r = { name, status: null, metrics: null, steps: [], cues: [], cueKeys: new Set(), card: null, dirty: true,
      lastMetricsMs: 0, intervalAtMs: 0, statusVersion: 0, plan: null, planMs: 0 };
    runners.set(name, r);
  }
  return r;
}

function onMessage(msg) {
  if (msg.type === "hello") {
    for (const n of msg.runners) R(n);
    buildGrid();
    return;
  }
  if (msg.type !== "message") return;
  window.rfStats.messages += 1;
  const r = R(msg.runner);
  const p = msg.payload;
  switch (msg.kind) {
    case "status": r.status = p; r.statusVersion += 1; break;
    case "metrics":
      r.metrics = p; r.lastMetricsMs = performance.now();
      if (p.interval) r.intervalAtMs = r.lastMetricsMs;
      if (!(msg.runner in window.rfStats.firstMetricsMs)) window.rfStats.firstMetricsMs[msg.runner] = performance.now();
      break;
    case "steps":
      for (const s of p.steps) r.steps.push(s);
      if (r.steps.length > 200) r.steps.splice(0, r.steps.length - 120);
      if (r === selected) trace.dirty = true;
      break;
    case "cues":
      addCues(r, [p]);
      break;
    case "reply":
      actionReply(msg.runner, p);
      break;
    default: return;
  }
  r.dirty = true;
}

// Cue history: stored cues of the open session (loaded when the runner is opened) merged with live ones;
// one entry per (cue_id, time_s), sorted by send time, at most CUES_MAX kept.
function cueKey(c) { return `${c.cue_id}|${Number(c.time_s).toFixed(3)}`; }

function addCues(r, cues) {
  let added = false;
  for (const c of cues) {
    const k = cueKey(c);
    if (r.cueKeys.has(k)) continue;
    r.cueKeys.add(k);
    r.cues.push(c);
    added = true;
  }
  if (!added) return;
  r.cues.sort((a, b) => a.time_unix_s - b.time_unix_s);
  if (r.cues.length > CUES_MAX) {
    for (const c of r.cues.splice(0, r.cues.length - CUES_MAX)) r.cueKeys.delete(cueKey(c));
  }
  r.cuesVersion = (r.cuesVersion || 0) + 1;
}

// ------------------------------------------------------------------ overview cards
function buildGrid() {
  const grid = document.getElementById("grid");
  for (const r of runners.values()) {
    if (r.card) continue;
    const f = {};
    const dd = (k) => (f[k] = el("dd", {}, "–"));
    r.card = el("div", { class: "card offline", dataset: { runner: r.name }, onclick: () => select(r) },
      el("h3", {}, r.name, (f.state = el("span", { class: "state muted" }, "offline"))),
      el("div", { class: "big" }, (f.cad = el("span", {}, "–")), el("span", { class: "muted" }, " / "),
        (f.tgt = el("span", { class: "muted" }, "–")), el("span", { class: "muted" }, " spm")),
      el("dl", { class: "kv" },
        el("dt", {}, "Ground contact"), dd("gct"),
        el("dt", {}, "L/R balance"), dd("bal"),
        el("dt", {}, "Impact"), dd("imp"),
        el("dt", {}, "Interval"), dd("iv"),
        el("dt", {}, "Battery"), dd("bat"),
        el("dt", {}, "Packet loss"), dd("loss")),
      (f.linkwarn = el("div", { class: "linkwarn bad", hidden: "" })));
    r.fields = f;
    grid.append(r.card);
  }
  document.getElementById("empty").hidden = runners.size > 0;
}

function renderCard(r, now) {
  const f = r.fields;
  if (!f) return;
  const m = r.metrics, s = r.status;
  const fresh = m && now - r.lastMetricsMs < STALE_MS;
  const st = s ? s.state : "offline";
  const isLive = st !== "offline" && fresh;
  r.card.classList.toggle("offline", !isLive);
  r.card.dataset.live = isLive ? "1" : "0";
  f.state.textContent = st === "offline" ? "offline" : (fresh ? st : `${st} · no data`);
  f.state.className = "state " + (isLive ? (st === "paused" ? "warn" : "ok") : "muted");
  const target = m && m.cadence_target_spm != null ? m.cadence_target_spm : (s ? s.target_cadence_spm : null);
  f.cad.textContent = m ? fmt(m.cadence_spm, 0) : "–";
  f.tgt.textContent = fmt(target, 0);
  const off = m && target ? m.cadence_spm - target : null;
  f.cad.className = off === null || off === undefined || Number.isNaN(off) ? "" : Math.abs(off) <= 5 ? "ok" : "warn";
  f.gct.textContent = m ? fmt(m.gct_ms, 0, "ms") : "–";
  if (m && m.balance_left_pct != null) {
    const b = m.balance_left_pct;
    f.bal.textContent = `${b.toFixed(1)} % L`;
    f.bal.className = Math.abs(b - 50) > 2.5 ? "warn" : "";
  } else f.bal.textContent = "–";
  f.imp.textContent = m ? fmt(m.impact_peak_g, 1, "g") : "–";
  const iv = m && m.interval ? m.interval : null;
  f.iv.textContent = iv ? `${iv.kind} ${mmss(intervalLeft(r, now))} left`
    : (s && s.interval ? `${s.interval.kind}` : (m ? m.activity || "–" : "–"));
  const L = linkSummary(s);
  f.bat.textContent = L.battery_pct != null ? `${Math.round(L.battery_pct)} %` : "–";
  f.bat.className = batteryClass(L.battery_pct);
  f.bat.title = L.links.map((l) => `${l.site}: ${l.battery_pct != null ? l.battery_pct + " %" : "no battery reading"}`).join("\n");
  f.loss.textContent = L.loss_pct != null ? `${Number(L.loss_pct).toFixed(1)} %` : "–";
  f.loss.className = lossClass(L.loss_pct);
  const disc = st !== "offline" && L.disconnected.length;
  f.linkwarn.hidden = !disc;
  f.linkwarn.textContent = disc ? `⚠ sensor disconnected: ${L.disconnected.join(", ")}` : "";
}

// seconds left in the current interval, counted down between the 1 Hz metrics (frozen while paused)
function intervalLeft(r, now) {
  const iv = r.metrics && r.metrics.interval;
  if (!iv) return null;
  return iv.remaining_s - (r.metrics.paused ? 0 : (now - r.intervalAtMs) / 1000);
}

// ------------------------------------------------------------------ detail
function select(r) {
  if (selected === r) return;
  for (const x of runners.values()) x.card && x.card.classList.toggle("selected", x === r);
  selected = r;
  const d = document.getElementById("detail");
  d.hidden = false;
  document.getElementById("d-name").textContent = r.name;
  const m = r.metrics;
  document.getElementById("d-target").value = m && m.cadence_target_spm ? Math.round(m.cadence_target_spm) : "";
  actionReset();
  // never show (or assign from) the previous runner's program while this one's loads
  document.getElementById("d-prog-plan").textContent = "(loading…)";
  document.getElementById("d-prog-decision").textContent = "";
  document.getElementById("d-prog-msg").textContent = "";
  document.getElementById("d-prog-set").disabled = true;
  trace.ring.clear(); trace.lastSeq = null; trace.lostSeq = 0;
  if (!trace.plot) makeTracePlot();
  if (rawConn) rawConn.close();
  rawConn = null;
  const rawState = (s, detail) => {
    document.getElementById("d-raw-state").textContent =
      s === "open" ? "" : s === "unavailable" ? `(live signal unavailable: ${detail})` : `(${s})`;
  };
  // the live signal comes over the API WebSocket (therapists have the live_raw permission, not the archive)
  rawConn = new Live({ runners: [r.name], kinds: ["raw"], onRaw, onState: rawState });
  ensureRawOn(r);
  detailDirtyCues = -1; linksVersion = -1;
  loadCueHistory(r);
  loadProgram(r);
  renderDetail(performance.now());
}

async function openSession(r) {
  const ss = await api(`/runners/${encodeURIComponent(r.name)}/sessions?open_only=true&limit=1`);
  return ss.sessions.length ? ss.sessions[0] : null;
}

async function loadCueHistory(r) {
  const msg = document.getElementById("d-cues-msg");
  msg.textContent = "(loading…)";
  try {
    const sess = await openSession(r);
    if (!sess) { if (r === selected) msg.textContent = "(no open session: live cues only)"; return; }
    const res = await api(`/sessions/${encodeURIComponent(sess.id)}/cues`);
    addCues(r, res.cues || []);
    if (r === selected) msg.textContent = res.truncated ? "(latest of a long session)" : "";
  } catch (e) { if (r === selected) msg.textContent = `(history: ${e.message})`; }
}

// ------------------------------------------------------------------ program (plan, stage, assignment)
async function loadProgram(r) {
  r.planMs = performance.now();
  const plan = document.getElementById("d-prog-plan");
  if (!features.program) {
    r.plan = null;
    plan.textContent = "programs unavailable (this server has no program API)";
    document.getElementById("d-prog-controls").hidden = true;
    return;
  }
  try {
    r.plan = await api(`/runners/${encodeURIComponent(r.name)}/program`);
  } catch (e) {
    r.plan = null;
    if (r === selected) plan.textContent = e.status === 404 ? "programs unavailable" : `program: ${e.message}`;
    return;
  }
  if (r === selected) {
    renderProgram(performance.now(), true);
    document.getElementById("d-prog-set").disabled = false;
  }
}

function renderProgram(now, full = false) {
  const r = selected;
  const p = r.plan && r.plan.plan;
  if (full) {
    const planEl = document.getElementById("d-prog-plan");
    const dec = document.getElementById("d-prog-decision");
    document.getElementById("d-prog-controls").hidden = false;
    if (!p || !p.program) {
      planEl.textContent = "no program assigned";
      dec.textContent = "";
    } else {
      planEl.replaceChildren(el("strong", {}, p.program), ` · stage ${p.stage} of ${p.n_stages}`);
      const d = p.decision;
      dec.textContent = d ? `${d.action}${d.reason ? " — " + d.reason : ""}` : "";
    }
    const nameIn = document.getElementById("d-prog-name"), stageIn = document.getElementById("d-prog-stage");
    if (document.activeElement !== nameIn) nameIn.value = p && p.program ? p.program : "";
    if (document.activeElement !== stageIn) stageIn.value = p && p.stage != null ? p.stage : 1;
    if (p && p.n_stages) stageIn.max = p.n_stages;
  }
  const iv = r.metrics && r.metrics.interval;
  const ivEl = document.getElementById("d-prog-interval");
  if (!iv) { ivEl.textContent = p && p.program ? "no interval running" : ""; return; }
  ivEl.replaceChildren(el("span", {}, `interval ${iv.index + 1}: ${iv.kind}`
      + (iv.target_cadence_spm ? ` at ${Math.round(iv.target_cadence_spm)} spm` : "") + " · "),
    el("strong", { class: "countdown" }, mmss(intervalLeft(r, now))), " left",
    r.metrics.paused ? el("span", { class: "warn" }, " (paused)") : "");
}

async function assignProgram() {
  const out = document.getElementById("d-prog-msg");
  const program = document.getElementById("d-prog-name").value.trim();
  const stage = Number(document.getElementById("d-prog-stage").value);
  if (!program) { out.textContent = "enter a program name"; return; }
  if (!(Number.isInteger(stage) && stage >= 1)) { out.textContent = "stage must be 1 or more"; return; }
  const r = selected;
  out.textContent = "saving…";
  try {
    const res = await api(`/runners/${encodeURIComponent(r.name)}/targets`,
      { method: "PUT", body: { program, stage } });
    out.textContent = res.live_error ? `saved; not sent live: ${res.live_error}` : `${program} stage ${stage} assigned`;
  } catch (e) { out.textContent = `assign: ${e.message}`; return; }
  await loadProgram(r);
}

async function loadProgramList() {
  if (!features.programs) return;
  try {
    const res = await api("/programs");
    const names = (res.programs || []).map((p) => (typeof p === "string" ? p : p.name)).filter(Boolean);
    document.getElementById("d-prog-list").replaceChildren(...names.map((n) => el("option", { value: n })));
  } catch (_) { /* free text still works */ }
}

// ------------------------------------------------------------------ sensor links table
let linksVersion = -1;
function renderLinks() {
  const r = selected;
  const L = linkSummary(r.status);
  const msg = document.getElementById("d-links-msg");
  const table = document.getElementById("d-links");
  if (!L.links.length) {
    msg.textContent = r.status ? "the edge reports no per-sensor links" : "no status from the edge yet";
    table.replaceChildren();
    return;
  }
  msg.textContent = "";
  const now_s = Date.now() / 1000;
  const head = ["site", "sensor", "link", "battery", "loss recent", "loss total", "lost / received", "malformed",
    "reconnects", "rate (Hz)", "drift (ppm)", "RSSI (dBm)", "last seen"];
  const rows = L.links.map((l) => el("tr", { dataset: { sensor: l.sensor_id } },
    el("td", {}, l.site || "–"), el("td", {}, l.sensor_id || "–"),
    el("td", { class: l.connected === false ? "bad" : "ok" }, `${l.kind || ""} ${l.connected === false ? "disconnected" : "connected"}`),
    el("td", { class: batteryClass(l.battery_pct) }, l.battery_pct != null ? `${Math.round(l.battery_pct)} %` : "–"),
    el("td", { class: lossClass(l.loss_recent_pct) }, fmt(l.loss_recent_pct, 1, "%")),
    el("td", { class: lossClass(l.loss_pct) }, fmt(l.loss_pct, 2, "%")),
    el("td", {}, `${l.packets_lost ?? "–"} / ${l.packets_received ?? "–"}`),
    el("td", {}, String(l.packets_malformed ?? "–")), el("td", {}, String(l.reconnects ?? "–")),
    el("td", {}, fmt(l.sampling_rate_hz_measured, 1)), el("td", {}, fmt(l.clock_drift_ppm, 0)),
    el("td", {}, fmt(l.rssi_dbm, 0)),
    el("td", { title: clock(l.last_seen_unix_s) }, l.last_seen_unix_s != null ? `${fmt(Math.max(0, now_s - l.last_seen_unix_s), 0)} s ago` : "–")));
  table.replaceChildren(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
}

async function ensureRawOn(r) {
  // the edge publishes raw blocks only when asked; the status says whether it does
  if (r.status && r.status.raw_enabled) return;
  try { await api(`/runners/${encodeURIComponent(r.name)}/control`, { method: "POST", body: { command: "raw_on", wait_s: 2 } }); }
  catch (e) { document.getElementById("d-raw-state").textContent = `(raw_on: ${e.message})`; }
}

function onRaw(b) {
  window.rfStats.rawBlocks += 1;
  if (window.rfStats.firstRawMs === null) window.rfStats.firstRawMs = performance.now();
  const a = b.acc_ms2;
  for (let i = 0; i < b.n; i++) {
    const x = a[3 * i], y = a[3 * i + 1], z = a[3 * i + 2];
    trace.ring.push(b.time_s[i], Math.sqrt(x * x + y * y + z * z) / 9.80665);
  }
  trace.lastT = b.time_s[b.n - 1];
  trace.dirty = true;
}

function makeTracePlot() {
  const host = document.getElementById("d-trace");
  const opts = {
    width: Math.max(320, host.clientWidth || 800), height: 220,
    scales: { x: { time: false }, y: { range: [0, 6] } },
    axes: [{ label: "s" }, { label: "g" }],
    series: [{}, { label: "|a|", stroke: "#1d2430", width: 1, points: { show: false } }],
    legend: { show: false }, cursor: { show: false },
    hooks: { draw: [drawStepMarks] },
  };
  trace.plot = new uPlot(opts, [[0], [0]], host);
  new ResizeObserver(() => trace.plot.setSize({ width: Math.max(320, host.clientWidth), height: 220 })).observe(host);
}

function drawStepMarks(u) {
  if (!selected || !Number.isFinite(trace.lastT)) return;
  const ctx = u.ctx;
  const t0 = trace.lastT - TRACE_S;
  ctx.save();
  ctx.lineWidth = 2 * devicePixelRatio;
  for (const s of selected.steps) {
    if (s.ic_s < t0) continue;
    const x = u.valToPos(s.ic_s - trace.lastT, "x", true);
    ctx.strokeStyle = s.side === "L" ? "#2f6fde" : s.side === "R" ? "#e0732c" : "#888";
    ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
  }
  ctx.restore();
}

function renderTrace() {
  if (!trace.plot || !trace.dirty || !Number.isFinite(trace.lastT)) return;
  trace.dirty = false;
  const [ts, ys] = trace.ring.since(trace.lastT - TRACE_S);
  const xs = new Float64Array(ts.length);
  for (let i = 0; i < ts.length; i++) xs[i] = ts[i] - trace.lastT;
  trace.plot.batch(() => {
    trace.plot.setScale("x", { min: -TRACE_S, max: 0 });
    trace.plot.setData([xs, Float64Array.from(ys)], false);
  });
}

function renderBars() {
  const cv = document.getElementById("d-bars");
  const w = cv.clientWidth * devicePixelRatio, h = cv.clientHeight * devicePixelRatio;
  if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const steps = selected.steps.slice(-40);
  if (!steps.length) return;
  const max = 400;
  const bw = w / 40;
  steps.forEach((s, i) => {
    const v = Math.min(s.gct_ms || 0, max);
    ctx.fillStyle = s.side === "L" ? "#2f6fde" : s.side === "R" ? "#e0732c" : "#999";
    const bh = (v / max) * (h - 14 * devicePixelRatio);
    ctx.fillRect(i * bw + 1, h - bh, bw - 2, bh);
  });
  ctx.fillStyle = "#6b7480";
  ctx.font = `${11 * devicePixelRatio}px system-ui`;
  ctx.fillText(`${max} ms`, 2, 11 * devicePixelRatio);
}

function renderCues() {
  const ul = document.getElementById("d-cues");
  const cues = selected.cues.slice().reverse(); // newest first
  ul.replaceChildren(...cues.map((c) => el("li", { dataset: { code: c.code, kind: c.kind, cue: String(c.cue_id), t: String(c.time_unix_s) } },
    el("span", { class: "muted" }, clock(c.time_unix_s) + " "),
    el("span", { class: "cuekind" }, `${c.kind}/${c.code} `),
    c.text || (c.kind === "metronome" ? (c.bpm ? `metronome ${Math.round(c.bpm)} bpm` : "metronome off") : ""))));
}

let detailDirtyCues = -1;
let lastProgramRenderMs = 0;
function renderDetail(now) {
  if (!selected) return;
  renderTrace();
  const cv = selected.cuesVersion || 0;
  if (selected.dirty || detailDirtyCues !== cv) {
    renderBars();
    if (detailDirtyCues !== cv) { renderCues(); detailDirtyCues = cv; }
  }
  if (linksVersion !== selected.statusVersion) { renderLinks(); linksVersion = selected.statusVersion; }
  if (now - lastProgramRenderMs > 250) { renderProgram(now); lastProgramRenderMs = now; }
  if (features.program && now - selected.planMs > PROGRAM_REFRESH_MS) loadProgram(selected);
}

// ------------------------------------------------------------------ action status
// Every action the therapist takes ends in ONE status line (#d-msg) that names the action and its value. The
// edge's replies are matched to the request that caused them by request_id: a reply to anything else (another
// therapist's command, the retained plan) never touches the line. A reply can arrive over the WebSocket before the
// HTTP response that tells us its request_id, so recent replies are kept by id and looked up when it does.
const ACTION_CONFIRM_MS = 8000; // no reply from the edge by then: say so (it may be offline)
const REPLIES_KEPT = 64;
const recentReplies = new Map(); // request_id -> reply payload (bounded, oldest dropped first)
let action = null; // {runner, label, saved, ids: Set, replies: Map, state, timer}
window.rfAction = { get current() { return action; }, hasReply: (id) => recentReplies.has(id) }; // for tests

function showAction() {
  if (!action) return;
  const a = action;
  const refused = [...a.replies.values()].find((p) => !p.ok);
  let text;
  if (a.state === "error") text = `${a.label}: failed — ${a.error}`;
  else if (a.state === "sending") text = `${a.label}: sending…`;
  else if (refused) text = `${a.label}: ${a.saved ? "saved, but " : ""}refused by the edge — ${refused.reason}`;
  else if (a.ids.size && a.replies.size === a.ids.size) text = `${a.label}: ${a.saved ? "saved and " : ""}applied by the edge`;
  else if (a.state === "unconfirmed") text = `${a.label}: ${a.saved ? "saved; " : "sent; "}the edge has not confirmed it (offline?)`;
  else if (a.state === "not_live") text = `${a.label}: saved; not sent live: ${a.error}`;
  else if (!a.ids.size) text = `${a.label}: saved`; // nothing to send live (no command in the request)
  else text = `${a.label}: ${a.saved ? "saved, " : "sent, "}waiting for the edge…`;
  a.text = text;
  document.getElementById("d-msg").textContent = text;
}

function actionReset() {
  if (action) clearTimeout(action.timer);
  action = null;
  document.getElementById("d-msg").textContent = "";
}

function actionStart(label, saved) {
  actionReset();
  action = { runner: selected.name, label, saved, ids: new Set(), replies: new Map(), state: "sending", timer: 0 };
  showAction();
  return action;
}

function actionSent(a, ids) {
  if (a !== action) return; // superseded by a newer action or another runner
  a.state = "waiting";
  for (const id of ids) {
    a.ids.add(id);
    if (recentReplies.has(id)) a.replies.set(id, recentReplies.get(id));
  }
  if (a.replies.size < a.ids.size) {
    a.timer = setTimeout(() => { if (a === action) { a.state = "unconfirmed"; showAction(); } }, ACTION_CONFIRM_MS);
  }
  showAction();
}

function actionFailed(a, state, error) {
  if (a !== action) return;
  a.state = state; a.error = error;
  showAction();
}

function actionReply(runner, p) {
  if (!p.request_id) return;
  recentReplies.set(p.request_id, p);
  if (recentReplies.size > REPLIES_KEPT) recentReplies.delete(recentReplies.keys().next().value);
  const a = action;
  if (!a || a.runner !== runner || !a.ids.has(p.request_id)) return;
  a.replies.set(p.request_id, p);
  if (a.replies.size === a.ids.size) clearTimeout(a.timer);
  showAction();
}

const CONTROL_LABELS = { pause: "Pause cues", resume: "Resume cues", advance_interval: "Next interval" };

async function control(command, args = {}) {
  const a = actionStart(CONTROL_LABELS[command] || command, false);
  try {
    const r = await api(`/runners/${encodeURIComponent(a.runner)}/control`,
      { method: "POST", body: { command, args, wait_s: 3 } });
    if (r.reply) actionReply(a.runner, r.reply.request_id ? r.reply : { ...r.reply, request_id: r.request_id });
    actionSent(a, [r.request_id]);
  } catch (e) { actionFailed(a, "error", e.message); }
}

async function setTarget() {
  const v = Number(document.getElementById("d-target").value);
  if (!(v >= 60 && v <= 240)) {
    actionReset();
    document.getElementById("d-msg").textContent = "Target cadence must be 60–240 steps/min";
    return;
  }
  const a = actionStart(`Target ${v} spm`, true);
  try {
    const r = await api(`/runners/${encodeURIComponent(a.runner)}/targets`, { method: "PUT", body: { cadence_spm: v } });
    if (r.live_error) actionFailed(a, "not_live", r.live_error);
    else actionSent(a, (r.published || []).map((x) => x.request_id));
  } catch (e) { actionFailed(a, "error", e.message); }
}

async function addNote() {
  const text = document.getElementById("d-note").value.trim();
  const out = document.getElementById("d-note-msg");
  if (!text) return;
  try {
    const sess = await openSession(selected);
    if (!sess) { out.textContent = "no open session for this runner"; return; }
    const m = selected.metrics;
    await api(`/sessions/${encodeURIComponent(sess.id)}/notes`,
      { method: "POST", body: { text, time_s: m ? m.time_s : null, kind: "note" } });
    document.getElementById("d-note").value = "";
    out.textContent = "note saved";
  } catch (e) { out.textContent = `note: ${e.message}`; }
}

// ------------------------------------------------------------------ frame loop
function frame() {
  const now = performance.now();
  for (const r of runners.values()) {
    // cards also change without messages (data goes stale), so re-check each once a second
    if (r.dirty || now - (r.renderedMs || 0) > 1000) { renderCard(r, now); r.renderedMs = now; }
  }
  renderDetail(now);
  for (const r of runners.values()) r.dirty = false;
  requestAnimationFrame(frame);
}

async function main() {
  await requireLogin(["therapist", "admin"]);
  [features.program, features.programs] = await Promise.all([
    hasRoute("GET", "/runners/{runner}/program"), hasRoute("GET", "/programs")]);
  loadProgramList();
  const conn = document.getElementById("conn");
  live = new Live({
    kinds: ["status", "metrics", "steps", "cues", "reply"], onMessage,
    onState: (s, d) => {
      conn.textContent = s === "open" ? "live" : s === "denied" ? `refused: ${d}` : "reconnecting…";
      conn.className = s === "open" ? "ok" : "warn";
    },
  });
  document.getElementById("d-set").onclick = setTarget;
  document.getElementById("d-pause").onclick = () => control("pause");
  document.getElementById("d-resume").onclick = () => control("resume");
  document.getElementById("d-advance").onclick = () => control("advance_interval");
  document.getElementById("d-note-add").onclick = addNote;
  document.getElementById("d-prog-set").onclick = assignProgram;
  document.getElementById("d-close").onclick = () => {
    document.getElementById("detail").hidden = true;
    if (rawConn) rawConn.close();
    rawConn = null;
    if (selected && selected.card) selected.card.classList.remove("selected");
    selected = null;
  };
  requestAnimationFrame(frame);
  window.rfReady = true;
}

main().catch((e) => {
  const b = document.getElementById("banner");
  b.hidden = false;
  b.textContent = `error: ${e.message}`;
});

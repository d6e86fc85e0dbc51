// Runner cue page (phone): cadence vs target, a Web Audio metronome at the target cadence, spoken cues,
// interval countdown, pain scores. Cues older than their expiry are never played; stale data is announced.
import { api, fmt, el, hasRoute, mmss, Live, requireLogin } from "../common/rf.js";

const STALE_MS = 4000;

// ------------------------------------------------------------------ metronome
// "A tale of two clocks" scheduling: a coarse JS timer (every 25 ms) schedules every click that falls within the
// next 100 ms on the AudioContext clock, so clicks are sample-accurate however late the timer fires.
export class Metronome {
  constructor() {
    this.ctx = null;
    this.bpm = 170;
    this.running = false;
    this.muted = false;
    this.nextTime = 0;
    this.lookaheadMs = 25;
    this.aheadS = 0.1;
    this.scheduled = []; // AudioContext times of the clicks scheduled (last 256), for tests
    this.timer = null;
  }
  async start() {
    if (!this.ctx) this.ctx = new (window.AudioContext || window.webkitAudioContext)();
    if (this.ctx.state !== "running") await this.ctx.resume();
    this.running = true;
    this.nextTime = this.ctx.currentTime + 0.05;
    clearInterval(this.timer);
    this.timer = setInterval(() => this.schedule(), this.lookaheadMs);
    this.schedule();
  }
  stop() { this.running = false; clearInterval(this.timer); this.timer = null; }
  setBpm(bpm) {
    if (!(bpm >= 30 && bpm <= 260)) return;
    this.bpm = bpm;
  }
  schedule() {
    if (!this.running) return;
    const horizon = this.ctx.currentTime + this.aheadS;
    if (this.nextTime < this.ctx.currentTime - 0.2) this.nextTime = this.ctx.currentTime + 0.02; // was suspended
    while (this.nextTime < horizon) {
      if (!this.muted) this.click(this.nextTime);
      this.nextTime += 60 / this.bpm;
    }
  }
  click(t) {
    const osc = this.ctx.createOscillator();
    const gain = this.ctx.createGain();
    osc.frequency.value = 1000;
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.6, t + 0.002);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.04);
    osc.connect(gain).connect(this.ctx.destination);
    osc.start(t);
    osc.stop(t + 0.05);
    this.scheduled.push(t);
    if (this.scheduled.length > 256) this.scheduled.splice(0, 128);
  }
}

const met = new Metronome();
window.rfMetronome = met;
window.rfRunner = { firstMetricsMs: null, spoken: [], cues: [], expired: [], target: null, staleShown: 0,
  wakeLock: { state: "not requested", detail: "" }, plan: null };

let runner = null;
let lastMetricsMs = 0;
let metrics = null;
let status = null;
let interval = null, intervalAtMs = 0;
let autoMetronomeOn = true; // edge's metronome cues (on when out of band)
let wakeLock = null;
let liveConn = null;
const features = { pain: false, program: false };

function setTarget(t) {
  if (t == null) return;
  window.rfRunner.target = t;
  document.getElementById("target").textContent = fmt(t, 0);
  met.setBpm(t);
}

function speak(text) {
  if (!document.getElementById("speech").checked || !("speechSynthesis" in window)) return;
  const u = new SpeechSynthesisUtterance(text);
  u.rate = 1.05;
  speechSynthesis.speak(u);
  window.rfRunner.spoken.push(text);
}

function onCue(c) {
  window.rfRunner.cues.push(c);
  if (window.rfRunner.cues.length > 100) window.rfRunner.cues.splice(0, 50);
  if (Date.now() / 1000 > c.expires_unix_s) { // stale: never play a late cue (nor let it drive the metronome)
    window.rfRunner.expired.push(c.cue_id);
    if (window.rfRunner.expired.length > 100) window.rfRunner.expired.splice(0, 50);
    return;
  }
  if (c.kind === "metronome") {
    autoMetronomeOn = c.bpm != null;
    if (c.bpm) setTarget(c.bpm);
    updateMute();
    return;
  }
  if (c.text) {
    const last = document.getElementById("lastcue");
    last.textContent = c.text;
    last.hidden = false;
    if (met.running) speak(c.text);
  }
}

function updateMute() {
  met.muted = !(document.getElementById("met-always").checked || autoMetronomeOn);
}

function onMessage(msg) {
  if (msg.type !== "message" || msg.runner !== runner) return;
  const p = msg.payload;
  if (msg.kind === "metrics") {
    metrics = p;
    lastMetricsMs = performance.now();
    if (window.rfRunner.firstMetricsMs === null) window.rfRunner.firstMetricsMs = lastMetricsMs;
    document.getElementById("cadence").textContent = fmt(p.cadence_spm, 0);
    if (p.cadence_target_spm != null) setTarget(p.cadence_target_spm);
    interval = p.interval || null;
    intervalAtMs = lastMetricsMs;
    document.getElementById("state").textContent = p.paused ? "paused by your therapist" : (p.activity || "");
  } else if (msg.kind === "status") {
    status = p;
    if (p.target_cadence_spm != null && !metrics) setTarget(p.target_cadence_spm);
    if (p.state === "offline") document.getElementById("state").textContent = "sensor/edge offline";
  } else if (msg.kind === "cues") {
    onCue(p);
  } else if (msg.kind === "reply" && p.command === "report_pain" && !features.pain) {
    document.getElementById("pain-msg").textContent = p.ok ? "pain score recorded" : `not recorded: ${p.reason}`;
  }
}

function tick() {
  const now = performance.now();
  const stale = lastMetricsMs > 0 && now - lastMetricsMs > STALE_MS;
  const banner = document.getElementById("stale");
  if (stale && banner.hidden) window.rfRunner.staleShown += 1;
  banner.hidden = !stale;
  if (stale) {
    // say truthfully why: the connection is down (reconnecting) or open but the edge sends nothing
    const open = liveConn && liveConn.ws && liveConn.ws.readyState === WebSocket.OPEN;
    const edgeOff = status && status.state === "offline";
    const text = `Cues are stale — no live data for ${Math.round((now - lastMetricsMs) / 1000)} s. `
      + (!open ? "Reconnecting…" : edgeOff ? "Your sensor/edge is offline." : "Connected; waiting for your sensor.");
    if (banner.textContent !== text) banner.textContent = text;
  }
  document.getElementById("interval-box").hidden = !interval;
  if (interval) {
    const left = interval.remaining_s - (metrics && metrics.paused ? 0 : (now - intervalAtMs) / 1000);
    document.getElementById("interval-kind").textContent =
      `${interval.kind}${interval.target_cadence_spm ? " at " + Math.round(interval.target_cadence_spm) + " spm" : ""}`;
    document.getElementById("countdown").textContent = mmss(left);
  }
  requestAnimationFrame(tick);
}

// The screen wake lock keeps the phone awake while cues run; the page says whether it got it (browsers may
// refuse, e.g. battery saver, insecure origin, headless): the cues still work, the screen may sleep.
function showWakeLock(st, detail = "") {
  window.rfRunner.wakeLock = { state: st, detail };
  const box = document.getElementById("wakelock");
  box.hidden = false;
  box.className = st === "held" ? "ok" : "warn";
  box.textContent = st === "held" ? "Screen stays on while cues run."
    : st === "unsupported" ? "This browser cannot keep the screen on: keep it awake yourself."
      : st === "released" ? "Screen may sleep (wake lock released)."
        : `Screen may sleep: wake lock refused (${detail}).`;
}

async function requestWakeLock() {
  if (!("wakeLock" in navigator)) { showWakeLock("unsupported"); return; }
  try {
    wakeLock = await navigator.wakeLock.request("screen");
    showWakeLock("held");
    wakeLock.addEventListener("release", () => { if (met.running) showWakeLock("released"); });
  } catch (e) { wakeLock = null; showWakeLock("refused", `${e.name}: ${e.message}`); }
}

function stageText(p) {
  return p && p.program ? `${p.program} · stage ${p.stage} of ${p.n_stages}` : "";
}

function decisionText(d) {
  if (!d) return "";
  // stages are 1-based everywhere in the contract (plan.stage, decision.from_stage / to_stage)
  const to = d.to_stage != null ? (d.action === "hold" ? ` at stage ${d.to_stage}` : ` to stage ${d.to_stage}`) : "";
  return `${d.action}${to}${d.reason ? " — " + d.reason : ""}`;
}

function showPlan(plan) {
  window.rfRunner.plan = plan;
  const box = document.getElementById("plan");
  const t = stageText(plan);
  box.hidden = !t;
  box.textContent = t;
}

async function loadPlan() {
  if (!features.program) return;
  try { showPlan((await api(`/runners/${encodeURIComponent(runner)}/program`)).plan); } catch (_) { showPlan(null); }
}

async function sendPain(value, when) {
  const out = document.getElementById("pain-msg");
  out.textContent = "sending…";
  if (features.pain) {
    const dec = document.getElementById("pain-decision");
    try {
      const r = await api(`/runners/${encodeURIComponent(runner)}/pain`, { method: "POST", body: { pain_0_10: value, when } });
      out.textContent = `pain ${value}/10 (${when}) recorded`;
      const d = r.decision || (r.plan && r.plan.decision);
      const t = decisionText(d);
      dec.hidden = !t;
      dec.textContent = t;
      if (r.plan) showPlan(r.plan); else loadPlan();
    } catch (e) { out.textContent = `pain score not recorded: ${e.message}`; }
    return;
  }
  try {
    const r = await api(`/runners/${encodeURIComponent(runner)}/control`,
      { method: "POST", body: { command: "report_pain", args: { pain_0_10: value, when }, wait_s: 3 } });
    out.textContent = r.reply ? (r.reply.ok ? `pain ${value}/10 (${when}) recorded` : `not recorded: ${r.reply.reason}`)
      : `pain ${value}/10 (${when}) sent`;
  } catch (e) { out.textContent = `pain score: ${e.message}`; }
}

function painButtons(id, when) {
  const box = document.getElementById(id);
  for (let v = 0; v <= 10; v++) box.append(el("button", { dataset: { pain: String(v) }, onclick: () => sendPain(v, when) }, String(v)));
}

async function main() {
  const me = await requireLogin(["runner", "admin"]);
  const asked = new URLSearchParams(location.search).get("runner");
  runner = asked || (me.user.role === "runner" ? me.user.name : null);
  document.getElementById("runner-id").textContent = runner || "";
  const denied = document.getElementById("denied");
  if (!runner) { denied.hidden = false; denied.textContent = "Add ?runner=NAME to the address."; return; }
  try {
    const r = await api(`/runners/${encodeURIComponent(runner)}`);
    if (r.live_status) onMessage({ type: "message", kind: "status", runner, payload: r.live_status });
    const t = await api(`/runners/${encodeURIComponent(runner)}/targets`);
    if (t.targets && t.targets.cadence_spm != null && window.rfRunner.target == null) setTarget(t.targets.cadence_spm);
  } catch (e) {
    denied.hidden = false;
    denied.textContent = e.status === 404 || e.status === 403
      ? `You cannot open the page of runner “${runner}”.` : `error: ${e.message}`;
    document.body.dataset.denied = "1";
    return;
  }
  [features.pain, features.program] = await Promise.all([
    hasRoute("POST", "/runners/{runner}/pain"), hasRoute("GET", "/runners/{runner}/program")]);
  loadPlan();
  const conn = document.getElementById("conn");
  liveConn = new Live({
    runners: [runner], kinds: ["metrics", "cues", "status", "reply"], onMessage,
    onState: (s, d) => {
      conn.textContent = s === "open" ? "live" : s === "denied" ? `refused: ${d}` : "reconnecting…";
      conn.className = s === "open" ? "ok" : "warn";
      if (s === "denied" && d === "runner not visible") {
        denied.hidden = false; denied.textContent = `You cannot open the page of runner “${runner}”.`;
      }
    },
  });
  painButtons("pain-before", "before");
  painButtons("pain-after", "after");
  document.getElementById("met-always").onchange = updateMute;
  document.getElementById("start").onclick = async () => {
    const b = document.getElementById("start");
    if (met.running) { met.stop(); b.textContent = "Tap to start cues"; return; }
    await met.start();
    updateMute();
    requestWakeLock();
    b.textContent = "Stop cues";
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && met.running) requestWakeLock();
  });
  requestAnimationFrame(tick);
  window.rfReady = true;
}

main().catch((e) => {
  const d = document.getElementById("denied");
  d.hidden = false;
  d.textContent = `error: ${e.message}`;
});

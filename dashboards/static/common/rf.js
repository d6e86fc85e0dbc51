// runform dashboards: shared client code (no build step; an ES module served as is).
// API: docs/api.md. Live data: the API's WebSocket /api/v1/live (JSON text frames; raw blocks as binary
// "RFW1" frames carrying the RFR1 layout of docs/mqtt.md).

export const API = "/api/v1";

export const state = { me: null, csrf: null };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, { method = "GET", body = undefined, raw = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(API + path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (raw) return resp;
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.code || "http_" + resp.status, err.message || resp.statusText);
  }
  return data;
}

// ------------------------------------------------------------------ login
export async function whoami() {
  // rf_csrf (not HttpOnly) lives as long as the session cookie: without it there is no session to ask about
  if (!document.cookie.split("; ").some((c) => c.startsWith("rf_csrf="))) return null;
  try {
    const me = await api("/auth/me");
    state.me = me;
    state.csrf = me.csrf_token;
    return me;
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

export async function login(username, password) {
  const r = await api("/auth/login", { method: "POST", body: { username, password, mode: "cookie" } });
  state.csrf = r.csrf_token;
  return whoami();
}

export async function logout() {
  try { await api("/auth/logout", { method: "POST" }); } catch (_) { /* already gone */ }
  location.reload();
}

// Shows the login form (elements #login, #login-form, #login-user, #login-pass, #login-error) until a user
// with one of `roles` is logged in; resolves with /auth/me.
export async function requireLogin(roles) {
  let me = await whoami();
  const box = document.getElementById("login");
  const form = document.getElementById("login-form");
  const errEl = document.getElementById("login-error");
  while (!me || (roles && !roles.includes(me.user.role))) {
    if (me) errEl.textContent = `Logged in as ${me.user.name} (${me.user.role}); this page is for ${roles.join(" / ")}.`;
    box.hidden = false;
    me = await new Promise((resolve) => {
      form.onsubmit = async (ev) => {
        ev.preventDefault();
        const u = document.getElementById("login-user").value.trim();
        const p = document.getElementById("login-pass").value;
        try {
          const m = await login(u, p);
          resolve(m);
        } catch (e) {
          errEl.textContent = e.status === 401 ? "Wrong user name or password." : e.message;
        }
      };
    });
  }
  box.hidden = true;
  for (const el of document.querySelectorAll("[data-whoami]")) el.textContent = `${me.user.name} (${me.user.role})`;
  for (const el of document.querySelectorAll("[data-logout]")) el.onclick = logout;
  return me;
}

// ------------------------------------------------------------------ live WebSocket with reconnect
// onMessage(msg) for JSON frames, onRaw(block) for raw frames, onState("open"|"closed"|"denied", detail).
export class Live {
  constructor({ runners = null, kinds = null, onMessage = () => {}, onRaw = () => {}, onState = () => {} } = {}) {
    this.runners = runners;
    this.kinds = kinds;
    this.onMessage = onMessage;
    this.onRaw = onRaw;
    this.onState = onState;
    this.ws = null;
    this.backoffMs = 500;
    this.closed = false;
    this.connects = 0;
    this.lastMessageMs = 0;
    this.connect();
  }

  url() {
    const q = new URLSearchParams();
    if (this.runners) q.set("runners", this.runners.join(","));
    if (this.kinds) q.set("kinds", this.kinds.join(","));
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${API}/live?${q}`;
  }

  connect() {
    if (this.closed) return;
    const ws = new WebSocket(this.url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => { this.backoffMs = 500; this.connects += 1; this.onState("open"); };
    ws.onmessage = (ev) => {
      this.lastMessageMs = performance.now();
      if (typeof ev.data === "string") {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (_) { return; }
        this.onMessage(msg);
      } else {
        const block = decodeLiveRaw(ev.data);
        if (block) this.onRaw(block);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      if (ev.code === 4403 || ev.code === 4401) {
        this.onState("denied", ev.reason || String(ev.code));
        if (ev.code === 4403) return; // not visible: retrying will not help
      } else {
        this.onState("closed", ev.reason);
      }
      if (this.closed) return;
      setTimeout(() => this.connect(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, 8000);
    };
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }
}

// ------------------------------------------------------------------ raw blocks (RFR1, docs/mqtt.md)
const FLAG_GYRO = 1, FLAG_INT16 = 2;

export function decodeLiveRaw(buf) {
  const dv = new DataView(buf);
  if (buf.byteLength < 6 || dv.getUint32(0, false) !== 0x52465731) return null; // "RFW1"
  const tlen = dv.getUint16(4, true);
  const topic = new TextDecoder().decode(new Uint8Array(buf, 6, tlen));
  const block = decodeRaw(buf, 6 + tlen);
  if (block) block.topic = topic;
  return block;
}

export function decodeRaw(buf, off = 0) {
  const dv = new DataView(buf, off);
  if (dv.byteLength < 64 || dv.getUint32(0, false) !== 0x52465231) return null; // "RFR1"
  const flags = dv.getUint8(5);
  const n = dv.getUint16(6, true);
  const seq = Number(dv.getBigUint64(8, true));
  const fs = dv.getFloat64(32, true);
  const accScale = dv.getFloat64(48, true);
  let p = 64;
  const td = new TextDecoder();
  const lid = dv.getUint8(p); p += 1;
  const sensor = td.decode(new Uint8Array(buf, off + p, lid)); p += lid;
  const ls = dv.getUint8(p); p += 1;
  const site = td.decode(new Uint8Array(buf, off + p, ls)); p += ls;
  const time_s = new Float64Array(n);
  for (let i = 0; i < n; i++) time_s[i] = dv.getFloat64(p + 8 * i, true);
  p += 8 * n;
  const acc = new Float32Array(3 * n);
  if (flags & FLAG_INT16) {
    for (let i = 0; i < 3 * n; i++) acc[i] = dv.getInt16(p + 2 * i, true) * accScale;
    p += 6 * n;
  } else {
    for (let i = 0; i < 3 * n; i++) acc[i] = dv.getFloat32(p + 4 * i, true);
    p += 12 * n;
  }
  return { sensor, site, seq, n, sampling_rate_hz: fs, time_s, acc_ms2: acc, gyro: !!(flags & FLAG_GYRO) };
}

// ------------------------------------------------------------------ formatting
export function fmt(v, digits = 0, unit = "") {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits) + (unit ? " " + unit : "");
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export function mmss(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// A fixed-capacity ring of (t, y) for live plots (bounded memory).
export class Ring {
  constructor(cap) { this.cap = cap; this.t = new Float64Array(cap); this.y = new Float64Array(cap); this.n = 0; this.i = 0; }
  push(t, y) { this.t[this.i] = t; this.y[this.i] = y; this.i = (this.i + 1) % this.cap; if (this.n < this.cap) this.n++; }
  clear() { this.n = 0; this.i = 0; }
  // ordered copies (oldest first) of the points with t >= t0
  since(t0) {
    const ts = [], ys = [];
    const start = (this.i - this.n + this.cap) % this.cap;
    for (let k = 0; k < this.n; k++) {
      const j = (start + k) % this.cap;
      if (this.t[j] >= t0) { ts.push(this.t[j]); ys.push(this.y[j]); }
    }
    return [ts, ys];
  }
  last() { return this.n ? this.t[(this.i - 1 + this.cap) % this.cap] : NaN; }
}

// ------------------------------------------------------------------ optional routes
// Which API routes this server has (from its OpenAPI document, public): pages use optional features (programs,
// pain reports, studies) only when the route exists, without probing for 404s.
let routesPromise = null;
export function apiRoutes() {
  if (!routesPromise) {
    routesPromise = fetch(API + "/openapi.json", { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : { paths: {} }))
      .then((doc) => {
        const out = new Set();
        for (const [path, ops] of Object.entries(doc.paths || {})) for (const m of Object.keys(ops)) out.add(`${m.toUpperCase()} ${path}`);
        return out;
      })
      .catch(() => new Set());
  }
  return routesPromise;
}

export async function hasRoute(method, path) {
  return (await apiRoutes()).has(`${method} ${API}${path}`);
}

// ------------------------------------------------------------------ sensor links (status.links)
// Thresholds shown by the therapist page (docs/dashboards.md): recent packet loss good < 1 %, poor 1–5 %,
// bad > 5 %; battery low <= 20 %, critical <= 10 %.
export const LOSS_POOR_PCT = 1, LOSS_BAD_PCT = 5, BATTERY_LOW_PCT = 20, BATTERY_CRITICAL_PCT = 10;

export function lossClass(pct) {
  if (pct === null || pct === undefined || Number.isNaN(pct)) return "";
  return pct > LOSS_BAD_PCT ? "bad" : pct >= LOSS_POOR_PCT ? "warn" : "ok";
}

export function batteryClass(pct) {
  if (pct === null || pct === undefined) return "";
  return pct <= BATTERY_CRITICAL_PCT ? "bad" : pct <= BATTERY_LOW_PCT ? "warn" : "";
}

// One summary of a runner's sensor links from its retained status: lowest battery (null when no link reports
// one, e.g. simulated sources), worst recent loss, links not connected. Older edges without `links` report BLE
// figures in `counters` (battery_pct, ble_loss_pct, ble_state).
export function linkSummary(status) {
  const out = { links: [], battery_pct: null, loss_pct: null, disconnected: [] };
  if (!status) return out;
  const links = Array.isArray(status.links) ? status.links : null;
  if (links) {
    out.links = links;
    for (const l of links) {
      if (l.battery_pct != null && (out.battery_pct === null || l.battery_pct < out.battery_pct)) out.battery_pct = l.battery_pct;
      const loss = l.loss_recent_pct != null ? l.loss_recent_pct : l.loss_pct;
      if (loss != null && (out.loss_pct === null || loss > out.loss_pct)) out.loss_pct = loss;
      if (l.connected === false) out.disconnected.push(l.site || l.sensor_id);
    }
  } else {
    const c = status.counters || {};
    if (c.battery_pct != null) out.battery_pct = c.battery_pct;
    if (c.ble_loss_pct != null) out.loss_pct = Number(c.ble_loss_pct);
    if (["backoff", "failed", "stopped"].includes(c.ble_state)) out.disconnected.push("sensor");
  }
  return out;
}

export function clock(unixS) {
  if (unixS === null || unixS === undefined || !isFinite(unixS)) return "–";
  return new Date(unixS * 1000).toLocaleTimeString();
}

"""Ingest MQTT traffic and raw journals into the session store -- without losing or duplicating anything.

:class:`Ingestor` subscribes to ``runform/v1/#`` (paho-mqtt 2.x, MQTT v5, VERSION2 callbacks) and writes what it
receives to a :class:`~runform.server.storage.SessionStore`:

================  =====================================================================================
topic             stored as
================  =====================================================================================
``.../raw``       compressed raw chunks (``append_raw_blocks``; key = (seq, first_tick, arrival_ns))
``.../steps``     steps rows (key = sensor + ``ic_s``)
``.../metrics``   metrics rows (key = ``time_s``); also refines the session's monotonic->UTC mapping
``.../cues``      cues (key = ``time_s`` + code)
``.../status``    opens/closes sessions; counters -> sensor stats; transitions -> notes (kind ``status``)
``.../control/X`` commands -> notes (kind ``control``, author = X, key = request_id)
``.../program``   program session records (``upsert_program_session``; key = runner + ``session_key``; a
                  later message fills in, never erases, pain scores)
``.../plan``      nothing (the server owns the plan; it is in the store already)
================  =====================================================================================

**Ack only what is committed.** The client runs with ``manual_ack=True``: paho does not PUBACK a QoS 1 message
when it is delivered; the writer thread commits a batch of messages in ONE transaction (``synchronous=FULL``:
fsynced) and only then calls ``client.ack(mid, 1)`` for each of them, in receive order. A crash (``kill -9``)
before the commit loses nothing: the broker still holds the unacknowledged messages for our persistent session
(fixed client id, ``clean_start=False``, session expiry) and redelivers them on reconnect; a crash after the
commit but before the acks makes the broker redeliver messages that are already stored, which the keys above
turn into no-ops. Acks of messages received on a connection that has since dropped are discarded (the broker
redelivers those), so an old packet id can never acknowledge a different message.

**Storage failures** (disk full, read-only database, locked): the batch is rolled back, kept in memory and
retried every ``retry_interval_s``; nothing is acknowledged meanwhile, so the broker keeps (and, through the MQTT
v5 *receive maximum*, stops sending) QoS 1 messages; the error is logged once per outage and counted
(``store_errors``, ``paused_``). QoS 0 messages (the contract's raw and metrics) have no such guarantee: while
paused, at most ``max_pending_messages`` are held, newer QoS 0 messages are dropped and counted. The lossless raw
path is the journal (``import_journal_dir``); MQTT raw is lossless end-to-end only when published at QoS 1.

**Bad messages** (unknown topic, payload failing its schema) are counted per reason, logged, and acknowledged (a
redelivery would not make them valid); ingest continues.

Sessions: one open session per runner (``source="mqtt"``). A (non-retained) ``status: online`` from a new
``edge_id`` ends the runner's open session and starts a new one; ``offline`` ends it; data for a runner without an
open session opens one; ``session_idle_s`` without data ends it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runform.server.mqtt import SubscriptionState
from runform.server.mqtt import (MqttContractError, SCHEMA_CONTROL, SCHEMA_CUE, SCHEMA_METRICS,
                                 SCHEMA_PROGRAM_SESSION, SCHEMA_STATUS, SCHEMA_STEPS, decode_json, decode_raw,
                                 parse_topic)
from runform.server.storage import SessionStore, StorageError, StorageUnavailableError

__all__ = ["Ingestor", "import_journal_dir", "IngestMessage"]

log = logging.getLogger("runform.ingest")
TOPIC_FILTER = "runform/v1/#"


@dataclass(frozen=True, slots=True)
class IngestMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    generation: int  # connection number the message arrived on (acks only on the same connection)


@dataclass(slots=True)
class _Decoded:
    msg: IngestMessage
    runner: str
    kind: str
    obj: Any = None
    issuer: str | None = None


class Ingestor:
    """MQTT -> store with manual acknowledgement after commit (see the module docstring).

    Parameters
    ----------
    store : SessionStore
    host, port : broker address (``host`` may also be a ``runform.server.mqtt.MqttSettings``)
    username, password : MQTT credentials (a ``service`` user reads ``runform/v1/#``)
    client_id : fixed id of the persistent session (two ingestors must not share one)
    topic_filter : default ``runform/v1/#``
    session_expiry_s : how long the broker keeps our session (and queues messages) while we are down
    receive_maximum : MQTT v5 flow control: unacknowledged QoS 1 messages the broker may have in flight to us
    batch_max_messages, batch_max_delay_s : commit when this many messages are waiting or the oldest is this old
    retry_interval_s : retry period of a failed commit
    max_pending_messages : bound of the in-memory backlog while the store refuses writes
    session_idle_s : end a runner's open session after this long without data
    listeners : callables ``f(event: str, session_id: str, runner: str, obj)`` called after each commit with
        ``("raw", block)``, ``("steps", (sensor, site, rows))`` -- e.g. the LSL forwarder

    Attributes
    ----------
    counters_ : Counter    messages, committed, acked, duplicates_raw_samples, rejected_*, store_errors, ...
    paused_ : bool         True while the store refuses writes
    last_error_ : str | None
    """

    def __init__(self, store: SessionStore, host: str = "127.0.0.1", port: int = 1883, *,
                 username: str | None = None, password: str | None = None, client_id: str = "rf-ingest",
                 topic_filter: str = TOPIC_FILTER, session_expiry_s: int = 7 * 86400, receive_maximum: int = 1000,
                 batch_max_messages: int = 1000, batch_max_delay_s: float = 0.1, retry_interval_s: float = 1.0,
                 max_pending_messages: int = 20000, session_idle_s: float = 600.0,
                 listeners: Iterable[Callable] = (), keepalive_s: int = 30) -> None:
        self.store = store
        if not isinstance(host, str):  # an MqttSettings (runform.server.mqtt): host, port, username, password
            settings = host
            host, port = settings.host, settings.port
            username = getattr(settings, "username", username)
            password = getattr(settings, "password", password)
        self.host, self.port = host, int(port)
        self.client_id = client_id
        self.topic_filter = topic_filter
        self.session_expiry_s = int(session_expiry_s)
        self.receive_maximum = int(receive_maximum)
        self.batch_max_messages = int(batch_max_messages)
        self.batch_max_delay_s = float(batch_max_delay_s)
        self.retry_interval_s = float(retry_interval_s)
        self.max_pending_messages = int(max_pending_messages)
        self.session_idle_s = float(session_idle_s)
        self.listeners = list(listeners)
        self.keepalive_s = int(keepalive_s)
        self.counters_: Counter = Counter()
        self.paused_ = False
        self.last_error_: str | None = None
        self._q: queue.Queue[IngestMessage] = queue.Queue(maxsize=max(self.receive_maximum * 4, 4096))
        self._generation = 0
        self._connected = threading.Event()
        self._subs = SubscriptionState(f"ingest {client_id}")  # SUBACK of the current connection: messages reach us
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sessions: dict[str, str] = {}  # runner -> open session id (cache of the DB)
        self._status_noted: dict[str, str] = {}  # session -> "edge:state" of its last status note (transitions only)
        self._last_data: dict[str, float] = {}  # runner -> monotonic time of the last data message
        self._clock_best: dict[str, float] = {}  # session -> best (smallest) utc - monotonic offset seen
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  manual_ack=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(0.25, 4)

    # ------------------------------------------------------------------------------------------ MQTT side
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("ingest: broker refused the connection: %s", reason_code)
            self.counters_["connect_refused"] += 1
            return
        self._generation += 1
        self.counters_["connects"] += 1
        # renew the subscription every time (a broker without persistence forgot it)
        self._subs.subscribe(client, [(self.topic_filter, 1)])
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._subs.on_subscribe(mid, reason_codes)
        if self._subs.refused:
            self.counters_["subscribe_refused"] += 1
            self.last_error_ = self._subs.refused

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._subs.lost()
        self._generation += 1  # acks for messages of the dropped connection are discarded
        self.counters_["disconnects"] += 1

    def _on_message(self, client, userdata, msg) -> None:
        m = IngestMessage(msg.topic, bytes(msg.payload), int(msg.qos), int(msg.mid), bool(msg.retain),
                          self._generation)
        self.counters_["received"] += 1
        if m.qos == 0 and self._q.qsize() >= self.max_pending_messages:
            self.counters_["dropped_qos0_backlog"] += 1
            return
        self._q.put(m)  # blocks the network thread when full: TCP back-pressure on the broker

    def start(self) -> "Ingestor":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s, clean_start=False,
                                  properties=props)
        self.client.loop_start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._writer, name="rf-ingest-writer", daemon=True)
        self._thread.start()
        return self

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """True once connected AND subscribed (the broker acknowledged the subscription): from then on every
        message published to the topics reaches the ingest. False after ``timeout_s``."""
        return self._subs.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit and acknowledge what was received, then disconnect (the session stays on the broker)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()

    def stats(self) -> dict:
        return dict(self.counters_, paused=self.paused_, last_error=self.last_error_, backlog=self._q.qsize(),
                    connected=self._connected.is_set(), subscribed=self._subs.ready.is_set())

    # ------------------------------------------------------------------------------------------ writer
    def _writer(self) -> None:
        pending: list[IngestMessage] = []
        last_idle_check = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            if not self.paused_:
                deadline = time.monotonic() + self.batch_max_delay_s
                while len(pending) < self.batch_max_messages:
                    timeout = deadline - time.monotonic()
                    try:
                        pending.append(self._q.get(timeout=max(0.0, timeout)) if timeout > 0 and not stopping
                                       else self._q.get_nowait())
                    except queue.Empty:
                        break
            if pending:
                if self._commit(pending):
                    pending = []
                else:
                    # paused: wait, then retry the same batch (nothing acknowledged)
                    self._stop.wait(self.retry_interval_s) if not stopping else None
                    if stopping:
                        log.error("ingest stopping with %d uncommitted messages (the broker keeps them)",
                                  len(pending))
                        return
                    continue
            elif stopping:
                return
            now = time.monotonic()
            if now - last_idle_check > 5.0:
                last_idle_check = now
                self._end_idle_sessions(now)

    def _commit(self, msgs: list[IngestMessage]) -> bool:
        decoded = [d for d in (self._decode(m) for m in msgs) if d is not None]
        events: list[tuple] = []
        try:
            with self.store.transaction():
                raw_buf: dict[str, list] = {}
                for d in decoded:
                    if d.kind == "raw":  # raw blocks of a batch go into one chunk per sensor
                        sid = self._session(d.runner)
                        self._last_data[d.runner] = time.monotonic()
                        raw_buf.setdefault(sid, []).append(d)
                        continue
                    if d.kind == "status" and raw_buf:  # may end the session: store its data first
                        self._flush_raw(raw_buf, events)
                    self._apply(d, events)
                self._flush_raw(raw_buf, events)
        except StorageUnavailableError as exc:
            self._sessions.clear()  # the rolled-back transaction may have created sessions
            self._status_noted.clear()  # ...and status notes
            self._clock_best.clear()
            self.counters_["store_errors"] += 1
            if not self.paused_:
                log.error("ingest paused, nothing acknowledged (the broker keeps the messages): %s", exc)
            self.paused_ = True
            self.last_error_ = str(exc)
            return False
        except StorageError as exc:  # corrupt / unexpected: same handling, louder
            self._sessions.clear()
            self._status_noted.clear()
            self._clock_best.clear()
            self.counters_["store_errors"] += 1
            log.critical("ingest: storage error, retrying: %s", exc)
            self.paused_ = True
            self.last_error_ = str(exc)
            return False
        if self.paused_:
            log.warning("ingest resumed: storage accepts writes again")
        self.paused_ = False
        self.last_error_ = None
        self.counters_["committed"] += len(msgs)
        gen = self._generation
        for m in msgs:  # in receive order
            if m.qos > 0:
                if m.generation == gen and self._connected.is_set():
                    self.client.ack(m.mid, m.qos)
                    self.counters_["acked"] += 1
                else:
                    self.counters_["ack_skipped_reconnected"] += 1
        for ev in events:
            for f in self.listeners:
                try:
                    f(*ev)
                except Exception:  # a listener must not stop ingest
                    self.counters_["listener_errors"] += 1
                    log.exception("ingest listener failed")
        return True

    def _reject(self, m: IngestMessage, reason: str, exc: Exception) -> None:
        self.counters_[f"rejected_{reason}"] += 1
        n = self.counters_[f"rejected_{reason}"]
        if n <= 10 or n % 1000 == 0:
            log.error("ingest: rejected message on %s (%s #%d): %s", m.topic, reason, n, exc)

    def _decode(self, m: IngestMessage) -> _Decoded | None:
        self.counters_["messages"] += 1
        try:
            tp = parse_topic(m.topic)
        except MqttContractError as exc:
            self._reject(m, "topic", exc)
            return None
        try:
            if tp.kind == "raw":
                return _Decoded(m, tp.runner, "raw", decode_raw(m.payload))
            if tp.kind == "steps":
                return _Decoded(m, tp.runner, "steps", decode_json(m.payload, SCHEMA_STEPS))
            if tp.kind == "metrics":
                return _Decoded(m, tp.runner, "metrics", decode_json(m.payload, SCHEMA_METRICS))
            if tp.kind == "cues":
                return _Decoded(m, tp.runner, "cues", decode_json(m.payload, SCHEMA_CUE))
            if tp.kind == "status":
                return _Decoded(m, tp.runner, "status", decode_json(m.payload, SCHEMA_STATUS))
            if tp.kind == "control":
                return _Decoded(m, tp.runner, "control", decode_json(m.payload, SCHEMA_CONTROL), tp.issuer)
            if tp.kind == "program":
                obj = decode_json(m.payload, SCHEMA_PROGRAM_SESSION)
                if obj["runner"] != tp.runner:
                    raise MqttContractError(f"record of runner {obj['runner']!r} on {m.topic}")
                return _Decoded(m, tp.runner, "program", obj)
            return None  # control replies, the plan: nothing to store
        except MqttContractError as exc:
            self._reject(m, "payload", exc)
            return None

    # ------------------------------------------------------------------------------------------ sessions
    def _session(self, runner: str, *, create: bool = True, edge_id: str | None = None) -> str | None:
        sid = self._sessions.get(runner)
        if sid is not None:
            return sid
        open_ = [s for s in self.store.list_sessions([runner], open_only=True) if s.source == "mqtt"]
        if open_:
            sid = open_[0].id
        elif create:
            sid = self.store.create_session(runner, {"source": "mqtt", "edge_id": edge_id,
                                                     "clock": {"source": None}})
            self.counters_["sessions_opened"] += 1
        else:
            return None
        self._sessions[runner] = sid
        return sid

    def _end(self, runner: str, sid: str, reason: str) -> None:
        self.store.end_session(sid)
        self.store.add_note(sid, f"session ended: {reason}", kind="session", author="ingest",
                            key=f"end:{sid}")
        self._sessions.pop(runner, None)
        self._status_noted.pop(sid, None)
        self.counters_["sessions_ended"] += 1

    def _end_idle_sessions(self, now: float) -> None:
        for runner, t in list(self._last_data.items()):
            if now - t > self.session_idle_s and runner in self._sessions:
                try:
                    with self.store.transaction():
                        self._end(runner, self._sessions[runner], f"no data for {self.session_idle_s:.0f} s")
                except StorageError as exc:
                    log.error("ingest: could not end idle session of %s: %s", runner, exc)
                    self._sessions.clear()
                self._last_data.pop(runner, None)

    def _clock(self, sid: str, time_s: float | None, time_unix_s: float | None) -> None:
        """Refine the session's monotonic->UTC mapping: publish time - data time is an upper bound of the
        offset (plus pipeline latency), so keep the smallest seen."""
        if time_s is None or time_unix_s is None or not (math.isfinite(time_s) and math.isfinite(time_unix_s)):
            return
        off = time_unix_s - time_s
        best = self._clock_best.get(sid)
        if best is None:
            s = self.store.get_session(sid)
            if s is not None and s.clock_monotonic_s is not None and s.clock_utc_unix_s is not None:
                best = s.clock_utc_unix_s - s.clock_monotonic_s
                if not (s.clock_source or "").startswith("mqtt"):
                    self._clock_best[sid] = -math.inf  # an exact mapping exists: keep it
                    return
        if best is None or off < best - 1e-4:
            self._clock_best[sid] = off
            self.store.update_session(sid, clock={"monotonic_s": time_s, "utc_unix_s": time_unix_s,
                                                  "source": "mqtt publish time (upper bound; includes latency)"})

    def _flush_raw(self, raw_buf: dict[str, list], events: list) -> None:
        for sid, ds in raw_buf.items():
            n = sum(d.obj.n_samples for d in ds)
            new = self.store.append_raw_blocks(sid, [d.obj for d in ds])
            self.counters_["raw_samples_stored"] += new
            self.counters_["raw_samples_duplicate"] += n - new
            if new:
                events.extend(("raw", sid, d.runner, d.obj) for d in ds)
        raw_buf.clear()

    def _apply(self, d: _Decoded, events: list) -> None:
        runner, obj = d.runner, d.obj
        if d.kind == "status":
            state, edge = obj["state"], obj.get("edge_id")
            if state in ("online", "paused"):
                sid = self._session(runner, create=False)
                if sid is not None:
                    s = self.store.get_session(sid)
                    if s is not None and edge and s.meta.get("edge_id") not in (None, edge):
                        self._end(runner, sid, f"new edge {edge}")
                        sid = None
                if sid is None and not d.msg.retain:
                    sid = self._session(runner, edge_id=edge)
                if sid is not None:
                    s = self.store.get_session(sid)
                    if s is not None and not s.meta.get("edge_id") and edge:
                        self.store.update_session(sid, meta={"edge_id": edge})
                    if obj.get("counters"):
                        self.store.append_sensor_stats(sid, "edge", obj["counters"], obj.get("time_unix_s"))
                    for link in obj.get("links") or ():  # battery, loss, reconnects per sensor, for review
                        self.store.append_sensor_stats(sid, link["sensor_id"], link, obj.get("time_unix_s"))
                    # the edge republishes its status every few seconds: a note only when the state changes
                    if self._status_noted.get(sid) != f"{edge}:{state}":
                        self.store.add_note(sid, f"edge {edge} {state}", kind="status", author=edge,
                                            meta={"reason": obj.get("reason"), "sensors": obj.get("sensors")},
                                            key=f"status:{edge}:{state}:{obj.get('time_unix_s')}")
                        self._status_noted[sid] = f"{edge}:{state}"
            elif state == "offline":
                sid = self._session(runner, create=False)
                if sid is not None:
                    s = self.store.get_session(sid)
                    if s is None or not edge or s.meta.get("edge_id") in (None, edge):
                        self.store.add_note(sid, f"edge {edge} offline: {obj.get('reason')}", kind="status",
                                            author=edge, key=f"status:{edge}:offline:{obj.get('time_unix_s')}")
                        self._end(runner, sid, obj.get("reason") or "edge offline")
            return
        if d.kind == "program":  # runner-level (no data session needed): progression reads these
            self.store.upsert_program_session(obj)
            self.counters_["program_sessions_stored"] += 1
            return
        if d.kind == "control":
            sid = self._session(runner, create=False)
            if sid is not None:
                self.store.add_note(sid, f"{obj['command']} {json.dumps(obj.get('args') or {})}", kind="control",
                                    author=d.issuer, meta=obj, key=f"control:{d.issuer}:{obj['request_id']}")
            return
        sid = self._session(runner)
        self._last_data[runner] = time.monotonic()
        if d.kind == "raw":
            n = d.obj.n_samples
            new = self.store.append_raw_blocks(sid, [obj])
            self.counters_["raw_samples_stored"] += new
            self.counters_["raw_samples_duplicate"] += n - new
            if new:
                events.append(("raw", sid, runner, obj))
        elif d.kind == "steps":
            rows = obj["steps"]
            new = self.store.append_steps(sid, obj["sensor"], rows, site=obj.get("site") or None)
            self.counters_["steps_stored"] += new
            self.counters_["steps_duplicate"] += len(rows) - new
            if rows:
                self._clock(sid, max(r["ic_s"] for r in rows), obj.get("time_unix_s"))
            if new:
                events.append(("steps", sid, runner, (obj["sensor"], obj.get("site"), rows)))
        elif d.kind == "metrics":
            self.counters_["metrics_stored"] += self.store.append_metrics(sid, obj)
            self._clock(sid, obj.get("time_s"), obj.get("time_unix_s"))
        elif d.kind == "cues":
            self.counters_["cues_stored"] += self.store.append_cue(sid, obj)


# ---------------------------------------------------------------------------------------------- journals
def _journal_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.rfj") if p.is_file())


def import_journal_dir(store: SessionStore, path, *, runner: str | None = None, session_id: str | None = None,
                       detect_steps: bool = True, mass_kg: float | None = None, batch_blocks: int = 400,
                       program: str | None = None) -> list[dict]:
    """Import raw journals (``runform record`` / ``runform run`` output: ``*.rfj`` under ``path``) into ``store``.

    One session per runner found in the journal headers (``runner`` overrides). The session id is derived from
    the runner and the earliest journal creation time, so importing the same directory again adds nothing
    (raw blocks are keyed by (seq, first_tick, arrival_ns), steps by ``ic_s``) and an interrupted import can
    simply be repeated. The monotonic->UTC mapping comes from the journal header (both clocks read together).
    With ``detect_steps`` the samples go through ``runform.dsp.GaitEventDetector`` and the steps are stored.
    Returns one summary dict per session.
    """
    from runform.firmware_bridge import JournalError, JournalReader, MetricsBlock, SampleBlock

    files = _journal_files(Path(path))
    if not files:
        raise FileNotFoundError(f"no *.rfj journals under {path}")
    groups: dict[str, list[tuple[Path, JournalReader]]] = {}
    for f in files:
        try:
            rd = JournalReader(f)
        except JournalError as exc:
            log.error("skipping %s: %s", f, exc)
            continue
        r = runner or rd.sensor_.get("runner") or "unknown"
        groups.setdefault(str(r), []).append((f, rd))
    summary_file = Path(path) / "record_summary.json" if Path(path).is_dir() else None
    record_summary = json.loads(summary_file.read_text()) if summary_file and summary_file.exists() else None
    out = []
    for r, items in groups.items():
        clocks = [rd.header_.get("host_clock", {}) for _, rd in items]
        first = min(items, key=lambda it: it[1].header_.get("host_clock", {}).get("utc_ns", 0))[1]
        hc = first.header_.get("host_clock", {})
        utc_ns = int(hc.get("utc_ns", time.time_ns()))
        boot_ids = {c.get("boot_id") for c in clocks}
        sid = session_id or ("journal-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime(utc_ns / 1e9))
                             + f"{(utc_ns // 1000) % 1000000:06d}Z-{r}")
        sensors = [{"sensor_id": rd.sensor_.get("sensor_id") or f.stem, "site": rd.sensor_.get("site", ""),
                    "sampling_rate_hz": rd.sensor_.get("sampling_rate_hz"), "tick_hz": rd.sensor_.get("tick_hz"),
                    "protocol": rd.sensor_.get("protocol"), "address": rd.sensor_.get("address"),
                    "journal": str(f)} for f, rd in items]
        meta = {"id": sid, "source": "journal", "started_unix_s": utc_ns / 1e9,
                "clock": {"monotonic_s": int(hc["monotonic_ns"]) / 1e9, "utc_unix_s": utc_ns / 1e9,
                          "source": "journal header: host monotonic and UTC read together "
                                    f"(uncertainty {hc.get('uncertainty_ns', 0)} ns)"} if "monotonic_ns" in hc
                else {"source": None},
                "sensors": sensors, "journal_dir": str(Path(path).resolve()), "boot_ids": sorted(map(str, boot_ids)),
                "record_summary": record_summary}
        if mass_kg is not None:
            meta["mass_kg"] = mass_kg
        if program is not None:
            meta["program"] = program
        sid = store.create_session(r, meta)
        sess = store.get_session(sid)
        mass = sess.mass_kg if sess is not None else None
        stats = {"session_id": sid, "runner": r, "files": [str(f) for f, _ in items], "samples_stored": 0,
                 "samples_duplicate": 0, "steps_stored": 0, "metrics_blocks_skipped": 0}
        t_last, t_first = -math.inf, math.inf
        for f, rd in items:
            sensor_id = rd.sensor_.get("sensor_id") or f.stem
            site = rd.sensor_.get("site", "")
            det = None
            batch: list = []

            def flush():
                nonlocal det
                if not batch:
                    return
                with store.transaction():
                    new = store.append_raw_blocks(sid, batch)
                    stats["samples_stored"] += new
                    stats["samples_duplicate"] += sum(b.n_samples for b in batch) - new
                    if detect_steps:
                        if det is None:
                            det = _detector(site, float(batch[0].sampling_rate_hz), mass)
                        if det is not None:
                            acc = np.concatenate([b.acc_ms2 for b in batch])
                            ts = np.concatenate([b.time_s for b in batch])
                            gyr = (np.concatenate([b.gyr_dps for b in batch])
                                   if all(b.gyr_dps is not None for b in batch) else None)
                            steps = det.update(acc, ts, gyr)
                            if len(steps):
                                stats["steps_stored"] += store.append_steps(sid, sensor_id, steps, site=site)
                batch.clear()

            for blk in rd.blocks():
                if isinstance(blk, SampleBlock):
                    if blk.n_samples:
                        batch.append(blk)
                        t_last = max(t_last, float(blk.time_s[-1]))
                        t_first = min(t_first, float(blk.time_s[0]))
                    if len(batch) >= batch_blocks:
                        flush()
                elif isinstance(blk, MetricsBlock):
                    stats["metrics_blocks_skipped"] += 1
            flush()
            with store.transaction():
                rep = rd.report()
                link = rd.decoder_.stats() if rd.decoder_ is not None and hasattr(rd.decoder_, "stats") else {}
                if dataclasses.is_dataclass(link):
                    link = dataclasses.asdict(link)
                elif not isinstance(link, dict):
                    link = {"stats": str(link)}
                store.append_sensor_stats(sid, sensor_id, {"journal": rep, "link": link, "source": "journal import"})
                for ev in rd.events():
                    store.add_note(sid, f"{ev.get('event')}", kind="journal_event", author=sensor_id,
                                   meta=ev, key=f"journal:{sensor_id}:{ev.get('arrival_ns')}:{ev.get('event')}",
                                   time_s=ev.get("arrival_ns", 0) / 1e9 if ev.get("arrival_ns") else None)
                if rep.get("torn_tail_bytes") or rep.get("corrupt_regions"):
                    store.add_note(sid, f"journal {f.name}: torn tail {rep['torn_tail_bytes']} B, corrupt regions "
                                        f"{rep['corrupt_regions']}", kind="warning", author="import",
                                   key=f"journal-integrity:{f}")
        if math.isfinite(t_last) and sess is not None and sess.clock_monotonic_s is not None:
            with store.transaction():
                store.update_session(sid, started_unix_s=min(sess.started_unix_s, float(sess.to_utc(t_first))))
                store.end_session(sid, float(sess.to_utc(t_last)))
        elif sess is not None:
            store.end_session(sid)
        stats["summary"] = store.session_summary(sid)
        out.append(stats)
    return out


def _detector(site: str, fs: float, mass_kg: float | None):
    try:
        from runform.dsp import GaitEventDetector
    except ImportError:  # pragma: no cover - DSP always ships
        return None
    base = site.split("_")[0] if site else "sacrum"
    try:
        kw = {"mass_kg": mass_kg} if mass_kg is not None else {}
        return GaitEventDetector(site if site else "sacrum", fs, **kw)
    except (ValueError, TypeError):
        try:
            return GaitEventDetector(base, fs)
        except Exception as exc:
            log.error("no step detection for site %r: %s", site, exc)
            return None


# ---------------------------------------------------------------------------------------------- CLI main
def main(argv: list[str] | None = None) -> int:  # python -m runform.server.ingest == runform ingest
    from runform.server.cli import main as cli_main
    return cli_main(["ingest", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())

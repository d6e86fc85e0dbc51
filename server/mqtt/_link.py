"""One MQTT v5 connection with bounded, prioritised outgoing queues (paho-mqtt 2.x, VERSION2 callbacks).

Why our own queue in front of paho: paho's ``max_queued_messages`` counts only QoS>0 messages and QoS0 packets
pile up without bound in its socket buffer while the broker is slow; and a QoS1 cue that paho retransmits after
a reconnect is by definition late. So:

- messages wait in per-class deques with fixed ``maxlen`` (:data:`CLASSES`); overflow drops the OLDEST of that
  class and is counted per class;
- they are handed to paho only while connected and only while fewer than ``window`` handed messages are not yet
  written/acknowledged (``on_publish``), so paho's own buffers stay bounded too;
- cues carry a monotonic deadline: a cue still waiting at its deadline is dropped (counted ``stale``), the
  MQTT message expiry is set to the *remaining* lifetime when it is finally sent, and cues go out at QoS0
  (never retransmitted late);
- metrics keep only the newest (a 1 s snapshot superseded by the next one);
- raw blocks are the first to be shed under overload: they are in the local journal already;
- a broker that stops reading (stalled, overloaded, SIGSTOPped) while the TCP connection stays up: QoS 0
  messages would go on into the socket's kernel buffer and reach subscribers whenever the broker wakes up
  (a cue seconds late). So when a QoS 1 message handed to paho has had no PUBACK for ``stall_s`` the link
  counts a stall and hands nothing more until the broker acknowledges again; meanwhile cues expire in OUR
  queue (counted stale) and the other classes overflow their bounded queues (counted).

Client ids never collide: ``rf-{role}-{runner}-{host}-{pid}-{random}``; a second process for the same runner
gets its own id instead of kicking the first one off the broker (which is what a shared id does).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ._ready import SubscriptionState

log = logging.getLogger("runform.mqtt")

CLASS_CONTROL, CLASS_CUE, CLASS_METRICS, CLASS_STEPS, CLASS_RAW = "control", "cue", "metrics", "steps", "raw"


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    priority: int  # lower = sent first
    qos: int
    maxlen: int


#: QoS and queue bound per message class (see docs/mqtt.md "QoS per topic").
CLASSES: dict[str, ClassPolicy] = {
    CLASS_CONTROL: ClassPolicy(0, 1, 256),  # status (retained) and control replies
    CLASS_CUE: ClassPolicy(1, 0, 32),  # expiring; late = useless
    CLASS_METRICS: ClassPolicy(2, 0, 1),  # newest wins
    CLASS_STEPS: ClassPolicy(3, 1, 2000),  # events for storage/dashboards; ~15 min of steps at 170 spm
    CLASS_RAW: ClassPolicy(4, 0, 256),  # journaled locally first; shed first
}


def make_client_id(role: str, runner: str = "", *, host: str | None = None) -> str:
    host = (host or socket.gethostname()).split(".")[0][:16]
    parts = ["rf", role] + ([runner[:24]] if runner else []) + [host, str(os.getpid()), secrets.token_hex(4)]
    return "-".join(parts)


@dataclass(slots=True)
class Outgoing:
    cls: str
    topic: str
    payload: bytes
    retain: bool = False
    deadline_mono: float | None = None  # cues: drop when passed
    content_type: str | None = None
    user_props: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    transport: str = "tcp"  # "tcp" | "websockets"
    keepalive_s: int = 10
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 4.0  # after a broker restart every link is back within this (+ jitter)
    session_expiry_s: int = 60
    window: int = 200  # messages handed to paho but not yet written/acked
    max_inflight: int = 100
    paho_queue_limit: int = 400  # backstop on paho's own QoS>0 queue
    stall_s: float = 1.0  # a QoS 1 message without PUBACK this long: the broker is stalled, hold everything


class OutboundQueue:
    """Per-class bounded deques; ``pop`` returns the next message by class priority, dropping stale cues."""

    def __init__(self, classes: dict[str, ClassPolicy] = CLASSES) -> None:
        self.classes = classes
        self._q = {c: collections.deque() for c in classes}
        self._order = sorted(classes, key=lambda c: classes[c].priority)
        self.dropped_overflow = {c: 0 for c in classes}
        self.dropped_stale = 0
        self.enqueued = {c: 0 for c in classes}
        self.max_depth = {c: 0 for c in classes}

    def push(self, msg: Outgoing) -> bool:
        """Queue ``msg``; returns False if an older message of its class had to be dropped."""
        q = self._q[msg.cls]
        ok = True
        if len(q) >= self.classes[msg.cls].maxlen:
            q.popleft()
            self.dropped_overflow[msg.cls] += 1
            ok = False
        q.append(msg)
        self.enqueued[msg.cls] += 1
        if len(q) > self.max_depth[msg.cls]:
            self.max_depth[msg.cls] = len(q)
        return ok

    def expire(self, now_mono: float) -> None:
        q = self._q[CLASS_CUE]
        if not q:
            return
        keep = [m for m in q if m.deadline_mono is None or m.deadline_mono > now_mono]
        self.dropped_stale += len(q) - len(keep)
        q.clear()
        q.extend(keep)

    def pop(self, now_mono: float) -> Outgoing | None:
        for c in self._order:
            q = self._q[c]
            while q:
                m = q.popleft()
                if m.deadline_mono is not None and m.deadline_mono <= now_mono:
                    self.dropped_stale += 1
                    continue
                return m
        return None

    def push_front(self, msg: Outgoing) -> None:
        self._q[msg.cls].appendleft(msg)

    def depth(self) -> dict[str, int]:
        return {c: len(q) for c, q in self._q.items()}

    def __len__(self) -> int:
        return sum(len(q) for q in self._q.values())

    def __bool__(self) -> bool:
        return any(self._q.values())


class MqttLink:
    """A paho v5 client plus :class:`OutboundQueue`. Call :meth:`pump` from ONE thread (the edge's loop).

    Two ways to run the network side:

    - ``start()``: paho's own network thread (``loop_start``; paho's reconnect backoff). Every publish is handed
      to that thread through paho's socketpair and waits for the GIL.
    - ``start(loop)``: no thread; the socket is driven by the asyncio loop (``add_reader``/``add_writer``,
      ``loop_read``/``loop_write``/``loop_misc``), so ``publish`` writes to the socket at once, in the caller.
      Connecting runs in the loop's executor (a slow or unreachable broker never stalls the loop), and the
      reconnect backoff is ours: ``reconnect_min_s`` doubling up to ``reconnect_max_s``, with +-20 % jitter so
      a hundred links do not hit a restarted broker in the same millisecond; reset after each CONNACK.
      The edge uses this mode (one loop, many links, no thread hand-off on the cue path).

    Parameters
    ----------
    settings : broker address, credentials, limits
    client_id : unique id (:func:`make_client_id`)
    will : (topic, payload) published retained by the broker if we vanish without DISCONNECT
    birth : callable returning (topic, payload) published retained on every (re)connect
    subscriptions : [(topic_filter, qos)] renewed on every (re)connect
    on_message : called on the paho thread with (topic, payload: bytes, properties)
    """

    def __init__(self, settings: MqttSettings, client_id: str, *, will: tuple[str, bytes] | None = None,
                 birth: Callable[[], tuple[str, bytes]] | None = None,
                 subscriptions: list[tuple[str, int]] = (),
                 on_message: Callable[[str, bytes, object], None] | None = None,
                 classes: dict[str, ClassPolicy] = CLASSES) -> None:
        self.settings = settings
        self.client_id = client_id
        self.queue = OutboundQueue(classes)
        self._birth = birth
        self._subs = list(subscriptions)
        self._user_on_message = on_message
        self._events: collections.deque = collections.deque()  # from the paho thread: ("ack", mid) / ("conn",)
        # mid -> (qos, time.monotonic() handed), handed to paho and not yet written/acked; insertion order = age
        self._pending: dict[int, tuple[int, float]] = {}
        self._stalled_since: float | None = None
        self._overflow_logged: dict[str, int] = {}
        self._connected = threading.Event()
        self._subs_state = SubscriptionState(client_id)
        self._wake: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # asyncio mode (start(loop))
        self._aio_sock = None
        self._aio_writing = False
        self._aio_connecting = False
        self._aio_stopping = False
        self._aio_retry: asyncio.TimerHandle | None = None
        self._aio_misc_handle: asyncio.TimerHandle | None = None
        self._backoff_s: float | None = None
        self.reconnect_delays_s: collections.deque = collections.deque(maxlen=32)  # the last waits scheduled
        self.connect_attempts = 0
        self.last_connect_mono: float | None = None  # time.monotonic() of the last CONNACK
        self.counters = {"connects": 0, "disconnects": 0, "published": 0, "paho_refused": 0,
                         "messages_in": 0, "max_pending": 0, "stalls": 0}
        self.last_disconnect_reason: str | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        transport=settings.transport)
        if settings.username is not None:
            c.username_pw_set(settings.username, settings.password)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        c.max_inflight_messages_set(settings.max_inflight)
        c.max_queued_messages_set(settings.paho_queue_limit)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self._subs_state.on_subscribe(mid, rcs)
        c.on_socket_close = self._on_socket_close
        c.on_socket_open = self._on_socket_open
        self.client = c

    # ---- paho thread ----------------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_disconnect_reason = f"CONNACK {reason_code}"
            log.warning("%s: connection refused: %s", self.client_id, reason_code)
            return
        self.counters["connects"] += 1
        self.last_connect_mono = time.monotonic()
        self._backoff_s = None
        self._events.append(("conn",))
        if self._birth is not None:
            topic, payload = self._birth()
            client.publish(topic, payload, qos=1, retain=True)
        self._subs_state.subscribe(client, self._subs)
        self._connected.set()
        self._poke()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._subs_state.lost()
        self.counters["disconnects"] += 1
        self.last_disconnect_reason = str(reason_code)
        log.info("%s: disconnected (%s)", self.client_id, reason_code)
        if self._loop is not None and not self._aio_stopping:
            self._aio_schedule_reconnect()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._events.append(("ack", mid))
        self._poke()

    def _on_message(self, client, userdata, msg) -> None:
        self.counters["messages_in"] += 1
        if self._user_on_message is not None:
            try:
                self._user_on_message(msg.topic, bytes(msg.payload), msg.properties)
            except Exception:  # never kill the network thread
                log.exception("%s: message handler failed for %s", self.client_id, msg.topic)

    def _poke(self) -> None:
        if self._wake is not None:
            try:
                self._wake()
            except RuntimeError:  # loop closed
                pass

    # ---- owner thread ---------------------------------------------------------------------------------
    def set_waker(self, wake: Callable[[], None] | None) -> None:
        """``wake`` is called (from the paho thread) when pump() could make progress (ack, reconnect)."""
        self._wake = wake

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscribed(self) -> bool:
        """Connected and every subscription acknowledged (SUBACK): commands published now reach this link."""
        return self._subs_state.ready.is_set()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """True once connected and subscribed (see :attr:`subscribed`); False after ``timeout_s``."""
        return self._subs_state.wait(timeout_s)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> "MqttLink":
        """Connect in the background: paho's network thread, or (``loop`` given) the asyncio loop."""
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
                                  clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                                  properties=self._connect_props())
        if loop is None:
            self.client.loop_start()
        else:
            self._loop = loop
            loop.call_soon(self._aio_connect)
            self._aio_misc_handle = loop.call_later(1.0, self._aio_misc)
        return self

    def _connect_props(self) -> Properties:
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = int(self.settings.session_expiry_s)
        return p

    def stop(self, final: tuple[str, bytes] | None = None, timeout_s: float = 2.0) -> None:
        """Publish ``final`` (retained status) if connected, DISCONNECT cleanly (no will), stop the network side.

        In asyncio mode this is synchronous too (called while the loop is winding down): it drives paho
        directly until the final status is acknowledged or ``timeout_s`` passed."""
        if self._loop is not None:
            self._aio_stop(final, timeout_s)
            return
        if final is not None and self.connected:
            info = self.client.publish(final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # ---- asyncio mode -----------------------------------------------------------------------------------
    def _aio_connect(self) -> None:
        self._aio_retry = None
        if self._aio_stopping or self._aio_connecting or self._aio_sock is not None:
            return
        self._aio_connecting = True
        self.connect_attempts += 1
        fut = self._loop.run_in_executor(None, self.client.reconnect)  # blocking TCP connect + CONNECT packet
        fut.add_done_callback(self._aio_connect_done)

    def _aio_connect_done(self, fut) -> None:
        self._aio_connecting = False
        exc = fut.exception() if not fut.cancelled() else None
        if self._aio_stopping:
            if exc is None:
                self.client._sock_close()
            return
        sock = self.client.socket() if exc is None else None
        if sock is None:
            self.last_disconnect_reason = f"connect failed: {exc}" if exc else "connect failed"
            log.debug("%s: %s", self.client_id, self.last_disconnect_reason)
            self._aio_schedule_reconnect()
            return
        self._aio_sock = sock
        self._loop.add_reader(sock, self._aio_read)
        self._aio_want_write()

    def _aio_schedule_reconnect(self) -> None:
        if self._aio_stopping or self._aio_retry is not None or self._aio_connecting:
            return
        s = self.settings
        self._backoff_s = s.reconnect_min_s if self._backoff_s is None else min(self._backoff_s * 2,
                                                                                 s.reconnect_max_s)
        delay = self._backoff_s * random.uniform(0.8, 1.2)
        self.reconnect_delays_s.append(delay)
        self._aio_retry = self._loop.call_later(delay, self._aio_connect)

    @staticmethod
    def _on_socket_open(client, userdata, sock) -> None:
        """TCP_NODELAY: a cue written right after another message must not wait for that message's ACK."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # websockets wrapper / unix socket: nothing to tune
            pass

    def _on_socket_close(self, client, userdata, sock) -> None:
        if self._loop is not None and sock is self._aio_sock:
            self._loop.remove_reader(sock)
            if self._aio_writing:
                self._loop.remove_writer(sock)
                self._aio_writing = False
            self._aio_sock = None

    def _aio_read(self) -> None:
        self.client.loop_read()
        self._aio_want_write()

    def _aio_write(self) -> None:
        self.client.loop_write()
        self._aio_want_write()

    def _aio_want_write(self) -> None:
        """Register for writability only while paho has bytes the socket did not take at once."""
        sock = self._aio_sock
        if sock is None:
            return
        want = self.client.want_write()
        if want and not self._aio_writing:
            self._loop.add_writer(sock, self._aio_write)
            self._aio_writing = True
        elif not want and self._aio_writing:
            self._loop.remove_writer(sock)
            self._aio_writing = False

    def _aio_misc(self) -> None:
        """Keepalive (PINGREQ, a missing PINGRESP or CONNACK closes the socket -> reconnect), once a second."""
        if self._aio_stopping:
            return
        if self._aio_sock is not None and not self._aio_connecting:
            self.client.loop_misc()
            self._aio_want_write()
        self._aio_misc_handle = self._loop.call_later(1.0, self._aio_misc)

    def _aio_stop(self, final: tuple[str, bytes] | None, timeout_s: float) -> None:
        self._aio_stopping = True
        for h in (self._aio_retry, self._aio_misc_handle):
            if h is not None:
                h.cancel()
        c = self.client
        deadline = time.monotonic() + timeout_s
        while self._aio_connecting and time.monotonic() < deadline:  # a connect in the executor: let it finish
            time.sleep(0.01)
        sock = self._aio_sock
        if sock is not None:  # hand the socket back to paho's own select loop for the goodbye
            self._loop.remove_reader(sock)
            if self._aio_writing:
                self._loop.remove_writer(sock)
                self._aio_writing = False
        if final is not None and self.connected and sock is not None:
            info = c.publish(final[0], final[1], qos=1, retain=True)
            while not info.is_published() and c.socket() is not None and time.monotonic() < deadline:
                c.loop(timeout=0.05)
        if c.socket() is not None:
            c.disconnect()
            while c.want_write() and c.socket() is not None and time.monotonic() < deadline:
                c.loop(timeout=0.05)
        self._aio_sock = None
        c._sock_close()
        self._connected.clear()

    def enqueue(self, cls: str, topic: str, payload: bytes, *, retain: bool = False, ttl_s: float | None = None,
                content_type: str | None = None, user_props: tuple[tuple[str, str], ...] = ()) -> bool:
        deadline = time.monotonic() + ttl_s if ttl_s is not None else None
        ok = self.queue.push(Outgoing(cls, topic, payload, retain, deadline, content_type, user_props))
        if not ok and self.queue.classes[cls].maxlen > 1:  # overflow (metrics: newest wins by design): counted
            n = self.queue.dropped_overflow[cls]  # in stats(); in the log too (1st, 10th, 100th, every 1000th)
            if n in (1, 10, 100) or n % 1000 == 0:
                log.warning("%s: outgoing %s queue full (%d): %d oldest %s messages dropped so far%s", self.client_id,
                            cls, self.queue.classes[cls].maxlen, n, cls,
                            " (journaled locally)" if cls == CLASS_RAW else "")
        return ok

    def _drain_events(self) -> None:
        while self._events:
            ev = self._events.popleft()
            if ev[0] == "ack":
                self._pending.pop(ev[1], None)
            else:  # reconnected: QoS0 packets paho had buffered are gone and will never be acked; paho resends
                now = time.monotonic()  # the QoS>0 ones now, so their PUBACK clock starts again
                self._pending = {m: (q, now) for m, (q, _) in self._pending.items() if q > 0}
                self._stalled_since = None

    def _oldest_unacked(self) -> float | None:
        for q, t in self._pending.values():  # insertion order: QoS0 entries leave as soon as they are written
            if q > 0:
                return t
        return None

    def _stalled(self, now: float) -> bool:
        """True while the oldest QoS>0 message handed to paho has waited ``stall_s`` for its PUBACK."""
        oldest = self._oldest_unacked()
        if oldest is not None and now - oldest >= self.settings.stall_s and self._aio_sock is not None:
            # Before calling the broker stalled, read what it already sent: when this process was the slow one
            # (its event loop busy or descheduled on a loaded machine), the PUBACKs are waiting in the socket
            # and the reader callback has not run yet. Same thread as the loop's reader (asyncio mode).
            self.client.loop_read()
            self._drain_events()
            oldest = self._oldest_unacked()
        stalled = oldest is not None and now - oldest >= self.settings.stall_s
        if stalled and self._stalled_since is None:
            self._stalled_since = now
            self.counters["stalls"] += 1
            log.warning("%s: broker has not acknowledged for %.1f s: holding outgoing messages (cues expire in the "
                        "queue, bounded queues shed the oldest)", self.client_id, now - oldest)
        elif not stalled and self._stalled_since is not None:
            log.info("%s: broker acknowledges again after a %.1f s stall", self.client_id, now - self._stalled_since)
            self._stalled_since = None
        return stalled

    @property
    def stalled(self) -> bool:
        return self._stalled_since is not None

    def pump(self) -> int:
        """Hand queued messages to paho while connected and the window allows; returns how many."""
        if not self._events and not self.queue:  # nothing to do (the common case: called after every block)
            return 0
        self._drain_events()
        now = time.monotonic()
        self.queue.expire(now)
        if not self.connected or self._stalled(now):
            return 0
        sent = 0
        while len(self._pending) < self.settings.window:
            m = self.queue.pop(now)
            if m is None:
                break
            pol = self.queue.classes[m.cls]
            props = None
            if m.deadline_mono is not None or m.content_type or m.user_props:
                props = Properties(PacketTypes.PUBLISH)
                if m.deadline_mono is not None:
                    props.MessageExpiryInterval = max(1, int(round(m.deadline_mono - now)))
                if m.content_type:
                    props.ContentType = m.content_type
                if m.user_props:
                    props.UserProperty = list(m.user_props)
            info = self.client.publish(m.topic, m.payload, qos=pol.qos, retain=m.retain, properties=props)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending[info.mid] = (pol.qos, now)
                sent += 1
            elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and pol.qos > 0:
                # paho keeps QoS>0 messages and sends them after reconnecting: still ours to count
                self._pending[info.mid] = (pol.qos, now)
                sent += 1
                break
            else:
                self.counters["paho_refused"] += 1
                if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                    self.queue.push_front(m)  # QoS0 refused (connection just dropped): retry later
                break
        self.counters["published"] += sent
        self.counters["max_pending"] = max(self.counters["max_pending"], len(self._pending))
        if sent and self._aio_sock is not None:
            self._aio_want_write()
        return sent

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict:
        q = self.queue
        return {**self.counters, "connected": self.connected, "stalled": self.stalled, "pending": len(self._pending),
                "queue_depth": q.depth(), "queue_max_depth": dict(q.max_depth),
                "dropped_overflow": dict(q.dropped_overflow), "dropped_stale_cues": q.dropped_stale,
                "enqueued": dict(q.enqueued)}

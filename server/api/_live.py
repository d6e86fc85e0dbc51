"""Live data for browsers: one MQTT subscription (service account) fanned out to WebSocket clients, filtered per user.

::

    Mosquitto ──(runform/v1/#, paho thread)──> LiveHub._on_message
        parse_topic (anything outside the contract is dropped and counted)
        JSON payloads parsed once (invalid -> dropped, counted); replies resolve waiting control requests;
        retained status cached per runner
        └─ loop.call_soon_threadsafe ─> LiveHub._fanout ─> each LiveClient whose Access sees the runner
                                         (raw only with the "live_raw" permission) ─> bounded queue (drop oldest)

The same connection publishes control commands for the API (``runform/v1/{runner}/control/{issuer}``, issuer =
the logged-in user, checked by the API before publishing) and waits for the edge's reply by ``request_id``.

WebSocket frames to the browser: text ``{"type": "message", "kind", "runner", "sensor", "topic", "payload"}``
for JSON topics; binary ``b"RFW1" | u16 topic length (LE) | topic (UTF-8) | raw payload (RFR1 block)`` for raw.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import struct
import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runform.server.auth import PERM_LIVE_RAW, PERM_READ, Access
from runform.server.mqtt import (MqttSettings, SubscriptionState, TopicError, control_topic, make_client_id,
                                 parse_topic)

__all__ = ["LiveHub", "LiveClient", "LIVE_KINDS", "RAW_FRAME_MAGIC"]

log = logging.getLogger("runform.api.live")

LIVE_KINDS = ("steps", "metrics", "cues", "status", "control", "reply", "raw", "plan", "program")
DEFAULT_KINDS = frozenset({"steps", "metrics", "cues", "status", "reply"})
RAW_FRAME_MAGIC = b"RFW1"
_ROOT_FILTER = "runform/v1/#"


@dataclass(eq=False)
class LiveClient:
    """One WebSocket subscriber: what it asked for, what it may see, and a bounded outgoing queue."""

    access: Access
    runners: frozenset[str] | None  # requested (None = every runner the user sees)
    kinds: frozenset[str]
    maxlen: int = 512
    queue: collections.deque = field(default_factory=collections.deque)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    sent: int = 0

    def wants(self, runner: str, kind: str) -> bool:
        if kind not in self.kinds or (self.runners is not None and runner not in self.runners):
            return False
        return self.access.can(PERM_LIVE_RAW if kind == "raw" else PERM_READ, runner)

    def push(self, item) -> None:
        if len(self.queue) >= self.maxlen:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(item)
        self.event.set()


class LiveHub:
    """MQTT -> per-user WebSocket fan-out, status cache and control publishing (one paho v5 connection)."""

    def __init__(self, settings: MqttSettings, *, client_queue_len: int = 512, reply_timeout_s: float = 3.0) -> None:
        self.settings = settings
        self.client_queue_len = client_queue_len
        self.reply_timeout_s = reply_timeout_s
        self.clients: set[LiveClient] = set()
        self.status: dict[str, dict] = {}
        self.counters = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, asyncio.Future] = {}
        self._connected = threading.Event()
        self._subs = SubscriptionState("live hub")
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=make_client_id("api"), protocol=mqtt.MQTTv5,
                        transport=settings.transport)
        if settings.username is not None:
            c.username_pw_set(settings.username, settings.password)
        c.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self._subs.on_subscribe(mid, rcs)
        self._client = c
        self.last_error: str | None = None
        self.on_connected: list = []  # callables run in the event loop after every (re)connect

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()

    async def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        for c in list(self.clients):
            c.event.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """True once connected and subscribed (SUBACK): from then on every message reaches the hub."""
        return self._subs.wait(timeout_s)

    # ------------------------------------------------------------------ paho thread
    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            self.last_error = f"MQTT connection refused: {rc}"
            log.warning("live hub: %s", self.last_error)
            return
        self._subs.subscribe(client, [(_ROOT_FILTER, 1)])
        self._connected.set()
        log.info("live hub connected to %s:%s", self.settings.host, self.settings.port)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for f in self.on_connected:
                try:
                    loop.call_soon_threadsafe(f)
                except RuntimeError:  # loop shutting down
                    pass

    def _on_disconnect(self, client, userdata, flags, rc, props) -> None:
        self._connected.clear()
        self._subs.lost()
        self.last_error = f"disconnected: {rc}"

    def _on_message(self, client, userdata, msg) -> None:
        try:
            parts = parse_topic(msg.topic)
        except TopicError:
            self.counters["dropped_bad_topic"] += 1
            return
        payload = bytes(msg.payload)
        obj = None
        if parts.kind != "raw":
            try:
                obj = json.loads(payload.decode("utf-8"))  # UnicodeDecodeError is a ValueError
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.counters["dropped_bad_json"] += 1
                return
        self.counters["messages"] += 1
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fanout, parts, msg.topic, payload, obj)
        except RuntimeError:  # loop shutting down
            pass

    # ------------------------------------------------------------------ event loop
    def _fanout(self, parts, topic: str, payload: bytes, obj: dict | None) -> None:
        runner, kind = parts.runner, parts.kind
        if kind == "status":
            self.status[runner] = obj
        elif kind == "reply":
            fut = self._waiters.pop(f"{runner}/{obj.get('request_id')}", None)
            if fut is not None and not fut.done():
                fut.set_result(obj)
        item = None
        for c in self.clients:
            if not c.wants(runner, kind):
                continue
            if item is None:
                if kind == "raw":
                    t = topic.encode()
                    item = RAW_FRAME_MAGIC + struct.pack("<H", len(t)) + t + payload
                else:
                    item = ('{"type":"message","kind":%s,"runner":%s,"sensor":%s,"issuer":%s,"topic":%s,"payload":'
                            % (json.dumps(kind), json.dumps(runner), json.dumps(parts.sensor),
                               json.dumps(parts.issuer), json.dumps(topic))) + payload.decode("utf-8") + "}"
            c.push(item)

    def register(self, access: Access, runners: frozenset[str] | None, kinds: frozenset[str]) -> LiveClient:
        c = LiveClient(access, runners, kinds, maxlen=self.client_queue_len)
        self.clients.add(c)
        return c

    def unregister(self, client: LiveClient) -> None:
        self.clients.discard(client)

    async def send_command(self, runner: str, issuer: str, request_id: str, payload: bytes,
                           wait_s: float | None = None) -> dict | None:
        """Publish a (validated) control payload as ``issuer``; returns the edge's reply or None on timeout."""
        if not self.connected:
            raise ConnectionError(self.last_error or "not connected to the MQTT broker")
        key = f"{runner}/{request_id}"
        fut = asyncio.get_running_loop().create_future()
        if len(self._waiters) > 1000:  # bounded: forget the oldest waiter
            self._waiters.pop(next(iter(self._waiters))).cancel()
        self._waiters[key] = fut
        info = self._client.publish(control_topic(runner, issuer), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._waiters.pop(key, None)
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.counters["commands"] += 1
        wait = self.reply_timeout_s if wait_s is None else wait_s
        if wait <= 0:
            self._waiters.pop(key, None)
            return None
        try:
            return await asyncio.wait_for(fut, wait)
        except asyncio.TimeoutError:
            self._waiters.pop(key, None)
            return None

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish as the server's own (service) account, e.g. a runner's retained plan; ConnectionError when the
        broker is not reachable (the caller keeps its own durable copy). Returns once handed to the client: see
        :meth:`publish_acked` to know the broker has it."""
        if not self.connected:
            raise ConnectionError(self.last_error or "not connected to the MQTT broker")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.counters["published"] += 1
        return info

    async def publish_acked(self, topic: str, payload: bytes, *, retain: bool = False, timeout_s: float = 5.0) -> None:
        """:meth:`publish` at QoS 1 and wait (off the event loop) for the broker's PUBACK: from then on a new
        subscriber gets this message if it is retained. ConnectionError if not acknowledged within ``timeout_s``."""
        info = self.publish(topic, payload, qos=1, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, timeout_s)
        if not info.is_published():
            raise ConnectionError(f"the broker did not acknowledge within {timeout_s:g} s")
        self.counters["published_acked"] += 1

    def stats(self) -> dict:
        return {"connected": self.connected, "clients": len(self.clients), **self.counters,
                "client_drops": sum(c.dropped for c in self.clients)}

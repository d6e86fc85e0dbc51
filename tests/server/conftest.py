"""Fixtures for the server tests: a REAL Mosquitto broker on a free loopback port with a generated config.

Reuse: ``mosquitto`` (session scope, users below), ``fresh_mosquitto`` (per test: for kill/restart tests),
``mqtt_sub`` (factory of paho v5 subscribers that record every message with its receive time).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runform.dsp import ACTIVITY_RUNNING, empty_steps
from runform.server.broker import AccessSpec, MosquittoBroker, mosquitto_available
from runform.server.mqtt import status_topic as m_status_topic

PASSWORD = "pw-test-1"
SPEC = AccessSpec.from_dict({"users": [
    {"name": "edge", "password": PASSWORD, "role": "service"},
    {"name": "alice", "password": PASSWORD, "role": "runner"},
    {"name": "bob", "password": PASSWORD, "role": "runner"},
    {"name": "pt", "password": PASSWORD, "role": "therapist", "runners": ["alice"]},
    {"name": "pt2", "password": PASSWORD, "role": "therapist", "runners": ["bob"]},
]})


def _need_mosquitto():
    if not mosquitto_available():
        pytest.skip("mosquitto not installed: apt-get install mosquitto mosquitto-clients (make sysdeps)")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    _need_mosquitto()
    b = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), SPEC).start()
    yield b
    b.stop()


@pytest.fixture
def fresh_mosquitto(tmp_path):
    _need_mosquitto()
    b = MosquittoBroker(tmp_path / "broker", SPEC)
    yield b
    b.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    props: object
    retain: bool
    recv_unix_s: float
    recv_mono_ns: int


class Sub:
    """A paho v5 client that records what it receives (subscriptions renewed on every connect)."""

    def __init__(self, port: int, user: str | None, password: str | None = PASSWORD, *, client_id: str,
                 topics=(), qos: int = 1, clean_start: bool = True, session_expiry_s: int = 0):
        self.messages: list[Received] = []
        self.connack: list = []
        self.suback: list = []
        self.lock = threading.Lock()
        self.topics, self.qos = list(topics), qos
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # every SUBACK of the current connection is in (granted or not)
        self._pending_subs: set[int] = set()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user is not None:
            c.username_pw_set(user, password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.reconnect_delay_set(0.2, 1)
        self.c = c
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        self._connect_args = dict(clean_start=clean_start, properties=props)
        self.port = port

    def _on_connect(self, c, ud, flags, rc, props):
        self.connack.append(rc)
        if rc.is_failure:
            return
        self.subscribed.clear()
        self._pending_subs = {c.subscribe(t, qos=self.qos)[1] for t in self.topics}
        if not self._pending_subs:
            self.subscribed.set()
        self.connected.set()

    def _on_subscribe(self, c, ud, mid, rcs, props):
        self.suback.append(rcs)
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.subscribed.set()

    def _on_message(self, c, ud, msg):
        with self.lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.properties, bool(msg.retain),
                                          time.time(), time.monotonic_ns()))

    def start(self, wait: bool = True) -> "Sub":
        self.c.connect_async("127.0.0.1", self.port, keepalive=10, **self._connect_args)
        self.c.loop_start()
        if wait:
            assert self.connected.wait(10), f"subscriber did not connect: {self.connack}"
            assert self.subscribed.wait(10), "no SUBACK from the broker"
        return self

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()

    def on(self, suffix: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_stopped(self, *runners: str, timeout_s: float = 15.0) -> None:
        """Wait for each runner's final status ("offline", "edge stopped", not retained): the last message its
        edge sends on that connection, so everything it sent before is in (the broker keeps one publisher's
        order towards each subscriber)."""
        def stopped(r):
            def pred(x):
                if x.retain or x.topic != m_status_topic(r):
                    return False
                st = json.loads(x.payload)
                return st.get("state") == "offline" and st.get("reason") == "edge stopped"
            return pred
        for r in runners:
            assert self.wait_for(stopped(r), timeout_s), f"no final status from {r}'s edge"

    def wait_for(self, pred, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if any(pred(m) for m in self.messages):
                    return True
            time.sleep(0.02)
        return False


def publish_one(port, user, topic, payload: bytes, *, qos=1, retain=False, props=None,
                timeout_s: float = 10.0) -> str | None:
    """Publish with a throwaway v5 client; returns the PUBACK reason code string (None: no PUBACK in time)."""
    acks = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{user}-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, PASSWORD)
    c.on_publish = lambda cl, ud, mid, rc, p: acks.append(str(rc))
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=qos, retain=retain, properties=props)
    deadline = time.monotonic() + timeout_s
    while not acks and time.monotonic() < deadline:
        time.sleep(0.01)
    c.disconnect()
    c.loop_stop()
    return acks[0] if acks else None


@pytest.fixture
def mqtt_sub():
    subs: list[Sub] = []

    def make(port, user="edge", password=PASSWORD, **kw):
        kw.setdefault("client_id", f"test-sub-{len(subs)}-{time.monotonic_ns()}")
        s = Sub(port, user, password, **kw)
        subs.append(s)
        return s
    yield make
    for s in subs:
        try:
            s.stop()
        except Exception:
            pass


def synthetic_steps(t0_s: float, n: int, cadence_spm: float, *, gct_left_ms: float = 250.0,
                    gct_right_ms: float = 250.0, peak_g: float = 3.0, activity: int = ACTIVITY_RUNNING,
                    first_side: int = 0, loading_rate_gps: float = 100.0) -> np.ndarray:
    """STEP_DTYPE rows at a fixed cadence (alternating sides), for cue/metrics/MQTT tests."""
    st = empty_steps(n)
    dt = 60.0 / cadence_spm
    st["ic_s"] = t0_s + dt * np.arange(n)
    side = (first_side + np.arange(n)) % 2
    st["side"] = side
    st["gct_ms"] = np.where(side == 0, gct_left_ms, gct_right_ms)
    st["tc_s"] = st["ic_s"] + st["gct_ms"] / 1000
    st["step_time_ms"] = dt * 1000
    st["cadence_spm"] = cadence_spm
    st["cadence_smoothed_spm"] = cadence_spm
    st["flight_ms"] = dt * 1000 - st["gct_ms"]
    st["duty_factor"] = st["gct_ms"] / (2 * dt * 1000)
    st["peak_accel_g"] = peak_g
    st["loading_rate_gps"] = loading_rate_gps
    st["activity"] = activity
    return st


class ScriptedStepDetector:
    """Step producer for MQTT/edge tests whose subject is not the DSP: emits synthetic steps at
    ``cadence_spm`` as stream time advances (the DSP itself is tested in tests/dsp)."""

    def __init__(self, site: str, sampling_rate_hz: float, cadence_spm: float = 170.0, **_):
        self.cadence_spm = cadence_spm
        self.activity_ = ACTIVITY_RUNNING
        self._next = None
        self._side = 0

    def update(self, acc_ms2, time_s, gyr_dps=None):
        t_end = float(time_s[-1])
        if self._next is None:
            self._next = float(time_s[0])
        dt = 60.0 / self.cadence_spm
        n = int(max(0, np.floor((t_end - self._next) / dt) + 1)) if t_end >= self._next else 0
        if n == 0:
            return empty_steps(0)
        st = synthetic_steps(self._next, n, self.cadence_spm, first_side=self._side)
        self._next += n * dt
        self._side = (self._side + n) % 2
        return st


def run_loop_until(loop, pred, timeout_s: float = 10.0) -> bool:
    """Run a not-running asyncio ``loop`` (which drives the edge's MQTT sockets) until ``pred()`` or timeout."""
    import asyncio

    async def wait():
        deadline = time.monotonic() + timeout_s
        while not pred() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return bool(pred())
    return loop.run_until_complete(wait())


class PortGuard:
    """Holds a killed broker's port until the broker restarts: anything else on this machine (another test run
    starting a broker on a "free" port) could otherwise get it, and the edge would reconnect to that broker.
    It listens and closes every connection at once, like a broker that is not there (the client's connect
    fails, paho's backoff runs)."""

    def __init__(self, port: int):
        import socket
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.refused = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        import socket
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            c.close()
            self.refused += 1

    def release(self):
        self._stop.set()
        self._t.join(2)
        self.sock.close()

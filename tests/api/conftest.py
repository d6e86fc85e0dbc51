"""Fixtures for the API/auth tests: a real user store, the real session store (SQLite files), a real Mosquitto
whose password file and ACL are generated from the user store, and the app with its live hub connected to it.

Users (password ``PASSWORD`` for everyone):
alice, bob, dan = runners; pt = therapist of alice; pt2 = therapist without runners; lab = lab granted the study
``gait``; root = admin; edge = service (publishes like an edge process); apisvc = service (the API's own MQTT account).

Studies: ``gait`` (granted to lab): bob enrolled from STUDY_FROM_UNIX_S, open-ended (enrolled now); dan enrolled
[STUDY_FROM_UNIX_S, DAN_TO_UNIX_S) (a past window: not enrolled now). ``other`` (granted to nobody): alice, from 0.
Sessions (``sessions.ids``): alice, bob (started now), bob_clinical (bob, before his enrollment), dan_in (inside
dan's window), dan_after (after it).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runform.server.auth import UserStore
from runform.server.broker import mosquitto_available

PASSWORD = "correct horse 42"
USERS = [("alice", "runner"), ("bob", "runner"), ("dan", "runner"), ("pt", "therapist"), ("pt2", "therapist"),
         ("lab", "lab"), ("root", "admin"), ("edge", "service"), ("apisvc", "service")]
_DAY_S = 86400.0
STUDY_FROM_UNIX_S = float(int(time.time() - 30 * _DAY_S))
DAN_TO_UNIX_S = STUDY_FROM_UNIX_S + 20 * _DAY_S
#: extra sessions: id key -> (runner, started_unix_s)
EXTRA_SESSIONS = {"bob_clinical": ("bob", STUDY_FROM_UNIX_S - 5 * _DAY_S),
                  "dan_in": ("dan", STUDY_FROM_UNIX_S + 1 * _DAY_S),
                  "dan_after": ("dan", DAN_TO_UNIX_S + 1 * _DAY_S)}


class Clock:
    """Controllable wall clock for token expiry."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def make_users(path, clock=time.time) -> UserStore:
    store = UserStore(path, clock=clock, mqtt_iterations=1000)
    for name, role in USERS:
        store.add_user(name, role, PASSWORD)
    store.assign("pt", "alice")
    store.add_study("gait", "Gait retraining 2024")
    store.enroll("gait", "bob", STUDY_FROM_UNIX_S)
    store.enroll("gait", "dan", STUDY_FROM_UNIX_S, DAN_TO_UNIX_S)
    store.grant_study("lab", "gait")
    store.add_study("other", "Not granted to any lab")
    store.enroll("other", "alice", 0.0)
    return store


def fill_sessions(store) -> dict[str, str]:
    """One session per runner (started now) with steps, metrics, raw samples and a note, plus EXTRA_SESSIONS;
    returns key (runner, or the EXTRA_SESSIONS key) -> session id."""
    from runform.dsp import empty_steps
    out = {}
    plan = [(runner, runner, None) for runner in ("alice", "bob")]
    plan += [(key, runner, started) for key, (runner, started) in EXTRA_SESSIONS.items()]
    for k, (key, runner, started) in enumerate(plan):
        meta = {"sensors": [{"sensor_id": "s1", "site": "sacrum", "sampling_rate_hz": 100.0}]}
        if started is not None:
            meta["started_unix_s"] = started
        sid = store.create_session(runner, meta)
        st = empty_steps(10)
        st["ic_s"] = 10.0 + np.arange(10) * 0.35
        st["tc_s"] = st["ic_s"] + 0.25
        st["side"] = np.arange(10) % 2
        st["gct_ms"] = 250.0 + k
        st["cadence_spm"] = 170.0 + k
        st["peak_accel_g"] = 3.0
        st["activity"] = 3
        store.append_steps(sid, "s1", st, site="sacrum")
        store.append_metrics(sid, [{"schema": "runform.metrics.v1", "runner": runner, "time_s": 11.0 + i,
                                    "window_s": 10.0, "cadence_spm": 170.0 + k, "steps_total": 3 * i}
                                   for i in range(3)])
        n = 1000
        t = 10.0 + np.arange(n) / 100.0
        acc = np.tile([0.0, 0.0, 9.81], (n, 1)) + k
        store.append_raw(sid, "s1", "sacrum", t, acc, None, np.arange(n, dtype=np.int64), 123, seq=0,
                         first_tick=0, sampling_rate_hz=100.0, tick_hz=100.0)
        store.add_note(sid, f"note of {runner}", author=runner)
        out[key] = sid
    return out


@pytest.fixture(scope="session")
def users(tmp_path_factory):
    clock = Clock()
    s = make_users(tmp_path_factory.mktemp("users") / "users.db", clock)
    s.test_clock = clock
    yield s
    s.close()


@pytest.fixture(scope="session")
def sessions(tmp_path_factory):
    from runform.server.storage import open_store
    s = open_store(tmp_path_factory.mktemp("db") / "sessions.db")
    s.ids = fill_sessions(s)
    yield s
    s.close()


@pytest.fixture(scope="session")
def broker(users, tmp_path_factory):
    if not mosquitto_available():
        pytest.skip("mosquitto not installed: apt-get install mosquitto mosquitto-clients (make sysdeps)")
    from runform.server.auth import StoreMosquittoBroker
    b = StoreMosquittoBroker(tmp_path_factory.mktemp("mosq"), users).start()
    yield b
    b.stop()


class MqttClient:
    """A paho v5 client recording messages and CONNACK codes (for ACL tests)."""

    def __init__(self, port, user, password=PASSWORD, topics=()):
        self.messages: list[tuple[str, bytes]] = []
        self.connack = []
        self.connected = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.topics = list(topics)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}",
                        protocol=mqtt.MQTTv5)
        if user is not None:
            c.username_pw_set(user, password)
        c.on_connect = self._on_connect
        c.on_message = lambda cl, ud, msg: self._add(msg)
        self.subscribed = threading.Event()  # every SUBACK of the current connection is in (granted or not)
        self._pending_subs: set[int] = set()
        self.subacks: dict = {}  # mid -> reason codes
        c.on_subscribe = self._on_subscribe
        self.c = c
        self.port = port

    def _add(self, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_connect(self, c, ud, flags, rc, props):
        self.connack.append(rc)
        self.done.set()
        if rc.is_failure:
            return
        self.subscribed.clear()
        self._pending_subs = {c.subscribe(t, qos=1)[1] for t in self.topics}
        if not self._pending_subs:
            self.subscribed.set()
        self.connected.set()

    def _on_subscribe(self, c, ud, mid, rcs, props):
        self.subacks[mid] = rcs
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.subscribed.set()

    def subscribe(self, topic, timeout_s=10.0):
        """Subscribe now and wait for the SUBACK; returns its reason codes."""
        _, mid = self.c.subscribe(topic, qos=1)
        end = time.monotonic() + timeout_s
        while mid not in self.subacks:  # filled by the network thread (it may answer before subscribe returns)
            assert time.monotonic() < end, f"no SUBACK for {topic}"
            time.sleep(0.01)
        return self.subacks[mid]

    def start(self, wait=True):
        self.c.reconnect_delay_set(5, 10)
        self.c.connect_async("127.0.0.1", self.port, keepalive=10)
        self.c.loop_start()
        self.done.wait(10)
        if wait:
            assert self.connected.wait(5), f"connect failed: {self.connack}"
            assert self.subscribed.wait(10), "no SUBACK from the broker"
        return self

    def publish(self, topic, payload, qos=1):
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)
        return info

    def got(self, pred=lambda t: True):
        with self.lock:
            return [m for m in self.messages if pred(m[0])]

    def wait_for(self, pred, timeout_s=5.0):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.got(pred):
                return True
            time.sleep(0.02)
        return False

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def mqtt_client(broker):
    made = []

    def make(user, password=PASSWORD, topics=(), wait=True):
        m = MqttClient(broker.port, user, password, topics).start(wait=wait)
        made.append(m)
        return m
    yield make
    for m in made:
        m.stop()


@pytest.fixture(scope="session")
def app_factory(users, sessions):
    from runform.server.api import ApiConfig, create_app

    def make(hub=None, **cfg):
        cfg.setdefault("login_burst", 1000)
        cfg.setdefault("login_rate_per_s", 100)
        cfg.setdefault("rate_burst", 1000)
        cfg.setdefault("rate_per_s", 100)
        cfg.setdefault("ip_rate_burst", 5000)
        cfg.setdefault("ip_rate_per_s", 1000)
        cfg.setdefault("live_recheck_s", 0.2)
        return create_app(users, sessions, config=ApiConfig(**cfg), hub=hub)
    return make


@pytest.fixture(scope="module")
def client(app_factory):
    from starlette.testclient import TestClient
    with TestClient(app_factory()) as c:
        yield c


def assert_error(r, status, code=None):
    """An API error response: the status, a JSON body of exactly {"error": {"code", "message"}}, the code."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code is not None:
        assert body["error"]["code"] == code, body


def login(client, user, mode="bearer", password=PASSWORD):
    r = client.post("/api/v1/auth/login", json={"username": user, "password": password, "mode": mode})
    assert r.status_code == 200, r.text
    return r.json()


_TOKENS: dict[str, str] = {}


def bearer(client, user) -> dict:
    """Authorization header for ``user`` (one login per user per test run: argon2 costs ~0.2 s a login)."""
    if user not in _TOKENS:
        _TOKENS[user] = login(client, user)["token"]
    return {"Authorization": f"Bearer {_TOKENS[user]}"}

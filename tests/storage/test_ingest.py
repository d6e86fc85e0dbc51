"""MQTT ingest against a real Mosquitto: contract messages stored, redelivery de-duplicated, kill -9 of the
ingest process at random moments, full disk (tmpfs) and read-only file system."""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runform.server._links import LinkStatus
from runform.server.ingest import Ingestor
from runform.server.mqtt import (RawBlock, control_payload, control_topic, decode_raw, encode_json, encode_raw, metrics_topic,
                                 raw_topic, status_payload, status_topic, steps_payload, steps_topic)
from runform.server.storage import open_store

from .conftest import PASSWORD, synthetic_steps


def raw_payloads(runner, sensor, site, n_blocks, per=20, fs=200.0, t0=1000.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n_blocks):
        t = t0 + (j * per + np.arange(per)) / fs
        b = RawBlock(sensor, site, j, 5000 + j * per * 164, 32768.0, fs, int(t[-1] * 1e9) + 9_000_000, t,
                     rng.normal(0, 20, (per, 3)), rng.normal(0, 300, (per, 3)), rng.random(per) < 0.01, False)
        out.append((raw_topic(runner, site), encode_raw(b)))
    return out


class Publisher:
    def __init__(self, port, client_id="test-edge"):
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set("edge", PASSWORD)
        self.c.max_inflight_messages_set(200)
        self.c.max_queued_messages_set(0)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.infos = []

    def pub(self, topic, payload, qos=1, retain=False):
        self.infos.append(self.c.publish(topic, payload, qos=qos, retain=retain))

    def wait(self, timeout_s=60):
        for i in self.infos:
            i.wait_for_publish(timeout_s)
        assert all(i.is_published() for i in self.infos)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def prime_session(port, client_id):
    """Create the ingestor's persistent session + subscription on the broker before anything is published."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set("edge", PASSWORD)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subacked = threading.Event()
    c.on_subscribe = lambda *a: subacked.set()
    c.connect("127.0.0.1", port, clean_start=True, properties=props)
    c.loop_start()
    r = c.subscribe("runform/v1/#", qos=1)
    assert r[0] == mqtt.MQTT_ERR_SUCCESS
    assert subacked.wait(10), "no SUBACK"  # the session holds the subscription from now on
    c.disconnect()
    c.loop_stop()


def _wait(pred, timeout_s=30.0, step=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def _expected(payloads):
    """{(runner, sensor): decoded blocks} of what was sent."""
    exp: dict = {}
    for topic, p in payloads:
        if topic.endswith("/raw"):
            b = decode_raw(p)
            exp.setdefault((topic.split("/")[2], b.sensor_id), []).append(b)
    return exp


def _check_raw(store, exp):
    for (runner, sensor), blocks in exp.items():
        (s,) = [x for x in store.list_sessions([runner])]
        r = store.read_raw(s.id, sensor)
        want_t = np.concatenate([b.time_s for b in blocks])
        assert len(r["time_s"]) == len(want_t), f"{runner}/{sensor}: {len(r['time_s'])} stored, {len(want_t)} sent"
        assert np.array_equal(r["time_s"], want_t)
        assert np.array_equal(r["acc_ms2"], np.concatenate([b.acc_ms2 for b in blocks]))
        assert np.array_equal(r["gyr_dps"], np.concatenate([b.gyr_dps for b in blocks]))
        assert np.array_equal(r["clipped"], np.concatenate([b.clipped for b in blocks]))


def test_ingest_contract_messages(broker, tmp_path):
    store = open_store(tmp_path / "i.db")
    ing = Ingestor(store, port=broker.port, username="edge", password=PASSWORD, client_id="rf-ingest-e2e",
                   batch_max_delay_s=0.02).start()
    assert ing.wait_connected(10)  # connected and subscribed
    pub = Publisher(broker.port)
    pub.pub(status_topic("alice"), encode_json(status_payload("alice", "online", "edge-1", sensors=["S1"],
                                                              counters={"samples": 0})), retain=True)
    raws = raw_payloads("alice", "S1", "sacrum", 30)
    for t, p in raws:
        pub.pub(t, p)
    steps = synthetic_steps(1000.0, 12)
    sp = encode_json(steps_payload("alice", "S1", "sacrum", steps), check=False)
    pub.pub(steps_topic("alice", "sacrum"), sp)
    pub.pub(steps_topic("alice", "sacrum"), sp)  # a redelivered copy
    m = {"schema": "runform.metrics.v1", "runner": "alice", "time_s": 1004.0, "time_unix_s": time.time(),
         "window_s": 10.0, "cadence_spm": 170.0, "steps_total": 12, "activity": "running"}
    pub.pub(metrics_topic("alice"), encode_json(m))
    # the edge's periodic status (same state, with sensor link health): stats stored, no second "online" note
    link = LinkStatus("S1", "sacrum", "runform_v1", True, battery_pct=64, packets_received=95, packets_lost=5)
    pub.pub(status_topic("alice"), encode_json(status_payload("alice", "online", "edge-1", sensors=["S1"],
                                                              links=[link.to_payload()])), retain=True)
    pub.pub(control_topic("alice", "pt"), encode_json(control_payload("set_target_cadence", {"cadence_spm": 175},
                                                                      request_id="r1")))
    pub.pub(raws[3][0], raws[3][1])  # duplicate raw block
    pub.pub("runform/v1/alice/S1/raw", b"RFR1 garbage")  # malformed payload
    pub.pub("runform/v1/alice/weird/topic/x", b"{}")  # not a contract topic
    pub.pub(status_topic("alice"), encode_json(status_payload("alice", "offline", "edge-1", reason="edge stopped")),
            retain=True)
    pub.wait()
    assert _wait(lambda: ing.counters_["sessions_ended"] >= 1 and ing._q.qsize() == 0, 20), ing.stats()
    ing.stop()
    (s,) = store.list_sessions(["alice"])
    assert not s.is_open and s.source == "mqtt" and s.meta["edge_id"] == "edge-1"
    _check_raw(store, _expected(raws))
    st = store.read_steps(s.id)
    assert len(st) == 12 and np.allclose(st["gct_ms"], steps["gct_ms"]) and set(st["site"]) == {"sacrum"}
    assert store.read_metrics(s.id)["cadence_spm"].tolist() == [170.0]
    assert s.clock_source.startswith("mqtt") and s.to_utc(1004.0) == pytest.approx(m["time_unix_s"])
    kinds = [n["kind"] for n in store.read_notes(s.id)]
    assert "control" in kinds and kinds.count("status") == 2 and "session" in kinds
    c = ing.counters_
    assert c["raw_samples_duplicate"] == 20 and c["steps_duplicate"] == 12
    assert c["rejected_payload"] == 1 and c["rejected_topic"] == 1
    assert c["acked"] == c["received"]  # everything (incl. rejected) acknowledged once committed
    assert store.read_sensor_stats(s.id, "edge")[0]["samples"] == 0
    (ls,) = store.read_sensor_stats(s.id, "S1")
    assert (ls["battery_pct"], ls["packets_lost"], ls["loss_pct"]) == (64, 5, 5.0)
    store.close()


def _shutdown(proc, pub, log) -> None:
    """Stop the ingest process cleanly (SIGTERM, then kill after 10 s), close the publisher and the log."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    pub.close()
    log.close()


def _ingest_cmd(db, port, client_id):
    return [sys.executable, "-m", "runform.server.cli", "ingest", "--db", str(db), "--port", str(port),
            "--user", "edge", "--password", PASSWORD, "--client-id", client_id, "--batch-delay", "0.03",
            "--batch", "300"]


def _count_blocks(db) -> int:
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return c.execute("SELECT COUNT(*) FROM raw_blocks").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def test_kill9_at_random_moments_loses_and_duplicates_nothing(broker, tmp_path):
    db = tmp_path / "k.db"
    cid = "rf-ingest-kill"
    prime_session(broker.port, cid)
    log = open(tmp_path / "ingest.log", "ab")

    def start():
        return subprocess.Popen(_ingest_cmd(db, broker.port, cid), stdout=log, stderr=log, start_new_session=True)
    payloads = []
    for k, runner in enumerate(("alice", "bob")):
        payloads.append((status_topic(runner), encode_json(status_payload(runner, "online", f"edge-{runner}"))))
        for j, (sensor, site) in enumerate((("S1", "sacrum"), ("S2", "foot_left"))):
            payloads += raw_payloads(runner, sensor, site, 1000, seed=10 * k + j)
    rng = random.Random(7)
    steps = {r: synthetic_steps(1000.0, 240) for r in ("alice", "bob")}
    for r, st in steps.items():
        for i in range(0, 240, 4):
            payloads.insert(rng.randrange(2, len(payloads)),
                            (steps_topic(r, "sacrum"), encode_json(steps_payload(r, "S1", "sacrum", st[i:i + 4]),
                                                                   check=False)))
    # keep the per-sensor block order as sent (the broker preserves it per topic anyway)
    n_blocks = sum(1 for t, _ in payloads if t.endswith("/raw"))
    pub = Publisher(broker.port)

    def publish():  # as fast as the broker takes them: the ingest runs behind, with a backlog
        for t, p in payloads:
            pub.pub(t, p)
    th = threading.Thread(target=publish)
    proc = start()
    th.start()
    kills = []
    # random moments chosen by progress, not by wall time: a quiet machine drains the backlog in well under a
    # second after a restart, so a random delay could land every kill after the end
    targets = sorted(rng.sample(range(n_blocks // 10, n_blocks * 85 // 100), 6))
    try:
        for target in targets:
            if not _wait(lambda: _count_blocks(db) >= target, 15, step=0.002):
                break  # nothing more arrives: judged below
            n = _count_blocks(db)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills.append(n)
            c = sqlite3.connect(db)  # the database is never corrupt after a kill
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            c.close()
            time.sleep(rng.uniform(0.05, 0.3))
            proc = start()
        th.join(60)
        pub.wait()
        assert _wait(lambda: _count_blocks(db) >= n_blocks, 30), (
            f"only {_count_blocks(db)} of {n_blocks} raw blocks stored: acknowledged messages were lost")
        time.sleep(0.3)
    finally:
        _shutdown(proc, pub, log)
    assert sum(0 < k < n_blocks for k in kills) >= 3, kills  # the kills hit the middle of the ingest
    store = open_store(db)
    assert store.integrity_check() == []
    _check_raw(store, _expected(payloads))  # every block once, bit-exact
    for r, st in steps.items():
        (s,) = store.list_sessions([r])
        got = store.read_steps(s.id)
        assert len(got) == 240 and np.allclose(got["ic_s"], st["ic_s"])
    c = sqlite3.connect(db)
    assert c.execute("SELECT COUNT(*) FROM raw_blocks").fetchone()[0] == n_blocks
    assert c.execute("SELECT SUM(n_blocks) FROM raw_chunks").fetchone()[0] == n_blocks  # no duplicate rows
    store.close()
    print(f"\nkill -9 after {kills} of {n_blocks} raw blocks committed; all {n_blocks} stored once")


def _mount(args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = _mount(["-t", "tmpfs", "-o", "size=768k", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): disk-full test skipped")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_pauses_without_ack_and_resumes(broker, small_fs):
    store = open_store(small_fs / "f.db")
    ing = Ingestor(store, port=broker.port, username="edge", password=PASSWORD, client_id="rf-ingest-full",
                   batch_max_delay_s=0.02, retry_interval_s=0.2, receive_maximum=50).start()
    try:
        assert ing.wait_connected(10)  # connected and subscribed
        pub = Publisher(broker.port, client_id="pub-full")
        raws = raw_payloads("carol", "S1", "sacrum", 400, per=60, seed=5)  # ~1.7 MB of samples for 768 kB
        for t, p in raws:
            pub.pub(t, p)
        assert _wait(lambda: ing.paused_, 20), ing.stats()
        time.sleep(0.5)
        acked, committed = ing.counters_["acked"], ing.counters_["committed"]
        assert acked == committed and ing.counters_["received"] > committed  # held back, not acknowledged
        assert "full" in ing.last_error_, ing.last_error_
        c = sqlite3.connect(f"file:{small_fs / 'f.db'}?mode=ro", uri=True)
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        c.close()
        assert _mount(["-o", "remount,size=64m", str(small_fs)]).returncode == 0  # space returns
        pub.wait()
        n = sum(len(decode_raw(p).time_s) for _, p in raws)
        assert _wait(lambda: ing.counters_["raw_samples_stored"] >= n and not ing.paused_, 30), ing.stats()
        pub.close()
    finally:
        ing.stop()
    assert store.integrity_check() == []
    _check_raw(store, _expected(raws))
    assert ing.counters_["store_errors"] >= 1 and ing.counters_["acked"] == ing.counters_["received"]
    store.close()


def test_read_only_database_waits_then_resumes(broker, small_fs, tmp_path):
    """A file system that turned read-only (Linux refuses a ro remount while files are open for writing, so the
    ingest is restarted onto it, as after a crash): clear error, no MQTT connection, nothing acknowledged,
    ingest starts by itself when the database is writable again."""
    db = small_fs / "ro.db"
    cid = "rf-ingest-ro"
    prime_session(broker.port, cid)
    log_path = tmp_path / "ingest.log"
    log = open(log_path, "ab")
    raws = raw_payloads("dave", "S1", "sacrum", 120, seed=9)
    pub = Publisher(broker.port, client_id="pub-ro")
    proc = subprocess.Popen(_ingest_cmd(db, broker.port, cid), stdout=log, stderr=log, start_new_session=True)
    try:
        for t, p in raws[:40]:
            pub.pub(t, p)
        pub.wait()
        assert _wait(lambda: _count_blocks(db) >= 40, 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _mount(["-o", "remount,ro", str(small_fs)]).returncode == 0
        proc = subprocess.Popen(_ingest_cmd(db, broker.port, cid), stdout=log, stderr=log, start_new_session=True)
        for t, p in raws[40:]:
            pub.pub(t, p)
        pub.wait()
        assert _wait(lambda: b"read-only" in log_path.read_bytes(), 15), log_path.read_text()
        assert proc.poll() is None and _count_blocks(db) == 40  # waiting, alive, nothing written
        assert _mount(["-o", "remount,rw", str(small_fs)]).returncode == 0
        assert _wait(lambda: _count_blocks(db) >= 120, 30), log_path.read_text()[-2000:]
    finally:
        _shutdown(proc, pub, log)
    store = open_store(db)
    assert store.integrity_check() == []
    _check_raw(store, _expected(raws))
    store.close()

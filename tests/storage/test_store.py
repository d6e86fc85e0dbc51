"""SessionStore (SQLite): records, exact raw round trip, idempotent appends, ranges, errors, durability settings."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from runform.dsp import STEP_DTYPE
from runform.server.storage import (NotFoundError, SessionStore, StorageFullError, StorageUnavailableError,
                                    open_store)
from runform.server.storage._chunks import decode_chunk, encode_chunk

from .conftest import synthetic_steps


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "s.db")
    yield s
    s.close()


def _blocks(sensor="s1", site="sacrum", n_blocks=40, per=25, fs=500.0, t0=100.0, seed=0, gyro=True):
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n_blocks):
        t = t0 + (j * per + np.arange(per)) / fs
        out.append({"sensor_id": sensor, "site": site, "seq": j, "first_tick": 1000 + j * per * 64,
                    "tick_hz": 32768.0, "sampling_rate_hz": fs, "arrival_ns": int(t[-1] * 1e9) + 7_000_000,
                    "time_s": t, "acc_ms2": rng.normal(0, 9.8, (per, 3)),
                    "gyr_dps": rng.normal(0, 200, (per, 3)) if gyro else None,
                    "clipped": rng.random(per) < 0.05})
    return out


def test_open_store_urls_and_pragmas(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(s, SessionStore) and s.path == f"{tmp_path}/a.db"
    s.close()
    with pytest.raises(NotImplementedError):
        open_store("postgresql://localhost/runform")
    with pytest.raises(ValueError):
        open_store("mysql://x")
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent setting of the file
    s = open_store(tmp_path / "a.db")
    assert s._writer().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()


def test_runners_and_sessions(store):
    r = store.create_runner("alice", "Alice A.", 61.5)
    assert (r.id, r.display_name, r.mass_kg) == ("alice", "Alice A.", 61.5)
    with pytest.raises(Exception):
        store.create_runner("alice")
    store.create_runner("alice", mass_kg=62.0, exist_ok=True)
    assert store.get_runner("alice").mass_kg == 62.0 and store.get_runner("alice").display_name == "Alice A."
    assert store.get_runner("nobody") is None
    sid = store.create_session("alice", {"program": "walk-run-beginner", "notes": "first",
                                         "sensors": [{"sensor_id": "s1", "site": "sacrum", "sampling_rate_hz": 500}],
                                         "clock": {"monotonic_s": 100.0, "utc_unix_s": 1.7e9, "source": "test"},
                                         "shoe": "X"})
    s = store.get_session(sid)
    assert s.runner_id == "alice" and s.mass_kg == 62.0 and s.program == "walk-run-beginner" and s.is_open
    assert s.sites == ("sacrum",) and s.sensors[0].sampling_rate_hz == 500 and s.meta == {"shoe": "X"}
    assert s.to_utc(101.5) == pytest.approx(1.7e9 + 1.5)
    sid_b = store.create_session("bob")  # unknown runner: created
    assert store.get_runner("bob").display_name == "bob"
    assert {x.id for x in store.list_sessions()} == {sid, sid_b}
    assert [x.id for x in store.list_sessions(["alice"])] == [sid]
    assert store.list_sessions([]) == []
    assert store.create_session("alice", {"id": sid}) == sid  # idempotent by id
    store.end_session(sid, 1.7e9 + 60)
    assert store.get_session(sid).ended_unix_s == 1.7e9 + 60
    assert [x.id for x in store.list_sessions(open_only=True)] == [sid_b]
    store.update_session(sid, notes="felt fine", meta={"rpe": 4})
    assert store.get_session(sid).notes == "felt fine" and store.get_session(sid).meta["rpe"] == 4
    with pytest.raises(NotFoundError):
        store.end_session("nope")
    with pytest.raises(NotFoundError):
        store.append_raw("nope", "s1", "sacrum", [1.0], np.zeros((1, 3)))
    assert store.get_session("nope") is None
    store.delete_session(sid_b)
    assert store.get_session(sid_b) is None


def test_raw_roundtrip_exact_idempotent_and_ranges(store):
    sid = store.create_session("alice")
    a = _blocks("s1", "sacrum", seed=1)
    b = _blocks("s2", "foot_left", t0=100.003, seed=2, gyro=False)
    assert store.append_raw_blocks(sid, a[:25] + b) == 25 * 25 + 40 * 25
    # redelivery of stored blocks + new ones: only the new ones count, nothing duplicated
    assert store.append_raw_blocks(sid, a[20:] + a[20:]) == 15 * 25
    assert store.append_raw_blocks(sid, a) == 0
    r = store.read_raw(sid, "s1")
    want_t = np.concatenate([x["time_s"] for x in a])
    assert np.array_equal(r["time_s"], want_t)
    assert np.array_equal(r["acc_ms2"], np.concatenate([x["acc_ms2"] for x in a]))  # float64 bit-exact
    assert np.array_equal(r["gyr_dps"], np.concatenate([x["gyr_dps"] for x in a]))
    assert np.array_equal(r["clipped"], np.concatenate([x["clipped"] for x in a]))
    assert np.array_equal(r["seq"], np.repeat(np.arange(40), 25))
    assert np.array_equal(r["first_tick"], np.repeat([x["first_tick"] for x in a], 25))
    assert np.array_equal(r["arrival_ns"], np.repeat([x["arrival_ns"] for x in a], 25))
    assert set(r["sensor_id"]) == {"s1"} and set(r["site"]) == {"sacrum"}
    r2 = store.read_raw(sid, "s2")
    assert r2["gyr_dps"] is None and len(r2["time_s"]) == 1000
    both = store.read_raw(sid)
    assert len(both["time_s"]) == 2000 and np.isnan(both["gyr_dps"][both["sensor_id"] == "s2"]).all()
    part = store.read_raw(sid, "s1", 100.5, 101.0)
    assert part["time_s"].min() >= 100.5 and part["time_s"].max() < 101.0
    assert len(part["time_s"]) == 250
    info = {x["sensor_id"]: x for x in store.raw_sensors(sid)}
    assert info["s1"]["n_samples"] == 1000 and info["s2"]["site"] == "foot_left"
    assert {x.sensor_id for x in store.get_session(sid).sensors} == {"s1", "s2"}


def test_out_of_order_blocks_read_back_sorted(store):
    sid = store.create_session("alice")
    a = _blocks(n_blocks=12)
    store.append_raw_blocks(sid, a[6:])
    store.append_raw_blocks(sid, a[:6])  # late redelivery of older blocks
    r = store.read_raw(sid)
    assert np.array_equal(r["time_s"], np.concatenate([x["time_s"] for x in a]))
    assert np.array_equal(r["seq"], np.repeat(np.arange(12), 25))


def test_append_raw_single_block_api(store):
    sid = store.create_session("alice")
    t = 5.0 + np.arange(50) / 100
    ticks = np.arange(50, dtype=np.int64) * 328
    acc = np.arange(150, dtype=float).reshape(50, 3)
    assert store.append_raw(sid, "s1", "shank_left", t, acc, None, ticks, 123456789, sampling_rate_hz=100.0) == 50
    assert store.append_raw(sid, "s1", "shank_left", t, acc, None, ticks, 123456789) == 0  # same block again
    r = store.read_raw(sid)
    assert np.array_equal(r["sensor_tick"], ticks) and np.all(r["arrival_ns"] == 123456789)
    with pytest.raises(ValueError):
        store.append_raw(sid, "s1", "x", t, acc[:10])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 60), min_size=1, max_size=6), st.booleans(), st.booleans(), st.booleans())
def test_chunk_codec_roundtrip(sizes, gyro, clipped, ticks):
    rng = np.random.default_rng(sum(sizes))
    blocks = []
    for j, n in enumerate(sizes):
        blocks.append({"time_s": rng.normal(1e5, 1e3, n), "acc_ms2": rng.normal(0, 1, (n, 3)),
                       "gyr_dps": rng.normal(0, 1, (n, 3)) if gyro and j % 2 == 0 else None,
                       "clipped": rng.random(n) < 0.5 if clipped else None,
                       "sensor_tick": rng.integers(-2**62, 2**62, n) if ticks else None,
                       "seq": j, "first_tick": -1, "arrival_ns": 2**62 + j})
    blob, n, _ = encode_chunk(blocks)
    c = decode_chunk(blob)
    assert n == sum(sizes) and np.array_equal(c["time_s"], np.concatenate([b["time_s"] for b in blocks]))
    assert np.array_equal(c["acc_ms2"], np.concatenate([b["acc_ms2"] for b in blocks]))
    if gyro:
        want = np.concatenate([b["gyr_dps"] if b["gyr_dps"] is not None else np.full((len(b["time_s"]), 3), np.nan)
                               for b in blocks])
        assert np.array_equal(c["gyr_dps"], want, equal_nan=True)
    else:
        assert c["gyr_dps"] is None
    if ticks:
        assert np.array_equal(c["sensor_tick"], np.concatenate([b["sensor_tick"] for b in blocks]))
    assert np.array_equal(c["seq"], np.repeat(np.arange(len(sizes)), sizes))
    assert np.array_equal(c["arrival_ns"], np.repeat(2**62 + np.arange(len(sizes)), sizes))


def test_steps_metrics_cues_notes_stats(store):
    sid = store.create_session("alice", {"sensors": [{"sensor_id": "s1", "site": "sacrum"}]})
    steps = synthetic_steps(10.0, 30)
    assert store.append_steps(sid, "s1", steps) == 30
    assert store.append_steps(sid, "s1", steps[10:]) == 0  # redelivery
    got = store.read_steps(sid)
    assert len(got) == 30 and set(got["site"]) == {"sacrum"}
    for n in STEP_DTYPE.names:
        assert np.array_equal(got[n], steps[n], equal_nan=True), n
    # MQTT-payload rows (side/activity as names, missing fields)
    rows = [{"ic_s": 50.0, "side": "R", "gct_ms": 230.0, "cadence_spm": 172.0, "peak_accel_g": 3.0,
             "activity": "running", "tc_s": None}]
    assert store.append_steps(sid, "s2", rows, site="foot_right") == 1
    s2 = store.read_steps(sid, "s2")
    assert s2["side"][0] == 1 and s2["activity"][0] == 2 and np.isnan(s2["tc_s"][0]) and s2["site"][0] == "foot_right"
    assert len(store.read_steps(sid, t0_s=10.0, t1_s=12.0)) == int(np.sum((steps["ic_s"] < 12.0)))
    m = {"schema": "runform.metrics.v1", "runner": "alice", "time_s": 20.0, "window_s": 10.0, "cadence_spm": 170.0,
         "steps_total": 30, "activity": "running", "gct_left_ms": 250.0, "gct_right_ms": None,
         "interval": {"index": 2, "kind": "run"}}
    assert store.append_metrics(sid, m) == 1 and store.append_metrics(sid, m) == 0
    mm = store.read_metrics(sid)
    assert mm["cadence_spm"][0] == 170.0 and mm["activity"][0] == 2 and np.isnan(mm["gct_right_ms"][0])
    cue = {"schema": "runform.cue.v1", "cue_id": 3, "time_s": 21.0, "code": "cadence_low", "kind": "cadence",
           "text": "A little quicker.", "priority": 2, "ttl_s": 2.0, "bpm": None, "trigger_arrival_ns": 99}
    assert store.append_cue(sid, cue) == 1 and store.append_cue(sid, cue) == 0
    c = store.read_cues(sid)
    assert c["code"][0] == "cadence_low" and c["trigger_arrival_ns"][0] == 99 and np.isnan(c["bpm"][0])
    nid = store.add_note(sid, "pain 2/10", author="alice", kind="pain", key="p1")
    assert store.add_note(sid, "pain 2/10", author="alice", kind="pain", key="p1") == nid
    store.add_note(sid, "calf", time_s=15.0, author="pt")
    notes = store.read_notes(sid)
    assert [n["text"] for n in notes] == ["pain 2/10", "calf"]
    store.append_sensor_stats(sid, "s1", {"lost": 3, "received": 1000})
    assert store.read_sensor_stats(sid)[0]["lost"] == 3
    summ = store.session_summary(sid)
    assert summ["steps"] == 31 and summ["cues"] == 1 and summ["notes"] == 2 and summ["metrics_rows"] == 1
    assert summ["cadence_median_spm"] == pytest.approx(170.0, abs=1)
    assert summ["gct_left_mean_ms"] == pytest.approx(250.0) and summ["gct_right_mean_ms"] == pytest.approx(238.8, abs=1)


def test_transaction_rolls_back_everything(store):
    sid = store.create_session("alice")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.append_raw_blocks(sid, _blocks(n_blocks=3))
            store.append_steps(sid, "s1", synthetic_steps(0, 5))
            raise RuntimeError("boom")
    assert len(store.read_raw(sid)["time_s"]) == 0 and len(store.read_steps(sid)) == 0
    with store.transaction():
        store.append_raw_blocks(sid, _blocks(n_blocks=3))
        assert len(store.read_raw(sid)["time_s"]) == 75  # own uncommitted writes are visible inside
    assert len(store.read_raw(sid)["time_s"]) == 75


def test_full_database_is_a_clear_transient_error(tmp_path):
    """SQLITE_FULL (here via max_page_count; a real full disk is tested with tmpfs in test_ingest)."""
    s = open_store(tmp_path / "small.db", max_page_count=60)
    sid = s.create_session("alice")
    stored = 0
    with pytest.raises(StorageFullError) as ei:
        for k in range(200):
            stored += s.append_raw_blocks(sid, _blocks(n_blocks=10, t0=100.0 + 10 * k, seed=k))
    assert isinstance(ei.value, StorageUnavailableError) and "full" in str(ei.value)
    assert len(s.read_raw(sid)["time_s"]) == stored  # everything committed before is intact
    assert s.integrity_check() == []
    s.close()
    s = open_store(tmp_path / "small.db")  # space again (no page limit): writes go on
    assert s.append_raw_blocks(sid, _blocks(n_blocks=2, t0=1e4)) == 50
    s.close()


def test_concurrent_reader_threads_while_writing(store):
    sid = store.create_session("alice")
    errors = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                r = store.read_raw(sid)
                assert len(r["time_s"]) % 25 == 0 and np.all(np.diff(r["time_s"]) > 0)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    th = [threading.Thread(target=reader) for _ in range(2)]
    for t in th:
        t.start()
    for k in range(30):
        store.append_raw_blocks(sid, _blocks(n_blocks=4, t0=100 + k, seed=k))
    stop.set()
    for t in th:
        t.join()
    assert not errors and len(store.read_raw(sid)["time_s"]) == 30 * 100

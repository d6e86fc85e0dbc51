"""Fixtures for the storage tests: real journals from the runner simulator, a populated SQLite store, Mosquitto.

The Mosquitto fixtures and the MQTT subscriber helper are the ones of tests/server (imported, not copied).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from runform.dsp import ACTIVITY_NAMES, ACTIVITY_RUNNING, empty_steps
from runform.firmware_bridge.journal import JournalWriter, sensor_metadata
from runform.firmware_bridge.protocols import RunformV1, runform_v1 as rf
from runform.firmware_bridge.simulator import RunnerProfile, Segment, simulate
from runform.server.storage import open_store

from runform.server.broker import MosquittoBroker, mosquitto_available
from tests.server.conftest import PASSWORD, SPEC  # the users of the server tests (edge = service role)

G0 = 9.80665


def write_journal_dir(path, *, runner="alice", sites=("sacrum", "foot_left"), duration_s=24.0, fs=200.0, seed=3,
                      loss_every=0):
    """Simulated running recorded the way `runform record` does: runform v1 packets in one journal per sensor.

    Returns {sensor_id: (packets, arrivals)} so tests can compare with what was "sent".
    """
    path.mkdir(parents=True, exist_ok=True)
    rec = simulate(RunnerProfile(cadence_spm=172), sites=sites, seed=seed, sampling_rate_hz=fs,
                   segments=[Segment("stand", 3.0), Segment("run", duration_s - 3.0)], clock_drift_ppm=40.0)
    t_base_ns = time.monotonic_ns() - int(duration_s * 1e9) - 10**9
    out = {}
    for k, site in enumerate(sites):
        sig = rec.signals[site]
        cfg = rf.SensorConfig(sampling_rate_hz=fs, acc_range_g=16, acc_scale_g_per_lsb=16 / 32768,
                              site=site, serial=f"RF-{k}")
        proto = RunformV1(cfg)
        acc_counts = np.clip(np.rint(sig.acc_ms2 / G0 / cfg.acc_scale_g_per_lsb), -32768, 32767).astype(np.int16)
        gyr_counts = np.clip(np.rint(sig.gyr_dps / cfg.gyr_scale_dps_per_lsb), -32768, 32767).astype(np.int16)
        tps = cfg.tick_hz / fs
        packets = rf.packetize(acc_counts, gyr_counts, seq0=0, tick0=1000, ticks_per_sample=tps, mtu=185)
        per = rf.max_samples_per_packet(185, True)
        rng = np.random.default_rng(seed + k)
        arrivals = [t_base_ns + int(sig.time_s[min(len(sig.time_s) - 1, (j + 1) * per - 1)] * 1e9)
                    + int(rng.uniform(3e6, 20e6)) for j in range(len(packets))]
        sid = f"RF-{k}"
        meta = sensor_metadata(proto, sensor_id=sid, site=site, runner=runner, address=f"AA:BB:CC:00:00:0{k}")
        kept = [(p, a) for j, (p, a) in enumerate(zip(packets, arrivals)) if not (loss_every and j % loss_every == 7)]
        with JournalWriter(path / f"{sid}.rfj", meta, flush_interval_ms=0) as w:
            for p, a in kept:
                w.append(p, a)
        out[sid] = kept
    return out


def metrics_from_steps(steps: np.ndarray, runner: str = "alice") -> list[dict]:
    """1 s metrics payload dicts (a simple stand-in for the edge's RollingMetrics)."""
    if not len(steps):
        return []
    out = []
    t = np.floor(steps["ic_s"].min()) + 1.0
    while t <= steps["ic_s"].max() + 1.0:
        w = steps[(steps["ic_s"] > t - 10) & (steps["ic_s"] <= t)]
        if len(w):
            gl = np.nanmean(w["gct_ms"][w["side"] == 0]) if (w["side"] == 0).any() else None
            gr = np.nanmean(w["gct_ms"][w["side"] == 1]) if (w["side"] == 1).any() else None
            out.append({"schema": "runform.metrics.v1", "runner": runner, "time_s": float(t),
                        "time_unix_s": time.time(), "window_s": 10.0,
                        "activity": ACTIVITY_NAMES[int(np.median(w["activity"]))],
                        "cadence_spm": (float(np.nanmedian(w["cadence_spm"]))
                                        if np.isfinite(w["cadence_spm"]).any() else None),
                        "gct_ms": float(np.nanmean(w["gct_ms"])), "gct_left_ms": gl, "gct_right_ms": gr,
                        "balance_left_pct": (gl / (gl + gr) * 100) if gl and gr else None,
                        "duty_factor": float(np.nanmean(w["duty_factor"])) if np.isfinite(w["duty_factor"]).any() else None,
                        "steps_in_window": int(len(w)), "steps_total": int((steps["ic_s"] <= t).sum())})
        t += 1.0
    return out


def synthetic_steps(t0_s, n, cadence_spm=170.0, gct_ms=(250.0, 240.0)):
    st = empty_steps(n)
    dt = 60.0 / cadence_spm
    st["ic_s"] = t0_s + dt * np.arange(n)
    st["side"] = np.arange(n) % 2
    st["gct_ms"] = np.where(st["side"] == 0, gct_ms[0], gct_ms[1])
    st["tc_s"] = st["ic_s"] + st["gct_ms"] / 1000
    st["step_time_ms"] = dt * 1000
    st["cadence_spm"] = cadence_spm
    st["cadence_smoothed_spm"] = cadence_spm
    st["flight_ms"] = dt * 1000 - st["gct_ms"]
    st["duty_factor"] = st["gct_ms"] / (2 * dt * 1000)
    st["peak_accel_g"] = 2.5 + 0.1 * (np.arange(n) % 5)
    st["loading_rate_gps"] = 80.0
    st["peak_vgrf_bw"] = 2.4
    st["activity"] = ACTIVITY_RUNNING
    st["ic_index"] = np.arange(n) * 100.5
    st["tc_index"] = st["ic_index"] + 50.25
    st["emitted_index"] = np.arange(n) * 100 + 120
    return st


@pytest.fixture(scope="session")
def journal_session(tmp_path_factory):
    """(store path, session id, sent packets): a journal import (with real DSP steps) plus metrics, cues, notes."""
    from runform.server.ingest import import_journal_dir
    d = tmp_path_factory.mktemp("journal")
    sent = write_journal_dir(d / "rec")
    db = d / "store.db"
    store = open_store(db)
    res = import_journal_dir(store, d / "rec", mass_kg=68.0)
    sid = res[0]["session_id"]
    steps = store.read_steps(sid)
    store.append_metrics(sid, metrics_from_steps(steps))
    t_mid = float(np.median(steps["ic_s"])) if len(steps) else 0.0
    store.append_cue(sid, {"cue_id": 1, "time_s": t_mid, "code": "cadence_low", "kind": "cadence",
                           "text": "A little quicker.", "priority": 2, "ttl_s": 2.0, "time_unix_s": time.time()})
    store.add_note(sid, "left calf tight", time_s=t_mid + 1.0, author="pt", kind="annotation")
    store.add_note(sid, "pain 2/10 before", author="alice", kind="pain")
    store.close()
    return db, sid, sent, res[0]


@pytest.fixture
def broker(tmp_path):
    """A fresh Mosquitto (users of tests/server) with a deep queue for offline persistent sessions."""
    if not mosquitto_available():
        pytest.skip("mosquitto not installed: apt-get install mosquitto mosquitto-clients (make sysdeps)")
    b = MosquittoBroker(tmp_path / "broker", SPEC, max_queued_messages=200000).start()
    yield b
    b.stop()

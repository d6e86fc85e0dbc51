"""Smoke test of the `runform bench` machinery at tiny sizes: the result is complete, numbers are finite and
positive, failures of one part are reported without stopping the rest, and the report keeps its hand-written
Methods section. No timing is asserted (speed is reported in docs/benchmarks.md, never tested)."""
from __future__ import annotations

import dataclasses
import json
import math
import textwrap

import pytest

from runform.dsp._numba_config import JIT_DISABLED
from runform.server.bench import QUICK, _cold, _data, _hooks, _peers, _report, run_bench

pytestmark = pytest.mark.timeout(240)


def _finite_pos(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hooks")
    (d / "bh_ok.py").write_text(textwrap.dedent("""
        import numpy as np
        def run(quick):
            return {"quick": quick, "packets_per_s": np.float64(1234.5), "nested": {"latency_ms": [1.0, 2.0]}}
    """))
    (d / "bh_fail.py").write_text("def run(quick):\n    raise RuntimeError('broker exploded')\n")
    (d / "bh_slow.py").write_text("import time\ndef run(quick):\n    time.sleep(60)\n")
    return d


@pytest.fixture(scope="module")
def result(hook_dir, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("PYTHONPATH", str(hook_dir))
    # the simulator only: the machinery must work the same with or without the shared recordings beside the
    # checkout (a wrong RUNFORM_DATA is an error the bench reports: test_wrong_data_folder_is_an_error)
    monkeypatch_module.delenv("RUNFORM_DATA", raising=False)
    cfg = dataclasses.replace(
        QUICK, duration_s=4.0, sources=("sim",), repeats=1, kernel_repeats=1, split_max_s=2.0, profile_max_s=2.0,
        cold_start=False, peers=True, peer_python=str(tmp_path_factory.mktemp("nopeers") / "bin" / "python"),
        analyze_duration_s=4.0, analyze_repeats=1,
        hooks={"bh_ok": "a working area", "bh_fail": "an area that raises",
               "runform.no_such_area._bench": "an area not in this build"},
        hook_timeout_s=60.0)
    return run_bench(cfg)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_detector_rows_complete_and_finite(result):
    rows = result["detector"]
    assert {(r["site"], r["path"]) for r in rows} == {
        (s, p) for s in ("sacrum", "shank", "foot") for p in ("sensor_frame", "body_frame")}
    for r in rows:
        assert r["n_samples"] == 2000 and r["n_chunks"] == 100
        for key in ("whole_samples_per_s", "chunked_samples_per_s", "chunk_us_p50", "chunk_us_p99", "chunk_us_max",
                    "realtime_factor_chunked"):
            assert _finite_pos(r[key]), (key, r[key])
        assert r["chunk_us_p50"] <= r["chunk_us_p99"] <= r["chunk_us_max"]
        assert r["steps_whole"] >= 0 and r["steps_chunked"] >= 0
        sp = r["split"]
        assert 0.0 <= sp["wrapper_share"] <= 1.0 and _finite_pos(sp["update_us_per_chunk"])
    assert not result["errors"], result["errors"]


@pytest.mark.skipif(JIT_DISABLED, reason="no numba kernels to find with NUMBA_DISABLE_JIT=1")
def test_kernels_found_and_replayed(result):
    assert len(result["kernels"]) == 6
    for k in result["kernels"]:
        names = {n.split("#")[0] for n in k["kernels"]}
        # the orientation path and the body-frame path use different front-end kernels
        assert ("orientation_kernel" in names) == (k["path"] == "sensor_frame"), names
        for v in k["kernels"].values():
            assert "error" not in v, v
            assert v["signal_samples"] == k["n_samples"] == 2000
            assert v["kind"] in ("per_sample", "per_event")
            if v["kind"] == "per_sample":  # replayed once on the whole signal
                assert v["n_items"] == 2000
            assert _finite_pos(v["samples_per_s"]) and _finite_pos(v["best_samples_per_s"])
        assert _finite_pos(k["chain_samples_per_s"])
        # the chain can't be faster than its slowest kernel
        assert k["chain_samples_per_s"] <= min(v["samples_per_s"] for v in k["kernels"].values()) * 1.0000001
    split_kernels = result["detector"][0]["split"]["kernels"]
    assert split_kernels and all(v["calls"] > 0 for v in split_kernels.values())


def test_profile_lists_functions(result):
    assert {p["site"] for p in result["profiles"]} == {"sacrum", "shank", "foot"}
    for p in result["profiles"]:
        assert p["top"] and all(r["ncalls"] > 0 and r["tottime_s"] >= 0 for r in p["top"])


def test_failures_reported_not_fatal(result):
    peers = result["peers"]["peers"]
    assert "peer venv not found" in peers["error"]
    assert result["peers"]["ratios"] == []
    areas = result["areas"]
    assert areas["bh_ok"]["status"] == "ok"
    assert areas["bh_ok"]["result"] == {"quick": True, "packets_per_s": 1234.5, "nested": {"latency_ms": [1.0, 2.0]}}
    assert areas["bh_fail"]["status"] == "error" and "broker exploded" in areas["bh_fail"]["error"]
    assert areas["runform.no_such_area._bench"]["status"] == "not_available"


def test_hook_timeout(hook_dir):
    r = _hooks.run_hook("bh_slow", True, timeout_s=2.0, env={"PYTHONPATH": str(hook_dir)})
    assert r["status"] == "timeout"


def test_summary_and_machine(result):
    s = result["summary"]
    for key in ("kernel_chain_sensor_frame", "detector_whole_all", "detector_chunked_all", "chunk_us_p99_sensor_frame"):
        lo, hi = s[key]
        if key.startswith("kernel") and JIT_DISABLED:
            continue
        assert _finite_pos(lo) and _finite_pos(hi) and lo <= hi
    m = result["machine"]
    assert m["cpu_model"] and m["usable_cpus"] >= 1 and m["numba"] and m["numpy"] and m["python"]
    assert _finite_pos(result["total_s"])


def test_report_and_json(result, tmp_path):
    md, js = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    _report.write(result, md, js)
    text = md.read_text()
    for heading in ("## Machine and versions", "## Goals of issue 18", "## Summary", "## 1. DSP throughput",
                    "## 2. Bare kernels", "## 3. Where the time goes", "## 4. Cold start", "## 4b. `runform analyze`",
                    "## 5. Peers", "## 6. Other areas", "## Methods"):
        assert heading in text, heading
    assert "M samples/s" in text and "µs/chunk" in text
    assert "not available in this build" in text and "broker exploded" in text
    assert "peer venv not found" in text
    # strict JSON (no NaN), round-trips
    data = json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert len(data["detector"]) == 6
    # a hand edit of the Methods section survives a re-run; everything else is regenerated
    edited = text.replace("**One run, one machine.**", "**One run, one machine (edited by hand).**")
    md.write_text(edited.replace("## Summary", "## Summary (stale)"))
    _report.write(result, md, None)
    again = md.read_text()
    assert "(edited by hand)" in again and "## Summary (stale)" not in again
    # `runform bench --from-json` re-renders the same report from the JSON alone (keeping the edited Methods)
    from runform.server.cli import main

    assert main(["bench", "--from-json", str(js), "--out", str(md)]) == 0
    assert md.read_text() == again


def test_ratios_are_runform_over_peer():
    peers = {"gaitmap": {"n_rows": 100, "AlgoA": {"whole": {"samples_per_s": 2000.0},
                                                  "sliding": {"live_samples_per_s": 50.0, "window_s": 5.0,
                                                              "hop_s": 0.1}}},
             "mobgap": {"error": "ImportError: nope"}}
    ours = {"gaitmap": {"n_rows": 100, "whole_samples_per_s": 1e6, "chunked_samples_per_s": 1e5},
            "mobgap": {"n_rows": 5, "whole_samples_per_s": 1.0, "chunked_samples_per_s": 1.0}}
    rows = _peers.ratios(peers, ours)
    assert [(r["mode"].split(":")[0], r["ratio"]) for r in rows] == [("offline", 500.0), ("live", 2000.0)]
    assert all(r["same_samples"] for r in rows)


def test_cold_start_child_structure():
    # default cache (warm after the rest of the suite ran the kernels); one case keeps it short
    r = _cold.first_update(None, cases=(("shank", False),), timeout_s=180)
    assert set(r["first_update_s"]) == {"shank/sensor_frame"}
    assert _finite_pos(r["import_s"]) and _finite_pos(r["first_update_s"]["shank/sensor_frame"])
    assert _finite_pos(r["second_update_s"]["shank/sensor_frame"]) and _finite_pos(r["process_wall_s"])
    assert _finite_pos(r["steady_update_s"]["shank/sensor_frame"]) and "shank/sensor_frame" in r["first_step_update_s"]


def test_wrong_data_folder_is_an_error(tmp_path, monkeypatch):
    """A RUNFORM_DATA that names no data folder is reported, never silently replaced by ../shared/data."""
    monkeypatch.setenv("RUNFORM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(_data.BenchDataError, match="does not exist"):
        _data.data_root()
    assert _data.data_root(tmp_path / "nowhere") is None  # --data named but absent: no data, no fallback


def test_analyze_processes_and_whole_array_goal(result):
    an = result["analyze"]
    assert "peer venv or tool not found" in an["peer_error"] and "ratio_wall" not in an
    for name in ("runform analyze (body axes)", "runform analyze (sensor axes)"):
        r = an["commands"][name]
        assert _finite_pos(r["wall_s"]["median"]) and r["wall_s"]["min"] <= r["wall_s"]["max"]
        assert r["found_what"] == "steps" and r["found"] > 0
    g = result["summary"]["goals"]["whole_array_samples_per_s"]
    assert g["rows"] == 6 and g["min"] <= g["value"] <= g["max"] and isinstance(g["met"], bool)
    assert "analyze_vs_mobgap_ratio" not in result["summary"]["goals"]  # no peer, no ratio: never a made-up one


def test_time_to_first_step_machinery():
    """One site, one repeat: an empty cache costs more than a warm one, and each run found its first step."""
    r = _cold.first_step(repeats=1, sites=("shank",), timeout_s=200)
    s = r["sites"]["shank"]
    assert _finite_pos(s["empty_cache_s"]["median"]) and _finite_pos(s["warm_cache_s"]["median"])
    assert s["warm_cache_s"]["median"] < s["empty_cache_s"]["median"]
    part = s["parts"][0]
    assert part["warm"]["warmup_s"] < part["empty"]["warmup_s"]

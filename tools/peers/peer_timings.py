"""Time peer gait-event libraries on the shared example recordings (run by ``runform bench``).

This script runs INSIDE the separate peer venv (``.venv-peers/bin/python``), never in runform's own
venv: gaitmap / gaitmap-mad / mobgap and their dependencies are imported only here. It prints ONE JSON
object on stdout with, per peer algorithm:

- ``whole``: the algorithm called once on each whole recording; first (cold) call time and the median
  of ``repeats`` warm calls, summed over the recordings, with the number of samples processed;
  ``samples_per_s`` is per second of process CPU time (per core; robust on a shared machine),
  ``samples_per_wall_s`` per wall-clock second;
- ``sliding``: what a live system would have to do with an offline algorithm: re-run it on the last
  ``window_s`` seconds every ``hop_s`` seconds; median time per window call and the implied throughput
  of new samples per second of CPU (``hop samples / call time``).

Samples are counted per sensor (a two-foot recording of n rows is 2 n samples), as runform counts them.
Errors are reported per algorithm in the JSON (``"error"``), never raised, so the bench always completes.

``--rate HZ`` resamples every recording to HZ first (linear interpolation on a uniform grid from the first
sample: ``resample_rows`` below, the rule runform's bench applies to its own copy of the samples), so peers
and runform are also compared at the rate a running sensor streams (500 Hz) and not only at the recordings'
native rates (gaitmap's 204.8 Hz feet, mobgap's 100 Hz lower back). Stride borders given to the
event-detection-only variants are scaled to the new rate.

Usage: python peer_timings.py --data-dir /path/to/shared/data [--quick] [--repeats N] [--rate HZ]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
import warnings
from importlib import metadata
from pathlib import Path

G0 = 9.80665


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("gaitmap", "gaitmap-mad", "mobgap", "tpcp", "numpy", "scipy", "pandas", "numba"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _time_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _whole(calls: list, n_samples: int, repeats: int, first_results: list | None = None) -> dict:
    """calls: one zero-argument callable per recording (the first, cold call's results go to first_results)."""
    cold = 0.0
    for c in calls:
        t0 = time.perf_counter()
        r = c()
        cold += time.perf_counter() - t0
        if first_results is not None:
            first_results.append(r)
    warm, warm_cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        warm.append(sum(_time_call(c) for c in calls))
        warm_cpu.append(time.process_time() - c0)
    med, med_cpu = statistics.median(warm), statistics.median(warm_cpu)
    # per core = per second of this process's CPU time (all its threads); wall-clock beside it
    return {"n_samples": n_samples, "cold_s": cold, "warm_median_s": med, "warm_min_s": min(warm),
            "warm_cpu_median_s": med_cpu, "repeats": repeats, "samples_per_s": n_samples / max(med_cpu, 1e-9),
            "samples_per_wall_s": n_samples / med}


def _sliding(make_call, n_rows: int, fs: float, n_sensors: int, window_s: float, hop_s: float,
             n_windows: int) -> dict:
    """Re-run on the last ``window_s`` every ``hop_s``; ``make_call(start, stop)`` -> zero-arg callable."""
    win = int(round(window_s * fs))
    hop = int(round(hop_s * fs))
    starts = list(range(0, max(n_rows - win, 0) + 1, hop))
    if not starts:
        raise ValueError(f"recording of {n_rows} rows is shorter than the {window_s} s window")
    # spread the timed windows over the whole recording
    step = max(1, len(starts) // n_windows)
    chosen = starts[::step][:n_windows]
    make_call(chosen[0], chosen[0] + win)()  # warm-up (JIT, caches)
    times, cpu = [], []
    errors = 0
    last_error = None
    for s in chosen:
        call = make_call(s, s + win)
        c0 = time.process_time()
        t0 = time.perf_counter()
        try:
            call()
        except Exception as exc:  # an offline algorithm may refuse a window without a full stride
            errors += 1
            last_error = f"{type(exc).__name__}: {exc}"
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med, med_cpu = statistics.median(times), max(statistics.median(cpu), 1e-9)
    new_samples = hop * n_sensors
    return {"window_s": window_s, "hop_s": hop_s, "window_samples": win * n_sensors, "hop_samples": new_samples,
            "n_windows": len(times), "call_median_s": med, "call_p90_s": sorted(times)[int(0.9 * (len(times) - 1))],
            "call_cpu_median_s": med_cpu, "cpu_fraction_of_one_core": med_cpu / hop_s,
            "live_samples_per_s": new_samples / med_cpu, "live_samples_per_wall_s": new_samples / med,
            "window_errors": errors, "last_window_error": last_error}


def resample_rows(n_rows: int, fs: float, rate: float):
    """(source sample positions, count) of a uniform grid at ``rate`` over ``n_rows`` samples at ``fs``."""
    import numpy as np

    n = int(np.floor((n_rows - 1) / fs * rate)) + 1
    return np.arange(n) / rate * fs, n


def resample_frame(df, fs: float, rate: float | None):
    """Every column of ``df`` linearly interpolated to ``rate`` (``None``: unchanged)."""
    import numpy as np

    if rate is None or abs(rate - fs) < 1e-9:
        return df
    import pandas as pd

    pos, _ = resample_rows(len(df), fs, rate)
    src = np.arange(len(df), dtype=float)
    cols = [np.interp(pos, src, df[c].to_numpy(dtype=float)) for c in df.columns]
    return pd.DataFrame(np.column_stack(cols), columns=df.columns)


def _guard(name: str, results: dict, fn) -> None:
    try:
        results[name] = fn()
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}


# ------------------------------------------------------------------------------------------ gaitmap
def bench_gaitmap(data_dir: Path, quick: bool, repeats: int, n_windows: int, rate: float | None = None) -> dict:
    import pandas as pd
    from gaitmap.event_detection import HerzerEventDetection, RamppEventDetection
    from gaitmap.stride_segmentation import BarthDtw
    from gaitmap.utils.coordinate_conversion import convert_to_fbf

    folder = data_dir / "walking_foot_gaitmap_example"
    fs0 = 204.8
    fs = rate or fs0
    data = pd.read_csv(folder / "imu_sample.csv", header=[0, 1], index_col=0)
    sensors = ["left_sensor", "right_sensor"]
    data = resample_frame(data[sensors], fs0, rate)
    bf = convert_to_fbf(data, left_like="left_", right_like="right_")
    borders = pd.read_csv(folder / "stride_borders_sample.csv", header=0)
    borders["sensor"] = borders["foot"] + "_sensor"
    for c in ("start", "end"):
        borders[c] = (borders[c] * (fs / fs0)).round().astype(int)
    stride_list = {k: v.drop(columns=["sensor"]).reset_index(drop=True).set_index("s_id")
                   for k, v in borders.groupby("sensor")}
    n_rows = len(bf)
    n = n_rows * len(sensors)
    out: dict = {"recording": "walking_foot_gaitmap_example/imu_sample.csv", "sampling_rate_hz": fs,
                 "n_rows": n_rows, "sensors": sensors}

    def dtw_rampp(d):
        dtw = BarthDtw().segment(data=d, sampling_rate_hz=fs)
        ev = RamppEventDetection().detect(data=d, stride_list=dtw.stride_list_, sampling_rate_hz=fs)
        return ev

    def herzer_given(d, sl):
        return HerzerEventDetection().detect(data=d, stride_list=sl, sampling_rate_hz=fs)

    def rampp_given(d, sl):
        return RamppEventDetection().detect(data=d, stride_list=sl, sampling_rate_hz=fs)

    def run_all(name, whole_fn, window_fn):
        first: list = []
        res = {"whole": _whole([whole_fn], n, repeats, first)}
        # correctness echo: strides with events found on the whole recording
        res["n_strides_whole"] = int(sum(len(v) for v in first[0].min_vel_event_list_.values()))
        try:
            res["sliding"] = _sliding(window_fn, n_rows, fs, len(sensors), 5.0, 0.1, n_windows)
        except Exception as exc:
            res["sliding"] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name] = res

    run_all("BarthDtw+RamppEventDetection", lambda: dtw_rampp(bf),
            lambda s, e: (lambda: dtw_rampp(bf.iloc[s:e])))

    # event detection alone, given the hand-labelled stride borders (the cheapest possible use of gaitmap)
    def window_strides(s, e):
        return {k: v[(v["start"] >= s) & (v["end"] < e)].assign(start=lambda x: x["start"] - s,
                                                               end=lambda x: x["end"] - s)
                for k, v in stride_list.items()}

    run_all("RamppEventDetection(given strides)", lambda: rampp_given(bf, stride_list),
            lambda s, e: (lambda sl=window_strides(s, e): rampp_given(bf.iloc[s:e].reset_index(drop=True), sl)))
    run_all("HerzerEventDetection(given strides)", lambda: herzer_given(bf, stride_list),
            lambda s, e: (lambda sl=window_strides(s, e): herzer_given(bf.iloc[s:e].reset_index(drop=True), sl)))
    return out


# ------------------------------------------------------------------------------------------- mobgap
MOBGAP_FILES = ("HA/001/TimeMeasure1_Test11_Trial1.csv", "HA/002/TimeMeasure1_Test11_Trial1.csv",
                "MS/001/TimeMeasure1_Test11_Trial1.csv")


def bench_mobgap(data_dir: Path, quick: bool, repeats: int, n_windows: int, rate: float | None = None) -> dict:
    import pandas as pd
    from mobgap.initial_contacts import IcdIonescu, IcdShinImproved
    from mobgap.utils.conversions import to_body_frame

    folder = data_dir / "walking_lowerback_mobgap_example" / "example_data" / "data_csv"
    fs0 = 100.0
    fs = rate or fs0
    recs = []
    for rel in MOBGAP_FILES:
        df = pd.read_csv(folder / rel)
        df = df.drop(columns=["samples"])
        for c in ("acc_x", "acc_y", "acc_z"):
            df[c] = df[c] * G0  # the CSV export is in g; mobgap works in m/s^2
        recs.append(to_body_frame(resample_frame(df, fs0, rate)))
    n = sum(len(r) for r in recs)
    out: dict = {"recordings": [f"walking_lowerback_mobgap_example/example_data/data_csv/{r}" for r in MOBGAP_FILES],
                 "sampling_rate_hz": fs, "n_rows": n}
    longest = max(recs, key=len)
    for name, cls in (("IcdShinImproved", IcdShinImproved), ("IcdIonescu", IcdIonescu)):
        def call(d, cls=cls):
            return cls().detect(d, sampling_rate_hz=fs)

        res: dict = {}
        try:
            first: list = []
            res["whole"] = _whole([lambda d=d: call(d) for d in recs], n, repeats, first)
            res["n_ic_whole"] = int(sum(len(r.ic_list_) for r in first))
        except Exception as exc:
            res["whole"] = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            res["sliding"] = _sliding(lambda s, e: (lambda: call(longest.iloc[s:e].reset_index(drop=True))),
                                      len(longest), fs, 1, 5.0, 0.1, n_windows)
        except Exception as exc:
            res["sliding"] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--windows", type=int, default=None)
    ap.add_argument("--rate", type=float, default=None, help="resample every recording to this rate (Hz) first")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    n_windows = args.windows or (5 if args.quick else 30)
    warnings.simplefilter("ignore")
    results: dict = {"versions": _versions(), "repeats": repeats, "n_windows": n_windows, "rate_hz": args.rate}
    t0 = time.perf_counter()
    _guard("gaitmap", results, lambda: bench_gaitmap(args.data_dir, args.quick, repeats, n_windows, args.rate))
    _guard("mobgap", results, lambda: bench_mobgap(args.data_dir, args.quick, repeats, n_windows, args.rate))
    results["total_s"] = time.perf_counter() - t0
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

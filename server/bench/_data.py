"""Signals the benchmark feeds the detector: long recordings built from the simulator and from real trials.

Every signal exists in two forms so both input paths of :class:`runform.dsp.GaitEventDetector` are timed
on the same motion:

- ``acc_sensor_ms2``: sensor frame, any mounting (the default ``body_frame=False`` path, which estimates
  the orientation sample by sample);
- ``acc_body_ms2``: columns already (vertical, AP, ML) (the ``body_frame=True`` path). Natively body-frame
  data is used as is; sensor-frame data is projected once, offline, with the detector's own orientation
  kernel, so both paths see the same motion and detect comparable steps.

Real trials are resampled to the target rate by linear interpolation (only when their rate differs),
concatenated and tiled to the requested duration.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runform.dsp import G0, params_for

SITES = ("sacrum", "shank", "foot")
SIM_SITE = {"sacrum": "sacrum", "shank": "shank_left", "foot": "foot_left"}

# recordings shared with the peer script (tools/peers/peer_timings.py lists the same files)
GAITMAP_FOLDER = "walking_foot_gaitmap_example"
GAITMAP_FILE = "imu_sample.csv"
GAITMAP_RATE_HZ = 204.8
MOBGAP_FILES = ("HA/001/TimeMeasure1_Test11_Trial1.csv", "HA/002/TimeMeasure1_Test11_Trial1.csv",
                "MS/001/TimeMeasure1_Test11_Trial1.csv")
MOBGAP_FOLDER = "walking_lowerback_mobgap_example/example_data/data_csv"
MOBGAP_RATE_HZ = 100.0


class BenchDataError(RuntimeError):
    """A signal source is not available (missing data folder or module); the message says which."""


@dataclass(frozen=True)
class BenchSignal:
    source: str  # "sim" | "real"
    site: str  # sacrum | shank | foot
    description: str
    sampling_rate_hz: float
    time_s: np.ndarray  # (n,)
    acc_sensor_ms2: np.ndarray  # (n, 3) C-contiguous
    acc_body_ms2: np.ndarray  # (n, 3) C-contiguous, columns (v, ap, ml)

    @property
    def n_samples(self) -> int:
        return int(self.time_s.shape[0])


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The shared recordings folder: ``explicit``, else what ``runform validate`` uses."""
    if explicit:
        p = Path(explicit)
        return p if p.is_dir() else None
    try:
        from runform.server.validation import data_root as _root
    except ImportError:  # validation module absent in a partial build: same rules, locally
        import os
        env = os.environ.get("RUNFORM_DATA")
        cands = ([Path(env)] if env else []) + [p / "shared" / "data" for p in Path(__file__).resolve().parents]
        return next((c for c in cands if c.is_dir() and (c / "README.md").exists()), None)
    try:
        return _root()
    except ValueError as exc:  # DataRootError: RUNFORM_DATA names something that is not the data folder
        raise BenchDataError(str(exc)) from None


def project_to_body(acc_ms2: np.ndarray, sampling_rate_hz: float, site: str) -> np.ndarray:
    """Sensor-frame acc -> (v, ap, ml) in m/s² with the detector's own causal orientation estimate."""
    from runform.dsp._orientation import orientation_init, orientation_kernel

    o = params_for(site).orientation
    comps, _ = orientation_kernel(np.ascontiguousarray(acc_ms2, dtype=np.float64),
                                  1.0 / (o.gravity_tau_s * sampling_rate_hz), 1.0 / (o.axes_tau_s * sampling_rate_hz),
                                  orientation_init())
    return np.ascontiguousarray(comps[:3].T * G0)


def random_rotation(seed: int = 7) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def resample(time_s: np.ndarray, acc: np.ndarray, rate_hz: float) -> np.ndarray:
    """Linear interpolation onto a uniform grid at ``rate_hz`` spanning the trial."""
    n = int(math.floor((time_s[-1] - time_s[0]) * rate_hz)) + 1
    tt = time_s[0] + np.arange(n) / rate_hz
    return np.stack([np.interp(tt, time_s, acc[:, k]) for k in range(3)], axis=1)


def tile_to(parts: list[np.ndarray], n: int) -> np.ndarray:
    base = np.concatenate(parts)
    reps = int(math.ceil(n / base.shape[0]))
    return np.ascontiguousarray(np.tile(base, (reps, 1))[:n])


# ----------------------------------------------------------------------------------------- simulator
def simulated(site: str, duration_s: float, sampling_rate_hz: float = 500.0, seed: int = 11) -> BenchSignal:
    try:
        from runform.firmware_bridge.simulator import RunnerProfile, simulate
    except ImportError as exc:
        raise BenchDataError(f"simulator not available in this build ({exc})") from None
    sim_site = SIM_SITE[site]
    rec = simulate(RunnerProfile(), sites=(sim_site,), duration_s=duration_s, sampling_rate_hz=sampling_rate_hz,
                   seed=seed, gyro=False, orientation="random")
    sig = rec.signals[sim_site]
    acc = np.ascontiguousarray(sig.acc_ms2, dtype=np.float64)
    n = acc.shape[0]
    return BenchSignal("sim", site, f"simulator: running 170 spm, 3.3 m/s, {sim_site}, random mounting",
                       sampling_rate_hz, np.arange(n) / sampling_rate_hz, acc,
                       project_to_body(acc, sampling_rate_hz, site))


# ------------------------------------------------------------------------------------------ real data
def _gaitmap_feet(root: Path) -> dict[str, np.ndarray]:
    """Left/right foot acc (m/s², sensor frame) of gaitmap's example: {"left_sensor": (n,3), ...}."""
    path = root / GAITMAP_FOLDER / GAITMAP_FILE
    if not path.exists():
        raise BenchDataError(f"{path} not found")
    with path.open(newline="") as fh:
        rd = csv.reader(fh)
        sensors = next(rd)
        axes = next(rd)
    data = np.loadtxt(path, delimiter=",", skiprows=2)
    out = {}
    for s in ("left_sensor", "right_sensor"):
        cols = [next(i for i, (ss, ax) in enumerate(zip(sensors, axes)) if ss == s and ax == f"acc_{a}")
                for a in "xyz"]
        out[s] = np.ascontiguousarray(data[:, cols])
    return out


def gaitmap_feet(root: Path) -> tuple[float, dict[str, np.ndarray]]:
    return GAITMAP_RATE_HZ, _gaitmap_feet(root)


def mobgap_lowerback(root: Path) -> tuple[float, list[np.ndarray]]:
    """The lower-back recordings the mobgap peer uses: acc in m/s² (the CSV export is in g), sensor frame."""
    recs = []
    for rel in MOBGAP_FILES:
        path = root / MOBGAP_FOLDER / rel
        if not path.exists():
            raise BenchDataError(f"{path} not found")
        with path.open(newline="") as fh:
            header = next(csv.reader(fh))
        data = np.loadtxt(path, delimiter=",", skiprows=1)
        cols = [header.index(f"acc_{a}") for a in "xyz"]
        recs.append(np.ascontiguousarray(data[:, cols] * G0))
    return MOBGAP_RATE_HZ, recs


def real(site: str, duration_s: float, root: Path | None, sampling_rate_hz: float = 500.0) -> BenchSignal:
    if root is None:
        raise BenchDataError("shared recordings not found (set RUNFORM_DATA or --data)")
    from runform.firmware_bridge.files import load_csv

    n = int(round(duration_s * sampling_rate_hz))
    native_body = False
    if site == "sacrum":
        files = sorted((root / "sacrum_treadmill_alcantara2022").glob("trial*[0-9].csv"))
        desc = "alcantara2022 sacrum treadmill running (v, ap; ml = 0), native 500 Hz"
        native_body = True
    elif site == "shank":
        files = sorted((root / "shank_treadmill_bach2022").glob("trial*[0-9].csv"))
        desc = "bach2022 shank treadmill running/walking, 142.857 Hz resampled to " + f"{sampling_rate_hz:g} Hz"
    elif site == "foot":
        fs0, feet = gaitmap_feet(root)
        t0 = np.arange(feet["left_sensor"].shape[0]) / fs0
        parts = [resample(t0, feet[s], sampling_rate_hz) for s in ("left_sensor", "right_sensor")]
        desc = "gaitmap example foot walking (left+right), 204.8 Hz resampled to " + f"{sampling_rate_hz:g} Hz"
        files = None
    else:
        raise BenchDataError(f"unknown site {site!r}")
    if files is not None:
        if not files:
            raise BenchDataError(f"no trials for {site} under {root}")
        parts = []
        for f in files:
            rec = load_csv(f)
            a = rec.acc_ms2
            if abs(rec.sampling_rate_hz - sampling_rate_hz) > 1e-6 * sampling_rate_hz:
                a = resample(rec.time_s, a, sampling_rate_hz)
            parts.append(a)
    acc = tile_to(parts, n)
    if native_body:
        body = acc
        sensor = np.ascontiguousarray(acc @ random_rotation().T)
    else:
        sensor = acc
        body = project_to_body(acc, sampling_rate_hz, site)
    return BenchSignal("real", site, desc + ", tiled", sampling_rate_hz, np.arange(n) / sampling_rate_hz,
                       sensor, body)


def build(source: str, site: str, duration_s: float, root: Path | None, sampling_rate_hz: float = 500.0
          ) -> BenchSignal:
    if source == "sim":
        return simulated(site, duration_s, sampling_rate_hz)
    if source == "real":
        return real(site, duration_s, root, sampling_rate_hz)
    raise BenchDataError(f"unknown source {source!r}")

"""Random chunkings (1 sample ... whole recording) give exactly the whole-array events."""
import numpy as np
import pytest

from runform.dsp import GaitEventDetector
from runform.firmware_bridge.files import load_csv
from tests.dsp.conftest import synthetic_limb, synthetic_running


def run(det_args, acc, t, cuts):
    det = GaitEventDetector(*det_args[0], **det_args[1])
    out = [det.update(a, tt) for a, tt in zip(np.split(acc, cuts), np.split(t, cuts))]
    return np.concatenate(out)


def random_cuts(n, rng, max_chunk):
    cuts, pos = [], 0
    while True:
        pos += int(rng.integers(1, max_chunk + 1))
        if pos >= n:
            return cuts
        cuts.append(pos)


def assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("site,gen", [("sacrum", synthetic_running), ("shank_left", synthetic_limb),
                                      ("foot", synthetic_limb)])
@pytest.mark.parametrize("max_chunk", [1, 7, 64, 1000])
def test_chunking_invariance_synthetic(site, gen, max_chunk):
    t, acc, _ = gen(duration_s=8.0 if max_chunk == 1 else 20.0)
    rng = np.random.default_rng(max_chunk)
    whole = run(((site, 500.0), {}), acc, t, [])
    chunked = run(((site, 500.0), {}), acc, t, random_cuts(len(t), rng, max_chunk))
    assert whole.size > 5
    assert_same(whole, chunked)


def sacral_walk_run(duration_s=20.0):
    """Simulated sacral walking -> running -> walking (walking ICs, the handover and running stances)."""
    from runform.firmware_bridge.simulator import RunnerProfile, Segment, simulate

    d = duration_s / 4
    rec = simulate(RunnerProfile(cadence_spm=168.0), sites=("sacrum",), sampling_rate_hz=500.0, seed=6,
                   segments=[Segment("walk", d), Segment("run", d), Segment("walk", 2 * d)], orientation="random")
    return rec.signals["sacrum"].time_s, rec.signals["sacrum"].acc_ms2, None


@pytest.mark.parametrize("max_chunk", [1, 7, 64, 1000])
def test_chunking_invariance_sacral_walking(max_chunk):
    t, acc, _ = sacral_walk_run(duration_s=12.0 if max_chunk == 1 else 24.0)
    rng = np.random.default_rng(max_chunk)
    whole = run((("sacrum", 500.0), {}), acc, t, [])
    chunked = run((("sacrum", 500.0), {}), acc, t, random_cuts(len(t), rng, max_chunk))
    assert (whole["activity"] == 1).sum() > 5 and (whole["activity"] == 2).sum() > 5
    assert_same(whole, chunked)


@pytest.mark.parametrize("gyro", [False, True])
@pytest.mark.parametrize("max_chunk", [1, 7, 1000])
def test_chunking_invariance_foot_rest_rules(max_chunk, gyro):
    """Simulated forefoot running -> walking -> running on the foot (the rest rules and the early end of the
    toe-off window at the handover), with and without the gyroscope."""
    from runform.firmware_bridge.simulator import RunnerProfile, Segment, simulate

    d = 4.0 if max_chunk == 1 else 8.0
    rec = simulate(RunnerProfile(cadence_spm=172.0, foot_strike="forefoot"), sites=("foot_left",),
                   sampling_rate_hz=200.0, seed=3, orientation="random",
                   segments=[Segment("run", d), Segment("walk", d), Segment("run", d)])
    sig = rec.signals["foot_left"]

    def feed(cuts):
        det = GaitEventDetector("foot_left", 200.0, use_gyro=gyro)
        g = np.split(sig.gyr_dps, cuts) if gyro else [None] * (len(cuts) + 1)
        return np.concatenate([det.update(a, tt, gg) for a, tt, gg in
                               zip(np.split(sig.acc_ms2, cuts), np.split(sig.time_s, cuts), g)])

    whole = feed([])
    assert whole.size > 10
    assert_same(whole, feed(random_cuts(len(sig.time_s), np.random.default_rng(max_chunk), max_chunk)))


@pytest.mark.parametrize("rel", ["sacrum_treadmill_alcantara2022/trial03.csv", "shank_treadmill_bach2022/trial07.csv"])
def test_chunking_invariance_real(shared_data, rel):
    rec = load_csv(shared_data / rel)
    site = "sacrum" if "sacrum" in rel else "shank"
    args = ((site, rec.sampling_rate_hz), {"body_frame": rec.body_frame, "range_g": rec.range_g_detected})
    whole = run(args, rec.acc_ms2, rec.time_s, [])
    rng = np.random.default_rng(11)
    for max_chunk in (1, 20, 333):
        cuts = random_cuts(len(rec.time_s), rng, max_chunk)
        assert_same(whole, run(args, rec.acc_ms2, rec.time_s, cuts))

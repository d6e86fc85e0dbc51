"""The BLE part of `make bench`: N virtual sensors at 1 kHz through the emulated stack, loss and CPU reported."""
from __future__ import annotations

import pytest

from runform.firmware_bridge.virtual import emulator_missing_reason


def test_ble_bench_reports_loss_and_cpu():
    reason = emulator_missing_reason()
    if reason:
        pytest.skip(f"BLE emulator unavailable: {reason}")
    from runform.firmware_bridge.ble import _bench
    r = _bench.run(counts=(2,), seconds=1.5, loss_pct=5.0)
    assert r["status"] == "ok", r
    (run,) = r["runs"]
    assert run["status"] == "ok" and run["n_sensors"] == 2
    assert run["packets_received"] > 0 and run["samples_per_s"] > 0
    assert run["packets_lost"] > 0 and r["loss_injected_pct"] == 5.0  # loss on air is counted, not hidden
    assert run["loss_pct"] == pytest.approx(100 * run["packets_lost"] / (run["packets_received"] + run["packets_lost"]),
                                            abs=1e-3)
    assert run["central_cpu_pct"] > 0 and run["emulator_cpu_pct"] > 0
    assert r["central_cpu_pct_per_sensor"] > 0 and r["sensors_fit_2_cores"] >= 1

"""BLE fixtures: one private D-Bus + bluezoo per test session, virtual sensors per test."""
from __future__ import annotations

import contextlib

import pytest

from runform.firmware_bridge.virtual import BluezooEmulator, VirtualRscPod, VirtualSensor, emulator_missing_reason

from ._synth import default_source

N_PERIPHERALS = 8


@pytest.fixture(scope="session")
def emulator():
    reason = emulator_missing_reason()
    if reason:
        pytest.skip(f"BLE emulator unavailable: {reason}")
    emu = BluezooEmulator(N_PERIPHERALS, scan_interval_s=1)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
async def sensors(emulator):
    """Factory: ``await sensors(site, cls=VirtualSensor, **kwargs)`` -> a started virtual sensor (runform v1;
    ``cls=VirtualPolarSensor`` / ``VirtualRscPod`` for the others), stopped after the test."""
    started: list[VirtualSensor] = []
    emulator.release_all()

    async def make(site="foot_left", cls=VirtualSensor, **kw):
        if cls is not VirtualRscPod:
            kw.setdefault("source_factory", default_source())
        kw.setdefault("seed", len(started) + 1)
        name, addr = emulator.take_adapter()
        vs = cls(site, **kw)
        await vs.start(name, addr)
        started.append(vs)
        return vs

    yield make
    for vs in started:
        with contextlib.suppress(Exception):
            await vs.stop()

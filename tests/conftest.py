"""Shared fixtures. Area-specific fixtures live in tests/<area>/conftest.py.

``emulator`` / ``sensors`` (the BLE emulator with virtual sensors) are here because tests/ble and the edge's
BLE end-to-end test (tests/server) both use them: one emulator per test session.
"""
import contextlib
import os
from pathlib import Path

import pytest


def _data_root():
    env = os.environ.get("RUNFORM_DATA")
    for c in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data():
    root = _data_root()
    if root is None:
        pytest.skip("real recordings not found: set RUNFORM_DATA or place shared/data beside the checkout")
    return root


# ------------------------------------------------------------------------------------------ BLE emulator
N_PERIPHERALS = 8


@pytest.fixture(scope="session")
def emulator():
    """One private D-Bus + bluezoo per test session (skipped with the reason when unavailable)."""
    from runform.firmware_bridge.virtual import BluezooEmulator, emulator_missing_reason
    reason = emulator_missing_reason()
    if reason:
        pytest.skip(f"BLE emulator unavailable: {reason}")
    emu = BluezooEmulator(N_PERIPHERALS, scan_interval_s=1)
    emu.start()
    yield emu
    _close_dbus_connections()
    emu.stop()


def _close_dbus_connections():
    """Close every D-Bus connection of this process still open on the emulator's bus before its daemon goes.

    bleak keeps one BlueZ manager (a D-Bus connection) per event loop for the life of the loop and a connection per
    client; the BLE tests share the session loop, which pytest-asyncio runs once more while closing. A connection
    still open when the daemon stops sees EOF in that last run, nobody awaits its disconnect future, and the
    interpreter prints a screen of "Future exception was never retrieved" (EOFError) tracebacks after pytest's
    summary. Disconnecting them here, on their own (idle) loop, ends them cleanly."""
    import asyncio
    import gc
    try:
        from dbus_fast.aio import MessageBus
    except ImportError:
        return
    for bus in [o for o in gc.get_objects() if isinstance(o, MessageBus)]:
        loop = getattr(bus, "_loop", None)
        if not bus.connected or loop is None or loop.is_closed() or loop.is_running():
            continue
        bus.disconnect()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait_for(bus.wait_for_disconnect(), 5.0))


@pytest.fixture
async def sensors(emulator):
    """Factory: ``await sensors(site, cls=VirtualSensor, **kwargs)`` -> a started virtual sensor (runform v1;
    ``cls=VirtualPolarSensor`` / ``VirtualRscPod`` for the others), stopped after the test."""
    from runform.firmware_bridge.virtual import VirtualRscPod, VirtualSensor

    from tests.ble._synth import default_source
    started: list = []
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

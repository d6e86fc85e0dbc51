"""Private D-Bus system bus + bluezoo (BlueZ emulator) as child processes.

`BluezooEmulator` gives bleak's real BlueZ backend something to talk to on machines
without a Bluetooth radio: a private ``dbus-daemon`` plus bluezoo emulating one central
adapter (``hci0``) and N peripheral adapters (``hci1``..``hciN``), each of which can host
one virtual sensor (`runform.firmware_bridge.virtual.VirtualSensor`).

bluezoo is GPL-2.0-only; it runs only as a separate process, started from the wrapper
module ``_bluezoo_patched`` (which applies the fixes bleak needs), and is a test/dev
dependency (``pip install runform[test]``), never imported by the runform package.
"""
from __future__ import annotations

import importlib.util
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["BluezooEmulator", "EmulatorUnavailableError", "emulator_missing_reason", "peripheral_address"]

CENTRAL_ADDRESS = "02:52:46:00:00:00"


def peripheral_address(index: int) -> str:
    """Bluetooth address of peripheral adapter ``hci<index>`` (index >= 1)."""
    return f"F0:52:46:00:{(index >> 8) & 0xFF:02X}:{index & 0xFF:02X}"


class EmulatorUnavailableError(RuntimeError):
    """dbus-daemon or bluezoo is missing, or the emulator failed to start."""

    def __init__(self, message: str, *, missing: str | None = None):
        super().__init__(message)
        self.missing = missing


def _find_dbus_daemon() -> str | None:
    found = shutil.which("dbus-daemon")
    if found:
        return found
    for cand in ("/usr/bin/dbus-daemon", "/bin/dbus-daemon", "/usr/sbin/dbus-daemon"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def emulator_missing_reason() -> str | None:
    """None when the emulator can run here, else a message saying what to install."""
    if _find_dbus_daemon() is None:
        return ("dbus-daemon not found: install it (Debian/Ubuntu: `apt-get install dbus-daemon`, "
                "or run `make sysdeps`)")
    if importlib.util.find_spec("bluezoo") is None:
        return ("bluezoo (BlueZ emulator, GPL-2.0, test/dev tool) is not installed: "
                "`pip install 'bluezoo==1.0.2'` or `pip install -e '.[test]'`")
    return None


_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">1000000</limit>
  <policy context="default">
    <allow user="*"/><allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class BluezooEmulator:
    """A private system bus with bluezoo emulating ``1 + n_peripherals`` adapters.

    Parameters
    ----------
    n_peripherals
        Number of peripheral adapters (``hci1``..``hciN``); each hosts one virtual sensor.
    scan_interval_s
        How often a discovering central sees the advertisements again (integer seconds).
    set_environ
        Set ``DBUS_SYSTEM_BUS_ADDRESS`` in this process (bleak's BlueZ backend always uses
        the system bus) and restore it on `stop`.
    start_timeout_s
        How long to wait for bluezoo to power all adapters.

    Attributes
    ----------
    bus_address_ : str
        ``unix:path=...`` of the private bus (pass it to child processes).
    central_adapter_ : str
        ``"hci0"``, the adapter bleak must use (``bluez={"adapter": "hci0"}``).
    peripheral_adapters_ : list[tuple[str, str]]
        ``(adapter name, Bluetooth address)`` per peripheral adapter.
    """

    def __init__(self, n_peripherals: int = 3, *, scan_interval_s: int = 1, set_environ: bool = True,
                 start_timeout_s: float = 20.0, verbose: bool = False):
        if n_peripherals < 0 or n_peripherals > 250:
            raise ValueError(f"n_peripherals must be in 0..250, got {n_peripherals}")
        self.n_peripherals = int(n_peripherals)
        self.scan_interval_s = max(1, int(scan_interval_s))
        self.set_environ = set_environ
        self.start_timeout_s = start_timeout_s
        self.verbose = verbose
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._dbus: subprocess.Popen | None = None
        self._zoo: subprocess.Popen | None = None
        self._old_env: str | None = None
        self._next_free = 1
        self.bus_address_: str = ""
        self.central_adapter_ = "hci0"
        self.peripheral_adapters_: list[tuple[str, str]] = [
            (f"hci{i}", peripheral_address(i)) for i in range(1, self.n_peripherals + 1)
        ]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "BluezooEmulator":
        reason = emulator_missing_reason()
        if reason:
            raise EmulatorUnavailableError(reason, missing=reason.split()[0])
        self._tmpdir = tempfile.TemporaryDirectory(prefix="runform-bluezoo-")
        tmp = Path(self._tmpdir.name)
        sock = tmp / "system_bus.sock"
        conf = tmp / "bus.conf"
        conf.write_text(_BUS_CONF.format(sock=sock))
        try:
            self._dbus = subprocess.Popen(
                [_find_dbus_daemon(), f"--config-file={conf}", "--nofork", "--nopidfile"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 5.0
            while not sock.exists():
                if self._dbus.poll() is not None:
                    raise EmulatorUnavailableError(f"dbus-daemon exited with code {self._dbus.returncode}")
                if time.monotonic() > deadline:
                    raise EmulatorUnavailableError("dbus-daemon did not create its socket within 5 s")
                time.sleep(0.005)
            self.bus_address_ = f"unix:path={sock}"
            env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus_address_)
            cmd = [sys.executable, "-m", "runform.firmware_bridge.virtual._bluezoo_patched",
                   "--scan-interval", str(self.scan_interval_s), "-a", CENTRAL_ADDRESS]
            for _, addr in self.peripheral_adapters_:
                cmd += ["-a", addr]
            if self.verbose:
                cmd.append("-v")
            self._zoo = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                         stderr=None if self.verbose else subprocess.DEVNULL,
                                         start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        if self.set_environ:
            self._old_env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address_
        return self

    def _wait_ready(self) -> None:
        assert self._zoo is not None and self._zoo.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        buf = b""
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmulatorUnavailableError(f"bluezoo did not become ready within {self.start_timeout_s} s")
            r, _, _ = select.select([self._zoo.stdout], [], [], min(remaining, 0.2))
            if r:
                chunk = os.read(self._zoo.stdout.fileno(), 4096)
                if not chunk:
                    raise EmulatorUnavailableError(
                        f"bluezoo exited during start-up (code {self._zoo.wait()}); run with verbose=True to see why")
                buf += chunk
            elif self._zoo.poll() is not None:
                raise EmulatorUnavailableError(f"bluezoo exited during start-up (code {self._zoo.returncode})")
        if not buf.startswith(b"READY"):
            raise EmulatorUnavailableError(f"unexpected bluezoo output: {buf[:200]!r}")

    def stop(self) -> None:
        for proc in (self._zoo, self._dbus):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._zoo is not None and self._zoo.stdout is not None:
            self._zoo.stdout.close()
        self._zoo = self._dbus = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        if self.set_environ and self.bus_address_:
            if os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") == self.bus_address_:
                if self._old_env is None:
                    os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
                else:
                    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self._old_env
        self.bus_address_ = ""

    @property
    def running(self) -> bool:
        return self._zoo is not None and self._zoo.poll() is None

    def __enter__(self) -> "BluezooEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- peripheral adapters -----------------------------------------------------------------
    def take_adapter(self) -> tuple[str, str]:
        """Reserve the next free peripheral adapter: ``(name, address)``."""
        if self._next_free > self.n_peripherals:
            raise RuntimeError(f"all {self.n_peripherals} peripheral adapters are in use; "
                               "start the emulator with more n_peripherals")
        name, addr = self.peripheral_adapters_[self._next_free - 1]
        self._next_free += 1
        return name, addr

    def release_all(self) -> None:
        self._next_free = 1

"""One sensor's connection: connect, configure, stream, reconnect with backoff."""
from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from bleak import BleakClient
from bleak.exc import BleakError

from ._compat import BridgeError, SensorDecoder
from ._errors import BleError, SensorSetupError
from .._errors import ControlPointError, UnknownProtocolError, UnsupportedVersionError
from ._profiles import Profile, profile_for
from ._scan import _bluez_args, find_device
from ._types import SensorSpec, SensorStats

__all__ = ["SensorLink"]
log = logging.getLogger(__name__)

BlockCallback = Callable[[Any], None]

#: Errors that the next attempt will most likely meet again (a device that is not a supported sensor, a firmware
#: speaking another protocol version, a setting the sensor refuses): retried only every ``backoff_max_s``.
_SETUP_ERRORS = (SensorSetupError, UnsupportedVersionError, UnknownProtocolError, ControlPointError)
#: Coarse sensors (RSC pods) notify about once a second; silence is a stall only after this long.
COARSE_STALL_TIMEOUT_S = 30.0
RawCallback = Callable[["SensorLink", bytes, int], None]


class SensorLink:
    """A sensor connection that survives link loss.

    `run` connects (by address or advertised name), detects the protocol from the GATT
    services, reads the sensor configuration, applies the requested settings through the
    control point, subscribes and streams. When the link drops it reconnects with exponential
    backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``, with ±20 % jitter) and
    continues the SAME session: same ``sensor_id``, sequence numbers keep unwrapping (the gap
    is counted as lost packets), and the clock mapping starts a new segment if the sensor
    clock restarted.

    Every notification is first handed to ``on_raw(link, raw_bytes, arrival_ns)`` (the raw
    journal), then decoded; decoded `SampleBlock` objects go to ``on_block``. Malformed packets
    are counted and logged; the link keeps running.

    A sensor that stays connected but sends nothing for ``stall_timeout_s`` (hung firmware) is
    counted (``SensorStats.stalls``), disconnected and reconnected in the same session. A sensor
    that connects but cannot be set up (no supported service, another protocol version, a
    setting it refuses: `SensorSetupError`, `UnsupportedVersionError`) is counted
    (``setup_failures``), reported in ``last_error`` and retried only every ``backoff_max_s``.

    Parameters
    ----------
    spec
        `SensorSpec`: address or name, site, runner, requested rate/range/gyro.
    adapter
        BlueZ adapter name (``"hci0"``); None = system default.
    lock
        An `asyncio.Lock` shared by everything scanning/connecting on the adapter (BlueZ
        handles one scan/connect at a time reliably). A `Bridge` passes its own.
    stall_timeout_s
        No notification for this long while connected = a stalled sensor (reconnect). None: never.
        Coarse sensors (RSC) use at least ``COARSE_STALL_TIMEOUT_S``.
    backend, scanner_backend
        bleak backend classes (tests).

    Attributes
    ----------
    protocol_ : SensorProtocol | None
        The decoder of the connected sensor (after the first connection).
    """

    def __init__(self, spec: SensorSpec, *, adapter: str | None = None,
                 on_block: BlockCallback | None = None, on_raw: RawCallback | None = None,
                 on_connected: Callable[["SensorLink"], None] | None = None,
                 reconnect: bool = True, backoff_initial_s: float = 0.5, backoff_max_s: float = 15.0,
                 find_timeout_s: float = 10.0, connect_timeout_s: float = 10.0, command_timeout_s: float = 3.0,
                 max_connect_attempts: int | None = None, lock: asyncio.Lock | None = None,
                 stall_timeout_s: float | None = 5.0,
                 backend: type | None = None, scanner_backend: type | None = None):
        self.spec = spec
        self.sensor_id: str = spec.sensor_id  # type: ignore[assignment]
        self.adapter = adapter
        self.on_block = on_block
        self.on_raw = on_raw
        self.on_connected = on_connected
        #: ``on_state(link, old_state, new_state)`` on every state change (e.g. streaming -> backoff: link lost)
        self.on_state: Callable[["SensorLink", str, str], None] | None = None
        self.reconnect = reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.find_timeout_s = find_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.max_connect_attempts = max_connect_attempts
        self.stall_timeout_s = stall_timeout_s
        self.lock = lock or asyncio.Lock()
        self.backend = backend
        self.scanner_backend = scanner_backend
        self.protocol_ = None
        self.profile_: Profile | None = None
        self._decoder: SensorDecoder | None = None
        self._client: BleakClient | None = None
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._connected_at: float | None = None
        self._stats = SensorStats(sensor_id=self.sensor_id, site=spec.site, runner=spec.runner, address=spec.address)
        self._malformed_logged = 0
        self._last_logged_error = None
        self.backoff_delays_s: list[float] = []  #: delays actually waited (bounded), for diagnostics/tests
        self._rng = random.Random(hash(self.sensor_id) & 0xFFFF)
        self._ever_streamed = False
        self._last_data_ns = 0
        self._paused = False
        self._packets_this_connection = 0
        self._logged_setup_error: str | None = None

    # -- public ---------------------------------------------------------------------------------
    def stats(self) -> SensorStats:
        """A snapshot of the link statistics."""
        s = self._stats
        if self._decoder is not None:
            self._decoder.fill_stats(s)
        if self._connected_at is not None:
            s.extra["streaming_for_s"] = time.monotonic() - self._connected_at
        return SensorStats(**{**s.__dict__, "extra": dict(s.extra)})

    @property
    def state(self) -> str:
        return self._stats.state

    @property
    def is_streaming(self) -> bool:
        return self._stats.state == "streaming"

    async def stop(self) -> None:
        """Ask `run` to finish (disconnects cleanly)."""
        self._stop.set()
        self._lost.set()

    async def run(self) -> None:
        """Connect and stream until `stop`; reconnects after link loss when ``reconnect`` is true."""
        attempt = 0
        try:
            while not self._stop.is_set():
                streamed = slow = False
                try:
                    await self._connect_and_stream()
                    streamed = True
                except asyncio.CancelledError:
                    raise
                except _SETUP_ERRORS as exc:
                    self._stats.connect_failures += 1
                    self._stats.setup_failures += 1
                    self._stats.last_error = f"{type(exc).__name__}: {exc}"
                    if self._stats.last_error != self._logged_setup_error:  # once per distinct reason
                        self._logged_setup_error = self._stats.last_error
                        log.error("%s: cannot use this sensor: %s (retrying every %.0f s)", self.sensor_id,
                                  self._stats.last_error, self.backoff_max_s)
                    slow = True
                except (BleakError, BridgeError, asyncio.TimeoutError, EOFError, OSError, KeyError) as exc:
                    self._stats.connect_failures += 1
                    self._stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("%s: %s", self.sensor_id, self._stats.last_error)
                finally:
                    await self._teardown()
                if self._stop.is_set():
                    break
                if not self.reconnect:
                    self._set_state("failed" if not streamed else "stopped")
                    return
                attempt = 0 if streamed else attempt + 1
                if self.max_connect_attempts is not None and attempt >= self.max_connect_attempts:
                    self._set_state("failed")
                    return
                delay = self.backoff_max_s if slow else min(self.backoff_max_s,
                                                            self.backoff_initial_s * (2.0 ** attempt))
                delay *= self._rng.uniform(0.8, 1.2)
                if len(self.backoff_delays_s) < 1000:
                    self.backoff_delays_s.append(delay)
                self._set_state("backoff")
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            await self._teardown()
            if self._stats.state != "failed":  # keep "failed" visible (gave up / could not set up)
                self._set_state("stopped")

    async def control(self, command: str, **params: Any) -> Any:
        """Send a command to the connected sensor and wait for its response. runform v1: ``"start"``,
        ``"stop"``, ``"set_rate"``, ``"set_range"``, ``"set_gyro"``, ``"request_config"``; Polar PMD:
        ``"start"``, ``"stop"``, ``"get_settings"``, ``"features"``; RSC: ``"features"``."""
        if self._client is None or self.profile_ is None or not self._client.is_connected:
            raise BleError(f"{self.sensor_id}: not connected")
        result = await self.profile_.command(self, command, **params)
        if command in ("stop", "start"):  # a stream stopped on purpose is not a stall
            self._paused = command == "stop"
            self._last_data_ns = time.monotonic_ns()
        return result

    # -- internals ------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        old, self._stats.state = self._stats.state, state
        if state != old and self.on_state is not None:
            try:
                self.on_state(self, old, state)
            except Exception:  # an observer must not break the link
                log.exception("%s: state callback failed", self.sensor_id)

    def _bleak_kw(self, scanner: bool = False) -> dict[str, Any]:
        kw: dict[str, Any] = dict(_bluez_args(self.adapter))
        backend = self.scanner_backend if scanner else self.backend
        if backend is not None:
            kw["backend"] = backend
        return kw

    async def _connect_and_stream(self) -> None:
        self._lost.clear()
        async with self.lock:
            if self._stop.is_set():
                return
            self._set_state("scanning")
            device, adv = await find_device(self.spec.identifier, timeout_s=self.find_timeout_s,
                                            adapter=self.adapter, backend=self.scanner_backend)
            if self._stats.address is None:
                self._stats.address = device.address
            rssi = getattr(adv, "rssi", None)
            if rssi is not None:
                self._stats.rssi_dbm = int(rssi)
            self._set_state("connecting")
            client = BleakClient(device, disconnected_callback=self._on_disconnect,
                                 timeout=self.connect_timeout_s, **self._bleak_kw())
            self._client = client
            await client.connect()
        # GATT setup does not need the adapter lock.
        profile = profile_for(client, self.spec)
        self.profile_ = profile
        protocol = await profile.setup(self, client)
        if self._decoder is None:
            self.protocol_ = protocol
            self._decoder = SensorDecoder(protocol, sensor_id=self.sensor_id, site=self.spec.site)
        else:
            self._decoder.set_protocol(protocol)  # same session: keep seq/clock state
            self.protocol_ = protocol
        rate = getattr(protocol, "sampling_rate_hz", None)
        self._stats.nominal_rate_hz = rate if rate is not None and math.isfinite(rate) else None
        self._stats.extra["kind"] = profile.kind
        if self.on_connected is not None:
            self.on_connected(self)
        self._last_data_ns = time.monotonic_ns()
        self._packets_this_connection = 0
        self._paused = False
        await profile.start_streaming(self, client, self._on_data)
        if self._ever_streamed:
            self._stats.reconnects += 1
        self._ever_streamed = True
        self._connected_at = time.monotonic()
        self._set_state("streaming")
        log.info("%s: streaming from %s (%s)", self.sensor_id, client.address, profile.kind)
        await self._watch(getattr(protocol, "coarse", False))

    async def _watch(self, coarse: bool) -> None:
        """Wait for link loss or stop; a connected sensor silent for the stall timeout is disconnected."""
        timeout_s = self.stall_timeout_s
        if timeout_s is not None and coarse:
            timeout_s = max(timeout_s, COARSE_STALL_TIMEOUT_S)
        if timeout_s is None:
            await self._lost.wait()
            return
        check_s = min(1.0, timeout_s / 4)
        while not self._lost.is_set():
            try:
                await asyncio.wait_for(self._lost.wait(), check_s)
                return
            except asyncio.TimeoutError:
                pass
            silent_s = (time.monotonic_ns() - self._last_data_ns) * 1e-9
            if silent_s >= timeout_s and not self._paused:
                self._stats.stalls += 1
                what = ("no notification since it connected" if not self._packets_this_connection
                        else "notifications stopped")
                self._stats.last_error = (f"stalled: {what}, silent for {silent_s:.1f} s while connected; "
                                          "reconnecting")
                log.warning("%s: %s", self.sensor_id, self._stats.last_error)
                if not self._packets_this_connection:  # never delivered: a failed attempt (backoff grows)
                    raise BleError(f"{self.sensor_id}: connected but {what} within {silent_s:.1f} s")
                return

    def _on_disconnect(self, client: BleakClient) -> None:
        if self._client is client or self._client is None:
            self._lost.set()

    def _on_data(self, _char: Any, data: bytearray) -> None:
        arrival_ns = time.monotonic_ns()
        raw = bytes(data)
        st = self._stats
        st.last_seen_s = arrival_ns * 1e-9
        self._last_data_ns = arrival_ns
        self._packets_this_connection += 1
        if self.on_raw is not None:
            self.on_raw(self, raw, arrival_ns)  # journal first: accepted data is never lost
        dec = self._decoder
        blocks = dec.feed(raw, arrival_ns)  # type: ignore[union-attr]  (never raises: bad packets are counted)
        if not blocks and dec.last_error_ is not None and dec.last_error_ is not self._last_logged_error:
            self._last_logged_error = dec.last_error_
            if self._malformed_logged < 20:
                self._malformed_logged += 1
                log.warning("%s: malformed packet: %s", self.sensor_id, dec.last_error_)
        if self.on_block is not None:
            for block in blocks:
                self.on_block(block)

    async def _teardown(self) -> None:
        client, self._client = self._client, None
        if self._connected_at is not None:
            self._stats.connected_s += time.monotonic() - self._connected_at
            self._connected_at = None
        if client is not None:
            try:
                if client.is_connected:
                    if self.profile_ is not None and self._stop.is_set():
                        try:
                            await asyncio.wait_for(self.profile_.stop_streaming(self, client), 2.0)
                        except Exception:
                            pass
                    await asyncio.wait_for(client.disconnect(), 5.0)
            except Exception as exc:  # the link may be gone already
                log.debug("%s: disconnect: %s", self.sensor_id, exc)

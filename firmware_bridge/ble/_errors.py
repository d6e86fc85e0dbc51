"""BLE exception tree (fields, not just messages), rooted at runform's `BridgeError`."""
from __future__ import annotations

from ._compat import BridgeError

__all__ = ["BleError", "SensorNotFoundError", "ControlPointTimeoutError", "SensorSetupError", "BridgeConfigError"]


class BleError(BridgeError):
    """Root of the BLE errors."""


class SensorNotFoundError(BleError):
    """No advertising sensor matched ``identifier`` (address or name) within ``timeout_s``."""

    def __init__(self, identifier: str, timeout_s: float, adapter: str | None = None):
        where = f" on {adapter}" if adapter else ""
        super().__init__(f"sensor {identifier!r} not found{where} within {timeout_s:.1f} s "
                         "(is it powered, in range and not connected to another central?)")
        self.identifier = identifier
        self.timeout_s = timeout_s
        self.adapter = adapter



class SensorSetupError(BleError):
    """The sensor connected but does not offer what its protocol needs (missing service/characteristic)."""

    def __init__(self, sensor_id: str, detail: str):
        super().__init__(f"{sensor_id}: {detail}")
        self.sensor_id = sensor_id


class BridgeConfigError(BleError, ValueError):
    """Invalid bridge configuration (TOML file or ``--sensor ADDRESS=site`` option)."""

    def __init__(self, message: str, *, source: str | None = None):
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source


class ControlPointTimeoutError(BleError, TimeoutError):
    """The sensor did not answer a control-point command within ``timeout_s``."""

    def __init__(self, sensor_id: str, command: str, timeout_s: float):
        super().__init__(f"{sensor_id}: no control-point response to {command} within {timeout_s:.1f} s")
        self.sensor_id = sensor_id
        self.command = command
        self.timeout_s = timeout_s

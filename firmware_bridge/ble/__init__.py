"""BLE connections to running sensors (bleak).

Discovery
    scan                   which sensors advertise nearby (kind, name, address, RSSI, battery)
    find_device            wait for one sensor by address or name
Connections
    SensorLink             one sensor: connect, configure, stream, reconnect with backoff
    Bridge                 many sensors / runners -> one bounded asyncio.Queue of SampleBlocks
Configuration
    SensorSpec             address or name + site + runner (+ requested rate/range/gyro)
    parse_sensor_option    ``ADDRESS=site`` CLI option -> SensorSpec
    load_bridge_config     TOML file with ``[[sensor]]`` tables -> SensorSpecs
Results and errors
    FoundSensor, SensorStats
    BleError, SensorNotFoundError, SensorSetupError, ControlPointTimeoutError, BridgeConfigError
"""
from ._bridge import Bridge
from ._config import load_bridge_config, parse_sensor_option
from ._errors import BleError, BridgeConfigError, ControlPointTimeoutError, SensorNotFoundError, SensorSetupError
from ._link import SensorLink
from ._scan import find_device, scan
from ._types import SITES, FoundSensor, SensorSpec, SensorStats

__all__ = ["scan", "find_device", "SensorLink", "Bridge", "SensorSpec", "parse_sensor_option", "load_bridge_config",
           "FoundSensor", "SensorStats", "SITES", "BleError", "SensorNotFoundError", "SensorSetupError",
           "ControlPointTimeoutError", "BridgeConfigError"]

"""BLE connections to running sensors (bleak).

Discovery
    scan                   which sensors advertise nearby (kind, name, address, RSSI, battery)
    find_device            wait for one sensor by address or name
Connections
    SensorLink             one sensor: connect, configure, stream, reconnect with backoff
    supported_kinds        protocol kinds with a connection profile: runform_v1, polar_pmd, rsc
    RunformV1Profile, PolarPmdProfile, RscProfile   the per-protocol GATT procedures
    Bridge                 many sensors / runners -> one bounded asyncio.Queue of SampleBlocks
Configuration
    SensorSpec             address or name + site + runner (+ requested rate/range/gyro)
    parse_sensor_option    ``ADDRESS=site`` CLI option -> SensorSpec
    load_bridge_config     TOML file with ``[[sensor]]`` tables -> SensorSpecs
Results and errors
    FoundSensor, SensorStats
    BleError, SensorNotFoundError, SensorSetupError, ControlPointTimeoutError, BridgeConfigError
"""
from . import _polar, _rsc  # noqa: F401  (register the Polar PMD and RSC connection profiles)
from ._bridge import Bridge
from ._config import load_bridge_config, parse_sensor_option
from ._errors import BleError, BridgeConfigError, ControlPointTimeoutError, SensorNotFoundError, SensorSetupError
from ._link import SensorLink
from ._polar import PolarPmdProfile
from ._profiles import Profile, RunformV1Profile, supported_kinds
from ._rsc import RscProfile
from ._scan import find_device, scan
from ._types import SITES, FoundSensor, SensorSpec, SensorStats

__all__ = ["scan", "find_device", "SensorLink", "Bridge", "SensorSpec", "parse_sensor_option", "load_bridge_config",
           "FoundSensor", "SensorStats", "SITES", "BleError", "SensorNotFoundError", "SensorSetupError",
           "ControlPointTimeoutError", "BridgeConfigError", "Profile", "RunformV1Profile", "PolarPmdProfile",
           "RscProfile", "supported_kinds"]

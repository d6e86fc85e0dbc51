"""Virtual BLE sensors on an emulated BlueZ (bluezoo), for tests, demos and benchmarks.

    BluezooEmulator        private D-Bus system bus + bluezoo with 1 central and N peripheral adapters
    VirtualSensor          a runform v1 IMU fed by the runner simulator, with realistic radio timing
    VirtualPolarSensor     a Polar H10 / Verity Sense streaming ACC over PMD (raw or delta-compressed frames)
    VirtualRscPod          a Running Speed and Cadence foot pod (speed/cadence from the simulator's true steps)
    VirtualHeartRateStrap  a generic heart-rate strap: a device runform cannot read (unknown-sensor tests)
    SensorBehavior         connection interval, packets per event, loss, drift, link drops, battery
    StreamEngine           the transport-independent timing model (also drives the unit-test fake)
    emulator_missing_reason  None if dbus-daemon and bluezoo are installed, else what to install

bluezoo (GPL-2.0-only) is a test/dev tool: it runs only as a separate process.
"""
from ._bluezoo import BluezooEmulator, EmulatorUnavailableError, emulator_missing_reason, peripheral_address
from ._engine import OutgoingPacket, SensorBehavior, StreamEngine
from ._hrm import VirtualHeartRateStrap
from ._polar import POLAR_COMPANY_ID, POLAR_MODELS, VirtualPolarSensor
from ._rsc import VirtualRscPod
from ._sensor import VirtualSensor

__all__ = ["BluezooEmulator", "EmulatorUnavailableError", "emulator_missing_reason", "peripheral_address",
           "VirtualSensor", "VirtualPolarSensor", "VirtualRscPod", "VirtualHeartRateStrap", "POLAR_COMPANY_ID",
           "POLAR_MODELS",
           "SensorBehavior", "StreamEngine", "OutgoingPacket"]

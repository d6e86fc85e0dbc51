"""Running Speed and Cadence (0x1814) connection profile: foot pods. Coarse metrics, no raw samples."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bleak import BleakClient

from ._compat import MalformedPacketError, rsc
from ._errors import BleError, SensorSetupError
from ._profiles import Profile, register_profile

__all__ = ["RscProfile"]
log = logging.getLogger(__name__)


class RscProfile(Profile):
    """RSC foot pod: read RSC Feature and Sensor Location (optional), subscribe to RSC Measurement (0x2A53).

    Measuring starts with the subscription (RSC has no start command). Each notification becomes a
    `MetricsBlock` (``coarse=True``, arrival-stamped: RSC carries no timestamp) with cadence in steps/min of
    both feet (``SensorSpec.cadence_convention``: ``"auto"`` (default), ``"steps"`` or ``"strides"``).
    """

    kind = "rsc"

    def __init__(self, spec):
        super().__init__(spec)
        self.features_ = None
        self.location_: str | None = None

    async def setup(self, link, client: BleakClient):
        if client.services.get_characteristic(rsc.MEASUREMENT_UUID) is None:
            raise SensorSetupError(link.sensor_id, "RSC Measurement characteristic (0x2A53) missing")
        if client.services.get_characteristic(rsc.FEATURE_UUID) is not None:
            try:
                self.features_ = rsc.decode_feature(await client.read_gatt_char(rsc.FEATURE_UUID))
            except (MalformedPacketError, Exception) as exc:
                log.info("%s: RSC Feature not readable: %s", link.sensor_id, exc)
        if client.services.get_characteristic(rsc.SENSOR_LOCATION_UUID) is not None:
            try:
                code = bytes(await client.read_gatt_char(rsc.SENSOR_LOCATION_UUID))[0]
                self.location_ = rsc.SENSOR_LOCATIONS.get(code, f"code {code}")
            except Exception as exc:
                log.info("%s: sensor location not readable: %s", link.sensor_id, exc)
        await self._read_battery(link, client)
        link._stats.extra["coarse"] = True
        link._stats.extra["rsc_location"] = self.location_
        if self.features_ is not None:
            link._stats.extra["rsc_features"] = [f.name for f in rsc.Feature if f in self.features_]
        return rsc.Rsc(getattr(self.spec, "cadence_convention", None) or "auto")

    async def start_streaming(self, link, client: BleakClient, on_data: Callable) -> None:
        await client.start_notify(rsc.MEASUREMENT_UUID, on_data)

    async def stop_streaming(self, link, client: BleakClient) -> None:
        await client.stop_notify(rsc.MEASUREMENT_UUID)

    async def command(self, link, command: str, **params: Any) -> Any:
        if command == "features":
            return self.features_
        raise BleError(f"{link.sensor_id}: an RSC pod has no command {command!r} (known: ['features'])")


register_profile(RscProfile)

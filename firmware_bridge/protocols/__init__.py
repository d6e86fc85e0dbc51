"""Sensor protocols: pure decoders (bytes -> samples + packet metadata) and encoders for emulated sensors.

Every protocol module has a ``SensorProtocol`` subclass (one instance per connected sensor) registered by
``kind``; ``protocol_for_services`` picks one from advertised/discovered service UUIDs.

===============  ==============================================  ========  =========  ====================
kind             sensor                                          seq       clock      samples
===============  ==============================================  ========  =========  ====================
``runform_v1``   runform open protocol (our shoe/shin/hip IMU)    u16       u32 tick   acc (+gyro) s16
``polar_pmd``    Polar H10 / Verity Sense, PMD ACC                —         u64 ns     acc mG (delta frames)
``movesense``    Movesense GSP ``/Meas/Acc/{rate}``              —         u32 ms     acc f32 m/s²
``metamotion``   MbientLab MetaMotion (BMI160/BMI270)            —         —          acc s16
``rsc``          SIG Running Speed and Cadence (foot pods)       —         —          metrics only
===============  ==============================================  ========  =========  ====================
"""
from ._base import (SensorProtocol, get_protocol, normalize_uuid, protocol_for_services, protocol_from_metadata,
                    register, registered_protocols, sig_uuid)
from . import runform_v1, polar_pmd, rsc, movesense, metamotion  # noqa: E402  (registers the protocols)
from .runform_v1 import RunformV1
from .polar_pmd import PolarPmd
from .rsc import Rsc
from .movesense import Movesense
from .metamotion import MetaMotion

__all__ = ["SensorProtocol", "get_protocol", "normalize_uuid", "protocol_for_services", "protocol_from_metadata",
           "register", "registered_protocols", "sig_uuid", "runform_v1", "polar_pmd", "rsc", "movesense",
           "metamotion", "RunformV1", "PolarPmd", "Rsc", "Movesense", "MetaMotion"]

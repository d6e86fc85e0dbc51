"""runform.firmware_bridge: sensor protocols, BLE connections, timestamping, virtual sensors, file sources.

Data types
    SampleBlock, MetricsBlock     timestamped samples / coarse metrics handed to the DSP
    SamplePacket, MetricsPacket   one decoded notification (protocol level, before timing)
Errors (root: BridgeError)
    MalformedPacketError, UnsupportedVersionError, ControlPointError, UnknownProtocolError, JournalError
Timing and accounting (``timestamping``)
    ClockSync, PacketAccounting, SensorDecoder
Raw journal (``journal``)
    JournalWriter, JournalReader
Protocols: ``runform.firmware_bridge.protocols`` (runform_v1, polar_pmd, rsc, movesense, metamotion).
"""
from ._errors import (BridgeError, ControlPointError, JournalError, MalformedPacketError, UnknownProtocolError,
                      UnsupportedVersionError)
from ._types import STANDARD_GRAVITY_MS2, MetricsBlock, MetricsPacket, SampleBlock, SamplePacket
from .timestamping import AccountingSnapshot, ClockSync, PacketAccounting, SensorDecoder
from .journal import JournalReader, JournalWriter

__all__ = [
    "BridgeError", "ControlPointError", "JournalError", "MalformedPacketError", "UnknownProtocolError",
    "UnsupportedVersionError", "STANDARD_GRAVITY_MS2", "MetricsBlock", "MetricsPacket", "SampleBlock", "SamplePacket",
    "AccountingSnapshot", "ClockSync", "PacketAccounting", "SensorDecoder", "JournalReader", "JournalWriter",
]

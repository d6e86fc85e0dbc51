"""Common interface of the sensor protocols and the registry (bleak-like: one API, per-protocol backends)."""
from __future__ import annotations

import abc
from typing import Any, ClassVar

from .._errors import MalformedPacketError, UnknownProtocolError
from .._types import MetricsPacket, SamplePacket

__all__ = ["SensorProtocol", "register", "get_protocol", "protocol_for_services", "protocol_from_metadata",
           "registered_protocols", "normalize_uuid", "sig_uuid"]

_SIG_BASE = "-0000-1000-8000-00805f9b34fb"


def sig_uuid(short: int) -> str:
    """Full 128-bit form of a Bluetooth SIG 16-bit UUID (``0x1814`` -> ``00001814-0000-1000-8000-00805f9b34fb``)."""
    return f"{short:08x}{_SIG_BASE}"


def normalize_uuid(uuid: str | int) -> str:
    """Lower-case 128-bit UUID string; accepts 16/32-bit SIG short forms (``"180f"``, ``"0x180F"``, ``0x180F``)."""
    if isinstance(uuid, int):
        return sig_uuid(uuid)
    u = str(uuid).strip().lower()
    if u.startswith("0x"):
        u = u[2:]
    if len(u) in (4, 8) and all(c in "0123456789abcdef" for c in u):
        return sig_uuid(int(u, 16))
    return u


class SensorProtocol(abc.ABC):
    """A sensor's notification format. One instance per connected sensor (it holds the sensor's settings:
    sampling rate, range, scale), decoding is otherwise stateless unless documented.

    Class attributes
    ----------------
    kind : str
        Registry key (``"runform_v1"``, ``"polar_pmd"``, ``"rsc"``, ``"movesense"``, ``"metamotion"``).
    service_uuids : tuple[str, ...]
        Primary services that identify the protocol in advertisements / GATT discovery.
    data_uuid : str
        Characteristic whose notifications ``decode`` understands.
    seq_bits : int | None
        Width of the per-packet sequence number (None: the protocol has none).
    tick_bits : int | None
        Width of the sensor clock tick (None: no sensor clock, samples are arrival-stamped).
    coarse : bool
        True for sensors that deliver metrics (``MetricsPacket``) instead of raw samples.

    Instance attributes
    -------------------
    sampling_rate_hz : float   nominal sampling rate (NaN for coarse sensors)
    tick_hz : float | None     sensor clock rate
    has_gyro : bool
    """

    kind: ClassVar[str] = ""
    service_uuids: ClassVar[tuple[str, ...]] = ()
    data_uuid: ClassVar[str] = ""
    seq_bits: ClassVar[int | None] = None
    tick_bits: ClassVar[int | None] = None
    coarse: ClassVar[bool] = False

    sampling_rate_hz: float = float("nan")
    tick_hz: float | None = None
    has_gyro: bool = False

    @abc.abstractmethod
    def decode(self, data: bytes | bytearray | memoryview, arrival_ns: int = 0) -> list[SamplePacket | MetricsPacket]:
        """Decode one notification. Raises ``MalformedPacketError`` (with a reason) for anything it cannot
        decode; may return ``[]`` for valid notifications that carry no samples (e.g. command responses)."""

    @abc.abstractmethod
    def to_metadata(self) -> dict[str, Any]:
        """JSON-serialisable settings, enough for ``from_metadata`` to rebuild an equivalent decoder."""

    @classmethod
    @abc.abstractmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "SensorProtocol":
        """Rebuild a decoder from ``to_metadata()`` output (used by the journal reader)."""

    def _malformed(self, reason: str, data: bytes | None = None) -> MalformedPacketError:
        return MalformedPacketError(reason, protocol=self.kind, data=data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_metadata()!r})"


_REGISTRY: dict[str, type[SensorProtocol]] = {}


def register(cls: type[SensorProtocol]) -> type[SensorProtocol]:
    """Class decorator: make a protocol findable by ``kind`` and by its service UUIDs."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    _REGISTRY[cls.kind] = cls
    return cls


def registered_protocols() -> dict[str, type[SensorProtocol]]:
    return dict(_REGISTRY)


def get_protocol(kind: str) -> type[SensorProtocol]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise UnknownProtocolError(f"unknown protocol kind {kind!r}; known: {sorted(_REGISTRY)}", kind=kind) from None


def protocol_for_services(service_uuids) -> type[SensorProtocol]:
    """The protocol class for a device advertising / exposing ``service_uuids``.

    Raw-sample protocols win over coarse ones (a Stryd-like pod exposing RSC next to a raw service is
    decoded through the raw service). Raises ``UnknownProtocolError`` if nothing matches.
    """
    wanted = {normalize_uuid(u) for u in service_uuids}
    matches = [cls for cls in _REGISTRY.values() if wanted & {normalize_uuid(u) for u in cls.service_uuids}]
    if not matches:
        raise UnknownProtocolError(
            f"no known sensor protocol among services {sorted(wanted)}", service_uuids=tuple(sorted(wanted)))
    matches.sort(key=lambda c: (c.coarse, c.kind != "runform_v1"))
    return matches[0]


def protocol_from_metadata(meta: dict[str, Any]) -> SensorProtocol:
    """Rebuild a protocol instance from ``{"kind": ..., **to_metadata()}``."""
    kind = meta.get("kind")
    if not isinstance(kind, str):
        raise UnknownProtocolError(f"protocol metadata without a kind: {meta!r}")
    return get_protocol(kind).from_metadata(meta)

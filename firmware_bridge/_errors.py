"""Exception tree of the BLE bridge (bleak style: one root, subclasses carry fields).

``BridgeError`` is the root. Decoders raise :class:`MalformedPacketError` for any input they cannot
decode; callers count it (``PacketAccounting.on_malformed``) and keep going. The journal raises
:class:`JournalError` for I/O failures (e.g. disk full) and unreadable journals.
"""
from __future__ import annotations

__all__ = [
    "BridgeError",
    "MalformedPacketError",
    "UnsupportedVersionError",
    "ControlPointError",
    "UnknownProtocolError",
    "JournalError",
]


class BridgeError(Exception):
    """Root of every error raised by ``runform.firmware_bridge``."""


class MalformedPacketError(BridgeError, ValueError):
    """A packet could not be decoded.

    Attributes
    ----------
    reason : str
        Human-readable reason ("truncated: 7 bytes, header needs 8").
    protocol : str | None
        Protocol kind that rejected the packet (``"runform_v1"``, ``"polar_pmd"``...).
    length : int | None
        Length of the offending packet in bytes.
    head : bytes
        The first (at most 16) bytes of the packet, for logs.
    """

    def __init__(self, reason: str, *, protocol: str | None = None, data: bytes | None = None) -> None:
        self.reason = reason
        self.protocol = protocol
        self.length = None if data is None else len(data)
        self.head = b"" if data is None else bytes(data[:16])
        where = f"{protocol}: " if protocol else ""
        size = "" if data is None else f" ({len(data)} bytes: {self.head.hex(' ')}{'...' if len(data) > 16 else ''})"
        super().__init__(f"{where}{reason}{size}")


class UnsupportedVersionError(MalformedPacketError):
    """The packet or configuration declares a protocol version this decoder does not implement."""

    def __init__(self, version: int, supported: tuple[int, ...], *, protocol: str | None = None,
                 data: bytes | None = None, what: str = "packet") -> None:
        self.version = int(version)
        self.supported = tuple(supported)
        sup = ", ".join(str(v) for v in supported)
        super().__init__(
            f"{what} declares protocol version {version}, this decoder supports version {sup} only "
            f"(update runform, or configure the sensor firmware for version {sup})",
            protocol=protocol, data=data)


class ControlPointError(BridgeError):
    """A control-point command was answered with a failure code.

    Attributes: ``opcode`` (request op code), ``code`` (result code, an IntEnum of the protocol when known),
    ``protocol``.
    """

    def __init__(self, message: str, *, opcode: int, code: int, protocol: str | None = None) -> None:
        self.opcode = int(opcode)
        self.code = code
        self.protocol = protocol
        super().__init__(message)


class UnknownProtocolError(BridgeError, LookupError):
    """No registered protocol matches the advertised service UUIDs / the given protocol kind."""

    def __init__(self, message: str, *, service_uuids: tuple[str, ...] = (), kind: str | None = None) -> None:
        self.service_uuids = tuple(service_uuids)
        self.kind = kind
        super().__init__(message)


class JournalError(BridgeError):
    """Raw-journal failure (write failed, e.g. disk full; or an unreadable journal file).

    Attributes
    ----------
    path : str
    errno : int | None
        OS error number when the cause is an ``OSError`` (``errno.ENOSPC`` for disk full).
    pending_records : int
        Records accepted by ``append`` but not yet on disk (kept in bounded memory, retried).
    dropped_records : int
        Records dropped because the bounded pending buffer was full (data lost, counted).
    """

    def __init__(self, message: str, *, path: str = "", errno: int | None = None,
                 pending_records: int = 0, dropped_records: int = 0) -> None:
        self.path = str(path)
        self.errno = errno
        self.pending_records = int(pending_records)
        self.dropped_records = int(dropped_records)
        super().__init__(message)

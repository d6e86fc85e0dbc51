"""Small value types of the BLE layer."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FoundSensor", "SensorSpec", "SensorStats", "SITES"]

#: Body sites a sensor can be worn at (same names as the simulator and the DSP).
SITES = ("foot_left", "foot_right", "shank_left", "shank_right", "sacrum", "foot", "shank")


@dataclass(frozen=True)
class FoundSensor:
    """One advertising sensor seen by `scan`."""

    address: str
    name: str | None
    kind: str | None  #: protocol kind ("runform_v1", "polar_pmd", "rsc", ...) from the advertised services
    rssi_dbm: int | None
    battery_pct: int | None
    service_uuids: tuple[str, ...] = ()
    adapter: str | None = None


@dataclass(frozen=True)
class SensorSpec:
    """What to connect to and where it is worn.

    ``address`` or ``name`` identifies the sensor; ``sensor_id`` defaults to ``"<runner>.<site>"``
    and stays the same across reconnects (one session per sensor).
    """

    site: str
    address: str | None = None
    name: str | None = None
    runner: str = "runner1"
    sensor_id: str | None = None
    sampling_rate_hz: float | None = None  #: requested rate (None = sensor default)
    range_g: float | None = None
    gyro: bool | None = None
    kind: str | None = None  #: protocol kind; None = detect from the advertised services
    cadence_convention: str | None = None  #: RSC pods: "auto" (None), "steps" or "strides"

    def __post_init__(self):
        if not self.address and not self.name:
            raise ValueError("a SensorSpec needs an address or a name")
        if not self.site:
            raise ValueError("a SensorSpec needs a site (e.g. foot_left, sacrum)")
        if self.sensor_id is None:
            object.__setattr__(self, "sensor_id", f"{self.runner}.{self.site}")
        if self.address:
            object.__setattr__(self, "address", self.address.upper())
        if self.cadence_convention not in (None, "auto", "steps", "strides"):
            raise ValueError(f"cadence_convention must be auto, steps or strides, got {self.cadence_convention!r}")

    @property
    def identifier(self) -> str:
        return self.address or self.name or ""


@dataclass
class SensorStats:
    """Live statistics of one sensor link (a snapshot: `SensorLink.stats()` returns a copy)."""

    sensor_id: str
    site: str
    runner: str
    address: str | None
    state: str = "idle"  #: idle | scanning | connecting | streaming | backoff | stopped | failed
    packets_received: int = 0
    packets_lost: int = 0
    packets_malformed: int = 0
    packets_duplicate: int = 0
    packets_no_data: int = 0  #: well-formed packets without samples (command results on the data characteristic)
    samples_received: int = 0
    blocks_dropped_queue_full: int = 0  #: live blocks the slow consumer missed (raw journal still has them)
    reconnects: int = 0
    connect_failures: int = 0
    setup_failures: int = 0  #: connected but unusable (not a supported sensor, other protocol version, setting refused)
    stalls: int = 0  #: connected but silent for the stall timeout (hung firmware): disconnected and reconnected
    clock_segments: int = 0
    nominal_rate_hz: float | None = None
    measured_rate_hz: float | None = None
    drift_ppm: float | None = None
    battery_pct: int | None = None
    mtu: int | None = None
    rssi_dbm: int | None = None  #: RSSI of the advertisement seen before the latest connection
    arrival_stamped: bool = False  #: no sensor clock (RSC pods): times are arrival times minus a latency
    last_seen_s: float | None = None  #: time.monotonic() of the last packet
    last_error: str | None = None
    connected_s: float = 0.0  #: total time streaming
    extra: dict = field(default_factory=dict)

    @property
    def loss_pct(self) -> float:
        total = self.packets_received + self.packets_lost
        return 100.0 * self.packets_lost / total if total else 0.0

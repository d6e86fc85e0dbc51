"""Bridge configuration: a small TOML file or ``--sensor ADDRESS=site`` options."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ._errors import BridgeConfigError
from ._types import SITES, SensorSpec

__all__ = ["parse_sensor_option", "load_bridge_config"]

_ADDR_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def _check_site(site: str, source: str) -> str:
    site = site.strip().lower()
    if site not in SITES:
        raise BridgeConfigError(f"unknown site {site!r}; expected one of {', '.join(SITES)}", source=source)
    return site


def parse_sensor_option(text: str, *, runner: str = "runner1", **kw) -> SensorSpec:
    """``"AA:BB:CC:DD:EE:FF=foot_left"`` or ``"name:RF-1234=sacrum"`` (optionally ``@runner``:
    ``"AA:..=foot_left@alice"``) -> `SensorSpec`."""
    source = f"--sensor {text}"
    if "=" not in text:
        raise BridgeConfigError("expected ADDRESS=site (e.g. F0:52:46:00:00:01=foot_left)", source=source)
    ident, site = text.rsplit("=", 1)
    if "@" in site:
        site, runner = site.split("@", 1)
    site = _check_site(site, source)
    ident = ident.strip()
    if ident.lower().startswith("name:"):
        return SensorSpec(site=site, name=ident[5:], runner=runner, **kw)
    if not _ADDR_RE.match(ident):
        raise BridgeConfigError(f"{ident!r} is not a Bluetooth address (XX:XX:XX:XX:XX:XX); "
                                "use name:NAME to connect by advertised name", source=source)
    return SensorSpec(site=site, address=ident, runner=runner, **kw)


def load_bridge_config(path: str | Path) -> tuple[list[SensorSpec], dict]:
    """Read a bridge TOML file.

    Example::

        adapter = "hci0"          # optional
        queue_size = 512          # optional
        [[sensor]]
        address = "F0:52:46:00:00:01"
        runner = "alice"
        site = "foot_left"
        sampling_rate_hz = 1000   # optional: rate / range_g / gyro / sensor_id / name / kind

    Returns ``(sensors, options)`` where ``options`` holds the top-level keys.
    """
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BridgeConfigError("file not found", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise BridgeConfigError(f"invalid TOML: {exc}", source=source) from None
    entries = data.pop("sensor", [])
    if not isinstance(entries, list) or not entries:
        raise BridgeConfigError("no [[sensor]] tables", source=source)
    allowed = {"address", "name", "runner", "site", "sensor_id", "sampling_rate_hz", "range_g", "gyro", "kind",
               "cadence_convention"}
    specs = []
    for i, entry in enumerate(entries):
        where = f"{source} [[sensor]] #{i + 1}"
        unknown = set(entry) - allowed
        if unknown:
            raise BridgeConfigError(f"unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}", source=where)
        if "site" not in entry:
            raise BridgeConfigError("missing 'site'", source=where)
        entry = dict(entry)
        entry["site"] = _check_site(entry["site"], where)
        addr = entry.get("address")
        if addr is not None and not _ADDR_RE.match(addr):
            raise BridgeConfigError(f"{addr!r} is not a Bluetooth address", source=where)
        try:
            specs.append(SensorSpec(**entry))
        except (TypeError, ValueError) as exc:
            raise BridgeConfigError(str(exc), source=where) from None
    ids = [s.sensor_id for s in specs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise BridgeConfigError(f"duplicate sensor ids {sorted(dup)} (same runner and site twice?)", source=source)
    return specs, data

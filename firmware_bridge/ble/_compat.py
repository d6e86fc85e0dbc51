"""Imports from the sibling parts of runform.firmware_bridge (protocols, timestamping, journal, types)."""
from __future__ import annotations

from .. import protocols  # noqa: F401
from .._errors import BridgeError, MalformedPacketError  # noqa: F401
from .._types import MetricsBlock, SampleBlock  # noqa: F401
from ..protocols import runform_v1  # noqa: F401  (registers the protocol)

from ..protocols import polar_pmd, rsc  # noqa: F401,E402

from ._decoder import SensorDecoder  # noqa: F401,E402


def open_journal(path, link):
    """The shared raw journal (``runform.firmware_bridge.journal.JournalWriter``) for a connected link."""
    from ..journal import JournalWriter, sensor_metadata
    meta = sensor_metadata(link.protocol_, sensor_id=link.sensor_id, site=link.spec.site, runner=link.spec.runner,
                           address=link.stats().address or "")
    return JournalWriter(path, meta)

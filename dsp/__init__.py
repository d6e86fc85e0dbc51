"""runform.dsp: pure streaming numerics (no I/O, no MQTT, no asyncio).

Public API is re-exported here; implementation lives in private ``_modules``.
"""
from ._events import (
    ACTIVITY_NAMES,
    ACTIVITY_RUNNING,
    ACTIVITY_STANDING,
    ACTIVITY_UNKNOWN,
    ACTIVITY_WALKING,
    G0,
    SIDE_LEFT,
    SIDE_NAMES,
    SIDE_RIGHT,
    SIDE_UNKNOWN,
    STEP_DTYPE,
    empty_steps,
)

__all__ = [
    "ACTIVITY_NAMES", "ACTIVITY_RUNNING", "ACTIVITY_STANDING", "ACTIVITY_UNKNOWN", "ACTIVITY_WALKING",
    "G0", "SIDE_LEFT", "SIDE_NAMES", "SIDE_RIGHT", "SIDE_UNKNOWN", "STEP_DTYPE", "empty_steps",
]

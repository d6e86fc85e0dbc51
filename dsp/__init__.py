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
from ._detector import DetectorInputError, GaitEventDetector, parse_site
from ._params import LimbParams, OrientationParams, SacrumParams, SITE_DEFAULTS, params_for
from ._warmup import warmup

__all__ = [
    "ACTIVITY_NAMES", "ACTIVITY_RUNNING", "ACTIVITY_STANDING", "ACTIVITY_UNKNOWN", "ACTIVITY_WALKING",
    "G0", "SIDE_LEFT", "SIDE_NAMES", "SIDE_RIGHT", "SIDE_UNKNOWN", "STEP_DTYPE", "empty_steps",
    "DetectorInputError", "GaitEventDetector", "parse_site", "LimbParams", "OrientationParams", "SacrumParams",
    "SITE_DEFAULTS", "params_for", "warmup",
]

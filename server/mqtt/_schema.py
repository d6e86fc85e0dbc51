"""JSON payloads of the contract: schemas (a JSON-Schema subset), validation, encode/decode.

Every JSON payload is a UTF-8 object with a ``schema`` field (``runform.<kind>.v<N>``) and units in field names.
NaN/inf are never sent: unknown numbers are ``null``. The schemas below are the single source: the validator
uses them, and docs/asyncapi.yaml is generated from them (``python -m runform.server.mqtt asyncapi``).
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from ._errors import PayloadError

SCHEMA_STEPS = "runform.steps.v1"
SCHEMA_METRICS = "runform.metrics.v1"
SCHEMA_CUE = "runform.cue.v1"
SCHEMA_STATUS = "runform.status.v1"
SCHEMA_CONTROL = "runform.control.v1"
SCHEMA_REPLY = "runform.control_reply.v1"
SCHEMA_PLAN = "runform.plan.v1"
SCHEMA_PROGRAM_SESSION = "runform.program_session.v1"

MAX_JSON_BYTES = 256 * 1024
MAX_CONTROL_BYTES = 4096

_NUM = {"type": ["number", "null"]}
_ACTIVITY = {"enum": ["unknown", "standing", "walking", "running"]}


def _obj(props: dict, required: list[str], additional: bool = False, desc: str | None = None) -> dict:
    d = {"type": "object", "properties": props, "required": required, "additionalProperties": additional}
    if desc:
        d["description"] = desc
    return d


STEP_ITEM = _obj({
    "ic_s": {"type": "number", "description": "initial contact, stream clock seconds"},
    "tc_s": _NUM, "side": {"enum": ["L", "R", None]},
    "gct_ms": _NUM, "flight_ms": _NUM, "step_time_ms": _NUM, "cadence_spm": _NUM, "cadence_smoothed_spm": _NUM,
    "duty_factor": _NUM, "peak_accel_g": _NUM, "clipped": {"type": "boolean"}, "loading_rate_gps": _NUM,
    "peak_vgrf_bw": _NUM, "activity": _ACTIVITY,
}, ["ic_s", "side", "gct_ms", "cadence_spm", "peak_accel_g", "activity"])

COARSE_ITEM = _obj({
    "sensor": {"type": "string"}, "site": {"type": "string"},
    "time_s": {"type": "number", "description": "host monotonic arrival (RSC carries no timestamp)"},
    "cadence_spm": {**_NUM, "description": "steps/min of both feet, as the pod reports it"},
    "speed_ms": _NUM, "stride_length_m": _NUM, "total_distance_m": _NUM, "is_running": {"type": ["boolean", "null"]},
}, ["sensor", "time_s", "cadence_spm", "speed_ms"])

_COUNT = {"type": "integer", "minimum": 0}
_PCT = {"type": ["number", "null"], "minimum": 0, "maximum": 100}
LINK_ITEM = _obj({
    "sensor_id": {"type": "string"}, "site": {"type": "string"},
    "kind": {"type": "string", "description": "protocol: runform_v1 | polar_pmd | rsc | sim | replay | unknown "
                                              "(BLE before the first connection)"},
    "connected": {"type": "boolean", "description": "streaming now"},
    "battery_pct": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
    "packets_received": _COUNT,
    "packets_lost": {**_COUNT, "description": "sequence gaps (incl. outages), whole session"},
    "loss_pct": {**_PCT, "description": "lost / (received + lost) * 100, whole session; null before any packet"},
    "loss_recent_pct": {**_PCT, "description": "the same over the last ~10 s; null without packets in it"},
    "packets_malformed": _COUNT, "reconnects": _COUNT,
    "sampling_rate_hz_measured": {**_NUM, "description": "samples per host second (received + lost)"},
    "clock_drift_ppm": {**_NUM, "description": "sensor clock vs host clock"},
    "rssi_dbm": {"type": ["integer", "null"], "description": "advertisement RSSI before the latest connection"},
    "last_seen_unix_s": _NUM,
    "arrival_stamped": {"type": "boolean", "description": "no sensor clock: times are arrival times"},
}, ["sensor_id", "site", "kind", "connected", "battery_pct", "packets_received", "packets_lost", "loss_pct",
    "loss_recent_pct", "packets_malformed", "reconnects", "sampling_rate_hz_measured", "clock_drift_ppm",
    "rssi_dbm", "last_seen_unix_s", "arrival_stamped"])

INTERVAL = {"type": ["object", "null"], "properties": {
    "index": {"type": "integer", "minimum": 0}, "kind": {"enum": ["walk", "run", "rest"]},
    "elapsed_s": {"type": "number"}, "remaining_s": {"type": "number"},
    "target_cadence_spm": _NUM, "impact_limit_g": _NUM, "stage": {"type": ["integer", "null"]},
    "program": {"type": ["string", "null"]}}, "additionalProperties": False}

PROGRAM_STATE = {"type": ["object", "null"], "description": "the return-to-run program the edge runs (null: none)",
                 "properties": {
                     "name": {"type": "string"}, "title": {"type": "string"},
                     "stage": {"type": "integer", "minimum": 1, "description": "1-based"},
                     "n_stages": {"type": "integer", "minimum": 1}, "stage_name": {"type": "string"},
                     "source": {"enum": ["plan", "cli"], "description": "the server's plan or the command line"},
                     "session_key": {"type": "string"}, "finished": {"type": "boolean"}},
                 "additionalProperties": False}

_PAIN = {"type": ["integer", "null"], "minimum": 0, "maximum": 10}
_PLAN_TARGETS = _obj({"cadence_spm": {"type": ["number", "null"], "minimum": 60, "maximum": 240},
                      "tolerance_spm": {"type": ["number", "null"], "minimum": 1, "maximum": 30}}, [])
_PLAN_LIMITS = _obj({"impact_limit_g": {"type": ["number", "null"], "minimum": 1, "maximum": 30},
                     "gct_limit_ms": {"type": ["number", "null"], "minimum": 100, "maximum": 600},
                     "imbalance_limit_pct": {"type": ["number", "null"], "minimum": 1, "maximum": 50}}, [])
_DECISION = {"type": ["object", "null"], "properties": {
    "action": {"enum": ["advance", "hold", "regress"]}, "reason": {"type": "string", "maxLength": 300},
    "from_stage": {"type": ["integer", "null"], "minimum": 1}, "to_stage": {"type": ["integer", "null"], "minimum": 1},
    "pain_now": _PAIN}, "required": ["action", "reason"], "additionalProperties": False}

SCHEMAS: dict[str, dict] = {
    SCHEMA_STEPS: _obj({
        "schema": {"const": SCHEMA_STEPS}, "runner": {"type": "string"}, "sensor": {"type": "string"},
        "site": {"type": "string"}, "time_unix_s": {"type": "number"},
        "steps": {"type": "array", "items": STEP_ITEM, "maxItems": 1000},
    }, ["schema", "runner", "sensor", "steps"], desc="Steps completed in one processed chunk."),
    SCHEMA_METRICS: _obj({
        "schema": {"const": SCHEMA_METRICS}, "runner": {"type": "string"},
        "time_s": {"type": "number", "description": "stream clock of the newest sample"},
        "time_unix_s": {"type": "number"}, "window_s": {"type": "number", "minimum": 0},
        "activity": _ACTIVITY, "cadence_spm": _NUM, "cadence_target_spm": _NUM, "gct_ms": _NUM,
        "gct_left_ms": _NUM, "gct_right_ms": _NUM,
        "balance_left_pct": {**_NUM, "description": "GCT_L / (GCT_L + GCT_R) * 100; 50 = symmetric"},
        "flight_ms": _NUM, "duty_factor": _NUM, "impact_peak_g": _NUM, "impact_peak_max_g": _NUM,
        "loading_rate_gps": _NUM, "steps_in_window": {"type": "integer", "minimum": 0},
        "steps_total": {"type": "integer", "minimum": 0}, "impact_sum_g": {"type": "number", "minimum": 0},
        "interval": INTERVAL, "paused": {"type": "boolean"},
        "coarse_sensors": {"type": "array", "maxItems": 16, "items": COARSE_ITEM,
                           "description": "latest values of coarse sensors (RSC foot pods) seen in the last 5 s"},
    }, ["schema", "runner", "time_s", "window_s", "cadence_spm", "steps_total"],
        desc="Rolling metrics over the last window_s, published every second."),
    SCHEMA_CUE: _obj({
        "schema": {"const": SCHEMA_CUE}, "runner": {"type": "string"},
        "cue_id": {"type": "integer", "minimum": 0},
        "kind": {"enum": ["cadence", "metronome", "form", "interval", "program", "info"]},
        "code": {"type": "string", "maxLength": 64}, "text": {"type": ["string", "null"], "maxLength": 200},
        "bpm": _NUM, "priority": {"type": "integer", "minimum": 0, "maximum": 3},
        "time_s": {"type": "number"}, "time_unix_s": {"type": "number"},
        "ttl_s": {"type": "number", "minimum": 0}, "expires_unix_s": {"type": "number"},
        "trigger_arrival_ns": {"type": ["integer", "null"],
                               "description": "monotonic ns at which the triggering packet arrived (latency)"},
    }, ["schema", "runner", "cue_id", "kind", "code", "priority", "ttl_s", "expires_unix_s"],
        desc="A cue for the runner; stale cues must not be played (MQTT message expiry + expires_unix_s)."),
    SCHEMA_STATUS: _obj({
        "schema": {"const": SCHEMA_STATUS}, "runner": {"type": "string"},
        "state": {"enum": ["online", "paused", "offline"]}, "edge_id": {"type": "string"},
        "time_unix_s": {"type": "number"}, "reason": {"type": ["string", "null"]},
        "sensors": {"type": "array", "items": {"type": "string"}}, "raw_enabled": {"type": "boolean"},
        "interval": INTERVAL, "target_cadence_spm": _NUM,
        "counters": {"type": "object"},
        "links": {"type": "array", "maxItems": 16, "items": LINK_ITEM,
                  "description": "health of each sensor link of the runner (battery, loss, reconnects ...)"},
        "program": PROGRAM_STATE,
    }, ["schema", "runner", "state", "edge_id", "time_unix_s"],
        desc="Retained. The edge sets an 'offline' last will on every connection."),
    SCHEMA_CONTROL: _obj({
        "schema": {"const": SCHEMA_CONTROL},
        "request_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "command": {"enum": ["set_target_cadence", "set_limits", "pause", "resume", "advance_interval",
                             "raw_on", "raw_off", "metronome_on", "metronome_off", "report_pain", "status"]},
        "args": {"type": "object"},
    }, ["schema", "request_id", "command"], desc="A command to the runner's edge pipeline."),
    SCHEMA_REPLY: _obj({
        "schema": {"const": SCHEMA_REPLY}, "runner": {"type": "string"},
        "request_id": {"type": ["string", "null"]}, "command": {"type": ["string", "null"]},
        "issuer": {"type": ["string", "null"]}, "ok": {"type": "boolean"},
        "reason": {"type": ["string", "null"]}, "time_unix_s": {"type": "number"},
        "state": {"type": "object"},
    }, ["schema", "runner", "ok", "time_unix_s"], desc="Answer to every control message, accepted or not."),
    SCHEMA_PLAN: _obj({
        "schema": {"const": SCHEMA_PLAN}, "runner": {"type": "string"},
        "program": {"type": ["string", "null"], "maxLength": 64, "description": "program name (null: none)"},
        "stage": {"type": ["integer", "null"], "minimum": 1, "description": "1-based stage to run next"},
        "n_stages": {"type": ["integer", "null"], "minimum": 1},
        "targets": _PLAN_TARGETS, "limits": _PLAN_LIMITS, "decision": _DECISION,
        "set_by": {"type": ["string", "null"], "description": "user who changed it, or 'progression'"},
        "time_unix_s": {"type": "number"},
    }, ["schema", "runner", "program", "stage", "targets", "limits", "time_unix_s"],
        desc="Retained, written by the server only: what the runner's next session runs."),
    SCHEMA_PROGRAM_SESSION: _obj({
        "schema": {"const": SCHEMA_PROGRAM_SESSION}, "runner": {"type": "string"},
        "session_key": {"type": "string", "minLength": 1, "maxLength": 128,
                        "description": "the edge session (edge_id of the status; one record per program run)"},
        "program": {"type": "string", "maxLength": 64}, "stage": {"type": "integer", "minimum": 1},
        "pain_before": _PAIN, "pain_after": _PAIN,
        "completed_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "run_time_s": {"type": "number", "minimum": 0}, "planned_run_time_s": {"type": "number", "minimum": 0},
        "run_steps": {"type": "integer", "minimum": 0},
        "impact_sum_g": {"type": "number", "minimum": 0, "description": "sum of per-step peaks of running steps"},
        "start_unix_s": {"type": "number"}, "end_unix_s": {"type": "number"}, "final": {"type": "boolean"},
    }, ["schema", "runner", "session_key", "program", "stage", "pain_before", "pain_after", "completed_fraction",
        "run_time_s", "planned_run_time_s", "run_steps", "impact_sum_g", "start_unix_s", "end_unix_s", "final"],
        desc="One program session's load and pain (upserted by session_key; final=true at the end)."),
}

#: Per-command ``args`` schemas and which roles may send the command.
COMMAND_ARGS: dict[str, dict] = {
    "set_target_cadence": _obj({"cadence_spm": {"type": "number", "minimum": 60, "maximum": 240},
                                "tolerance_spm": {"type": "number", "minimum": 1, "maximum": 30}},
                               ["cadence_spm"]),
    "set_limits": _obj({"impact_limit_g": {"type": "number", "minimum": 1, "maximum": 30},
                        "gct_limit_ms": {"type": "number", "minimum": 100, "maximum": 600},
                        "imbalance_limit_pct": {"type": "number", "minimum": 1, "maximum": 50}}, []),
    "report_pain": _obj({"pain_0_10": {"type": "integer", "minimum": 0, "maximum": 10},
                         "when": {"enum": ["before", "after"]}}, ["pain_0_10", "when"]),
}
for _c in ("pause", "resume", "advance_interval", "raw_on", "raw_off", "metronome_on", "metronome_off", "status"):
    COMMAND_ARGS[_c] = _obj({}, [])

COMMAND_ROLES: dict[str, frozenset[str]] = {
    "set_target_cadence": frozenset({"therapist", "service"}),
    "set_limits": frozenset({"therapist", "service"}),
    "advance_interval": frozenset({"therapist", "service"}),
}
_DEFAULT_ROLES = frozenset({"runner", "therapist", "service"})


def roles_for(command: str) -> frozenset[str]:
    return COMMAND_ROLES.get(command, _DEFAULT_ROLES)


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def validate(obj: Any, schema: Mapping, path: str = "$", schema_name: str | None = None) -> None:
    """Validate ``obj`` against a schema of the supported subset; raise :class:`PayloadError` with the path."""
    def fail(msg: str):
        raise PayloadError(f"{path}: {msg}", schema=schema_name, field=path)

    if "const" in schema and obj != schema["const"]:
        fail(f"must be {schema['const']!r}, got {obj!r}")
    if "enum" in schema and obj not in schema["enum"]:
        fail(f"must be one of {schema['enum']}, got {obj!r}")
    t = schema.get("type")
    if t is not None:
        types = [t] if isinstance(t, str) else list(t)
        if not any(_TYPES[x](obj) for x in types):
            fail(f"must be {' or '.join(types)}, got {type(obj).__name__} {obj!r:.40}")
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in schema and obj < schema["minimum"]:
            fail(f"must be >= {schema['minimum']}, got {obj}")
        if "maximum" in schema and obj > schema["maximum"]:
            fail(f"must be <= {schema['maximum']}, got {obj}")
    if isinstance(obj, str):
        if len(obj) < schema.get("minLength", 0):
            fail(f"must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(obj) > schema["maxLength"]:
            fail(f"must have at most {schema['maxLength']} characters")
    if isinstance(obj, dict) and ("properties" in schema or "required" in schema):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in obj:
                fail(f"missing required field {k!r}")
        for k, v in obj.items():
            if k in props:
                validate(v, props[k], f"{path}.{k}", schema_name)
            elif schema.get("additionalProperties", True) is False:
                fail(f"unknown field {k!r}")
    if isinstance(obj, list):
        if "maxItems" in schema and len(obj) > schema["maxItems"]:
            fail(f"must have at most {schema['maxItems']} items")
        if "items" in schema:
            for i, v in enumerate(obj):
                validate(v, schema["items"], f"{path}[{i}]", schema_name)


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def encode_json(obj: Mapping[str, Any], *, check: bool = True) -> bytes:
    """Compact UTF-8 JSON; NaN/inf -> null; validated against ``obj['schema']`` when ``check``."""
    obj = _clean(dict(obj))
    if check:
        name = obj.get("schema")
        if name not in SCHEMAS:
            raise PayloadError(f"unknown schema {name!r}", schema=name, field="$.schema")
        validate(obj, SCHEMAS[name], schema_name=name)
        if name == SCHEMA_CONTROL:
            validate(obj.get("args", {}), COMMAND_ARGS[obj["command"]], "$.args", name)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _reject_constant(c: str):
    raise ValueError(f"{c} is not valid JSON")


def decode_json(payload: bytes | str, expected: str | None = None, *, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """Parse and validate a JSON payload; ``expected`` pins the schema name. Raises :class:`PayloadError`."""
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}",
                           schema=expected, field="$")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"not valid UTF-8 JSON: {exc}", schema=expected, field="$") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(obj).__name__}", schema=expected, field="$")
    name = obj.get("schema")
    if expected is not None and name != expected:
        raise PayloadError(f"$.schema: expected {expected!r}, got {name!r}", schema=expected, field="$.schema")
    if name not in SCHEMAS:
        raise PayloadError(f"$.schema: unknown schema {name!r}", schema=name, field="$.schema")
    validate(obj, SCHEMAS[name], schema_name=name)
    if name == SCHEMA_CONTROL:
        validate(obj.get("args", {}), COMMAND_ARGS[obj["command"]], "$.args", name)
    return obj

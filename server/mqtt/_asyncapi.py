"""Generate docs/asyncapi.yaml (AsyncAPI 3.0) from the schemas in ``_schema`` (single source of truth)."""
from __future__ import annotations

import json

from ._link import CLASSES
from ._schema import COMMAND_ARGS, SCHEMAS

_CHANNELS = [
    # id, address, schema, class, summary, parameters, content type, sent by edge?
    ("raw", "runform/v1/{runner}/{sensor}/raw", None, "raw",
     "Raw sample blocks, binary (see docs/mqtt.md 'Raw layout'); only while raw publishing is on.",
     ("runner", "sensor"), "application/vnd.runform.raw.v1", True),
    ("steps", "runform/v1/{runner}/{sensor}/steps", "runform.steps.v1", "steps",
     "Steps completed in each processed chunk.", ("runner", "sensor"), "application/json", True),
    ("metrics", "runform/v1/{runner}/metrics", "runform.metrics.v1", "metrics",
     "Rolling metrics, every second.", ("runner",), "application/json", True),
    ("cues", "runform/v1/{runner}/cues", "runform.cue.v1", "cue",
     "Cues; MQTT message expiry = ttl_s; never retained.", ("runner",), "application/json", True),
    ("status", "runform/v1/{runner}/status", "runform.status.v1", "control",
     "Retained edge status; the edge's last will sets state=offline.", ("runner",), "application/json", True),
    ("control", "runform/v1/{runner}/control/{issuer}", "runform.control.v1", None,
     "Commands in. The broker ACL lets user X publish only to .../control/X.", ("runner", "issuer"),
     "application/json", False),
    ("reply", "runform/v1/{runner}/control/reply", "runform.control_reply.v1", "control",
     "One reply per control message (accepted or rejected with a reason).", ("runner",), "application/json", True),
    ("plan", "runform/v1/{runner}/plan", "runform.plan.v1", "control",
     "Retained return-to-run plan (program, 1-based stage, targets, limits, last decision); written by the server "
     "only (ACL); the edge applies it and answers rejections on control/reply.", ("runner",), "application/json",
     False),
    ("program", "runform/v1/{runner}/program", "runform.program_session.v1", "control",
     "Program session record (pain before/after, run time, load), upserted by session_key; final=true at the end.",
     ("runner",), "application/json", True),
]

_PARAMS = {"runner": "Runner id (user name of the runner).", "sensor": "Sensor site/name, e.g. sacrum, foot_left.",
           "issuer": "MQTT user name of the command's sender (enforced by the broker ACL)."}


def _yaml(obj, indent: int = 0) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        if not obj:
            return [pad + "{}"]
        for k, v in obj.items():
            key = json.dumps(k) if (not isinstance(k, str) or not k.replace("_", "").replace("-", "").isalnum()) else k
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{key}:")
                out += _yaml(v, indent + 1)
            else:
                out.append(f"{pad}{key}: {_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                sub = _yaml(v, indent + 1)
                out.append(f"{pad}- {sub[0].strip()}")
                out += sub[1:]
            else:
                out.append(f"{pad}- {_scalar(v)}")
    else:
        out.append(pad + _scalar(obj))
    return out


def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (dict, list)):
        return "{}" if isinstance(v, dict) else "[]"
    return json.dumps(v)  # JSON strings are valid YAML scalars


def asyncapi_dict() -> dict:
    channels, operations, messages, schemas = {}, {}, {}, {}
    for cid, addr, schema, cls, summary, params, ctype, edge_sends in _CHANNELS:
        msg_name = f"{cid}Message"
        msg = {"name": msg_name, "contentType": ctype, "summary": summary}
        if schema:
            schemas[schema] = SCHEMAS[schema]
            msg["payload"] = {"$ref": f"#/components/schemas/{schema}"}
        else:
            msg["payload"] = {"type": "string", "format": "binary"}
        if cls:
            pol = CLASSES[cls]
            msg["bindings"] = {"mqtt": {"qos": pol.qos, "retain": cid in ("status", "plan"), "bindingVersion": "0.2.0"}}
        messages[msg_name] = msg
        channels[cid] = {"address": addr, "messages": {msg_name: {"$ref": f"#/components/messages/{msg_name}"}},
                         "parameters": {p: {"description": _PARAMS[p]} for p in params}}
        operations[f"{'publish' if edge_sends else 'receive'}_{cid}"] = {
            "action": "send" if edge_sends else "receive", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": ("The edge publishes: " if edge_sends else "The edge receives: ") + summary}
    schemas["command_args"] = {"description": "args schema per command",
                               "properties": {k: v for k, v in COMMAND_ARGS.items()}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "runform MQTT contract", "version": "1.0.0",
                 "description": "Generated by `python -m runform.server.mqtt asyncapi` from "
                                "runform.server.mqtt._schema; see docs/mqtt.md for the reasoning."},
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:1883", "protocol": "mqtt", "protocolVersion": "5",
                              "description": "Mosquitto started by `runform broker` (loopback only)."}},
        "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def asyncapi_yaml() -> str:
    return "# GENERATED by `python -m runform.server.mqtt asyncapi` -- do not edit by hand\n" + \
        "\n".join(_yaml(asyncapi_dict())) + "\n"

"""runform.server.mqtt: the MQTT contract (topics, payloads, validation) and a bounded paho v5 link.

Topic tree and payloads: docs/mqtt.md, machine-readable in docs/asyncapi.yaml (generated from ``SCHEMAS`` by
``python -m runform.server.mqtt asyncapi``).
"""
from ._errors import MqttContractError, PayloadError, TopicError
from ._link import (CLASSES, CLASS_CONTROL, CLASS_CUE, CLASS_METRICS, CLASS_RAW, CLASS_STEPS, ClassPolicy,
                    MqttLink, MqttSettings, OutboundQueue, Outgoing, make_client_id)
from ._payloads import (control_payload, cue_payload, plan_payload, program_session_payload, reply_payload,
                        status_payload, steps_payload)
from ._ready import SubscriptionState
from ._raw import RAW_CONTENT_TYPE, RawBlock, decode_raw, encode_raw
from ._schema import (COMMAND_ARGS, COMMAND_ROLES, MAX_CONTROL_BYTES, SCHEMA_CONTROL, SCHEMA_CUE, SCHEMA_METRICS,
                      SCHEMA_PLAN, SCHEMA_PROGRAM_SESSION, SCHEMA_REPLY, SCHEMA_STATUS, SCHEMA_STEPS, SCHEMAS,
                      decode_json, encode_json, roles_for, validate)
from ._topics import (ROOT, TopicParts, control_filter, control_topic, cues_topic, metrics_topic, parse_topic,
                      plan_topic, program_topic, raw_topic, reply_topic, runner_filter, shared_filter, status_topic,
                      steps_topic)

__all__ = [
    "MqttContractError", "PayloadError", "TopicError",
    "CLASSES", "CLASS_CONTROL", "CLASS_CUE", "CLASS_METRICS", "CLASS_RAW", "CLASS_STEPS", "ClassPolicy",
    "MqttLink", "MqttSettings", "OutboundQueue", "Outgoing", "make_client_id",
    "control_payload", "cue_payload", "plan_payload", "program_session_payload", "reply_payload", "status_payload",
    "steps_payload",
    "RAW_CONTENT_TYPE", "RawBlock", "decode_raw", "encode_raw", "SubscriptionState",
    "COMMAND_ARGS", "COMMAND_ROLES", "MAX_CONTROL_BYTES", "SCHEMA_CONTROL", "SCHEMA_CUE", "SCHEMA_METRICS",
    "SCHEMA_PLAN", "SCHEMA_PROGRAM_SESSION", "SCHEMA_REPLY", "SCHEMA_STATUS", "SCHEMA_STEPS", "SCHEMAS",
    "decode_json", "encode_json", "roles_for", "validate",
    "ROOT", "TopicParts", "control_filter", "control_topic", "cues_topic", "metrics_topic", "parse_topic",
    "plan_topic", "program_topic", "raw_topic", "reply_topic", "runner_filter", "shared_filter", "status_topic",
    "steps_topic",
]

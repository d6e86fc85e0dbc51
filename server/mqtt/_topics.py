"""The versioned topic tree (docs/mqtt.md).

::

    runform/v1/{runner}/{sensor}/raw        binary raw sample blocks   (edge -> *; only when enabled)
    runform/v1/{runner}/{sensor}/steps      JSON step events           (edge -> *)
    runform/v1/{runner}/metrics             JSON rolling metrics, 1 Hz (edge -> *)
    runform/v1/{runner}/cues                JSON cues, message expiry  (edge -> runner's headphones)
    runform/v1/{runner}/status              JSON, retained, last will  (edge -> *)
    runform/v1/{runner}/control/{issuer}    JSON commands in           (therapist/runner/service -> edge)
    runform/v1/{runner}/control/reply       JSON replies               (edge -> *)
    runform/v1/{runner}/plan                JSON, retained             (server -> edge, dashboards)
    runform/v1/{runner}/program             JSON program session record (edge -> ingest)

``{issuer}`` is the MQTT user name of whoever sends the command; the broker ACL lets user X write only
``.../control/X``, so the edge learns a broker-verified issuer from the topic (payload fields can be forged).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import TopicError

ROOT = "runform/v1"
_LEVEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RESERVED_LEVELS = frozenset({"raw", "steps", "metrics", "cues", "status", "control", "reply"})

KIND_RAW, KIND_STEPS, KIND_METRICS, KIND_CUES, KIND_STATUS, KIND_CONTROL, KIND_REPLY = (
    "raw", "steps", "metrics", "cues", "status", "control", "reply")
KIND_PLAN, KIND_PROGRAM = "plan", "program"


def check_level(value: str, what: str) -> str:
    """Validate one topic level (runner, sensor, issuer): no '/', '+', '#', not reserved."""
    if not isinstance(value, str) or not _LEVEL_RE.match(value):
        raise TopicError(f"{what} {value!r} is not a valid topic level (1-64 of A-Z a-z 0-9 _ . -)", topic=str(value))
    if value in RESERVED_LEVELS:
        raise TopicError(f"{what} {value!r} is a reserved topic level", topic=value)
    return value


def raw_topic(runner: str, sensor: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/{check_level(sensor, 'sensor')}/raw"


def steps_topic(runner: str, sensor: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/{check_level(sensor, 'sensor')}/steps"


def metrics_topic(runner: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/metrics"


def cues_topic(runner: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/cues"


def status_topic(runner: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/status"


def plan_topic(runner: str) -> str:
    """The runner's return-to-run plan (``runform.plan.v1``), retained, written by the server only."""
    return f"{ROOT}/{check_level(runner, 'runner')}/plan"


def program_topic(runner: str) -> str:
    """Program session records (``runform.program_session.v1``) from the edge."""
    return f"{ROOT}/{check_level(runner, 'runner')}/program"


def control_topic(runner: str, issuer: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/control/{check_level(issuer, 'issuer')}"


def control_filter(runner: str) -> str:
    """Subscription filter for every command to ``runner`` (also matches ``control/reply``: skip it)."""
    return f"{ROOT}/{check_level(runner, 'runner')}/control/+"


def reply_topic(runner: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/control/reply"


def runner_filter(runner: str) -> str:
    return f"{ROOT}/{check_level(runner, 'runner')}/#"


def shared_filter(group: str, topic_filter: str) -> str:
    """``$share/{group}/{filter}`` (MQTT v5 shared subscription; brokers split it per MESSAGE, see docs)."""
    return f"$share/{check_level(group, 'group')}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class TopicParts:
    runner: str
    kind: str  # one of KIND_*
    sensor: str | None = None
    issuer: str | None = None


def parse_topic(topic: str) -> TopicParts:
    """Split a contract topic; raises :class:`TopicError` for anything outside the tree."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "runform" or parts[1] != "v1":
        raise TopicError(f"not a runform/v1 topic: {topic!r}", topic=topic)
    runner = parts[2]
    try:
        check_level(runner, "runner")
        rest = parts[3:]
        if len(rest) == 1 and rest[0] in (KIND_METRICS, KIND_CUES, KIND_STATUS, KIND_PLAN, KIND_PROGRAM):
            return TopicParts(runner, rest[0])
        if len(rest) == 2 and rest[0] == KIND_CONTROL:
            if rest[1] == KIND_REPLY:
                return TopicParts(runner, KIND_REPLY)
            return TopicParts(runner, KIND_CONTROL, issuer=check_level(rest[1], "issuer"))
        if len(rest) == 2 and rest[1] in (KIND_RAW, KIND_STEPS):
            return TopicParts(runner, rest[1], sensor=check_level(rest[0], "sensor"))
    except TopicError as exc:
        raise TopicError(f"{exc} in topic {topic!r}", topic=topic) from None
    raise TopicError(f"unknown runform/v1 topic layout: {topic!r}", topic=topic)

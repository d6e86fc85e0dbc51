"""MQTT contract: topics, JSON schemas, raw binary layout, ACL generation (no broker needed)."""
import json
from pathlib import Path

import numpy as np
import pytest

from runform.dsp import empty_steps
from runform.server import mqtt as m
from runform.server.broker import AccessSpec, AccessSpecError, generate_acl, generate_mosquitto_conf
from runform.server.cues import Cue

from .conftest import SPEC, synthetic_steps


def test_topics_round_trip():
    assert m.parse_topic(m.raw_topic("alice", "foot_left")) == m.TopicParts("alice", "raw", sensor="foot_left")
    assert m.parse_topic(m.steps_topic("alice", "sacrum")) == m.TopicParts("alice", "steps", sensor="sacrum")
    assert m.parse_topic(m.metrics_topic("a")).kind == "metrics"
    assert m.parse_topic(m.cues_topic("a")).kind == "cues"
    assert m.parse_topic(m.status_topic("a")).kind == "status"
    assert m.parse_topic(m.control_topic("a", "pt")) == m.TopicParts("a", "control", issuer="pt")
    assert m.parse_topic(m.reply_topic("a")).kind == "reply"


@pytest.mark.parametrize("bad", ["runform/v2/a/metrics", "runform/v1/a/what", "runform/v1/a+/metrics",
                                 "runform/v1/a/control/x/y", "x", "runform/v1/a/b/c/raw"])
def test_parse_topic_rejects(bad):
    with pytest.raises(m.TopicError):
        m.parse_topic(bad)


@pytest.mark.parametrize("name", ["a/b", "+", "#", "", "reply", "control"])
def test_topic_levels_checked(name):
    with pytest.raises(m.TopicError):
        m.cues_topic(name)


def test_steps_payload_round_trip_and_nan_as_null():
    st = synthetic_steps(10.0, 4, 170.0)
    st["flight_ms"][1] = np.nan
    d = m.decode_json(m.encode_json(m.steps_payload("alice", "s1", "sacrum", st)), m.SCHEMA_STEPS)
    assert [s["side"] for s in d["steps"]] == ["L", "R", "L", "R"]
    assert d["steps"][1]["flight_ms"] is None
    np.testing.assert_allclose([s["ic_s"] for s in d["steps"]], st["ic_s"], atol=1e-6)
    assert all(s["activity"] == "running" for s in d["steps"])


def test_cue_payload_validates_and_expiry_fields():
    c = Cue("cadence", "cadence_low", 12.5, 1, "A little quicker.", None, 2.0)
    d = m.cue_payload("alice", c, 7, now_unix_s=1000.0)
    assert d["expires_unix_s"] == 1002.0
    assert m.decode_json(m.encode_json(d))["text"] == "A little quicker."


@pytest.mark.parametrize("payload, field", [
    (b"not json", "$"),
    (b"[1,2]", "$"),
    (json.dumps({"schema": "runform.control.v1", "command": "pause"}).encode(), "$"),  # no request_id
    (json.dumps({"schema": "runform.control.v1", "request_id": "r", "command": "explode"}).encode(), "$.command"),
    (json.dumps({"schema": "runform.control.v1", "request_id": "r", "command": "set_target_cadence",
                 "args": {"cadence_spm": 400}}).encode(), "$.args.cadence_spm"),
    (json.dumps({"schema": "runform.control.v1", "request_id": "r", "command": "set_target_cadence",
                 "args": {}}).encode(), "$.args"),
    (json.dumps({"schema": "runform.control.v1", "request_id": "r", "command": "pause", "extra": 1}).encode(), "$"),
    (b'{"schema":"runform.control.v1","request_id":"r","command":"set_target_cadence","args":{"cadence_spm":NaN}}',
     "$"),
])
def test_control_validation_rejects_with_field(payload, field):
    with pytest.raises(m.PayloadError) as ei:
        m.decode_json(payload, m.SCHEMA_CONTROL)
    assert ei.value.field == field


def test_control_valid():
    d = m.decode_json(m.encode_json(m.control_payload("set_target_cadence", {"cadence_spm": 172})))
    assert d["args"]["cadence_spm"] == 172


@pytest.mark.parametrize("gyro, clipped, int16", [(True, True, False), (False, False, False), (True, False, True)])
def test_raw_binary_round_trip(gyro, clipped, int16):
    from runform.firmware_bridge import SampleBlock
    rng = np.random.default_rng(1)
    n = 37
    scale = (16 * 9.80665 / 32768, 2000 / 32768)
    acc = rng.integers(-32768, 32767, (n, 3)) * scale[0]
    gyr = rng.integers(-32768, 32767, (n, 3)) * scale[1] if gyro else None
    t = 1234567.0 + np.arange(n) / 500.0
    b = SampleBlock("s-1", "foot_left", 2**40 + 3, 2**33, 32768.0, 500.0, acc, gyr, 99, t, False,
                    rng.random(n) > 0.5 if clipped else None)
    payload = m.encode_raw(b, int16_scale=scale if int16 else None)
    assert len(payload) == 64 + 2 + 3 + 9 + 8 * n + (6 if int16 else 12) * n * (2 if gyro else 1) + (
        (n + 7) // 8 if clipped else 0)
    r = m.decode_raw(payload)
    assert (r.sensor_id, r.site, r.seq, r.first_tick, r.arrival_ns) == ("s-1", "foot_left", 2**40 + 3, 2**33, 99)
    np.testing.assert_array_equal(r.time_s, t)  # float64 times exact
    if int16:
        np.testing.assert_allclose(r.acc_ms2, acc, rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(r.acc_ms2, acc, rtol=1e-6)
    assert (r.gyr_dps is None) == (not gyro)
    if clipped:
        np.testing.assert_array_equal(r.clipped, b.clipped)


@pytest.mark.parametrize("mutate", [lambda p: p[:20], lambda p: b"XXXX" + p[4:], lambda p: p + b"\0",
                                    lambda p: p[:-1]])
def test_raw_rejects_corrupt(mutate):
    from runform.firmware_bridge import SampleBlock
    b = SampleBlock("s", "sacrum", 1, 0, 1.0, 500.0, np.zeros((5, 3)), None, 0, np.arange(5.0), False)
    with pytest.raises(m.PayloadError):
        m.decode_raw(mutate(m.encode_raw(b)))


def test_acl_is_pure_and_scoped():
    acl = generate_acl(SPEC)
    assert acl == generate_acl(AccessSpec.from_dict({"users": [
        {"name": u.name, "password": u.password, "role": u.role, "runners": list(u.runners)} for u in SPEC.users]}))
    blocks = {b.split("\n")[0]: b for b in acl.split("\n\n") if b.startswith("user ")}
    assert "topic readwrite runform/v1/#" in blocks["user edge"]
    assert "topic read runform/v1/alice/#" in blocks["user alice"]
    assert "bob" not in blocks["user alice"]
    assert "topic write runform/v1/alice/control/pt" in blocks["user pt"]
    assert "bob" not in blocks["user pt"] and "#" not in blocks["user pt"].split("read runform/v1/alice/#")[1]
    # a runner can never write another issuer's command topic
    assert "control/pt" not in blocks["user alice"] and "write runform/v1/alice/#" not in blocks["user alice"]


@pytest.mark.parametrize("spec", [
    {"users": [{"name": "a b", "password": "x", "role": "runner"}]},
    {"users": [{"name": "reply", "password": "x", "role": "runner"}]},
    {"users": [{"name": "a", "password": "", "role": "runner"}]},
    {"users": [{"name": "a", "password": "x", "role": "admin"}]},
    {"users": [{"name": "a", "password": "x", "role": "runner", "runners": ["b"]}]},
    {"users": [{"name": "a", "password": "x", "role": "runner"}, {"name": "a", "password": "y", "role": "runner"}]},
])
def test_access_spec_rejects(spec):
    with pytest.raises(AccessSpecError):
        AccessSpec.from_dict(spec)


def test_mosquitto_conf_loopback_only(tmp_path):
    conf = generate_mosquitto_conf(tmp_path, port=1234, ws_port=1235)
    listeners = [l for l in conf.splitlines() if l.startswith("listener")]
    assert listeners == ["listener 1234 127.0.0.1", "listener 1235 127.0.0.1"]
    assert "socket_domain ipv4" in conf and "allow_anonymous false" in conf


def test_asyncapi_doc_in_sync():
    from runform.server.mqtt._asyncapi import asyncapi_yaml
    doc = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"
    assert doc.read_text() == asyncapi_yaml(), "regenerate: python -m runform.server.mqtt asyncapi > docs/asyncapi.yaml"

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


def test_status_links_from_a_source_validate_and_bad_items_are_rejected():
    import asyncio

    from runform.server.edge import SimulatorSource
    src = SimulatorSource("alice", sites=("foot_left", "foot_right"), speed=0, duration_s=0.6, packet_samples=20)

    async def drain():
        return sum([1 async for _ in src])
    n_blocks = asyncio.run(drain())
    links = [ln.to_payload() for ln in src.link_stats()]
    d = m.decode_json(m.encode_json(m.status_payload("alice", "online", "edge-1", links=links)), m.SCHEMA_STATUS)
    assert [ln["sensor_id"] for ln in d["links"]] == [s.sensor_id for s in src.sensors]
    assert sum(ln["packets_received"] for ln in d["links"]) == n_blocks == src.packets_
    assert all(ln["kind"] == "sim" and ln["battery_pct"] is None and ln["connected"] is False  # finished
               and ln["packets_lost"] == 0 and ln["loss_pct"] == 0.0 for ln in d["links"])
    for field, value in (("battery_pct", 150), ("loss_pct", -1.0), ("connected", "yes"), ("packets_lost", 2.5),
                         ("surprise", 1)):
        bad = [dict(links[0], **{field: value}), links[1]]
        with pytest.raises(m.PayloadError) as ei:
            m.encode_json(m.status_payload("alice", "online", "edge-1", links=bad))
        assert ei.value.field == ("$.links[0]" if field == "surprise" else f"$.links[0].{field}")
    missing = dict(links[0])
    del missing["rssi_dbm"]
    with pytest.raises(m.PayloadError):
        m.encode_json(m.status_payload("alice", "online", "edge-1", links=[missing]))


def test_link_window_recent_loss_is_the_last_window_only():
    from runform.server._links import LinkStatus, LinkWindow

    def link(rx, lost):
        return LinkStatus("a.sacrum", "sacrum", "runform_v1", True, packets_received=rx, packets_lost=lost)
    w = LinkWindow(window_s=10.0)
    # first 10 s: a bad link (50 % loss); then 20 s clean at 100 packets/s, sampled once a second
    rx, lost = 0, 0
    for t in range(31):
        if t <= 10:
            rx, lost = 50 * t, 50 * t
        else:
            rx, lost = 500 + 100 * (t - 10), 500
        w.sample([link(rx, lost)], now_s=float(t))
    assert link(rx, lost).loss_pct == pytest.approx(100 * 500 / (rx + 500), abs=1e-3)
    assert w.recent_pct(link(rx, lost), now_s=30.0) == 0.0  # the bad start is out of the window
    # now the link goes bad again: 30 lost of the 60 packets made in the last 0.5 s
    now = link(rx + 30, lost + 30)
    assert w.recent_pct(now, now_s=30.5) == pytest.approx(100 * 30 / (10 * 100 + 60), abs=1e-3)
    assert w.fill([now], now_s=30.5)[0].loss_recent_pct == w.recent_pct(now, now_s=30.5)
    # a young history: everything since the start is the recent window
    y = LinkWindow(window_s=10.0)
    y.sample([link(10, 0)], now_s=0.0)
    assert y.recent_pct(link(90, 10), now_s=3.0) == 10.0
    assert y.recent_pct(link(5, 0), now_s=20.0) is None  # counters went back (a new source): nothing to compare
    assert LinkWindow().recent_pct(link(0, 0)) is None  # no packets yet

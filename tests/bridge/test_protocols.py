"""Encoders/decoders of every protocol: exact round trips, fuzzing (only MalformedPacketError), registry."""
import struct

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from runform.firmware_bridge import BridgeError, MalformedPacketError, UnsupportedVersionError
from runform.firmware_bridge._types import STANDARD_GRAVITY_MS2, MetricsPacket, SamplePacket
from runform.firmware_bridge.protocols import (MetaMotion, Movesense, PolarPmd, Rsc, RunformV1, get_protocol,
                                               metamotion, movesense, polar_pmd, protocol_for_services,
                                               protocol_from_metadata, rsc, runform_v1 as rf)
from runform.firmware_bridge._errors import ControlPointError, UnknownProtocolError

FUZZ = settings(max_examples=300, deadline=None)
i16 = st.integers(-32768, 32767)


def raw_samples(max_n):
    return st.integers(1, max_n).flatmap(lambda n: arrays(np.int16, (n, 3), elements=i16))


# ------------------------------------------------------------------------------------------- runform v1
@given(seq=st.integers(0, 2**20), tick=st.integers(0, 2**40), acc=raw_samples(84), gyro=st.booleans(),
       mark=st.booleans(), data=st.data())
@FUZZ
def test_runform_data_roundtrip(seq, tick, acc, gyro, mark, data):
    n = acc.shape[0] if not gyro else min(acc.shape[0], 42)
    acc = acc[:n]
    gyr = data.draw(arrays(np.int16, (n, 3), elements=i16)) if gyro else None
    b = rf.encode_data_packet(seq, tick, acc, gyr, config_mark=mark)
    assert len(b) == 8 + n * (12 if gyro else 6) <= 512
    p = rf.decode_data_packet(b)
    assert p.seq == seq % 65536 and p.first_tick == tick % 2**32
    assert np.array_equal(p.acc_raw, acc)
    assert (p.gyr_raw is None) == (gyr is None)
    if gyro:
        assert np.array_equal(p.gyr_raw, gyr)
    assert p.config_mark == mark
    assert p.acc_saturated == bool(((acc == 32767) | (acc == -32768)).any())


@given(st.binary(max_size=600))
@FUZZ
def test_runform_fuzz_only_malformed(b):
    proto = RunformV1(rf.SensorConfig(gyro_enabled=True))
    try:
        pk = proto.decode(b)
    except MalformedPacketError as e:
        assert e.reason and e.protocol == "runform_v1"
        return
    assert len(b) >= 14 and (len(b) - 8) % 6 == 0 and b[0] == 1
    assert pk[0].acc_ms2.shape == (pk[0].n_samples, 3)


def test_runform_rejections_with_reasons():
    good = rf.encode_data_packet(1, 2, [[1, 2, 3]])
    with pytest.raises(UnsupportedVersionError) as ei:
        rf.decode_data_packet(bytes([2]) + good[1:])
    assert ei.value.version == 2 and "supports version 1" in str(ei.value)
    assert isinstance(ei.value, MalformedPacketError) and isinstance(ei.value, BridgeError)
    with pytest.raises(MalformedPacketError, match="truncated"):
        rf.decode_data_packet(good[:7])
    with pytest.raises(MalformedPacketError, match="no samples"):
        rf.decode_data_packet(good[:8])
    with pytest.raises(MalformedPacketError, match="multiple"):
        rf.decode_data_packet(good + b"\x00")
    with pytest.raises(MalformedPacketError, match="oversized"):
        rf.decode_data_packet(good[:8] + bytes(6 * 90))
    # gyro flag makes a 6-byte sample a truncated 12-byte one
    with pytest.raises(MalformedPacketError):
        rf.decode_data_packet(good[:1] + b"\x01" + good[2:])
    # reserved flag bits are ignored
    p = rf.decode_data_packet(good[:1] + bytes([good[1] | 0xF0]) + good[2:])
    assert p.flags == good[1] and p.acc_raw.tolist() == [[1, 2, 3]]


def test_runform_si_units_and_clipping():
    cfg = rf.SensorConfig(acc_range_g=200, acc_scale_g_per_lsb=200 / 32768, gyr_scale_dps_per_lsb=2000 / 32768)
    proto = RunformV1(cfg)
    b = rf.encode_data_packet(0, 0, [[0, 0, 164], [0, 0, 32767], [-32768, 0, 0]], [[16384, 0, 0]] * 3)
    (p,) = proto.decode(b)
    assert p.acc_ms2[0, 2] == pytest.approx(164 * 200 / 32768 * STANDARD_GRAVITY_MS2)
    assert p.gyr_dps[0, 0] == pytest.approx(1000.0)
    assert p.clipped.tolist() == [False, True, True]
    # sensor with 12-bit codes: ±200 g at 0.1 g/LSB saturates at 2000 codes
    p12 = RunformV1(rf.SensorConfig(acc_scale_g_per_lsb=0.1, gyro_enabled=False)).decode(
        rf.encode_data_packet(0, 0, [[0, 0, 1999], [0, 0, 2000]]))[0]
    assert p12.clipped.tolist() == [False, True]
    # flag without visible codes: whole packet marked
    pf = proto.decode(rf.encode_data_packet(0, 0, [[1, 2, 3]] * 2, acc_saturated=True))[0]
    assert pf.clipped.all()
    # gyro samples without a gyro scale in CONFIG -> malformed
    with pytest.raises(MalformedPacketError, match="gyroscope scale"):
        RunformV1(rf.SensorConfig(gyr_scale_dps_per_lsb=0.0)).decode(b)


f32 = st.floats(min_value=0.0009765625, max_value=100.0, width=32)


@given(rate=st.integers(1, 4_000_000), rng=st.integers(1, 200), acc_scale=f32, gyro=st.booleans(),
       grng=st.integers(0, 4000), gscale=f32, tick=st.integers(1, 2**32 - 1),
       fw=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535)),
       site=st.sampled_from(sorted(rf.SITE_CODES.values())),
       serial=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16), streaming=st.booleans())
@FUZZ
def test_runform_config_roundtrip(rate, rng, acc_scale, gyro, grng, gscale, tick, fw, site, serial, streaming):
    c = rf.SensorConfig(sampling_rate_hz=rate / 1000, acc_range_g=rng, acc_scale_g_per_lsb=acc_scale,
                        gyro_enabled=gyro, gyr_range_dps=grng, gyr_scale_dps_per_lsb=gscale, tick_hz=tick,
                        firmware_version=fw, site=site, serial=serial, streaming=streaming)
    b = rf.encode_config(c)
    assert rf.decode_config(b) == c
    assert protocol_from_metadata(RunformV1(c).to_metadata()).config == c


@given(st.binary(max_size=64))
@FUZZ
def test_runform_config_and_control_fuzz(b):
    for fn in (rf.decode_config, rf.decode_control_request, rf.decode_control_response):
        try:
            fn(b)
        except MalformedPacketError:
            pass


def test_runform_config_future_version_rejected():
    b = bytearray(rf.encode_config(rf.SensorConfig()))
    b[0] = 7
    with pytest.raises(UnsupportedVersionError, match="version 7"):
        rf.decode_config(bytes(b))


def test_runform_control_point():
    assert rf.decode_control_request(rf.set_sampling_rate(1600)) == rf.ControlRequest(rf.OpCode.SET_SAMPLING_RATE, 1600)
    assert rf.decode_control_request(rf.set_acc_range(200)).value == 200
    assert rf.decode_control_request(rf.set_gyro(True)).value == 1
    assert rf.decode_control_request(bytes([0x42, 1, 2])) == rf.ControlRequest(0x42, None)   # unknown -> answered
    with pytest.raises(MalformedPacketError, match="parameter bytes"):
        rf.decode_control_request(bytes([rf.OpCode.SET_SAMPLING_RATE, 1]))
    r = rf.decode_control_response(rf.encode_control_response(rf.OpCode.SET_ACC_RANGE, rf.ResultCode.BUSY))
    with pytest.raises(ControlPointError) as ei:
        r.raise_for_result()
    assert ei.value.code == rf.ResultCode.BUSY and ei.value.opcode == rf.OpCode.SET_ACC_RANGE
    ok = rf.decode_control_response(rf.encode_control_response(
        rf.OpCode.REQUEST_CONFIG, rf.ResultCode.SUCCESS, settings=rf.StreamSettings(1666.667, 64, False)))
    assert ok.raise_for_result().settings == rf.StreamSettings(1666.667, 64, False)


def test_max_samples_per_packet():
    assert rf.max_samples_per_packet(23, False) == 2 and rf.max_samples_per_packet(23, True) == 1
    assert rf.max_samples_per_packet(247, False) == 39 and rf.max_samples_per_packet(247, True) == 19
    assert rf.max_samples_per_packet(1000, True) == 42
    with pytest.raises(ValueError):
        rf.max_samples_per_packet(20, False)
    for mtu in (23, 100, 185, 247, 517):
        for gyro in (False, True):
            n = rf.max_samples_per_packet(mtu, gyro)
            pk = rf.packetize(np.zeros((3 * n + 1, 3), int), np.zeros((3 * n + 1, 3), int) if gyro else None,
                              seq0=5, tick0=0, ticks_per_sample=10, mtu=mtu)
            assert all(len(p) <= mtu - 3 for p in pk)
            assert [rf.decode_data_packet(p).n_samples for p in pk] == [n, n, n, 1]
            assert [rf.decode_data_packet(p).first_tick for p in pk] == [0, 10 * n, 20 * n, 30 * n]


# ------------------------------------------------------------------------------------------- Polar PMD
def test_polar_control_point_bytes_from_reference():
    assert polar_pmd.start_acc(200, 8) == bytes.fromhex("02020001C800010110000201 0800".replace(" ", ""))
    assert polar_pmd.start_acc(52, 8, channels=3) == bytes.fromhex("02020001340001011000020108000401 03".replace(" ", ""))
    assert polar_pmd.stop_acc() == b"\x03\x02" and polar_pmd.get_acc_settings() == b"\x01\x02"
    req = polar_pmd.decode_control_request(bytes.fromhex("0202020108000001C80001011000"))   # TLVs in any order
    assert req.settings[polar_pmd.SettingType.SAMPLE_RATE] == (200,)
    assert req.settings[polar_pmd.SettingType.RANGE] == (8,)


def test_polar_control_responses():
    params = polar_pmd.encode_settings({polar_pmd.SettingType.SAMPLE_RATE: [25, 50, 100, 200],
                                        polar_pmd.SettingType.RESOLUTION: 16,
                                        polar_pmd.SettingType.RANGE: [2, 4, 8]})
    r = polar_pmd.decode_control_response(polar_pmd.encode_control_response(1, 2, 0, params))
    assert r.ok and r.settings[polar_pmd.SettingType.SAMPLE_RATE] == (25, 50, 100, 200)
    start = polar_pmd.decode_control_response(polar_pmd.encode_control_response(
        2, 2, 0, polar_pmd.encode_settings({polar_pmd.SettingType.FACTOR: 0.5})))
    assert start.settings[polar_pmd.SettingType.FACTOR] == (0.5,)
    bad = polar_pmd.decode_control_response(bytes([0xF0, 2, 2, 10, 0]))
    with pytest.raises(ControlPointError, match="INVALID_MTU"):
        bad.raise_for_status()
    feats = polar_pmd.encode_features([polar_pmd.MeasurementType.ECG, polar_pmd.MeasurementType.ACC])
    assert feats[:2] == bytes([0x0F, 0b101])
    assert polar_pmd.decode_features(feats) == {0, 2}
    with pytest.raises(MalformedPacketError):
        polar_pmd.decode_control_response(bytes([0x0F, 5, 0]))   # a READ result is not a response


def test_polar_delta_spec_example():
    body = bytes.fromhex("D0FF6501E40F") + bytes([8, 1]) + bytes.fromhex("FC07FF")
    assert polar_pmd.decode_delta_samples(body).tolist() == [[-48, 357, 4068], [-52, 364, 4067]]


@given(st.integers(1, 40).flatmap(lambda n: arrays(np.int64, (n, 3), elements=st.integers(-32768, 32767))),
       st.integers(0, 2**63 - 1), st.integers(1, 255))
@FUZZ
def test_polar_delta_roundtrip(samples, ts, block):
    b = polar_pmd.encode_frame(samples, ts, compressed=True, block_samples=block)
    f = polar_pmd.decode_frame(b)
    assert f.compressed and f.timestamp_ns == ts and f.measurement_type == 2
    assert np.array_equal(f.samples, samples)


@given(st.sampled_from([0, 1, 2]), st.integers(1, 20), st.data())
@FUZZ
def test_polar_raw_roundtrip(ftype, n, data):
    lim = 1 << (8 * (ftype + 1) - 1)
    s = data.draw(arrays(np.int64, (n, 3), elements=st.integers(-lim, lim - 1)))
    f = polar_pmd.decode_frame(polar_pmd.encode_frame(s, 123, frame_type=ftype))
    assert f.frame_type == ftype and not f.compressed and np.array_equal(f.samples, s)


@given(st.binary(max_size=300))
@FUZZ
def test_polar_fuzz_only_malformed(b):
    proto = PolarPmd(52.0)
    try:
        proto.decode(b)
    except MalformedPacketError as e:
        assert e.protocol == "polar_pmd"
    for fn in (polar_pmd.decode_settings, polar_pmd.decode_control_response, polar_pmd.decode_control_request,
               polar_pmd.decode_features):
        try:
            fn(b)
        except MalformedPacketError:
            pass


def test_polar_decode_units_and_timestamp_rule():
    s = np.array([[0, 0, 1000], [10, -20, 8000], [0, 0, 999]])
    (p,) = PolarPmd(200.0, range_g=8).decode(polar_pmd.encode_frame(s, 5_000_000_000))
    assert p.tick == 5_000_000_000 and p.tick_is_last and p.seq is None
    assert p.acc_ms2[0, 2] == pytest.approx(9.80665)
    assert p.clipped.tolist() == [False, True, False]
    (p2,) = PolarPmd(200.0, factor=0.5).decode(polar_pmd.encode_frame(s, 1))
    assert p2.acc_ms2[0, 2] == pytest.approx(9.80665 / 2)
    with pytest.raises(MalformedPacketError, match="not ACC"):
        PolarPmd().decode(polar_pmd.encode_frame(s, 1, measurement_type=polar_pmd.MeasurementType.GYRO))
    with pytest.raises(MalformedPacketError, match="delta block"):
        PolarPmd().decode(polar_pmd.encode_frame(s, 1, compressed=True)[:-1])


# ------------------------------------------------------------------------------------------- RSC
@given(speed=st.integers(0, 65535), cad=st.integers(0, 255), stride=st.one_of(st.none(), st.integers(0, 65535)),
       dist=st.one_of(st.none(), st.integers(0, 2**32 - 1)), running=st.booleans())
@FUZZ
def test_rsc_roundtrip(speed, cad, stride, dist, running):
    b = rsc.encode_measurement(speed / 256, cad, None if stride is None else stride / 100,
                               None if dist is None else dist / 10, running)
    flags, sp, c, sl, td = rsc.decode_measurement(b)
    assert sp == speed / 256 and c == cad and bool(flags & 4) == running
    assert sl == (None if stride is None else stride / 100)
    assert td == (None if dist is None else pytest.approx(dist / 10))


def test_rsc_reference_layout_and_cadence_conventions():
    # flags 0x07: stride + distance + running; 3.3 m/s, 88/min, 1.12 m, 1234.5 m
    b = bytes([0x07]) + struct.pack("<H", round(3.3 * 256)) + bytes([88]) + struct.pack("<HI", 112, 12345)
    (m,) = Rsc("strides").decode(b)
    assert isinstance(m, MetricsPacket)
    assert m.speed_ms == pytest.approx(3.3, abs=1 / 256) and m.cadence_spm == 176 and m.cadence_raw_per_min == 88
    assert m.stride_length_m == 1.12 and m.total_distance_m == 1234.5 and m.is_running
    assert Rsc("steps").decode(b)[0].cadence_spm == 88
    auto = Rsc()
    assert auto.decode(rsc.encode_measurement(1.2, 55, running=False))[0].cadence_spm == 55   # undecided walk
    assert auto.decode(b)[0].cadence_spm == 176 and auto.convention_ == "strides"
    assert auto.decode(rsc.encode_measurement(1.2, 55, running=False))[0].cadence_spm == 110  # sticky
    auto2 = Rsc()
    assert auto2.decode(rsc.encode_measurement(3.0, 172, running=True))[0].cadence_spm == 172
    assert auto2.convention_ == "steps"
    with pytest.raises(MalformedPacketError, match="trailing"):
        Rsc().decode(b + b"\x00")
    with pytest.raises(MalformedPacketError, match="truncated"):
        Rsc().decode(b[:6])
    assert rsc.decode_feature(rsc.encode_feature(0x07)) == rsc.Feature(7)


@given(st.binary(max_size=20))
@FUZZ
def test_rsc_fuzz_only_malformed(b):
    try:
        Rsc().decode(b)
    except MalformedPacketError:
        pass


# ------------------------------------------------------------------------------------------- Movesense / MetaMotion
@given(st.integers(1, 255), st.integers(0, 2**32 - 1),
       st.integers(1, 40).flatmap(lambda n: arrays(np.float32, (n, 3),
                                                   elements=st.floats(-1e4, 1e4, width=32))))
@FUZZ
def test_movesense_roundtrip(ref, ts, acc):
    (p,) = Movesense(104.0, ref=ref).decode(movesense.encode_acc_data(ref, ts, acc))
    assert p.tick == ts and not p.tick_is_last and np.array_equal(p.acc_ms2, acc.astype(np.float64))


def test_movesense_commands_and_results():
    assert movesense.subscribe(0x63, "/Meas/Acc/104") == b"\x01\x63/Meas/Acc/104"
    assert movesense.hello(3) == b"\x00\x03" and movesense.unsubscribe(3) == b"\x02\x03"
    assert movesense.decode_command_result(bytes([1, 9, 0x01, 0xFB])).status == 507   # big-endian (sample)
    assert movesense.decode_command_result(bytes([1, 9, 0xC8, 0x00])).status == 200   # little-endian client
    assert Movesense.for_path("/Meas/Acc/208").sampling_rate_hz == 208
    assert Movesense().decode(movesense.encode_command_result(5, 200)) == []
    with pytest.raises(MalformedPacketError, match="reference"):
        Movesense(ref=1).decode(movesense.encode_acc_data(2, 0, np.zeros((2, 3))))
    with pytest.raises(MalformedPacketError, match="non-finite"):
        Movesense().decode(movesense.encode_acc_data(1, 0, np.full((1, 3), np.nan)))


@given(st.binary(max_size=200))
@FUZZ
def test_movesense_metamotion_fuzz(b):
    for proto in (Movesense(ref=1), MetaMotion()):
        try:
            proto.decode(b)
        except MalformedPacketError:
            pass


def test_metamotion_reference_example_and_packed():
    # x bytes 16 C4 at ±4 g -> -15338 / 8192 = -1.872 g
    (p,) = MetaMotion(100.0, range_g=4).decode(bytes.fromhex("0304") + bytes.fromhex("16C4") + bytes(4))
    assert p.acc_ms2[0, 0] / STANDARD_GRAVITY_MS2 == pytest.approx(-15338 / 8192)
    raw = np.array([[1, 2, 3], [4, 5, 6], [-7, -8, 32767]])
    (pp,) = MetaMotion(800.0).decode(metamotion.encode_acc(raw))
    assert pp.n_samples == 3 and pp.clipped.tolist() == [False, False, True]
    assert np.array_equal(metamotion.decode_acc(metamotion.encode_acc(raw, 0x05)), raw)
    with pytest.raises(MalformedPacketError):
        MetaMotion().decode(bytes([3, 4, 0]))


# ------------------------------------------------------------------------------------------- registry
def test_registry():
    assert protocol_for_services(["0x1814"]) is Rsc
    assert protocol_for_services([polar_pmd.SERVICE_UUID.upper()]) is PolarPmd
    assert protocol_for_services(["180f", "1814", rf.SERVICE_UUID]) is RunformV1   # raw wins over coarse
    assert protocol_for_services([movesense.SERVICE_UUID]) is Movesense
    assert protocol_for_services([metamotion.SERVICE_UUID]) is MetaMotion
    with pytest.raises(UnknownProtocolError):
        protocol_for_services(["180d"])
    with pytest.raises(UnknownProtocolError):
        get_protocol("nope")
    for proto in (RunformV1(), PolarPmd(52.0, model="Verity Sense"), Rsc("strides"), Movesense(208.0, ref=4),
                  MetaMotion(400.0, 8)):
        again = protocol_from_metadata(proto.to_metadata())
        assert type(again) is type(proto) and again.to_metadata() == proto.to_metadata()
        assert proto.kind == proto.to_metadata()["kind"]


# ------------------------------------------------------------------------------------------- every decoder
_MODULES = (rf, polar_pmd, rsc, movesense, metamotion)
_DECODE_FUNCS = [(m.__name__.rsplit(".", 1)[-1], name, getattr(m, name)) for m in _MODULES for name in dir(m)
                 if name.startswith("decode") and callable(getattr(m, name))]


def test_every_decoder_is_fuzzed_below():
    # the list is found by introspection, so a decode_* function added later is fuzzed without editing this file
    names = {f"{mod}.{name}" for mod, name, _ in _DECODE_FUNCS}
    assert {"runform_v1.decode_battery_level", "rsc.decode_feature", "movesense.decode_command_result",
            "polar_pmd.decode_delta_samples", "metamotion.decode_acc"} <= names
    assert len(names) >= 16


@given(st.binary(max_size=300), st.data())
@FUZZ
def test_every_decode_function_raises_only_malformed(b, data):
    mod, name, fn = data.draw(st.sampled_from(_DECODE_FUNCS), label="decoder")
    try:
        fn(b)
    except MalformedPacketError as e:
        assert e.reason, (mod, name)


@given(st.lists(st.binary(max_size=260), max_size=30), st.sampled_from(["runform", "polar", "rsc", "movesense",
                                                                        "metamotion"]))
@example([b"\x01\x00\x00\x00"], "movesense")  # a well-formed GSP command result: no samples, still counted
@FUZZ
def test_sensor_decoder_feed_never_raises_and_counts(packets, kind):
    """The live chain (decode -> accounting -> clock): garbage is counted as malformed, never raised; every
    packet is counted once (received, duplicate, malformed, or well-formed without samples)."""
    from runform.firmware_bridge import SensorDecoder
    proto = {"runform": lambda: RunformV1(rf.SensorConfig(gyro_enabled=True)), "polar": lambda: PolarPmd(52.0),
             "rsc": lambda: Rsc(), "movesense": lambda: Movesense(104.0, ref=1),
             "metamotion": lambda: MetaMotion(100.0)}[kind]()
    dec = SensorDecoder(proto, sensor_id="fuzz")
    for i, p in enumerate(packets):
        dec.feed(p, 10**12 + i * 20_000_000)
    s = dec.stats()
    assert s.malformed + s.received + s.duplicates + s.no_data == len(packets)

"""The hex examples of docs/sensor-protocol.md decode (and re-encode) exactly as documented."""
import json
import pathlib
import re

import numpy as np
import pytest

from runform.firmware_bridge.protocols import polar_pmd, runform_v1 as rf

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sensor-protocol.md"


def _examples():
    text = DOC.read_text()
    out = []
    for block in re.findall(r"```example\n(.*?)```", text, re.S):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines())
        out.append(pytest.param(fields["kind"], bytes.fromhex(fields["hex"]), json.loads(fields["expect"]),
                                id=fields["name"]))
    return out


EXAMPLES = _examples()


def test_doc_has_examples_of_every_kind():
    kinds = {p.values[0] for p in EXAMPLES}
    assert {"data", "config", "control_request", "control_response", "polar_frame"} <= kinds
    assert len(EXAMPLES) >= 10


def test_doc_uuids_match_code():
    text = DOC.read_text()
    for u in (rf.SERVICE_UUID, rf.DATA_UUID, rf.CONTROL_UUID, rf.CONFIG_UUID):
        assert u in text


def test_doc_samples_per_packet_table_matches_code():
    text = DOC.read_text()
    rows = re.findall(r"^\| (\d+)[^|]*\| (\d+) B \| (\d+) \| (\d+) \|$", text, re.M)
    assert len(rows) == 4
    for mtu, payload, acc, gyr in rows:
        assert min(int(mtu) - 3, 512) == int(payload)
        assert rf.max_samples_per_packet(int(mtu), gyro=False) == int(acc)
        assert rf.max_samples_per_packet(int(mtu), gyro=True) == int(gyr)


@pytest.mark.parametrize("kind,raw,expect", EXAMPLES)
def test_doc_example(kind, raw, expect):
    if kind == "data":
        p = rf.decode_data_packet(raw)
        got = {"version": p.version, "flags": p.flags, "seq": p.seq, "first_tick": p.first_tick,
               "acc_raw": p.acc_raw.tolist(), "gyr_raw": None if p.gyr_raw is None else p.gyr_raw.tolist()}
        assert got == expect
        again = rf.encode_data_packet(p.seq, p.first_tick, p.acc_raw, p.gyr_raw,
                                      config_mark=bool(p.flags & rf.Flags.CONFIG_MARK))
        assert again == raw
    elif kind == "config":
        c = rf.decode_config(raw)
        got = c.to_dict()
        assert got == expect
        assert rf.encode_config(c) == raw
    elif kind == "control_request":
        r = rf.decode_control_request(raw)
        assert {"opcode": r.opcode, "value": r.value} == expect
        assert rf.encode_control_request(r.opcode, r.value) == raw
    elif kind == "control_response":
        r = rf.decode_control_response(raw)
        got = {"opcode": r.opcode, "result": r.result, "params": r.params.hex()}
        if "settings" in expect:
            s = r.settings
            got["settings"] = {"sampling_rate_hz": s.sampling_rate_hz, "acc_range_g": s.acc_range_g,
                               "gyro_enabled": s.gyro_enabled}
        assert got == expect
        assert rf.encode_control_response(r.opcode, r.result, r.params) == raw
    elif kind == "polar_frame":
        f = polar_pmd.decode_frame(raw)
        got = {"measurement_type": f.measurement_type, "timestamp_ns": f.timestamp_ns, "frame_type": f.frame_type,
               "compressed": f.compressed, "samples": f.samples.tolist()}
        assert got == expect
        # our encoder picks the narrowest delta width, so compare by value, not bytes
        re_enc = polar_pmd.encode_frame(np.array(expect["samples"]), expect["timestamp_ns"], compressed=True)
        assert polar_pmd.decode_frame(re_enc).samples.tolist() == expect["samples"]
    else:
        pytest.fail(f"unknown example kind {kind}")

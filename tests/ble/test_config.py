"""Bridge configuration: --sensor options and TOML files."""
from __future__ import annotations

import pytest

from runform.firmware_bridge.ble import BridgeConfigError, load_bridge_config, parse_sensor_option


def test_sensor_option_parsing():
    s = parse_sensor_option("f0:52:46:00:00:01=foot_left@alice")
    assert (s.address, s.site, s.runner, s.sensor_id) == ("F0:52:46:00:00:01", "foot_left", "alice", "alice.foot_left")
    assert parse_sensor_option("name:RF-0001=sacrum").name == "RF-0001"
    for bad in ("F0:52:46:00:00:01", "F0:52=foot_left", "F0:52:46:00:00:01=elbow"):
        with pytest.raises(BridgeConfigError):
            parse_sensor_option(bad)


def test_bridge_toml(tmp_path):
    f = tmp_path / "bridge.toml"
    f.write_text('adapter = "hci0"\n[[sensor]]\naddress = "F0:52:46:00:00:01"\nrunner = "alice"\nsite = "foot_left"\n'
                 '[[sensor]]\nname = "RF-9"\nrunner = "bob"\nsite = "sacrum"\nsampling_rate_hz = 500\n')
    specs, opts = load_bridge_config(f)
    assert [s.sensor_id for s in specs] == ["alice.foot_left", "bob.sacrum"]
    assert specs[1].sampling_rate_hz == 500 and opts == {"adapter": "hci0"}
    f.write_text('[[sensor]]\naddress = "F0:52:46:00:00:01"\nsite = "foot_left"\n'
                 '[[sensor]]\naddress = "F0:52:46:00:00:02"\nsite = "foot_left"\n')
    with pytest.raises(BridgeConfigError, match="duplicate"):
        load_bridge_config(f)
    f.write_text('[[sensor]]\naddress = "F0:52:46:00:00:01"\nsite = "foot_left"\ncolour = 1\n')
    with pytest.raises(BridgeConfigError, match="unknown keys"):
        load_bridge_config(f)

"""Sensor protocols: pure decoders (bytes -> samples + packet metadata) and encoders for emulated sensors."""

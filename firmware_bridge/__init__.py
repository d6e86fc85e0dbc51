"""runform.firmware_bridge: sensor protocols, BLE connections, timestamping, virtual sensors, file sources."""

"""BLE fixtures: ``emulator`` (one private D-Bus + bluezoo per test session) and ``sensors`` (virtual sensors per
test) live in tests/conftest.py, shared with the edge's BLE end-to-end test in tests/server."""

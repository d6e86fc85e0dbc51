"""Exception tree of the MQTT contract (fields, not just messages)."""
from __future__ import annotations


class MqttContractError(ValueError):
    """Root of every contract violation (bad topic, bad payload)."""


class TopicError(MqttContractError):
    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(message)
        self.topic = topic


class PayloadError(MqttContractError):
    """A payload failed decoding or validation. ``schema`` names the expected schema, ``field`` the JSON path."""

    def __init__(self, message: str, *, schema: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.schema = schema
        self.field = field
        self.reason = message

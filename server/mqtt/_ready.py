"""Connected *and* subscribed: when a paho client can count on receiving what is published to its topics.

CONNACK alone is not enough: a message published between CONNACK and the broker's SUBACK is not delivered to the
new subscription (it was never retained or queued for it). Every runform client that subscribes (the edge's link
for its control topics, the ingest, the API's live hub) tracks its SUBACKs with :class:`SubscriptionState` and
says it is ready only once the broker acknowledged every subscription of the current connection.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)


class SubscriptionState:
    """SUBACK bookkeeping of one paho client (all calls from paho's callbacks, i.e. one thread).

    ``subscribe(client, subs)`` from ``on_connect``; ``on_subscribe(mid, reason_codes)`` from paho's
    ``on_subscribe``; ``lost()`` from ``on_disconnect``. ``ready`` is set once every subscription of the current
    connection was granted; a refused one is kept in ``refused`` (and ``ready`` stays clear)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = threading.Event()
        self.refused: str | None = None
        self._mids: set[int] = set()

    def subscribe(self, client, subscriptions: Iterable[tuple[str, int]]) -> None:
        self.ready.clear()
        self.refused = None
        mids = set()
        for topic_filter, qos in subscriptions:
            _, mid = client.subscribe(topic_filter, qos=qos)
            mids.add(mid)
        self._mids = mids
        if not mids:
            self.ready.set()

    def on_subscribe(self, mid: int, reason_codes) -> None:
        if mid not in self._mids:
            return  # a subscription of an earlier connection, or one made outside this bookkeeping
        self._mids.discard(mid)
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            self.refused = f"subscription refused: {failed[0]}"
            log.error("%s: broker refused a subscription: %s", self.name, failed[0])
        if not self._mids and self.refused is None:
            self.ready.set()

    def lost(self) -> None:
        self.ready.clear()
        self._mids = set()

    def wait(self, timeout_s: float) -> bool:
        return self.ready.wait(timeout_s)

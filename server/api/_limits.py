"""Request bounds: body size (413) and request rate (429 with Retry-After), as plain ASGI middleware."""
from __future__ import annotations

import collections
import math
import threading
import time
from typing import Callable

from ._errors import ApiError, error_response

__all__ = ["TokenBucketLimiter", "BodyLimitMiddleware", "RateLimitMiddleware", "client_ip"]


class TokenBucketLimiter:
    """Token buckets per key (``rate_per_s`` refill, ``burst`` capacity) in a bounded LRU of ``max_keys``.

    :meth:`hit` returns 0.0 if allowed, else the seconds until one token is available.
    """

    def __init__(self, rate_per_s: float, burst: float, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = int(max_keys)
        self.clock = clock
        self._b: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.refused = 0

    def hit(self, key: str, cost: float = 1.0) -> float:
        now = self.clock()
        with self._lock:
            tokens, t = self._b.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - t) * self.rate_per_s)
            if tokens >= cost:
                self._b[key] = (tokens - cost, now)
                wait = 0.0
            else:
                self._b[key] = (tokens, now)
                wait = (cost - tokens) / self.rate_per_s
                self.refused += 1
            while len(self._b) > self.max_keys:
                self._b.popitem(last=False)
        return wait


def client_ip(scope) -> str:
    c = scope.get("client")
    return c[0] if c else "unknown"


def _credential_key(scope) -> str | None:
    import hashlib
    for k, v in scope.get("headers", ()):
        if k == b"authorization" and v[:7].lower() == b"bearer ":
            return "t:" + hashlib.sha256(v[7:].strip()).hexdigest()[:32]
        if k == b"cookie" and b"rf_session=" in v:
            for part in v.split(b";"):
                part = part.strip()
                if part.startswith(b"rf_session="):
                    return "c:" + hashlib.sha256(part[11:]).hexdigest()[:32]
    return None


class RateLimitMiddleware:
    """Two buckets per request: the client IP and (if presented) the credential; HTTP and WebSocket handshakes.

    Requests to ``exempt_prefixes`` (static files) are not counted.
    """

    def __init__(self, app, *, per_ip: TokenBucketLimiter, per_credential: TokenBucketLimiter,
                 exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.per_ip = per_ip
        self.per_credential = per_credential
        self.exempt = exempt_prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope.get("path", "").startswith(self.exempt or ("\0",)):
            return await self.app(scope, receive, send)
        wait = self.per_ip.hit(client_ip(scope))
        cred = _credential_key(scope)
        if not wait and cred is not None:
            wait = self.per_credential.hit(cred)
        if wait:
            retry = str(max(1, math.ceil(wait)))
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
                return
            resp = error_response(429, "rate_limited", f"too many requests; retry after {retry} s",
                                  {"Retry-After": retry})
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


class _TooLarge(ApiError):
    """Raised from ``receive`` while the app reads the body: the app's ApiError handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"request body larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` with 413, by Content-Length or by counting a streamed body."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        too_large = error_response(413, "payload_too_large", f"request body larger than {limit} bytes")
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    if int(v) > limit:
                        return await too_large(scope, receive, send)
                except ValueError:
                    return await error_response(400, "bad_request", "invalid Content-Length")(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await too_large(scope, receive, send)

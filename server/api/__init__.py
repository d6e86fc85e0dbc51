"""runform.server.api: the HTTP/WebSocket API (Starlette on uvicorn). See docs/api.md and docs/security.md."""
from ._app import (API_PREFIX, CSRF_COOKIE, CSRF_HEADER, ROUTES, SESSION_COOKIE, ApiConfig, create_app,
                   openapi_document)
from ._errors import ApiError
from ._limits import BodyLimitMiddleware, RateLimitMiddleware, TokenBucketLimiter
from ._live import LIVE_KINDS, RAW_FRAME_MAGIC, LiveClient, LiveHub

__all__ = ["API_PREFIX", "CSRF_COOKIE", "CSRF_HEADER", "ROUTES", "SESSION_COOKIE", "ApiConfig", "create_app",
           "openapi_document", "ApiError", "BodyLimitMiddleware", "RateLimitMiddleware", "TokenBucketLimiter",
           "LIVE_KINDS", "RAW_FRAME_MAGIC", "LiveClient", "LiveHub"]

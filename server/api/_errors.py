"""JSON errors: every failure is ``{"error": {"code": ..., "message": ...}}`` with a fitting HTTP status."""
from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_response", "exception_handlers"]

log = logging.getLogger("runform.api")

_DEFAULT_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
                  422: "invalid_request", 429: "rate_limited", 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """Raise from a handler: ``ApiError(404, "not_found", "no session 'x'")``."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    h = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=h)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = _DEFAULT_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error (logged on the server)")


exception_handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _unhandled}

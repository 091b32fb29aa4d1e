"""Every refusal as OpenAI's error envelope, ``{"error": {"message", "type", "param", "code"}}``, in one line.

The SDK raises it as the ``openai`` exception of its status (``BadRequestError``
for 400, ``AuthenticationError`` for 401, ``RateLimitError`` for 429, ...)
with ``.body`` the inner object, so ``exc.body["message"]`` is our line.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import VidcoreError
from .limits import BodyTooLarge, too_large
from .store import QueueFull, StoreUnavailable

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}
    return JSONResponse(status_code=status, content={"error": body}, headers=headers)


def check_key(request: Request, key: str | None) -> None:
    """``Authorization: Bearer KEY``, compared in constant time; nothing is checked when no key is set."""
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "missing or wrong API key; send the header Authorization: Bearer KEY",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def install(app: FastAPI, max_body_bytes: int) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(429, str(exc), code="queue_full", headers={"Retry-After": "10"})

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(503, str(exc), code="store_unavailable", headers={"Retry-After": "5"})

    @app.exception_handler(VidcoreError)
    async def invalid(request: Request, exc: VidcoreError) -> JSONResponse:
        return error_response(400, str(exc), code="invalid_request")

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return too_large(max_body_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return error_response(400, f"{where or 'request'}: {first.get('msg', 'is not valid')}", param=where or None)

"""Refuse request bodies over the limit (HTTP 413), whether they say their length or stream it."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

Scope = dict[str, Any]


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit; the app answers 413."""


def too_large(limit: int) -> JSONResponse:
    return JSONResponse(status_code=413, content={"error": {
        "message": f"the request body is larger than this server takes ({limit // 2**20} MiB); send a smaller "
                   "input_reference", "type": "invalid_request_error", "param": None, "code": "request_too_large"}})


class BodyLimit:
    """ASGI middleware: a declared ``Content-Length`` over ``max_bytes`` is refused before the body is read."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)

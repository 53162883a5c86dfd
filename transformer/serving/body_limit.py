"""Refuse a request body larger than the server's limit before reading it in full.

FastAPI reads a whole body before the route can look at it, so a 50 MB body would be received,
held and parsed just to be refused. This ASGI middleware answers 413 instead:
- at once, from the Content-Length header, without reading a byte of the body;
- for a body sent without a length (chunked), as soon as the bytes received pass the limit, so at
  most `max_body_bytes` are ever held; a body within the limit is handed on to the app unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None:
            if length > self.max_body_bytes:
                await self._refuse(send, f"{length} bytes")
                return
            await self.app(scope, receive, send)
            return
        # No length given: read up to the limit, then replay what was read to the app.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client left; the app will see the disconnect
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                await self._refuse(send, f"more than {self.max_body_bytes} bytes")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: str) -> None:
        body = json.dumps(
            {
                "error": f"the request body is too large ({size}; at most {self.max_body_bytes}): "
                "send fewer sentences per request"
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        # The unread body stays unread: tell the client this connection ends with the answer.
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

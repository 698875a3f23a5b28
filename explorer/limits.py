"""An ASGI wrapper that refuses oversized request bodies before Django spools them to disk."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from .uploads import limit_message

# Multipart framing around the file: headers and boundaries are a few hundred bytes.
MULTIPART_OVERHEAD = 64 * 1024


class BodySizeLimit:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = settings.MAX_UPLOAD_MB * 1024 * 1024 + MULTIPART_OVERHEAD
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, refused
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    # Django treats a disconnect as an aborted request and stores nothing.
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, send)
        if refused:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"error": limit_message()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})

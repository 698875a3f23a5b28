"""The ASGI route of remote live captures: `/api/live/<name>`, answered below Django.

A live stream's body has no end known in advance, so it is read as the bytes arrive
(explorer/live/remote.py) rather than by a Django view, which sees a body only once it is
whole. The server is taught to deliver such a body while it is still arriving: otherwise it
keeps the whole request until its end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from django.db import DatabaseError

from .. import access, quotas
from ..authentication import token_of
from ..tokens import user_for_token
from .remote import receive_stream

PREFIX = "/api/live/"
NAME = r"[A-Za-z0-9._-]{1,100}"
STREAM_PATH = re.compile(rf"/api/live/(?P<name>{NAME})/?")


def streams_live(method: bytes, path: bytes) -> bool:
    """Tell whether a request's body is a live stream, delivered as it arrives."""
    return method in (b"PUT", b"POST") and path.startswith(PREFIX.encode())


async def requester(scope: dict[str, Any]) -> Any | None:
    """Return the user of the request's API token, or None; raise DatabaseError."""
    headers = dict(scope.get("headers", []))
    key = token_of(headers.get(b"authorization", b"").decode("latin-1"))
    return await user_for_token(key) if key is not None else None


async def answer(send: Any, status: int, body: Mapping[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    # The sender may still be sending: ending the connection ends its upload too.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class LiveStreamRoute:
    """ASGI middleware: answer `/api/live/<name>` itself; pass every other request on.

    `/api/live/` itself, the list of live captures, is the API's: explorer/api/live.py, which
    also documents this route in the API's schema.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX) or scope["path"] == PREFIX:
            await self.app(scope, receive, send)
            return
        match = STREAM_PATH.fullmatch(scope["path"])
        if match is None:
            message = "a live stream's name is 1-100 letters, digits, dots, dashes or underscores"
            await answer(send, 404, {"error": message})
            return
        if scope["method"] not in ("PUT", "POST"):
            await answer(send, 405, {"error": "send the capture stream with PUT"})
            return
        user = await self.token_user(scope, send)
        if user is None:
            return
        refusal = (await quotas.allowance(user)).refusal(0)
        if refusal is not None:
            await answer(send, 413, {"error": refusal})
            return
        # ?team=NAME: the members of one of the sender's teams watch it too.
        query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
        try:
            team = await access.team_of(user, query.get("team", [""])[0])
        except access.NotInTeam as error:
            await answer(send, 400, {"error": error.message})
            return
        status, body = await receive_stream(match["name"], user, receive, team)
        await answer(send, status, body)

    async def token_user(self, scope: dict[str, Any], send: Any) -> Any | None:
        """Return the user who may stream, or answer 401 (or 503) and return None."""
        try:
            user = await requester(scope)
        except DatabaseError:
            await answer(send, 503, {"error": "the database is unavailable: try again later"})
            return None
        if not access.may_stream(user):
            await answer(send, 401, {"error": "send an API token: Authorization: Token <key>"})
            return None
        return user


def stream_bodies_as_they_arrive() -> None:
    """Make daphne hand live-stream request bodies to the application chunk by chunk as they arrive.

    Twisted keeps a request's body until its end and only then lets daphne start the
    application; for `/api/live/` the application is started once the headers are in, and every
    chunk is passed on as it comes (`more_body` until the end).
    """
    from daphne.http_protocol import WebRequest

    got_length = WebRequest.gotLength
    handle_content_chunk = WebRequest.handleContentChunk
    request_received = WebRequest.requestReceived
    finish = WebRequest.finish

    def gotLength(self: Any, length: int | None) -> None:  # noqa: N802 - Twisted's name
        got_length(self, length)
        channel = self.channel
        command, path = getattr(channel, "_command", b""), getattr(channel, "_path", b"")
        self.streams_live = streams_live(command, path)
        if not self.streams_live:
            return
        # What Twisted sets when the whole request is in, needed to start the application.
        self.method, self.uri, self.clientproto = command, path, channel._version
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.process()
        queue = self.application_queue
        if queue is not None and not queue.empty():
            # daphne queued the (empty) body it had so far as the whole body: the real one follows.
            queue.get_nowait()

    def handleContentChunk(self: Any, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if not getattr(self, "streams_live", False):
            handle_content_chunk(self, data)
            return
        if self.application_queue is not None and not self.finished:
            self.application_queue.put_nowait({"type": "http.request", "body": data, "more_body": True})

    def requestReceived(self: Any, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if not getattr(self, "streams_live", False):
            request_received(self, command, path, version)
            return
        self.body_complete = True
        if self.application_queue is not None and not self.finished:
            self.application_queue.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    def finish_then_close(self: Any) -> None:
        # Twisted lets go of the channel when the request finishes: take its transport first.
        transport = getattr(getattr(self, "channel", None), "transport", None)
        finish(self)
        if getattr(self, "streams_live", False) and not getattr(self, "body_complete", False):
            # Answered before the sender finished (stopped, refused): end its upload too.
            if transport is not None:
                transport.loseConnection()

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.requestReceived = requestReceived
    WebRequest.finish = finish_then_close

"""Remote live captures: `PUT /api/live/<name>` with a pcap or pcapng stream as the body.

The body has no end known in advance (`tcpdump -U -w - | curl -T - ...`), so it is read here as
the bytes arrive, below Django, and handed to a Recording. The server is taught to deliver
such a body while it is still arriving: otherwise it keeps the whole request until its end.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any, NotRequired
from urllib.parse import parse_qs

from django.contrib.auth.models import Group
from django.db import DatabaseError

# The API's schema documents StreamResult: pydantic refuses typing's TypedDict before Python 3.12.
from typing_extensions import TypedDict

from . import livecapture, quotas
from .authentication import token_of
from .engine import dumpcap
from .models import LiveCapture
from .tokens import user_for_token

PREFIX = "/api/live/"
NAME = r"[A-Za-z0-9._-]{1,100}"
STREAM_PATH = re.compile(rf"/api/live/(?P<name>{NAME})/?")


class StreamResult(TypedDict):
    """The answer once the stream has ended: the live capture, and the capture stored of it."""

    live_capture: int
    state: str
    message: str
    packets: int
    capture: NotRequired[int]
    url: NotRequired[str]


def streams_live(method: bytes, path: bytes) -> bool:
    """Tell whether a request's body is a live stream, delivered as it arrives."""
    return method in (b"PUT", b"POST") and path.startswith(PREFIX.encode())


async def _answer(send: Any, status: int, body: Mapping[str, Any]) -> None:
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
            await _answer(send, 404, {"error": message})
            return
        if scope["method"] not in ("PUT", "POST"):
            await _answer(send, 405, {"error": "send the capture stream with PUT"})
            return
        user = await self.token_user(scope, send)
        if user is None:
            return
        refusal = (await quotas.allowance(user)).refusal(0)
        if refusal is not None:
            await _answer(send, 413, {"error": refusal})
            return
        # ?team=NAME: the members of one of the sender's teams watch it too.
        query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
        try:
            team = await livecapture.team_of(user, query.get("team", [""])[0])
        except dumpcap.CaptureRefused as error:
            await _answer(send, 400, {"error": error.message})
            return
        status, body = await receive_stream(match["name"], user, receive, team)
        await _answer(send, status, body)

    async def token_user(self, scope: dict[str, Any], send: Any) -> Any | None:
        """Return the user of the request's API token, or answer 401 (or 503) and return None."""
        headers = dict(scope.get("headers", []))
        key = token_of(headers.get(b"authorization", b"").decode("latin-1"))
        try:
            user = await user_for_token(key) if key is not None else None
        except DatabaseError:
            await _answer(send, 503, {"error": "the database is unavailable: try again later"})
            return None
        if user is None:
            await _answer(send, 401, {"error": "send an API token: Authorization: Token <key>"})
        return user


async def receive_stream(
    name: str, user: Any, receive: Any, team: Group | None = None
) -> tuple[int, StreamResult | dict[str, str]]:
    """Record the request body as a live capture until it ends; return the answer's status and body."""
    # The first bytes say whether this is a capture at all, before anything is created.
    first = b""
    more = True
    while len(first) < 24 and more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return 400, {"error": "the stream ended before its capture file header"}
        first += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        # The file header only: a damaged packet further on ends the capture, kept until there.
        header = livecapture.PacketStream()
        header.feed(first[:24])
        if header.damage is not None:
            raise header.damage
    except livecapture.NotAStream as error:
        return 400, {"error": error.message}
    live = await LiveCapture.objects.acreate(
        owner=user, name=name, source=LiveCapture.Source.STREAM, team=team
    )
    recording = livecapture.Recording(live)
    await recording.start()
    reason = "the stream ended"
    try:
        await recording.feed(first)
        stopper = asyncio.create_task(recording.stop_requested.wait())
        while more:
            received = asyncio.create_task(receive())
            await asyncio.wait({received, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not received.done():
                received.cancel()
                break
            message = received.result()
            if message["type"] == "http.disconnect":
                reason = "the sender disconnected"
                break
            await recording.feed(message.get("body", b""))
            more = message.get("more_body", False)
        stopper.cancel()
    except livecapture.NotAStream as error:
        reason = error.message
    live = await recording.finish(reason)
    body: StreamResult = {
        "live_capture": live.pk,
        "state": live.state,
        "message": live.message,
        "packets": recording.stream.packets,
    }
    if live.capture_id is not None:
        body["capture"] = live.capture_id
        body["url"] = f"/captures/{live.capture_id}/"
    return (200 if live.state == LiveCapture.State.STORED else 422), body


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

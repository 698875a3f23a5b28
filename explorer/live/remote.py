"""Remote live captures: a pcap or pcapng stream sent by another machine, recorded as it arrives.

The stream is the body of `PUT /api/live/<name>` (`tcpdump -U -w - | curl -T - ...`), read
chunk by chunk as the ASGI server delivers it (explorer/live/route.py): it has no end known in
advance. Stopping the capture in the browser ends the upload; a dropped connection keeps every
whole packet received.
"""

from __future__ import annotations

import asyncio
from typing import Any, NotRequired

from django.contrib.auth.models import Group

# The API's schema documents StreamResult: pydantic refuses typing's TypedDict before Python 3.12.
from typing_extensions import TypedDict

from ..models import LiveCapture
from .framing import PCAP_HEADER, NotAStream, check_file_header
from .recording import Recording


class StreamResult(TypedDict):
    """The answer once the stream has ended: the live capture, and the capture stored of it."""

    live_capture: int
    state: str
    message: str
    packets: int
    capture: NotRequired[int]
    url: NotRequired[str]


async def receive_stream(
    name: str, user: Any, receive: Any, team: Group | None = None
) -> tuple[int, StreamResult | dict[str, str]]:
    """Record an ASGI request body as a live capture until it ends; return the answer's status and body.

    The caller has checked that the user may send it (explorer/access.py `may_stream`, and
    their quotas) and that they are in the team.
    """
    # The first bytes say whether this is a capture at all, before anything is created.
    first = b""
    more = True
    while len(first) < PCAP_HEADER and more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return 400, {"error": "the stream ended before its capture file header"}
        first += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        check_file_header(first)
    except NotAStream as error:
        return 400, {"error": error.message}
    live = await LiveCapture.objects.acreate(
        owner=user, name=name, source=LiveCapture.Source.STREAM, team=team
    )
    recording = Recording(live)
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
    except NotAStream as error:
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

"""What crosses the channel layer for viewers of a stored capture: each message's shape, one sender per kind.

Every viewer's websocket joins the capture's group. Presence goes between the connections of
different server processes (`presence.hello`, `presence.here`, `presence.bye`); changes to the
capture's annotations and marks go from the API to every connection (`live.event`), which
passes the event inside on to its page as it is (static/explorer/capture.js reads them).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal, NotRequired, TypedDict

from channels.layers import get_channel_layer

from .. import marks
from ..models import Capture

log = logging.getLogger(__name__)

# This process, in presence messages: its own connections learn of each other directly.
PROCESS = uuid.uuid4().hex


class Viewer(TypedDict):
    id: str
    name: str


class Hello(TypedDict):
    """A new connection, to the group: every other process answers with its viewers."""

    type: Literal["presence.hello"]
    viewer: Viewer
    reply_to: str
    process: str


class Bye(TypedDict):
    type: Literal["presence.bye"]
    viewer: Viewer
    reply_to: str
    process: str


class Here(TypedDict):
    """The viewers of one process: answering a hello, or repeated to the group now and then."""

    type: Literal["presence.here"]
    viewers: list[Viewer]
    process: NotRequired[str]  # when repeated to the group
    viewer: NotRequired[Viewer]  # one viewer alone, from a server of the release before


class PresenceList(TypedDict):
    """To the page: everyone looking at the capture, the page's own viewer among them."""

    type: Literal["presence"]
    you: str
    viewers: list[Viewer]


class AnnotationEvent(TypedDict):
    type: Literal["annotation.created", "annotation.updated", "annotation.deleted"]
    annotation: dict[str, Any]  # as the API shows it


class MarksChanged(TypedDict):
    type: Literal["marks.changed"]
    frames: list[int]


CaptureEvent = AnnotationEvent | MarksChanged


class Event(TypedDict):
    """A change of the capture, to the group: each connection passes `event` on to its page."""

    type: Literal["live.event"]
    event: CaptureEvent


def group_name(capture_id: int) -> str:
    return f"capture-{capture_id}"


def _layer() -> Any:
    layer = get_channel_layer()
    assert layer is not None
    return layer


# ---- presence -----------------------------------------------------------------------------------


async def send_hello(group: str, viewer: Viewer, reply_to: str) -> None:
    message: Hello = {"type": "presence.hello", "viewer": viewer, "reply_to": reply_to, "process": PROCESS}
    await _layer().group_send(group, message)


async def send_bye(group: str, viewer: Viewer, reply_to: str) -> None:
    message: Bye = {"type": "presence.bye", "viewer": viewer, "reply_to": reply_to, "process": PROCESS}
    await _layer().group_send(group, message)


async def send_here(viewers: list[Viewer], *, reply_to: str = "", group: str = "") -> None:
    """Tell one new connection (reply_to), or the whole group, who views the capture through this process."""
    if reply_to:
        await _layer().send(reply_to, Here(type="presence.here", viewers=viewers))
    else:
        await _layer().group_send(group, Here(type="presence.here", viewers=viewers, process=PROCESS))


def presence_list(you: str, viewers: list[Viewer]) -> PresenceList:
    return {"type": "presence", "you": you, "viewers": viewers}


# ---- changes of the capture ---------------------------------------------------------------------


async def _publish(capture_id: int, event: CaptureEvent) -> None:
    """Send an event to everyone viewing the capture."""
    layer = get_channel_layer()
    if layer is None:
        return
    message: Event = {"type": "live.event", "event": event}
    try:
        await layer.group_send(group_name(capture_id), message)
    except Exception:
        # The change itself is saved: a channel layer that is down (Redis) must not turn it
        # into an error. Viewers reload the annotations and marks when they reconnect.
        log.warning("could not publish %s for capture %s", event["type"], capture_id, exc_info=True)


async def annotation_created(capture_id: int, annotation: dict[str, Any]) -> None:
    await _publish(capture_id, {"type": "annotation.created", "annotation": annotation})


async def annotation_updated(capture_id: int, annotation: dict[str, Any]) -> None:
    await _publish(capture_id, {"type": "annotation.updated", "annotation": annotation})


async def annotation_deleted(capture_id: int, annotation: dict[str, Any]) -> None:
    await _publish(capture_id, {"type": "annotation.deleted", "annotation": annotation})


async def marks_changed(capture: Capture) -> None:
    """Publish the capture's marked frames after a change."""
    await _publish(capture.pk, {"type": "marks.changed", "frames": await marks.marked(capture)})

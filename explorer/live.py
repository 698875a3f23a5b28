"""Live updates of a capture: who is looking at it, and changes to its annotations and marks.

Every viewer's websocket joins the channel-layer group of its capture. The API functions that
change annotations or marks publish an event to the group, and each connection forwards it.

Presence is kept without any state shared between server processes, so that it works the
same over Redis as in memory. The connections of one process know each other (`_local`); a
new connection says hello to the group, and in every other process one connection answers it
directly with all of that process's viewers. Each connection keeps its own list of viewers,
pushed to its browser once the changes of a moment are gathered (PRESENCE_PUSH_DELAY).
Connections say goodbye when they close, and every PRESENCE_INTERVAL_SECONDS one connection of
each process repeats that process's viewers to the group; a viewer of another process not heard
of for PRESENCE_EXPIRY_INTERVALS of them (its server process died) is dropped. Answering per
process rather than per connection keeps the messages of a team opening a capture at once from
growing with the square of its size.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Literal

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import Http404

from . import marks
from .access import capture_for_scope
from .models import Capture

log = logging.getLogger(__name__)

# A viewer of another process is dropped when unheard of for this many intervals.
PRESENCE_EXPIRY_INTERVALS = 2.5
# Seconds a connection gathers the changes of its list before pushing it: when a team opens a
# capture at once, each of N tabs hears of the N others, and pushing the list at every one of
# them wrote N² lists to the browsers (with 50 tabs, the server did little else for seconds).
PRESENCE_PUSH_DELAY = 0.3
ANONYMOUS = "anonymous link holder"

Event = Literal["annotation.created", "annotation.updated", "annotation.deleted", "marks.changed"]


# This process, in presence messages: its own connections learn of each other directly.
PROCESS = uuid.uuid4().hex
# The presence connections of this process, by capture group and viewer id.
_local: dict[str, dict[str, CaptureLiveConsumer]] = {}


def group_name(capture_id: int) -> str:
    return f"capture-{capture_id}"


async def publish(capture_id: int, event: Event, **payload: Any) -> None:
    """Send an event (JSON-serialisable payload) to everyone viewing the capture."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "live.event", "event": {"type": event, **payload}}
    try:
        await layer.group_send(group_name(capture_id), message)
    except Exception:
        # The change itself is saved: a channel layer that is down (Redis) must not turn it
        # into an error. Viewers reload the annotations and marks when they reconnect.
        log.warning("could not publish %s for capture %s", event, capture_id, exc_info=True)


async def annotation_changed(capture_id: int, event: Event, annotation: dict[str, Any]) -> None:
    """Publish a created, updated or deleted annotation, as the API shows it."""
    await publish(capture_id, event, annotation=annotation)


async def marks_changed(capture: Capture) -> None:
    """Publish the capture's marked frames after a change."""
    await publish(capture.pk, "marks.changed", frames=await marks.marked(capture))


def viewer_name(user: Any) -> str:
    if user is not None and user.is_authenticated:
        return str(user.get_username())
    return ANONYMOUS


class CaptureLiveConsumer(AsyncJsonWebsocketConsumer):
    """Push `presence`, `annotation.*` and `marks.changed` events for one capture."""

    capture: Capture
    group: str = ""
    viewer_id: str = ""
    name: str = ""
    heartbeat: asyncio.Task[None] | None = None
    presence_push: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        try:
            capture_id = int(self.scope["url_route"]["kwargs"]["capture_id"])
            self.capture = await capture_for_scope(self.scope, capture_id)
        except Http404:
            await self.close(code=4404)
            return
        self.group = group_name(self.capture.pk)
        self.viewer_id = uuid.uuid4().hex
        self.name = viewer_name(self.scope.get("user"))
        # viewer id -> (name, when last heard of)
        self.viewers: dict[str, tuple[str, float]] = {self.viewer_id: (self.name, time.monotonic())}
        neighbours = _local.setdefault(self.group, {})
        for neighbour in neighbours.values():
            self.heard(neighbour.me())
            neighbour.heard(self.me())
        neighbours[self.viewer_id] = self
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_presence()
        await self.tell_group("presence.hello")
        self.heartbeat = asyncio.create_task(self.beat())

    async def disconnect(self, code: int) -> None:
        if not self.group:
            return
        for task in (self.heartbeat, self.presence_push):
            if task is not None:
                task.cancel()
        neighbours = _local.get(self.group, {})
        neighbours.pop(self.viewer_id, None)
        for neighbour in neighbours.values():
            neighbour.forget(self.viewer_id)
        if not neighbours:
            _local.pop(self.group, None)
        await self.tell_group("presence.bye")
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Ignore what the page sends: changes go through the API, which checks rights."""

    # ---- presence ---------------------------------------------------------------------------

    def me(self) -> dict[str, str]:
        return {"id": self.viewer_id, "name": self.name}

    async def tell_group(self, kind: str) -> None:
        await self.channel_layer.group_send(
            self.group, {"type": kind, "viewer": self.me(), "reply_to": self.channel_name, "process": PROCESS}
        )

    def speaks_for_process(self) -> bool:
        """Tell whether this connection answers for all the viewers of its process (one does)."""
        neighbours = _local.get(self.group, {})
        return bool(neighbours) and min(neighbours) == self.viewer_id

    def process_viewers(self) -> list[dict[str, str]]:
        return [neighbour.me() for neighbour in _local.get(self.group, {}).values()]

    async def send_presence(self) -> None:
        viewers = sorted(
            ({"id": key, "name": name} for key, (name, _) in self.viewers.items()),
            key=lambda viewer: (viewer["name"], viewer["id"]),
        )
        await self.send_json({"type": "presence", "you": self.viewer_id, "viewers": viewers})

    def presence_changed(self) -> None:
        """Push the list of viewers soon, with whatever else changes in the meantime."""
        if self.presence_push is None:
            self.presence_push = asyncio.create_task(self.push_presence_soon())

    async def push_presence_soon(self) -> None:
        await asyncio.sleep(PRESENCE_PUSH_DELAY)
        self.presence_push = None
        await self.send_presence()

    def heard(self, viewer: dict[str, str]) -> None:
        key, name = str(viewer["id"]), str(viewer["name"])
        known = key in self.viewers
        self.viewers[key] = (name, time.monotonic())
        if not known:
            self.presence_changed()

    def forget(self, viewer_id: str) -> None:
        if self.viewers.pop(viewer_id, None) is not None:
            self.presence_changed()

    async def presence_hello(self, message: dict[str, Any]) -> None:
        if message.get("process") == PROCESS:
            return  # a connection of this process: the two already know each other
        self.heard(message["viewer"])
        if self.speaks_for_process():
            answer = {"type": "presence.here", "viewers": self.process_viewers()}
            await self.channel_layer.send(message["reply_to"], answer)

    async def presence_here(self, message: dict[str, Any]) -> None:
        # One viewer alone: from a server of the release before, during an upgrade.
        for viewer in message.get("viewers") or [message["viewer"]]:
            if viewer["id"] != self.viewer_id:
                self.heard(viewer)

    async def presence_bye(self, message: dict[str, Any]) -> None:
        self.forget(message["viewer"]["id"])

    async def beat(self) -> None:
        """Repeat this process's viewers to the group (one connection does), forget the silent
        viewers of other processes, and close if read rights are gone."""
        while True:
            interval = settings.PRESENCE_INTERVAL_SECONDS
            await asyncio.sleep(interval)
            try:
                await capture_for_scope(self.scope, self.capture.pk)
            except Http404:
                await self.close(code=4404)
                return
            # Group membership expires in channels-redis (a day by default): renew it.
            await self.channel_layer.group_add(self.group, self.channel_name)
            if self.speaks_for_process():
                here = {"type": "presence.here", "viewers": self.process_viewers(), "process": PROCESS}
                await self.channel_layer.group_send(self.group, here)
            neighbours = _local.get(self.group, {})
            cutoff = time.monotonic() - PRESENCE_EXPIRY_INTERVALS * interval
            silent = [
                key for key, (_, seen) in self.viewers.items() if seen < cutoff and key not in neighbours
            ]
            for key in silent:
                del self.viewers[key]
            if silent:
                self.presence_changed()

    # ---- changes ----------------------------------------------------------------------------

    async def live_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])

"""The capture page's websocket: who else is looking, and changes to annotations and marks.

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
import time
import uuid
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http import Http404

from ..access import capture_for_scope
from ..models import Capture
from . import messages
from .messages import PROCESS, Viewer

# A viewer of another process is dropped when unheard of for this many intervals.
PRESENCE_EXPIRY_INTERVALS = 2.5
# Seconds a connection gathers the changes of its list before pushing it: when a team opens a
# capture at once, each of N tabs hears of the N others, and pushing the list at every one of
# them wrote N² lists to the browsers (with 50 tabs, the server did little else for seconds).
PRESENCE_PUSH_DELAY = 0.3
ANONYMOUS = "anonymous link holder"

# The presence connections of this process (messages.PROCESS), by capture group and viewer id.
_local: dict[str, dict[str, CapturePresenceConsumer]] = {}


def viewer_name(user: Any) -> str:
    if user is not None and user.is_authenticated:
        return str(user.get_username())
    return ANONYMOUS


class CapturePresenceConsumer(AsyncJsonWebsocketConsumer):
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
        self.group = messages.group_name(self.capture.pk)
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
        await messages.send_hello(self.group, self.me(), self.channel_name)
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
        await messages.send_bye(self.group, self.me(), self.channel_name)
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Ignore what the page sends: changes go through the API, which checks rights."""

    # ---- presence ---------------------------------------------------------------------------

    def me(self) -> Viewer:
        return {"id": self.viewer_id, "name": self.name}

    def speaks_for_process(self) -> bool:
        """Tell whether this connection answers for all the viewers of its process (one does)."""
        neighbours = _local.get(self.group, {})
        return bool(neighbours) and min(neighbours) == self.viewer_id

    def process_viewers(self) -> list[Viewer]:
        return [neighbour.me() for neighbour in _local.get(self.group, {}).values()]

    async def send_presence(self) -> None:
        viewers = sorted(
            (Viewer(id=key, name=name) for key, (name, _) in self.viewers.items()),
            key=lambda viewer: (viewer["name"], viewer["id"]),
        )
        await self.send_json(messages.presence_list(self.viewer_id, viewers))

    def presence_changed(self) -> None:
        """Push the list of viewers soon, with whatever else changes in the meantime."""
        if self.presence_push is None:
            self.presence_push = asyncio.create_task(self.push_presence_soon())

    async def push_presence_soon(self) -> None:
        await asyncio.sleep(PRESENCE_PUSH_DELAY)
        self.presence_push = None
        await self.send_presence()

    def heard(self, viewer: Viewer) -> None:
        key, name = str(viewer["id"]), str(viewer["name"])
        known = key in self.viewers
        self.viewers[key] = (name, time.monotonic())
        if not known:
            self.presence_changed()

    def forget(self, viewer_id: str) -> None:
        if self.viewers.pop(viewer_id, None) is not None:
            self.presence_changed()

    async def presence_hello(self, message: messages.Hello) -> None:
        if message.get("process") == PROCESS:
            return  # a connection of this process: the two already know each other
        self.heard(message["viewer"])
        if self.speaks_for_process():
            await messages.send_here(self.process_viewers(), reply_to=message["reply_to"])

    async def presence_here(self, message: messages.Here) -> None:
        # One viewer alone: from a server of the release before, during an upgrade.
        for viewer in message.get("viewers") or [message["viewer"]]:
            if viewer["id"] != self.viewer_id:
                self.heard(viewer)

    async def presence_bye(self, message: messages.Bye) -> None:
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
                await messages.send_here(self.process_viewers(), group=self.group)
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

    async def live_event(self, message: messages.Event) -> None:
        await self.send_json(message["event"])

"""The live view's websocket: rows and status of one live capture, as its recording pushes them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from .. import access
from ..engine.errors import EngineError
from ..engine.packets import check_filter
from ..models import LiveCapture
from . import messages

# A recording answers a new viewer at once; this long without an answer means none is left.
HELLO_TIMEOUT = 10.0
NOBODY_RECORDS = "no server process is recording this capture any more (was the server restarted?)"


class LiveCaptureConsumer(AsyncJsonWebsocketConsumer):
    """Push `live.snapshot`, `live.rows`, `live.status` and `live.ended` to a viewer.

    The page may send `{"filter": "..."}` to see only the packets a display filter matches.
    """

    live: LiveCapture
    group: str = ""
    filter_group: str = ""
    display_filter: str = ""
    answered: asyncio.Event
    waiting: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        live_id = int(self.scope["url_route"]["kwargs"]["live_id"])
        # In the group before its state is read: a capture ending meanwhile is told either way.
        group = messages.group_name(live_id)
        await self.channel_layer.group_add(group, self.channel_name)
        try:
            self.live = await access.live_capture_for(self.scope.get("user"), live_id)
        except Http404:
            await self.channel_layer.group_discard(group, self.channel_name)
            await self.close(code=4404)
            return
        self.group = group
        await self.accept()
        live = self.live
        if live.state != LiveCapture.State.RUNNING:
            capture_url = live.capture.get_absolute_url() if live.capture else ""
            await self.send_json(messages.ended_before(live.state, live.message, capture_url))
            return
        await self.say_hello()

    async def say_hello(self) -> None:
        """Ask the recording for the latest rows (of the current filter) and its status."""
        if not hasattr(self, "answered"):
            self.answered = asyncio.Event()
        if self.live.control_channel:
            await messages.send_hello(self.live.control_channel, self.channel_name, self.display_filter)
        if self.waiting is None:
            self.waiting = asyncio.create_task(self.tell_if_unanswered())

    async def tell_if_unanswered(self) -> None:
        """Tell the viewer when no server process answers for the recording (it was restarted)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.answered.wait(), HELLO_TIMEOUT)
            return
        live = await LiveCapture.objects.aget(pk=self.live.pk)
        if live.state == LiveCapture.State.RUNNING:
            await self.send_json(messages.silent(NOBODY_RECORDS))

    async def disconnect(self, code: int) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        for group in (self.group, self.filter_group):
            if group:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        display_filter = content.get("filter") if isinstance(content, dict) else None
        if not isinstance(display_filter, str):
            return
        display_filter = display_filter.strip()
        try:
            problem = await check_filter(display_filter) if display_filter else None
        except EngineError as error:
            problem = error.message
        if problem:
            await self.send_json(messages.filter_refused(display_filter, problem))
            return
        if self.filter_group:
            await self.channel_layer.group_discard(self.filter_group, self.channel_name)
            self.filter_group = ""
        self.display_filter = display_filter
        if display_filter:
            self.filter_group = messages.filter_group_name(self.live.pk, display_filter)
            await self.channel_layer.group_add(self.filter_group, self.channel_name)
        await self.say_hello()

    # ---- from the recording (or the worker decoding it) ----------------------------------------

    async def live_rows(self, message: messages.Rows) -> None:
        if message["filter"] == self.display_filter:
            rows: messages.Rows = {"type": "live.rows", "filter": message["filter"], "rows": message["rows"]}
            await self.send_json(rows)

    async def live_snapshot(self, message: messages.Snapshot) -> None:
        self.answered.set()
        if message["filter"] == self.display_filter:
            await self.send_json(message)

    async def live_status(self, message: messages.StatusUpdate) -> None:
        self.answered.set()
        await self.send_json(message)

    async def live_refused(self, message: messages.Refused) -> None:
        await self.send_json(messages.filter_refused(self.display_filter, message["message"]))

    async def live_ended(self, message: messages.Ended) -> None:
        await self.send_json(message)

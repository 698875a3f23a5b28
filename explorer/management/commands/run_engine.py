"""Keep every sharkd session of the deployment in this process (the servers set ENGINE_URL)."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from explorer.engine import service, wire


class Command(BaseCommand):
    help = (
        "Serve the dissection engine to the server processes: each capture's sharkd sessions are "
        "started, shared and evicted here, within ENGINE_MAX_PROCESSES and ENGINE_MEMORY_MB."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--listen",
            default="",
            help="tcp://HOST:PORT or unix:///PATH to listen on (default: ENGINE_URL)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["listen"] or settings.ENGINE_URL
        if not url:
            raise CommandError("set ENGINE_URL (as the servers have it) or pass --listen")
        try:
            wire.address(url)
        except ValueError as error:
            raise CommandError(str(error)) from error
        asyncio.run(service.serve(url))

"""Fill the hosts and protocols the search box looks through, for captures stored before it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from explorer import search
from explorer.engine.errors import EngineError
from explorer.models import Capture


class Command(BaseCommand):
    help = (
        "Read the hosts and protocols of captures not summarized yet (after an upload this runs "
        "in the background), one capture at a time at low priority."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="only these captures (summarized again)")
        parser.add_argument("--all", action="store_true", help="summarize every capture again")

    def handle(self, *args: Any, **options: Any) -> None:
        captures = Capture.objects.order_by("pk")
        if options["ids"]:
            captures = captures.filter(pk__in=options["ids"])
        elif not options["all"]:
            captures = captures.filter(protocols="")
        failed = asyncio.run(self.summarize_all(list(captures)))
        if failed:
            raise SystemExit(1)

    async def summarize_all(self, captures: list[Capture]) -> int:
        failed = 0
        for capture in captures:
            start = time.monotonic()
            try:
                found = await search.summarize(capture.pk, capture.path)
            except EngineError as error:
                failed += 1
                self.stderr.write(f"{capture.pk} {capture.name}: {error.message}")
                continue
            self.stdout.write(
                f"{capture.pk} {capture.name}: {len(found.protocols)} protocols, "
                f"{len(found.addresses)} addresses, {len(found.names)} names "
                f"({time.monotonic() - start:.1f} s)"
            )
        return failed

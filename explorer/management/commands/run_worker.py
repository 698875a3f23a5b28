"""Run exports and search summaries in this process, while the servers serve (BACKGROUND_WORKER=1)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from explorer import worker


class Command(BaseCommand):
    help = (
        "Run the exports that are asked for, and read the hosts and protocols of every capture "
        "without a summary, oldest first, going on with new ones as they come. Several workers "
        "may run against PostgreSQL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll", type=float, default=2.0, help="seconds between looks for new work")
        parser.add_argument("--once", action="store_true", help="stop when no capture is left to summarize")

    def handle(self, *args: Any, **options: Any) -> None:
        worker.run(options["poll"], once=options["once"])

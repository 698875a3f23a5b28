"""Remove what processes that died left in the capture folder (explorer/housekeeping.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from explorer import housekeeping


class Command(BaseCommand):
    help = (
        "Remove staging files of uploads that were cut short, and capture files that no capture "
        "names (a process died between storing the file and recording it), once unchanged for a while, "
        f"and the records of exports finished over {housekeeping.EXPORT_RECORDS_KEPT_DAYS} days ago."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=housekeeping.ABANDONED_AFTER_SECONDS,
            help="seconds a file must have been left unchanged (default: an hour)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        swept = housekeeping.sweep(options["older_than"])
        for name in swept.staging:
            self.stdout.write(f"staging file {name}")
        for name in swept.unrecorded:
            self.stdout.write(f"capture file {name} (no capture names it)")
        if swept.export_records:
            self.stdout.write(f"{swept.export_records} export record(s) finished long ago")

"""Import capture files from the command line, printing one JSON line per file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from explorer import captures, search
from explorer.engine.errors import NotACapture


class Command(BaseCommand):
    help = "Store capture files as if uploaded; print {id, url} or {error} per file as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--owner", help="username of the captures' owner (else only staff see them)")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = None
        if options["owner"]:
            User = get_user_model()  # noqa: N806
            try:
                owner = User.objects.get(username=options["owner"])
            except User.DoesNotExist as error:
                raise CommandError(f"no user called {options['owner']!r}") from error
        failed = False
        for path in options["paths"]:
            result = asyncio.run(self.import_one(path, owner))
            failed = failed or "error" in result
            self.stdout.write(json.dumps(result))
        if failed:
            raise SystemExit(1)

    async def import_one(self, path: Path, owner: Any) -> dict[str, Any]:
        if not path.is_file():
            return {"path": str(path), "error": "no such file"}
        try:
            staged = captures.stage_local_file(path)
            capture = await captures.store(staged, owner)
        except NotACapture as error:
            return {"path": str(path), "error": error.message}
        # The search summary runs in the background; this process ends with the import.
        await search.summaries_done()
        return {
            "path": str(path),
            "id": capture.pk,
            "url": capture.get_absolute_url(),
            "warning": capture.warning,
        }

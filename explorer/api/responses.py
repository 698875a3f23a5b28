"""Answers the API builds itself: JSON of engine dataclasses as they are, and files to save."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

from ..engine import jsoncodec


def as_built(answer: dict[str, Any]) -> HttpResponse:
    """Answer with JSON built from the engine's dataclasses, which have the schema's fields and types.

    The packet list and details are the requests every viewer makes all the time: validating
    their rows or tree against the schema took a quarter of the server's time for them, and
    copying them into dicts (dataclasses.asdict) another twentieth. The codec encodes the
    dataclasses as they are.
    """
    return HttpResponse(jsoncodec.dumps(answer), content_type="application/json")


async def many_rows(rows: list[Any]) -> HttpResponse:
    """Answer with a long list of flat dataclass rows, serialized off the event loop.

    A million-packet capture has ~180,000 TCP conversations: validating each row against its
    schema and encoding it in the event loop took longer than sharkd's tap itself and stalled
    every other request meanwhile. The rows already have the schema's fields and types.
    """
    body = await asyncio.to_thread(_dump_rows, rows)
    return HttpResponse(body, content_type="application/json")


def _dump_rows(rows: list[Any]) -> bytes:
    return json.dumps([vars(row) for row in rows], default=_json_number).encode()


def _json_number(value: Any) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def attachment(response: HttpResponse | StreamingHttpResponse, name: str) -> None:
    """Make the response a file to save under this name."""
    response["Content-Disposition"] = content_disposition_header(True, name) or "attachment"


def file_download(
    path: Path, name: str, content: AsyncIterator[bytes] | None = None, size: int | None = None
) -> StreamingHttpResponse:
    """Answer with a file to save: its content (unless given) read from path as it is sent."""
    # Django's ASGI handler reads a synchronous file iterator into memory whole before
    # sending it; captures are large, so the file is streamed through an async iterator.
    response = StreamingHttpResponse(content or read_file(path), content_type="application/octet-stream")
    response["Content-Length"] = str(path.stat().st_size if size is None else size)
    attachment(response, name)
    return response


async def read_file(path: Path, block: int = 1024 * 1024) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(path, "rb") as handle:
        while chunk := await loop.run_in_executor(None, handle.read, block):
            yield chunk


async def read_and_remove(path: Path) -> AsyncIterator[bytes]:
    """Read the file as it is sent, then remove it."""
    try:
        async for chunk in read_file(path):
            yield chunk
    finally:
        path.unlink(missing_ok=True)

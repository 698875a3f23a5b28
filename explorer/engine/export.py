"""File → Export Specified Packets and File → Export Objects → HTTP, as Wireshark does them.

sharkd has no export, and `tshark -Y FILTER -w` also writes the frames that the matching ones
depend on; so the displayed frames are copied byte for byte (framecopy) and the copy is then
rewritten as pcapng by editcap, whatever the original's format.

HTTP objects come from sharkd's `eo:http` tap; its `download` answers only for objects the
same process listed, so fetching runs the tap and the downloads on one dedicated process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from . import commands, framecopy
from . import comments as pcapng_comments
from .errors import EngineError
from .packets import check_filter, count
from .sessions import engine
from .sharkd import SharkdProcess
from .stats import _run, matching_frames

# Exports are removed once streamed; any left behind (an aborted download) after this long.
EXPORT_MAX_AGE = 3600
# A zip of every HTTP object is built in memory only below this total size.
ZIP_LIMIT = 64 * 1024 * 1024
SAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def exports_dir() -> Path:
    return Path(settings.CAPTURES_DIR) / ".exports"


def _prune_exports() -> None:
    cutoff = time.time() - EXPORT_MAX_AGE
    for old in exports_dir().glob("*"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        except FileNotFoundError:
            pass


# Wireshark numbers frames with 32 bits.
LAST_FRAME_NUMBER = 2**32 - 1


def _range(first: int | None, last: int | None) -> tuple[int, int | None]:
    start = 1 if first is None else first
    if start < 1 or (last is not None and last < 1):
        raise EngineError("frame numbers start at 1")
    if start > LAST_FRAME_NUMBER or (last is not None and last > LAST_FRAME_NUMBER):
        raise EngineError(f"frame numbers end at {LAST_FRAME_NUMBER}")
    if last is not None and last < start:
        raise EngineError(f"the range's last frame ({last}) comes before its first ({start})")
    return start, last


async def _editcap(source: Path, destination: Path) -> None:
    code, _, errors = await _run(commands.editcap_pcapng(source, destination))
    if code != 0:
        raise EngineError(errors.strip().splitlines()[-1] if errors.strip() else "editcap failed")


async def check_request(filter_text: str, first: int | None, last: int | None) -> None:
    """Refuse a bad filter or frame range before anything is queued; raise EngineError."""
    expression = filter_text.strip()
    if expression and (problem := await check_filter(expression)):
        raise EngineError(problem)
    _range(first, last)


async def export_packets(
    path: Path,
    filter: str = "",
    first: int | None = None,
    last: int | None = None,  # noqa: A002
    only: set[int] | None = None,
    comments: pcapng_comments.Comments | None = None,
) -> Path:
    """Write the frames displayed for a filter (all without one), within first..last, as pcapng.

    `only` narrows them to chosen frames (the marked ones), as Wireshark's "Marked packets only".
    `comments` (by the original frame numbers) are added to the frames exported and the file.

    The caller removes the returned file when done with it.
    """
    expression = filter.strip()
    if expression:
        problem = await check_filter(expression)
        if problem:
            raise EngineError(problem)
    start, end = _range(first, last)
    if expression:
        numbers = await matching_frames(path, expression)
    else:
        numbers = list(range(1, await count(path) + 1))
    # None displayed makes a valid pcapng without packets, as the filter asked.
    numbers = [n for n in numbers if n >= start and (end is None or n <= end)]
    if only is not None:
        numbers = [n for n in numbers if n in only]

    directory = exports_dir()
    directory.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_prune_exports)
    stem = directory / uuid.uuid4().hex
    converted = stem.with_suffix(".source")
    partial = stem.with_suffix(".partial")
    destination = stem.with_suffix(".pcapng")
    try:
        source = path
        if not await asyncio.to_thread(framecopy.file_kind, path):
            await _editcap(path, converted)  # gzip, other formats: frame numbers stay the same
            source = converted
        await asyncio.to_thread(framecopy.copy_frames, source, partial, numbers)
        await _editcap(partial, destination)
        if comments:
            await asyncio.to_thread(pcapng_comments.add, destination, comments.renumbered(numbers))
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    finally:
        converted.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return destination


@dataclass
class HttpObject:
    index: int
    packet: int
    hostname: str
    content_type: str
    filename: str
    size: int
    token: str

    @property
    def safe_name(self) -> str:
        """A file name made of the object's name: no directories, no unusual characters."""
        name = self.filename.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        name = SAFE_CHARACTERS.sub("_", name).strip("._")[:120]
        return name or f"object-{self.index}"


def _objects(tap: dict[str, Any]) -> list[HttpObject]:
    return [
        HttpObject(
            index=index,
            packet=int(item.get("pkt", 0)),
            hostname=str(item.get("hostname", "")),
            content_type=str(item.get("type", "")),
            filename=str(item.get("filename", "")),
            size=int(item.get("len", 0)),
            token=str(item.get("_download", "")),
        )
        for index, item in enumerate(tap.get("objects", []))
    ]


async def http_objects(path: Path) -> list[HttpObject]:
    """Return the HTTP objects of a capture, in Wireshark's order."""
    result = await engine().sessions(path).call("tap", {"tap0": "eo:http"})
    return _objects(result["taps"][0])


@asynccontextmanager
async def _http_session(path: Path) -> AsyncIterator[tuple[SharkdProcess, list[HttpObject]]]:
    """A sharkd process of its own that has listed the capture's HTTP objects."""
    timeout = settings.ENGINE_REQUEST_TIMEOUT
    process = SharkdProcess(path)
    try:
        await asyncio.wait_for(process.start(), timeout)
        result = await asyncio.wait_for(process.request("tap", {"tap0": "eo:http"}, slow=True), timeout)
        yield process, _objects(result["taps"][0])
    except TimeoutError as error:
        raise EngineError(f"the engine did not answer within {timeout} s") from error
    finally:
        await process.close()


async def _download(process: SharkdProcess, item: HttpObject) -> bytes:
    result = await asyncio.wait_for(
        process.request("download", {"token": item.token}), settings.ENGINE_REQUEST_TIMEOUT
    )
    if not result or "file" not in result:
        raise EngineError(f"the engine has no data for HTTP object {item.index}")
    return base64.b64decode(result.get("data") or "")


async def http_object(path: Path, index: int) -> tuple[HttpObject, bytes]:
    """Return one HTTP object and its bytes."""
    async with _http_session(path) as (process, objects):
        if not 0 <= index < len(objects):
            raise EngineError(f"no HTTP object {index}: the capture has {len(objects)}")
        return objects[index], await _download(process, objects[index])


def unique_names(objects: list[HttpObject]) -> list[str]:
    """Safe names, made unique (case-insensitively) with a counter before the extension."""
    taken: set[str] = set()
    names = []
    for item in objects:
        name = item.safe_name
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem:
            stem, dot, extension = name, "", ""
        number = 1
        while name.casefold() in taken:
            name = f"{stem}({number}){dot}{extension}"
            number += 1
        taken.add(name.casefold())
        names.append(name)
    return names


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


async def http_objects_zip(path: Path) -> bytes:
    """Return a zip of every HTTP object, refusing when they total ZIP_LIMIT or more."""
    async with _http_session(path) as (process, objects):
        if not objects:
            raise EngineError("the capture has no HTTP objects")
        total = sum(item.size for item in objects)
        if total >= ZIP_LIMIT:
            raise EngineError(
                f"the HTTP objects total {total / 1024 / 1024:.1f} MB, more than a zip may hold "
                f"({ZIP_LIMIT // 1024 // 1024} MB): download them one by one"
            )
        entries = []
        for item, name in zip(objects, unique_names(objects), strict=True):
            entries.append((name, await _download(process, item)))
    if sum(len(data) for _, data in entries) >= ZIP_LIMIT:
        raise EngineError(f"the HTTP objects exceed {ZIP_LIMIT // 1024 // 1024} MB: download them one by one")
    return await asyncio.to_thread(_zip, entries)

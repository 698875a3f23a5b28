"""The files of a recording: the only one, or a ring buffer's, written as packets arrive.

A ring buffer keeps the packets of its last N files of about S kB: every file starts with the
stream's headers so far (which the decoders skip: they read the headers once), and the oldest
file is dropped once a new one starts. A dropped file is removed once no decoder still reads it.
Stopped, the files left are joined into the one file that is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..engine import dumpcap
from ..uploads import StagedFile
from . import staging
from .framing import Records

READ_BLOCK = 1024 * 1024


@dataclass
class Segment:
    """One file of a recording: the only one, or one of a ring buffer's."""

    number: int
    path: Path
    skip: int = 0  # bytes at its start repeating what earlier files said (headers)
    size: int = 0


@dataclass(frozen=True)
class Ring:
    """Keep only the packets of the last `files` files of about `kilobytes` each."""

    files: int
    kilobytes: int


class Files:
    """The files of a recording as its decoders read them: the recording's own, or a worker's
    copy of what the recording reports (explorer/live/worker.py)."""

    def __init__(self, first: Segment) -> None:
        self.segments = [first]
        # Files dropped from the ring that a decoder has not read to the end yet.
        self.retired: list[Segment] = []
        self.ended = False  # no more bytes: decoders read to the end of the files and exit

    def segment_from(self, number: int) -> Segment:
        """Return the file of this number, or the oldest one left when it was removed."""
        for segment in [*self.retired, *self.segments]:
            if segment.number >= number:
                return segment
        return self.segments[-1]

    @property
    def last(self) -> Segment:
        return self.segments[-1]


class RecordingFiles(Files):
    """The files a recording writes, with the size and sha256 of what it wrote."""

    def __init__(self, first: Path, ring: Ring | None) -> None:
        super().__init__(Segment(0, first))
        self.first = first
        self.ring = ring
        self.file: IO[bytes] | None = None
        self.hash = hashlib.sha256()
        self.size = 0  # bytes received, without the headers repeated at the start of a ring's files

    def open(self) -> None:
        self.file = open(self.first, "wb")  # noqa: SIM115 - closed in close() or the next rotation

    def total_size(self) -> int:
        """Return the bytes of the files kept: what the capture would store now."""
        return sum(segment.size for segment in self.segments)

    async def append(self, records: Records, preamble: bytes) -> None:
        """Write whole records, starting the ring's next files where the current one is full.

        The files are split at the record or block where the current file reaches its size
        (never before a header block of these records: the next file starts with all of them).
        """
        written = 0
        if self.ring is not None:
            limit = self.ring.kilobytes * 1024
            for start in records.starts:
                size = self.last.size + start - written  # with the bytes before this record
                full = size >= limit and size > self.last.skip
                if full and start >= records.earliest_split:
                    # Also at the first record: the bytes may come one packet at a time.
                    await self.write(records.data[written:start])
                    written = start
                    await self.rotate(preamble)
        await self.write(records.data[written:])

    async def write(self, data: bytes) -> None:
        assert self.file is not None
        await asyncio.to_thread(_append, self.file, data)
        self.hash.update(data)
        self.size += len(data)
        self.last.size += len(data)

    async def rotate(self, preamble: bytes) -> None:
        """Start the next file of the ring with the headers so far; drop the oldest beyond its count."""
        assert self.file is not None and self.ring is not None
        await asyncio.to_thread(self.file.close)
        number = self.last.number + 1
        segment = Segment(
            number, staging.ring_file(self.first, number), skip=len(preamble), size=len(preamble)
        )
        self.file = open(segment.path, "wb")  # noqa: SIM115 - closed in close() or the next rotation
        await asyncio.to_thread(_append, self.file, preamble)
        self.segments.append(segment)
        while len(self.segments) > self.ring.files:
            self.retired.append(self.segments.pop(0))

    def release(self, reading: int | None, everything: bool = False) -> None:
        """Remove the files dropped from the ring before the file numbered `reading` (the
        oldest one a decoder still reads; None when none reads any), or every one with
        everything: once the decoders are done.

        The end of the recording does not release them: its decoders, or the worker's, go on
        reading the files they have not reached yet until they have printed the last rows.
        """
        oldest = self.last.number if reading is None else reading
        for segment in [segment for segment in self.retired if segment.number < oldest or everything]:
            # A decoder still reading it keeps its open file: unlinking only drops the name.
            segment.path.unlink(missing_ok=True)
            self.retired.remove(segment)

    async def close(self) -> None:
        if self.file is not None:
            await asyncio.to_thread(self.file.close)

    async def stored_file(self, name: str) -> StagedFile:
        """Return the file to store: the only one, or the ring's files joined into one."""
        if len(self.segments) == 1 and self.segments[0].number == 0:
            return StagedFile(self.first, name, self.size, self.hash.hexdigest())
        joined = staging.joined_file(self.first)
        try:
            await dumpcap.concatenate([segment.path for segment in self.segments], joined)
        finally:
            for segment in self.segments:
                segment.path.unlink(missing_ok=True)
        size, digest = await asyncio.to_thread(_size_and_digest, joined)
        return StagedFile(joined, name, size, digest)


def _append(file: IO[bytes], data: bytes) -> None:
    """Write and flush, so that the decoders reading the file see the bytes at once."""
    file.write(data)
    file.flush()


def _size_and_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()

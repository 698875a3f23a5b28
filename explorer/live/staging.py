"""The names of the files a live capture is recorded into, in the staging folder of uploads.

A recording writes `live-<id>-<key>.part`; with a ring buffer, its later files are
`live-<id>-<key>.<n>.part` and their join, once stopped, `live-<id>-<key>.ring.part`. The
names are all another process needs: a worker decoding the capture, a page showing a packet's
details from the recording, and the sweep of abandoned uploads (which leaves these alone) find
the files by them in the shared capture folder.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..uploads import staging_dir

PREFIX = "live-"
NAME = re.compile(PREFIX + r"(?P<live_id>\d+)-(?P<key>[0-9a-f]{32})(?:\.(?P<part>\d+|ring))?\.part")
JOINED = "ring"


@dataclass(frozen=True)
class RecordingFile:
    """A file of a recording, as its name describes it."""

    path: Path
    live_id: int
    # "" for the first file, a number for a ring buffer's later file, JOINED for their join.
    part: str

    @property
    def is_first(self) -> bool:
        return not self.part


def first_file(live_id: int) -> Path:
    """Return a new name for the first file of a recording."""
    return staging_dir() / f"{PREFIX}{live_id}-{uuid.uuid4().hex}.part"


def ring_file(first: Path, number: int) -> Path:
    """Return the name of a ring buffer's file of this number (the first file is number 0)."""
    return first.with_suffix(f".{number}.part")


def joined_file(first: Path) -> Path:
    """Return the name of the file that joins a ring buffer's files, to be stored."""
    return first.with_suffix(f".{JOINED}.part")


def parse(path: Path) -> RecordingFile | None:
    """Return what the name of a file in the staging folder says of its recording; None for another file."""
    match = NAME.fullmatch(path.name)
    if match is None:
        return None
    return RecordingFile(path, int(match["live_id"]), match["part"] or "")


def is_recording_file(path: Path) -> bool:
    """Tell whether a staging file is a live recording's, which may stay unchanged for hours.

    By its prefix alone: an upload's staging file is named by a bare random key, and a file of
    a recording that another release named otherwise is still a recording's.
    """
    return path.name.startswith(PREFIX)


def files_of(live_id: int) -> list[RecordingFile]:
    """Return the files of a live capture's recording now in the staging folder (any process's)."""
    found = (parse(path) for path in staging_dir().glob(f"{PREFIX}{live_id}-*.part"))
    return [file for file in found if file is not None and file.live_id == live_id]


def named(name: str) -> Path:
    """Return the file of this name in this process's staging folder, whatever folder the name came with."""
    return staging_dir() / Path(name).name

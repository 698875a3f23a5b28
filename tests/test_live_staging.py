"""The names of a live recording's files: given, read back and told from every other staging file."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings

from explorer.live import staging


@pytest.fixture
def staging_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(settings, "CAPTURES_DIR", str(tmp_path))
    return tmp_path / ".staging"


def test_it_reads_back_the_names_it_gives(staging_folder: Path) -> None:
    first = staging.first_file(7)
    assert first.parent == staging_folder
    assert staging.parse(first) == staging.RecordingFile(first, 7, "")
    ring = staging.parse(staging.ring_file(first, 3))
    assert ring is not None and (ring.live_id, ring.part, ring.is_first) == (7, "3", False)
    joined = staging.parse(staging.joined_file(first))
    assert joined is not None and (joined.live_id, joined.part) == (7, staging.JOINED)
    assert staging.first_file(7) != first


def test_it_tells_a_recording_from_an_upload(staging_folder: Path) -> None:
    first = staging.first_file(1)
    for recording in (first, staging.ring_file(first, 2), staging.joined_file(first)):
        assert staging.is_recording_file(recording)
    assert not staging.is_recording_file(staging_folder / f"{uuid.uuid4().hex}.part")


def test_it_reads_no_live_capture_from_another_name(staging_folder: Path) -> None:
    for other in (f"{uuid.uuid4().hex}.part", "live-1.part", "live-x-0123.part", "live-1-notakey.part"):
        assert staging.parse(staging_folder / other) is None


def test_it_finds_the_files_of_one_live_capture_only(staging_folder: Path) -> None:
    first = staging.first_file(1)
    others = [staging.first_file(12), staging_folder / "live-1-x.part"]
    for path in [first, staging.ring_file(first, 1), *others]:
        path.write_bytes(b"")
    assert sorted(file.path for file in staging.files_of(1)) == sorted([first, staging.ring_file(first, 1)])


def test_a_name_from_another_process_stays_in_the_staging_folder(staging_folder: Path) -> None:
    assert staging.named("/elsewhere/live-1-x.part") == staging_folder / "live-1-x.part"
    assert staging.named("../../etc/passwd") == staging_folder / "passwd"

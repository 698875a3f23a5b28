"""Files a process that died left behind in the capture folder, and their removal.

An upload is written to `.staging` and renamed into the capture folder just before its row is
recorded; a process killed in between leaves a staging file, or a capture file no row names.
Neither is ever shown (a capture exists only with its row), but both take room. Whatever of
this kind has not changed for ABANDONED_AFTER is removed by the worker (`manage.py run_worker`
looks once an hour) or by `manage.py sweep_captures`.

Live recordings (explorer/live/staging.py) are left alone: an idle interface may write nothing for hours.

Finished exports keep their file for an hour (explorer/engine/export.py) and their record, which
says how the export ended, for EXPORT_RECORDS_KEPT_DAYS; the sweep removes older records.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .live import staging as live_staging
from .models import Capture, ExportJob
from .uploads import staging_dir

log = logging.getLogger(__name__)

ABANDONED_AFTER_SECONDS = 3600
EXPORT_RECORDS_KEPT_DAYS = 7


@dataclass
class Swept:
    staging: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    export_records: int = 0


def sweep(older_than: float = ABANDONED_AFTER_SECONDS) -> Swept:
    """Remove abandoned staging files and capture files no row names; return their names."""
    cutoff = time.time() - older_than
    swept = Swept()
    for part in staging_dir().glob("*.part"):
        if not live_staging.is_recording_file(part) and _unchanged_since(part, cutoff):
            part.unlink(missing_ok=True)
            swept.staging.append(part.name)
    folder = Path(settings.CAPTURES_DIR)
    candidates = {path.name: path for path in folder.glob("*.cap") if _unchanged_since(path, cutoff)}
    if candidates:
        recorded = set(
            Capture.objects.filter(stored_as__in=list(candidates)).values_list("stored_as", flat=True)
        )
        for name, path in candidates.items():
            if name not in recorded:
                path.unlink(missing_ok=True)
                path.with_suffix(".keys").unlink(missing_ok=True)
                swept.unrecorded.append(name)
    if swept.staging or swept.unrecorded:
        log.warning(
            "removed %d abandoned staging file(s) and %d capture file(s) without a capture",
            len(swept.staging),
            len(swept.unrecorded),
        )
    finished_before = timezone.now() - timedelta(days=EXPORT_RECORDS_KEPT_DAYS)
    swept.export_records, _ = ExportJob.objects.filter(finished_at__lt=finished_before).delete()
    return swept


def _unchanged_since(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False

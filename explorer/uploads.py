"""Upload handling: stream to a staging file while hashing, enforce the size limit."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile


def staging_dir() -> Path:
    """Return the folder where uploads are written until they are complete and checked."""
    path = Path(settings.CAPTURES_DIR) / ".staging"
    path.mkdir(parents=True, exist_ok=True)
    return path


def limit_message() -> str:
    return f"larger than the configured limit of {settings.MAX_UPLOAD_MB} MB"


class StagedFile(UploadedFile):
    """An uploaded file written to the staging folder, with its sha256."""

    def __init__(self, path: Path, name: str, size: int, sha256: str) -> None:
        super().__init__(open(path, "rb"), name=name, size=size)  # noqa: SIM115 - closed by Django
        self.staging_path = path
        self.sha256 = sha256

    def discard(self) -> None:
        """Close and remove the staging file (after it was moved in, or rejected)."""
        self.close()
        self.staging_path.unlink(missing_ok=True)


class CaptureUploadHandler(FileUploadHandler):
    """Write each uploaded file straight to the staging folder; nothing is kept in memory."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.path = staging_dir() / f"{uuid.uuid4().hex}.part"
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in file_complete
        self.hash = hashlib.sha256()
        self.size = 0
        self.limit = settings.MAX_UPLOAD_MB * 1024 * 1024

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.size += len(raw_data)
        if self.size > self.limit:
            self._discard()
            errors = getattr(self.request, "upload_errors", [])
            errors.append((self.file_name, limit_message()))
            self.request.upload_errors = errors  # type: ignore[union-attr]
            raise SkipFile(limit_message())
        self.hash.update(raw_data)
        self.file.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> StagedFile:
        self.file.close()
        return StagedFile(self.path, self.file_name or "capture", self.size, self.hash.hexdigest())

    def upload_interrupted(self) -> None:
        if hasattr(self, "file"):
            self._discard()

    def _discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

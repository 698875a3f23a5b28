"""Uploads streamed from the ASGI connection straight to staging files.

Django's own path reads the whole body into a temporary file and then parses it again, which
on daphne cost about thirteen times the file size in memory; captures are large, so upload
routes are parsed here as the bytes arrive, written to CAPTURES_DIR/.staging with their sha256,
and the view receives the staged files in the ASGI scope with only the small form fields as
its body (so CSRF checks keep working on the page's form).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

UPLOAD_PATHS = re.compile(r"/api/captures/|/captures/upload/|(/api)?/captures/\d+/keylog/?")
SCOPE_KEY = "explorer.uploads"
# Disk writes and hashing leave the event loop in blocks of this size.
WRITE_BLOCK = 4 * 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024
# Bodies of every other route are small forms or nothing at all.
MAX_OTHER_BODY = 1024 * 1024


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
        super().__init__(None, name=name, size=size)
        self.staging_path = path
        self.sha256 = sha256

    def discard(self) -> None:
        """Remove the staging file (after it was moved in, or rejected)."""
        self.staging_path.unlink(missing_ok=True)


@dataclass
class StagedUploads:
    files: list[StagedFile] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    keylog: StagedFile | None = None  # a TLS key log sent along, for every file

    def discard(self) -> None:
        for staged in self.files:
            staged.discard()
        if self.keylog is not None:
            self.keylog.discard()


def staged_uploads(request: HttpRequest) -> StagedUploads:
    """Return the files the upload stream staged for this request (none for other routes)."""
    scope = getattr(request, "scope", {})
    uploads = scope.get(SCOPE_KEY)
    return uploads if isinstance(uploads, StagedUploads) else StagedUploads()


class _Part:
    """One part of the multipart body being received."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.name = ""
        self.filename: str | None = None
        self.data = bytearray()
        self.size = 0
        self.path: Path | None = None
        self.file: IO[bytes] | None = None
        self.hash = hashlib.sha256()
        self.too_large = False

    def begin(self) -> None:
        disposition, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = options.get(b"name", b"").decode(errors="replace")
        filename = options.get(b"filename")
        self.filename = filename.decode(errors="replace") if filename is not None else None
        if self.filename is not None:
            self.path = staging_dir() / f"{uuid.uuid4().hex}.part"
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed in finish() or discard()

    def write_block(self, block: bytes) -> None:
        assert self.file is not None
        self.hash.update(block)
        self.file.write(block)

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class UploadStream:
    """ASGI middleware: stream multipart uploads to staging files; cap every other body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        content_type, options = parse_options_header(headers.get(b"content-type", b""))
        is_upload = (
            scope["method"] == "POST"
            and UPLOAD_PATHS.fullmatch(scope["path"]) is not None
            and content_type == b"multipart/form-data"
            and b"boundary" in options
        )
        limit = settings.MAX_UPLOAD_MB * 1024 * 1024 + MAX_OTHER_BODY if is_upload else MAX_OTHER_BODY
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit_message() if is_upload else "request body too large")
            return
        if not is_upload:
            await self.app(scope, _capped(receive, limit), send)
            return
        try:
            body, fields = await _receive_uploads(receive, options[b"boundary"], limit)
        except ConnectionAbortedError:
            return  # the client went away: nothing was kept
        except UploadTooLarge:
            await _refuse(send, limit_message())
            return
        except MultipartParseError:
            await _refuse(send, "malformed multipart body", status=400)
            return
        inner_headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        inner_headers += [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ]
        inner_scope = {**scope, "headers": inner_headers, SCOPE_KEY: fields}
        sent = False

        async def inner_receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(inner_scope, inner_receive, send)
        finally:
            # Views move what they keep; anything still staged was rejected or abandoned.
            fields.discard()
            await asyncio.get_running_loop().run_in_executor(None, release_memory)


def release_memory() -> None:
    """Give the heap's free pages back to the system after a large body passed through."""
    # The server queues a whole request body in memory before the application reads it;
    # once freed, glibc keeps those pages unless asked, and the process would stay that big.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _capped(receive: Any, limit: int) -> Any:
    received = 0

    async def capped_receive() -> dict[str, Any]:
        nonlocal received
        message: dict[str, Any] = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            return {"type": "http.disconnect"}
        return message

    return capped_receive


class UploadTooLarge(Exception):
    pass


async def _receive_uploads(receive: Any, boundary: bytes, limit: int) -> tuple[bytes, StagedUploads]:
    """Read the multipart body into staging files; return the small fields and the files."""
    file_limit = settings.MAX_UPLOAD_MB * 1024 * 1024
    parts: list[_Part] = []
    current = _Part()
    loop = asyncio.get_running_loop()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current.header_value += data[start:end]

    def on_header_end() -> None:
        current.headers[current.header_field.lower()] = current.header_value
        current.header_field = current.header_value = b""

    def on_headers_finished() -> None:
        current.begin()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.size += end - start
        if current.filename is not None and current.size > file_limit:
            current.too_large = True
        if current.too_large or (current.filename is None and current.size > MAX_FIELD_BYTES):
            return
        current.data += data[start:end]

    def on_part_end() -> None:
        nonlocal current
        parts.append(current)
        current = _Part()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )

    async def flush(part: _Part, final: bool = False) -> None:
        if part.file is None or part.too_large:
            return
        if part.data and (final or len(part.data) >= WRITE_BLOCK):
            block, part.data = bytes(part.data), bytearray()
            await loop.run_in_executor(None, part.write_block, block)

    received = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise UploadTooLarge
            parser.write(chunk)
            for part in [*parts, current]:
                await flush(part)
            if not message.get("more_body", False):
                break
        parser.finalize()
        for part in parts:
            await flush(part, final=True)
    except BaseException:
        for part in [*parts, current]:
            part.discard()
        raise

    uploads = StagedUploads()
    fields: list[tuple[str, str]] = []
    for part in parts:
        if part.filename is None:
            fields.append((part.name, part.data.decode(errors="replace")))
            continue
        assert part.file is not None and part.path is not None
        part.file.close()
        if part.too_large:
            part.discard()
            uploads.errors.append((part.filename, limit_message()))
        elif part.name == "file":
            uploads.files.append(StagedFile(part.path, part.filename, part.size, part.hash.hexdigest()))
        elif part.name == "keylog" and part.size and uploads.keylog is None:
            uploads.keylog = StagedFile(part.path, part.filename, part.size, part.hash.hexdigest())
        else:
            part.discard()
    return urlencode(fields).encode(), uploads


async def _refuse(send: Any, message: str, status: int = 413) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})

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
import errno
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import aget_user
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.template.loader import render_to_string
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from . import quotas, ratelimit
from .authentication import token_of
from .security import CONTENT_SECURITY_POLICY
from .tokens import user_for_token

log = logging.getLogger(__name__)

UPLOAD_PATHS = re.compile(r"/api/captures/|/captures/upload/|(/api)?/captures/\d+/keylog/?")
# The routes that store captures (the others attach a key log to one).
CAPTURE_PATHS = re.compile(r"/api/captures/|/captures/upload/")
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


DISK_FULL_MESSAGE = "the server has no room left to store this upload: nothing was kept"
# Errors of a write that found no room: a full disk, a quota, or a file size limit.
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


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
        self.refusal: str | None = None  # why its bytes are not kept (a limit)

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

    def refuse(self, message: str) -> None:
        """Keep none of this part's bytes (those written so far are removed when it ends)."""
        if self.refusal is None:
            self.refusal = message
            self.data = bytearray()

    def discard(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
        except OSError:
            pass  # on a full disk, closing fails too (it writes what is buffered): remove it anyway
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
        # The upload forms get a page; scripts and every other route get JSON.
        html = is_upload and not scope["path"].startswith("/api/")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit_message() if is_upload else "request body too large", html=html)
            return
        if not is_upload:
            await self.app(scope, _capped(receive, limit), send)
            return
        user = await uploader(scope)
        who = f"user:{user.pk}" if user is not None else f"address:{_client(scope)}"
        wait = await ratelimit.take("uploads", who, ratelimit.rate_of("RATE_LIMIT_UPLOADS"))
        if wait:
            message = f"too many uploads: try again in {ratelimit.in_words(wait)}"
            retry = [(b"retry-after", ratelimit.retry_after(wait).encode())]
            await _refuse(send, message, status=429, html=html, headers=retry)
            return
        allowance = quotas.UNLIMITED
        if user is not None and CAPTURE_PATHS.fullmatch(scope["path"]):
            allowance = await _allowance(user)
            # Refused before the body is read when nothing of it could be kept.
            refusal = allowance.refusal(0)
            if refusal is None and allowance.bytes is not None and declared.isdigit():
                refusal = allowance.refusal(int(declared) - MAX_OTHER_BODY)
            if refusal is not None:
                await _refuse(send, refusal, html=html)
                return
        try:
            body, fields = await _receive_uploads(receive, options[b"boundary"], limit, allowance)
        except ConnectionAbortedError:
            return  # the client went away: nothing was kept
        except UploadTooLarge:
            await _refuse(send, limit_message(), html=html)
            return
        except MultipartParseError:
            await _refuse(send, "malformed multipart body", status=400, html=html)
            return
        except OSError as error:
            if error.errno not in NO_ROOM:
                raise
            log.error("upload refused, no room in %s: %s", staging_dir(), error)
            await _refuse(send, DISK_FULL_MESSAGE, status=507, html=html)
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


async def uploader(scope: dict[str, Any]) -> Any | None:
    """Return the user sending an upload (by API token or session cookie), or None."""
    headers = dict(scope.get("headers", []))
    try:
        key = token_of(headers.get(b"authorization", b"").decode("latin-1"))
        if key is not None:
            return await user_for_token(key)
        cookies = parse_cookie(headers.get(b"cookie", b"").decode("latin-1"))
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        if not session_key:
            return None
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = await aget_user(SimpleNamespace(session=session))  # type: ignore[arg-type]
    except DatabaseError:
        # The view answers that the database is unavailable; nothing to limit until then.
        return None
    return user if user.is_authenticated else None


async def _allowance(user: Any) -> quotas.Allowance:
    try:
        return await quotas.allowance(user)
    except DatabaseError:
        return quotas.UNLIMITED  # the view refuses the upload while the database is away


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


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


async def _receive_uploads(
    receive: Any, boundary: bytes, limit: int, allowance: quotas.Allowance
) -> tuple[bytes, StagedUploads]:
    """Read the multipart body into staging files; return the small fields and the files.

    A file past the size limit, or past what the allowance leaves of the sender's limits, is
    read to its end but none of it is kept: it is listed among the errors.
    """
    file_limit = settings.MAX_UPLOAD_MB * 1024 * 1024
    parts: list[_Part] = []
    current = _Part()
    loop = asyncio.get_running_loop()
    left = allowance

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current.header_value += data[start:end]

    def on_header_end() -> None:
        current.headers[current.header_field.lower()] = current.header_value
        current.header_field = current.header_value = b""

    def a_capture(part: _Part) -> bool:
        # A key log sent along is not a capture: it counts toward no limit of the sender.
        return bool(part.filename) and part.name == "file"

    def on_headers_finished() -> None:
        current.begin()
        if a_capture(current) and (refusal := left.refusal(0)) is not None:
            current.refuse(refusal)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.size += end - start
        if current.filename is not None and current.size > file_limit:
            current.refuse(limit_message())
        elif a_capture(current) and (refusal := left.refusal(current.size)) is not None:
            current.refuse(refusal)
        if current.refusal or (current.filename is None and current.size > MAX_FIELD_BYTES):
            return
        current.data += data[start:end]

    def on_part_end() -> None:
        nonlocal current, left
        if a_capture(current) and current.refusal is None:
            left = left.after(current.size)
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
        if part.file is None or part.refusal:
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
            if part.file is not None:
                part.file.close()  # writes what is buffered: may find the disk full too
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
        assert part.path is not None
        if part.refusal:
            part.discard()
            uploads.errors.append((part.filename, part.refusal))
        elif part.name == "file":
            uploads.files.append(StagedFile(part.path, part.filename, part.size, part.hash.hexdigest()))
        elif part.name == "keylog" and part.size and uploads.keylog is None:
            uploads.keylog = StagedFile(part.path, part.filename, part.size, part.hash.hexdigest())
        else:
            part.discard()
    return urlencode(fields).encode(), uploads


async def _refuse(
    send: Any,
    message: str,
    status: int = 413,
    *,
    html: bool = False,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer before the body was read: JSON for the API, a short page for the upload forms."""
    headers = [(b"connection", b"close"), *(headers or [])]
    if html:
        body = render_to_string("refused.html", {"message": message}).encode()
        headers += [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        ]
    else:
        body = json.dumps({"error": message}).encode()
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

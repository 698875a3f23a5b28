"""Storing captures: check a staged file, move it in, record it. Shared by pages, API and CLI."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
import zlib
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from . import quotas, search
from .engine import capinfo, keylog, stats
from .engine.errors import NotACapture
from .engine.sessions import engine
from .models import Capture, nanoseconds
from .uploads import StagedFile, StagedUploads, limit_message, staging_dir

MAX_NAME_LENGTH = 200
GZIP_MAGIC = b"\x1f\x8b"
# Decompressed in blocks of this size at most, however well the input compresses.
INFLATE_BLOCK = 1024 * 1024


def display_name(name: str) -> str:
    """Return the last component of an uploaded name, for display only; never used as a path."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:MAX_NAME_LENGTH] or "capture"


def inflated_message() -> str:
    return f"decompresses to more than the configured limit of {settings.MAX_UNCOMPRESSED_MB} MB"


def limit_messages() -> set[str]:
    """Return the refusals that mean a limit, not a bad file (the API answers them with 413)."""
    return {limit_message(), inflated_message(), quotas.count_message(), quotas.storage_message()}


def inflates_beyond(path: Path, limit: int) -> bool:
    """Tell whether a gzip file decompresses to more than limit bytes; stop reading past it.

    The engine reads gzip-compressed captures as if uncompressed (every member of the file, one
    after another), so a small file may hold gigabytes of packets for capinfos and sharkd to read.
    """
    with open(path, "rb") as handle:
        if handle.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            return False
        handle.seek(0)
        inflated = 0
        member = zlib.decompressobj(wbits=31)
        try:
            while chunk := handle.read(INFLATE_BLOCK):
                while chunk:
                    inflated += len(member.decompress(chunk, INFLATE_BLOCK))
                    if inflated > limit:
                        return True
                    chunk = member.unconsumed_tail
                    if member.eof:
                        # Another member may follow; anything else ends what the engine reads.
                        chunk = member.unused_data
                        member = zlib.decompressobj(wbits=31)
        except zlib.error:
            pass  # damaged or trailing bytes: the engine stops there too
    return False


async def store(staged: StagedFile, owner: Any = None) -> Capture:
    """Check the staged file, move it under CAPTURES_DIR and record it; raise NotACapture."""
    try:
        limit = settings.MAX_UNCOMPRESSED_MB * 1024 * 1024
        if await asyncio.to_thread(inflates_beyond, staged.staging_path, limit):
            raise NotACapture(inflated_message())
        info = await capinfo.read(staged.staging_path)
        stored_as = f"{uuid.uuid4().hex}.cap"
        destination = Path(settings.CAPTURES_DIR) / stored_as
        # The staging folder is inside CAPTURES_DIR, so this rename is atomic: a file is
        # either absent or complete, and a row exists only for a complete file.
        os.replace(staged.staging_path, destination)
        try:
            capture = await Capture.objects.acreate(
                owner=owner if owner is not None and owner.is_authenticated else None,
                name=display_name(staged.name or "capture"),
                stored_as=stored_as,
                size=staged.size or 0,
                sha256=staged.sha256,
                file_type=info.file_type,
                encapsulation=info.encapsulation,
                time_precision=info.time_precision,
                precision_digits=info.precision_digits,
                packets=info.packets,
                data_size=info.data_size,
                first_ns=nanoseconds(info.first_time),
                last_ns=nanoseconds(info.last_time),
                duration_ns=nanoseconds(info.duration),
                data_byte_rate=info.data_byte_rate,
                data_bit_rate=info.data_bit_rate,
                average_packet_size=info.average_packet_size,
                average_packet_rate=info.average_packet_rate,
                link_types=", ".join(info.link_types),
                comments=info.comments,
                interfaces=info.interfaces,
                extra=info.extra,
                warning=info.warning,
            )
        except BaseException:
            destination.unlink(missing_ok=True)
            raise
    finally:
        staged.discard()
    search.schedule_summary(capture)
    return capture


async def store_uploads(
    uploads: StagedUploads, owner: Any = None
) -> tuple[list[Capture], list[tuple[str, str]]]:
    """Store every staged file for its owner, with the key log sent along; return captures and rejections."""
    stored: list[Capture] = []
    errors = [(display_name(name), message) for name, message in uploads.errors]
    for staged in uploads.files:
        name = display_name(staged.name or "")
        refusal = (await quotas.allowance(owner)).refusal(staged.size or 0)
        if refusal is not None:
            staged.discard()
            errors.append((name, refusal))
            continue
        try:
            capture = await store(staged, owner)
        except NotACapture as error:
            errors.append((name, error.message))
            continue
        # Another upload of the same user may have been stored meanwhile, by any process.
        if (refusal := await quotas.overdrawn(owner)) is not None:
            await delete(capture)
            errors.append((name, refusal))
            continue
        stored.append(capture)
    if uploads.keylog is not None and stored:
        try:
            data = await sync_to_async(staged_keylog_bytes)(uploads.keylog)
            for capture in stored:
                await attach_keylog(capture, data)
        except keylog.NotAKeyLog as error:
            errors.append((display_name(uploads.keylog.name or ""), error.message))
    return stored, errors


def staged_keylog_bytes(staged: StagedFile) -> bytes:
    """Return a staged key log's bytes, refusing one too large to be a key log."""
    if (staged.size or 0) > keylog.MAX_KEYLOG_BYTES:
        raise keylog.NotAKeyLog(f"key log larger than {keylog.MAX_KEYLOG_BYTES // (1024 * 1024)} MB")
    return staged.staging_path.read_bytes()


def stage_local_file(path: Path) -> StagedFile:
    """Copy a local file into the staging folder while hashing it (for import_capture)."""
    size = path.stat().st_size
    if size > settings.MAX_UPLOAD_MB * 1024 * 1024:
        raise NotACapture(limit_message())
    staged_path = staging_dir() / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as source, open(staged_path, "wb") as target:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                target.write(chunk)
    except BaseException:
        staged_path.unlink(missing_ok=True)
        raise
    return StagedFile(staged_path, path.name, size, digest.hexdigest())


async def forget_results(capture: Capture) -> None:
    """Close the capture's engine sessions and drop every result computed from it."""
    await engine().forget(capture.path)
    await stats.forget(capture.path)


async def delete(capture: Capture) -> None:
    """Close the capture's engine sessions, then remove its row, its file and its key log."""
    await forget_results(capture)
    path = capture.path
    await capture.adelete()
    await sync_to_async(path.unlink)(missing_ok=True)
    await sync_to_async(path.with_suffix(".keys").unlink)(missing_ok=True)


async def attach_keylog(capture: Capture, data: bytes) -> int:
    """Store a TLS key log for the capture and reopen it decrypted; return the secrets count."""
    secrets = keylog.key_lines(data)
    target = capture.path.with_suffix(".keys")
    partial = target.with_suffix(".keys-partial")
    try:
        await sync_to_async(partial.write_bytes)(data)
    except OSError:
        partial.unlink(missing_ok=True)  # a full disk: keep the key log there was, if any
        raise
    os.replace(partial, target)
    await forget_results(capture)
    # Decrypted traffic shows protocols and names the summary could not see before.
    search.schedule_summary(capture)
    return secrets


async def detach_keylog(capture: Capture) -> None:
    """Remove the capture's key log and reopen it without decryption."""
    await sync_to_async(capture.path.with_suffix(".keys").unlink)(missing_ok=True)
    await forget_results(capture)


def keylog_secrets(capture: Capture) -> int | None:
    """Return how many secrets the capture's key log holds, or None without one."""
    path = keylog.keylog_for(capture.path)
    if path is None:
        return None
    try:
        return keylog.key_lines(path.read_bytes())
    except keylog.NotAKeyLog:
        return 0

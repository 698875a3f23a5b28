"""What the engine service and its clients say to each other, and how they check each other.

One JSON message per line, both ways. A client opens with {"hello": key}; then each request
is {"id", "op", ...} and each answer {"id", "result"} or {"id", "error": {"kind", "message"}},
with {"id", "progress"} lines before the answer of a request that reports its progress.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from . import jsoncodec
from .errors import EngineCrashed, EngineError, NotACapture, RequestTooLong
from .sessions import EngineBusy
from .sharkd import EngineOutOfMemory, EngineTimeout

# An answer holds a whole sharkd answer: a followed stream can be tens of megabytes.
LINE_LIMIT = 1 << 30

# The errors that cross the wire keep their kind: views tell a busy engine from a bad filter.
ERRORS: dict[str, type[EngineError]] = {
    kind.__name__: kind
    for kind in (
        EngineError,
        EngineCrashed,
        EngineBusy,
        EngineTimeout,
        EngineOutOfMemory,
        RequestTooLong,
        NotACapture,
    )
}


def service_key() -> str:
    """Return the key a client proves it belongs to this deployment with (from SECRET_KEY)."""
    purpose = b"capture-explorer engine service"
    return hmac.new(settings.SECRET_KEY.encode(), purpose, hashlib.sha256).hexdigest()


def address(url: str) -> tuple[str, int] | str:
    """Return (host, port) of a tcp:// URL, or the socket path of a unix:// one."""
    parts = urlsplit(url)
    if parts.scheme == "unix" and parts.path:
        return parts.path
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        return parts.hostname, parts.port
    raise ValueError(f"ENGINE_URL must be tcp://HOST:PORT or unix:///PATH, not {url!r}")


def encode(message: dict[str, Any]) -> bytes:
    return jsoncodec.dumps(message) + b"\n"


def decode(line: bytes) -> Any:
    """Return the message of one line; raise ValueError if it is not JSON."""
    return jsoncodec.loads(line)


def error_message(error: EngineError) -> dict[str, str]:
    kind = type(error).__name__
    return {"kind": kind if kind in ERRORS else "EngineError", "message": str(error)}


def error_from(message: dict[str, Any]) -> EngineError:
    kind = ERRORS.get(str(message.get("kind")), EngineError)
    return kind(str(message.get("message", "the engine failed")))


def path_out(path: Path | None) -> str | None:
    return None if path is None else str(path)


def path_in(text: Any) -> Path | None:
    """Return a capture path sent by a client, refusing any outside the capture folder."""
    if text is None:
        return None
    path = Path(str(text))
    folder = Path(settings.CAPTURES_DIR).resolve()
    if not path.is_absolute() or not path.resolve().is_relative_to(folder):
        raise EngineError("the engine only opens files of the capture folder")
    return path

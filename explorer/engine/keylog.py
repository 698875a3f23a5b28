"""TLS key logs (SSLKEYLOGFILE format) attached to captures: checked, stored beside the file."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import EngineError

# The NSS key log labels Wireshark reads (TLS 1.2 and 1.3, QUIC shares the TLS 1.3 ones).
LINE = re.compile(
    rb"(CLIENT_RANDOM|RSA|CLIENT_EARLY_TRAFFIC_SECRET|CLIENT_HANDSHAKE_TRAFFIC_SECRET"
    rb"|SERVER_HANDSHAKE_TRAFFIC_SECRET|CLIENT_TRAFFIC_SECRET_0|SERVER_TRAFFIC_SECRET_0"
    rb"|EARLY_EXPORTER_SECRET|EXPORTER_SECRET) [0-9a-fA-F]+ [0-9a-fA-F]+"
)
MAX_KEYLOG_BYTES = 16 * 1024 * 1024


class NotAKeyLog(EngineError):
    """The file is not a TLS key log."""


def key_lines(data: bytes) -> int:
    """Return how many secrets a key log holds; raise NotAKeyLog for anything else."""
    if len(data) > MAX_KEYLOG_BYTES:
        raise NotAKeyLog(f"key log larger than {MAX_KEYLOG_BYTES // (1024 * 1024)} MB")
    secrets = 0
    for number, line in enumerate(data.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        if not LINE.fullmatch(line):
            raise NotAKeyLog(f"not a TLS key log file (SSLKEYLOGFILE format): line {number} is not a secret")
        secrets += 1
    if not secrets:
        raise NotAKeyLog("not a TLS key log file (SSLKEYLOGFILE format): no secrets in it")
    return secrets


def keylog_for(capture_path: Path) -> Path | None:
    """Return the key log attached to a stored capture, if there is one."""
    path = capture_path.with_suffix(".keys")
    return path if path.exists() else None

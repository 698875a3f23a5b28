"""G.711 speech (ITU-T G.711, μ-law and A-law) decoded to 16-bit linear samples, and WAV files of them.

The decoding is G.711's own expansion, as Wireshark's G.711 codec (Sun's g711.c) computes it:
each 8-bit code becomes one 16-bit sample, 8,000 of them a second.
"""

from __future__ import annotations

import struct

SAMPLE_RATE = 8000
# RTP's static payload types for G.711 (RFC 3551): PCMU (μ-law) and PCMA (A-law).
PCMU, PCMA = 0, 8
CODECS = {PCMU: "G.711 μ-law (PCMU)", PCMA: "G.711 A-law (PCMA)"}


def ulaw_sample(code: int) -> int:
    """Return the linear sample of one μ-law code."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def alaw_sample(code: int) -> int:
    """Return the linear sample of one A-law code."""
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    elif segment == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


# Each code's sample as two little-endian bytes, so that a payload decodes with one join.
_ULAW = [struct.pack("<h", ulaw_sample(code)) for code in range(256)]
_ALAW = [struct.pack("<h", alaw_sample(code)) for code in range(256)]


def decode(payload: bytes, payload_type: int) -> bytes:
    """Return the 16-bit little-endian samples of a PCMU or PCMA payload."""
    table = _ULAW if payload_type == PCMU else _ALAW
    return b"".join([table[code] for code in payload])


def silence(samples: int) -> bytes:
    return bytes(2 * samples)


def wav(pcm: bytes, rate: int = SAMPLE_RATE) -> bytes:
    """Return a WAV file (RIFF, PCM, mono, 16 bits) holding these samples."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm

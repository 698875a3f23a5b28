"""One RTP stream analysed packet by packet, and its G.711 speech decoded for playback.

The analysis is Wireshark's RTP Stream Analysis, from sharkd's `rtp-analyse` tap: for every
packet its delta from the previous one, the jitter (RFC 3550's running estimate), the skew and
the bandwidth, and what went wrong (wrong sequence number, payload change...); tshark 4.0 has
no per-packet RTP fields, only the stream totals of `-z rtp,streams` (voip).

The audio is decoded here: the stream's payloads (tshark's `rtp.payload`) in sequence-number
order (so late packets fall into place and duplicates count once), with silence as long as the
packet before for each sequence number missing. Packets of other payload types (comfort noise,
DTMF events) add no sound. Only G.711 is decoded, and at most MAX_AUDIO_SECONDS of it.

Streams found only by Wireshark's RTP heuristic (`heuristic_rtp=True`) are analysed by a sharkd
process of their own with the heuristic on: switching it on in the capture's shared session
would change the packet list of everyone viewing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from . import fieldpass, g711, voip
from .errors import EngineError
from .fieldpass import last
from .sessions import EngineBusy, engine
from .sharkd import SharkdProcess
from .voip import RtpStream

# Packets of one analysis answer at most (its totals cover the whole stream).
MAX_ANALYSED_PACKETS = 500_000
# Longest audio decoded: an hour of G.711 is 57.6 MB of WAV.
MAX_AUDIO_SECONDS = 3600
# sharkd processes of their own (RTP heuristic) running at once in one server process.
HEURISTIC_SESSIONS_AT_ONCE = 1

AUDIO_FIELDS = ["frame.number", "rtp.seq", "rtp.p_type", "rtp.payload"]

_heuristic_room: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


@dataclass
class RtpPacket:
    """One packet of a stream as Wireshark's RTP Stream Analysis lists it; times in milliseconds."""

    frame: int
    sequence: int
    # Seconds since the stream's first packet.
    arrival: float
    delta: float
    jitter: float
    skew: float
    # Kilobits per second over the last second.
    bandwidth: float
    marker: bool = False
    # What Wireshark flags about the packet ("Wrong sequence number", "Payload changed to PT=8"), if anything.
    status: str = ""


@dataclass
class RtpAnalysis:
    stream: str
    ssrc: int
    packets: int
    sequence_errors: int
    max_delta: float
    max_delta_frame: int | None
    max_jitter: float
    mean_jitter: float
    max_skew: float
    # Milliseconds from the first to the last packet.
    duration: float
    items: list[RtpPacket] = field(default_factory=list)
    # The stream has more than MAX_ANALYSED_PACKETS packets: items holds the first.
    truncated: bool = False


@dataclass
class RtpAudio:
    stream: str
    wav: bytes
    sample_rate: int
    samples: int
    # Packets decoded, sequence numbers missing (each filled with silence), and packets of
    # other payload types that add no sound.
    decoded: int
    missing: int
    skipped: int
    codecs: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def _tap_name(stream: RtpStream) -> str:
    return f"rtp-analyse:{stream.id}"


async def find_stream(path: Path, stream_id: str, heuristic_rtp: bool = False) -> RtpStream:
    """Return one of the capture's RTP streams by id; raise EngineError when it has no such stream."""
    voip.parse_stream_id(stream_id)
    for stream in await voip.rtp_streams(path, heuristic_rtp):
        if stream.id.lower() == stream_id.strip().lower():
            return stream
    raise EngineError(f"there is no RTP stream {stream_id} in this capture")


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _heuristic_room:
        _heuristic_room[loop] = asyncio.Semaphore(HEURISTIC_SESSIONS_AT_ONCE)
    return _heuristic_room[loop]


async def _tap(path: Path, tap: str, heuristic_rtp: bool) -> dict[str, Any]:
    """Return one tap's result, from the capture's sessions or (RTP heuristic) a sharkd of its own."""
    if not heuristic_rtp:
        result = await engine().sessions(path).call("tap", {"tap0": tap})
        return dict(result["taps"][0])
    timeout = settings.ENGINE_REQUEST_TIMEOUT
    room = _semaphore()
    try:
        await asyncio.wait_for(room.acquire(), settings.ENGINE_BUSY_WAIT_SECONDS)
    except TimeoutError:
        raise EngineBusy("the engine is busy with other analyses: try again in a moment") from None
    process = SharkdProcess(path)
    try:
        async with asyncio.timeout(timeout):
            await process.start()
            await process.request("setconf", {"name": "rtp.heuristic_rtp", "value": "TRUE"})
            result = await process.request("tap", {"tap0": tap}, slow=True)
    except TimeoutError:
        raise EngineError(f"the engine did not answer within {timeout} s") from None
    finally:
        with contextlib.suppress(Exception):
            await process.close()
        room.release()
    return dict(result["taps"][0])


def _packet(raw: dict[str, Any]) -> RtpPacket:
    return RtpPacket(
        frame=int(raw.get("f", 0)),
        sequence=int(raw.get("sn", 0)),
        arrival=float(raw.get("o", 0.0)),
        delta=float(raw.get("d", 0.0)),
        jitter=float(raw.get("j", 0.0)),
        skew=float(raw.get("sk", 0.0)),
        bandwidth=float(raw.get("bw", 0.0)),
        marker=bool(raw.get("mark")),
        status=str(raw.get("s", "")),
    )


async def rtp_analysis(path: Path, stream_id: str, heuristic_rtp: bool = False) -> RtpAnalysis:
    """Return Wireshark's RTP Stream Analysis of one stream: per packet delta, jitter, skew and bandwidth."""
    stream = await find_stream(path, stream_id, heuristic_rtp)

    async def compute() -> RtpAnalysis:
        tap = await _tap(path, _tap_name(stream), heuristic_rtp)
        items = tap.get("items", [])
        max_delta_frame = tap.get("max_delta_nr")
        return RtpAnalysis(
            stream=stream.id,
            ssrc=int(tap.get("ssrc", stream.ssrc)),
            packets=int(tap.get("total_nr", len(items))),
            sequence_errors=int(tap.get("seq_err", 0)),
            max_delta=float(tap.get("max_delta", 0.0)),
            max_delta_frame=int(max_delta_frame) if max_delta_frame else None,
            max_jitter=float(tap.get("max_jitter", 0.0)),
            mean_jitter=float(tap.get("mean_jitter", 0.0)),
            max_skew=float(tap.get("max_skew", 0.0)),
            duration=float(tap.get("duration", 0.0)),
            items=[_packet(raw) for raw in items[:MAX_ANALYSED_PACKETS]],
            truncated=len(items) > MAX_ANALYSED_PACKETS,
        )

    return await fieldpass.remembered((path, "rtp-analysis", stream.id, heuristic_rtp), compute)


class AudioReader:
    """Keeps a stream's payloads by extended sequence number as tshark prints them."""

    def __init__(self, most_samples: int) -> None:
        self.payloads: dict[int, tuple[int, bytes]] = {}
        self.first: int | None = None
        self.highest = 0
        self.samples = 0
        self.most_samples = most_samples

    def extended(self, sequence: int) -> int:
        """Return a sequence number counted on past 65535, as near as it can be to the highest seen."""
        if self.first is None:
            self.first = self.highest = sequence
            return sequence
        cycle = self.highest - (self.highest & 0xFFFF)
        candidates = (cycle - 0x10000 + sequence, cycle + sequence, cycle + 0x10000 + sequence)
        return min(candidates, key=lambda value: abs(value - self.highest))

    def add(self, cells: list[str]) -> None:
        sequence_text, type_text, payload_text = last(cells[1]), last(cells[2]), last(cells[3])
        if not sequence_text.isdigit() or not type_text.isdigit():
            return
        number = self.extended(int(sequence_text))
        self.highest = max(self.highest, number)
        if number in self.payloads:
            return  # a duplicate: the first copy counts
        payload = bytes.fromhex(payload_text) if payload_text else b""
        self.payloads[number] = (int(type_text), payload)
        if int(type_text) in g711.CODECS:
            self.samples += len(payload)
            if self.samples > self.most_samples:
                raise fieldpass.EnoughRows

    def audio(self, stream: str) -> RtpAudio:
        pcm: list[bytes] = []
        decoded = missing = skipped = 0
        samples = 0
        codecs: list[str] = []
        previous: int | None = None
        last_length = 0
        for number in sorted(self.payloads):
            payload_type, payload = self.payloads[number]
            if previous is not None and number - previous > 1:
                gap = number - previous - 1
                missing += gap
                filler = min(gap * last_length, max(self.most_samples - samples, 0))
                pcm.append(g711.silence(filler))
                samples += filler
            previous = number
            if payload_type not in g711.CODECS:
                skipped += 1
                continue
            if samples + len(payload) > self.most_samples:
                break
            pcm.append(g711.decode(payload, payload_type))
            samples += len(payload)
            last_length = len(payload)
            decoded += 1
            if g711.CODECS[payload_type] not in codecs:
                codecs.append(g711.CODECS[payload_type])
        return RtpAudio(
            stream=stream,
            wav=g711.wav(b"".join(pcm)),
            sample_rate=g711.SAMPLE_RATE,
            samples=samples,
            decoded=decoded,
            missing=missing,
            skipped=skipped,
            codecs=codecs,
        )


async def rtp_audio(path: Path, stream_id: str, heuristic_rtp: bool = False) -> RtpAudio:
    """Return a stream's G.711 speech as a WAV file, in sequence order, silence where packets are missing."""
    stream = await find_stream(path, stream_id, heuristic_rtp)
    if not set(stream.payload_types) & set(g711.CODECS):
        raise EngineError(
            f"this stream's payload ({stream.payload}) cannot be played: only G.711 (PCMU, PCMA) is decoded"
        )
    if stream.duration > MAX_AUDIO_SECONDS:
        raise EngineError(
            f"this stream lasts {stream.duration:,.0f} s: "
            f"at most {MAX_AUDIO_SECONDS:,} s of audio are decoded"
        )
    reader = AudioReader(MAX_AUDIO_SECONDS * g711.SAMPLE_RATE)
    preferences = voip.HEURISTIC_RTP if heuristic_rtp else None
    await fieldpass.run(path, AUDIO_FIELDS, voip.stream_filter(stream.id), reader.add, preferences)
    return await asyncio.to_thread(reader.audio, stream.id)

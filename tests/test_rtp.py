"""RTP stream analysis per packet, and G.711 decoding to WAV, checked sample for sample."""

from __future__ import annotations

import base64
import json
import math
import shutil
import struct
import subprocess
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from explorer.engine import packets, rtp, voip
from explorer.engine.errors import EngineError
from explorer.engine.sessions import engine

from .conftest import sample_capture, tshark

with warnings.catch_warnings():
    # audioop (deprecated, still in Python 3.11) is an independent G.711 reference here.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.engine

FAX = sample_capture("FAX-Call-t38-CA-TDM-SIP-FB-1.pcap")
SIP = sample_capture("ndpi-sip.pcap")
HEURISTIC = sample_capture("ndpi-rtp.pcapng")


@pytest.fixture(autouse=True)
async def closed_engine() -> AsyncIterator[None]:
    yield
    await engine().close()


def fields(path: Path, display_filter: str, *names: str, options: tuple[str, ...] = ()) -> list[list[str]]:
    args = ["-2", "-n", *options, "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for name in names:
        args += ["-e", name]
    return [line.split("\t") for line in tshark(*args).splitlines() if line]


@pytest.mark.parametrize(("path", "heuristic"), [(FAX, False), (SIP, False), (HEURISTIC, True)])
async def test_the_analysis_has_a_row_per_packet_with_tsharks_totals(path: Path, heuristic: bool) -> None:
    options = ("-o", "rtp.heuristic_rtp:TRUE") if heuristic else ()
    for stream in await voip.rtp_streams(path, heuristic):
        analysis = await rtp.rtp_analysis(path, stream.id, heuristic)
        rows = fields(path, stream.filter, "frame.number", "rtp.seq", "frame.time_relative", options=options)
        assert [(p.frame, p.sequence) for p in analysis.items] == [(int(f), int(s)) for f, s, _ in rows]
        assert analysis.packets == stream.packets == len(rows)
        # tshark's -z rtp,streams prints the same totals to three decimals.
        assert round(analysis.max_delta, 3) == stream.max_delta
        assert round(analysis.max_jitter, 3) == max(stream.max_jitter, 0.0)
        assert round(analysis.mean_jitter, 3) == max(stream.mean_jitter, 0.0)
        # The packet named for the largest delta has it, as tshark's table prints it.
        (longest,) = [p for p in analysis.items if p.frame == analysis.max_delta_frame]
        assert longest.delta == pytest.approx(stream.max_delta, abs=0.006)
        # Each delta is the time since the stream's previous packet (in capture order), in ms to
        # 0.01; a packet Wireshark flags (an incorrect timestamp) keeps the delta before it.
        times = [float(t) for _, _, t in rows]
        checked = 0
        for previous, item, now in zip(times, analysis.items[1:], times[1:], strict=False):
            if not item.status:
                assert item.delta == pytest.approx((now - previous) * 1000, abs=0.006)
                checked += 1
        assert checked > len(rows) // 2
        assert analysis.items[-1].arrival == pytest.approx(times[-1] - times[0], abs=1e-6)


async def test_the_analysis_flags_what_wireshark_flags() -> None:
    (_, lossy) = await voip.rtp_streams(FAX)
    analysis = await rtp.rtp_analysis(FAX, lossy.id)
    assert analysis.sequence_errors == 1
    flagged = {p.frame: p.status for p in analysis.items if p.status}
    assert flagged[1419] == "Wrong sequence number"
    assert analysis.max_delta_frame == 1419


async def test_the_heuristic_stays_out_of_the_shared_session() -> None:
    (stream, *_) = await voip.rtp_streams(HEURISTIC, heuristic_rtp=True)
    await rtp.rtp_analysis(HEURISTIC, stream.id, heuristic_rtp=True)
    page = await packets.packets(HEURISTIC, "", 0, 1)
    assert page.packets[0].protocol.strip() == "UDP"
    with pytest.raises(EngineError, match="no RTP stream"):
        await rtp.rtp_analysis(HEURISTIC, stream.id)


def sharkd_wav(path: Path, stream: str) -> bytes:
    """Return the WAV sharkd's own RTP download decodes for a stream."""
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "load", "params": {"file": str(path)}},
        {"jsonrpc": "2.0", "id": 2, "method": "download", "params": {"token": f"rtp:{stream}"}},
    ]
    out = subprocess.run(
        ["sharkd", "-"],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    answer = json.loads(out.splitlines()[1])["result"]
    return base64.b64decode(answer["data"])


def samples_of(wav: bytes) -> bytes:
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt "
    channels, rate, _, _, bits = struct.unpack("<HIIHH", wav[22:36])
    assert (channels, rate, bits) == (1, 8000, 16)
    assert wav[36:40] == b"data"
    return wav[44:]


@pytest.mark.parametrize("which", [0, 1])
async def test_g711_is_decoded_as_wiresharks_own_decoder_does(which: int) -> None:
    path = SIP if which == 0 else FAX
    stream = (await voip.rtp_streams(path))[0]
    audio = await rtp.rtp_audio(path, stream.id)
    ours = samples_of(audio.wav)
    assert struct.unpack("<I", audio.wav[4:8])[0] == len(audio.wav) - 8
    assert struct.unpack("<I", audio.wav[40:44])[0] == len(ours) == 2 * audio.samples
    # sharkd joins the decoded payloads without filling gaps; these streams have none.
    assert audio.missing == 0
    assert ours == samples_of(sharkd_wav(path, stream.id))
    assert audio.codecs == ["G.711 A-law (PCMA)"]


def rtp_capture(path: Path, packets_out: list[tuple[int, int, bytes]], payload_type: int) -> None:
    """Write a pcap of RTP packets (sequence number, timestamp, payload), 10.0.0.1:40000 to 10.0.0.2:40002."""
    records = []
    for index, (sequence, timestamp, payload) in enumerate(packets_out):
        header = struct.pack("!BBHII", 0x80, payload_type, sequence & 0xFFFF, timestamp, 0x1234ABCD)
        udp_payload = header + payload
        udp = struct.pack("!HHHH", 40000, 40002, 8 + len(udp_payload), 0) + udp_payload
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            index,
            0,
            64,
            17,
            0,
            bytes([10, 0, 0, 1]),
            bytes([10, 0, 0, 2]),
        )
        frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp
        seconds, micros = divmod(1_700_000_000_000_000 + index * 20_000, 1_000_000)
        records.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path.write_bytes(header + b"".join(records))


def tone(count: int) -> list[bytes]:
    """Return `count` 20 ms frames of a 1 kHz tone as 16-bit little-endian samples."""
    frames = []
    for index in range(count):
        samples = [round(8000 * math.sin(2 * math.pi * 1000 * (index * 160 + n) / 8000)) for n in range(160)]
        frames.append(struct.pack("<160h", *samples))
    return frames


@pytest.mark.parametrize(
    ("payload_type", "encode", "decode"),
    [
        (0, audioop.lin2ulaw, audioop.ulaw2lin),
        (8, audioop.lin2alaw, audioop.alaw2lin),
    ],
)
async def test_a_tone_plays_back_in_sequence_order_with_silence_for_the_lost_packet(
    tmp_path: Path, payload_type: int, encode: object, decode: object
) -> None:
    linear = tone(12)
    coded = [encode(frame, 2) for frame in linear]  # type: ignore[operator]
    first = 65_530  # the sequence numbers wrap past 65535 on the way
    sent = [(first + n, 1000 + 160 * n, coded[n]) for n in range(12)]
    # Packet 5 is lost, 8 arrives before 7, and 10 arrives twice.
    order = [0, 1, 2, 3, 4, 6, 8, 7, 9, 10, 10, 11]
    path = tmp_path / f"tone-{payload_type}.pcap"
    rtp_capture(path, [sent[n] for n in order], payload_type)

    (stream,) = await voip.rtp_streams(path, heuristic_rtp=True)
    assert stream.ssrc == 0x1234ABCD and stream.packets == 12
    audio = await rtp.rtp_audio(path, stream.id, heuristic_rtp=True)
    expected = b"".join(
        bytes(320) if n == 5 else decode(coded[n], 2)  # type: ignore[operator]
        for n in range(12)
    )
    assert samples_of(audio.wav) == expected
    assert (audio.decoded, audio.missing, audio.skipped, audio.samples) == (11, 1, 0, 12 * 160)
    # The decoded tone is the tone, within G.711's quantisation.
    decoded = struct.unpack("<1920h", expected)
    original = struct.unpack("<1920h", b"".join(linear))
    assert all(
        abs(a - b) <= max(abs(b) // 16, 16) for a, b in zip(decoded[:800], original[:800], strict=True)
    )
    with pytest.raises(EngineError, match="no RTP stream"):
        await rtp.rtp_audio(path, stream.id)  # nothing announced it: the heuristic finds it


async def test_audio_is_bounded_before_and_while_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coded = [audioop.lin2ulaw(frame, 2) for frame in tone(20)]
    path = tmp_path / "long.pcap"
    rtp_capture(path, [(n, 160 * n, coded[n]) for n in range(20)], 0)  # 0.38 s of packets
    (stream,) = await voip.rtp_streams(path, heuristic_rtp=True)
    monkeypatch.setattr(rtp, "MAX_AUDIO_SECONDS", 0.2)
    with pytest.raises(EngineError, match="at most 0.2 s"):
        await rtp.rtp_audio(path, stream.id, heuristic_rtp=True)

    # A jump in sequence numbers would be minutes of silence: the audio stops at the limit.
    jumpy = tmp_path / "jump.pcap"
    rtp_capture(jumpy, [(0, 0, coded[0]), (30_000, 160, coded[1]), (30_001, 320, coded[2])], 0)
    (stream,) = await voip.rtp_streams(jumpy, heuristic_rtp=True)
    monkeypatch.setattr(rtp, "MAX_AUDIO_SECONDS", 1)
    audio = await rtp.rtp_audio(jumpy, stream.id, heuristic_rtp=True)
    assert audio.samples == 8000 and len(samples_of(audio.wav)) == 16000
    assert audio.missing == 29_999


async def test_it_refuses_streams_it_cannot_play_or_find() -> None:
    streams = await voip.rtp_streams(HEURISTIC, heuristic_rtp=True)
    video = next(s for s in streams if s.payload == "h263")
    with pytest.raises(EngineError, match=r"\(h263\) cannot be played"):
        await rtp.rtp_audio(HEURISTIC, video.id, heuristic_rtp=True)
    with pytest.raises(EngineError, match="not an RTP stream"):
        await rtp.rtp_audio(SIP, "nonsense")
    with pytest.raises(EngineError, match="no RTP stream"):
        await rtp.rtp_analysis(SIP, "10.0.0.1_1_10.0.0.2_2_0x00000001")


async def test_a_copy_of_a_capture_gives_the_same_audio(tmp_path: Path) -> None:
    copy = tmp_path / "sip.pcap"
    shutil.copy(SIP, copy)
    (stream,) = await voip.rtp_streams(SIP)
    assert (await rtp.rtp_audio(copy, stream.id)).wav == (await rtp.rtp_audio(SIP, stream.id)).wav

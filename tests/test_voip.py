"""SIP calls, their flow diagrams and the RTP streams, against tshark's SIP fields and `-z rtp,streams`."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from explorer.engine import voip
from explorer.engine.errors import EngineError

from .conftest import sample_capture, tshark

pytestmark = pytest.mark.engine

FAX = sample_capture("FAX-Call-t38-CA-TDM-SIP-FB-1.pcap")
SIP = sample_capture("ndpi-sip.pcap")
HEURISTIC = sample_capture("ndpi-rtp.pcapng")


def fields(path: Path, display_filter: str, *names: str, options: tuple[str, ...] = ()) -> list[list[str]]:
    args = ["-2", "-n", *options, "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "occurrence=f"]
    for name in names:
        args += ["-e", name]
    return [line.split("\t") for line in tshark(*args).splitlines() if line]


def tshark_streams(path: Path, options: tuple[str, ...] = ()) -> list[list[str]]:
    """Return the rows of tshark's own `-z rtp,streams` table, split at blanks."""
    output = tshark("-2", "-n", *options, "-q", "-r", str(path), "-z", "rtp,streams")
    return [line.split() for line in output.splitlines() if " 0x" in line and line.strip()[0].isdigit()]


@pytest.mark.parametrize(
    ("path", "options", "heuristic"),
    [(FAX, (), False), (SIP, (), False), (HEURISTIC, ("-o", "rtp.heuristic_rtp:TRUE"), True)],
)
async def test_rtp_streams_are_tsharks(path: Path, options: tuple[str, ...], heuristic: bool) -> None:
    streams = await voip.rtp_streams(path, heuristic)
    expected = tshark_streams(path, options)
    assert len(streams) == len(expected) > 0
    for stream, row in zip(streams, expected, strict=True):
        start, end, source, source_port, destination, destination_port, ssrc = row[:7]
        assert (stream.source, stream.source_port, stream.destination, stream.destination_port) == (
            source,
            int(source_port),
            destination,
            int(destination_port),
        )
        assert stream.ssrc == int(ssrc, 16)
        assert (stream.start, stream.end) == (float(start), float(end))
        problem = row[-1] == "X"
        numbers = row[-7:-1] if problem else row[-6:]
        assert [stream.min_delta, stream.mean_delta, stream.max_delta] == [float(n) for n in numbers[:3]]
        assert [stream.min_jitter, stream.mean_jitter, stream.max_jitter] == [float(n) for n in numbers[3:]]
        tail = row[-10:-7] if problem else row[-9:-6]
        assert (stream.packets, stream.lost) == (int(tail[0]), int(tail[1]))
        assert stream.problem == problem
        assert stream.payload == " ".join(row[7 : len(row) - (10 if problem else 9)])
        # The frames the stream spans, and what set it up, as tshark's RTP fields give them.
        frames = fields(path, stream.filter, "frame.number", "rtp.setup-frame", "rtp.p_type", options=options)
        assert len(frames) == stream.packets
        assert (stream.first_frame, stream.last_frame) == (int(frames[0][0]), int(frames[-1][0]))
        assert stream.setup_frames == list(dict.fromkeys(int(f[1]) for f in frames if f[1]))
        assert stream.payload_types == list(dict.fromkeys(int(f[2]) for f in frames))


async def test_streams_that_nothing_announced_need_the_heuristic() -> None:
    assert await voip.rtp_streams(HEURISTIC) == []
    assert len(await voip.rtp_streams(HEURISTIC, heuristic_rtp=True)) == 5


def sip_messages(path: Path) -> dict[str, list[tuple[int, float, str, str]]]:
    """Return each Call-ID's SIP frames: (frame, time, method or "", status or "")."""
    by_call: dict[str, list[tuple[int, float, str, str]]] = defaultdict(list)
    for frame, time, call_id, method, status in fields(
        path, "sip", "frame.number", "frame.time_relative", "sip.Call-ID", "sip.Method", "sip.Status-Code"
    ):
        by_call[call_id].append((int(frame), float(time), method, status))
    return by_call


async def test_the_calls_of_a_capture_as_voip_calls_lists_them() -> None:
    calls = await voip.voip_calls(SIP)
    by_call = sip_messages(SIP)
    invites = [call_id for call_id, messages in by_call.items() if any(m[2] == "INVITE" for m in messages)]
    assert [c.call_id for c in calls] == invites
    assert [c.number for c in calls] == list(range(len(invites)))
    for call in calls:
        messages = by_call[call.call_id]
        first = next(i for i, m in enumerate(messages) if m[2] == "INVITE")
        counted = messages[first:]
        assert call.packets == len(counted)
        assert call.frames == [m[0] for m in counted]
        assert (call.start, call.stop) == (counted[0][1], counted[-1][1])
        assert call.duration == pytest.approx(counted[-1][1] - counted[0][1], abs=1e-9)
        ((from_uri, to_uri, source),) = fields(
            SIP, f"frame.number == {counted[0][0]}", "sip.from.addr", "sip.to.addr", "ip.src"
        )
        assert (call.from_uri, call.to_uri, call.initial_speaker) == (from_uri, to_uri, source)
    # The INVITE answered with 100 and then cancelled; the others refused (407, then 403 or 480).
    assert [(c.state_label, c.comment) for c in calls] == [
        ("CANCELED", "INVITE 408 408"),
        ("REJECTED", "INVITE 407 403"),
        ("REJECTED", "INVITE 407 403"),
        ("REJECTED", "INVITE 407 480"),
    ]


async def test_sip_flows_include_every_dialog() -> None:
    flows = await voip.voip_calls(SIP, all_flows=True)
    assert [c.call_id for c in flows] == list(sip_messages(SIP))
    assert [c.comment.split()[0] for c in flows] == [
        "REGISTER",
        "INVITE",
        "INVITE",
        "REGISTER",
        "INVITE",
        "INVITE",
    ]


async def test_a_call_that_was_answered_and_hung_up_is_completed_with_its_streams() -> None:
    calls = await voip.voip_calls(FAX)
    assert [c.state for c in calls] == ["completed", "completed"]
    byes = fields(FAX, "sip.Method == BYE", "sip.Call-ID")
    assert {c.call_id for c in calls} == {b[0] for b in byes}
    streams = await voip.rtp_streams(FAX)
    for call in calls:
        owned = [s.id for s in streams if set(s.setup_frames) & set(call.frames)]
        assert call.streams == owned
    assert len(calls[0].streams) == 2


async def test_a_calls_flow_holds_its_sip_messages_and_rtp_streams() -> None:
    calls = await voip.voip_calls(SIP)
    call = calls[3]
    flow = await voip.call_flow(SIP, [call.number])
    sip_items = [item for item in flow.items if item.kind == "sip"]
    assert [item.frame for item in sip_items] == call.frames
    rows = {
        int(f): (src, dst)
        for f, src, dst in fields(SIP, f'sip.Call-ID == "{call.call_id}"', "frame.number", "ip.src", "ip.dst")
    }
    assert all((item.source, item.destination) == rows[item.frame] for item in sip_items)
    assert sip_items[0].label.startswith("INVITE SDP (audio 30000 RTP/AVP")
    (stream,) = await voip.rtp_streams(SIP)
    (rtp_item,) = [item for item in flow.items if item.kind == "rtp"]
    assert (rtp_item.frame, rtp_item.last_frame) == (stream.first_frame, stream.last_frame)
    assert rtp_item.label == "RTP (g711A)"
    assert [item.frame for item in flow.items] == sorted(item.frame for item in flow.items)
    names = [n for item in flow.items for n in (item.source, item.destination)]
    assert flow.nodes == list(dict.fromkeys(names))


async def test_it_refuses_calls_and_streams_it_does_not_have() -> None:
    with pytest.raises(EngineError, match="no call 9"):
        await voip.call_flow(SIP, [9])
    with pytest.raises(EngineError, match="choose 1 to"):
        await voip.call_flow(SIP, [])
    for bad in ("10.0.0.1_5_10.0.0.2", "x_1_10.0.0.2_2_0x1", "10.0.0.1_70000_10.0.0.2_2_0x1", "a b"):
        with pytest.raises(EngineError):
            voip.parse_stream_id(bad)
    assert voip.stream_filter("2001:db8::1_5004_2001:db8::2_5006_0xAB") == (
        "ipv6.src == 2001:db8::1 && udp.srcport == 5004 && ipv6.dst == 2001:db8::2 && "
        "udp.dstport == 5006 && rtp.ssrc == 0x000000ab"
    )


async def test_a_capture_without_voip_has_no_calls_or_streams() -> None:
    path = sample_capture("http_google.pcapng")
    assert await voip.voip_calls(path) == [] and await voip.rtp_streams(path) == []


async def test_a_summary_keeps_at_most_its_limits_of_messages_and_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(voip, "MAX_SIP_MESSAGES", 10)
    monkeypatch.setattr(voip, "MAX_RTP_STREAMS", 1)
    path = tmp_path / "fax.pcap"
    shutil.copy(FAX, path)
    summary = await voip.voip_summary(path)
    assert len(summary.messages) == 10
    assert summary.untallied_messages == len(fields(FAX, "sip", "frame.number")) - 10
    assert summary.untallied_streams == 1
    # tshark's table still lists both streams; only the first has its frames gathered.
    assert [s.first_frame is not None for s in summary.streams].count(True) == 1
    calls = voip.calls_of(summary)
    assert sum(call.packets for call in calls) == 10

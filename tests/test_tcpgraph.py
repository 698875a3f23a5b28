"""TCP stream graphs: every point is a packet of the stream with the values tshark prints for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from explorer.engine import tcpgraph, tcpstream
from explorer.engine.errors import EngineError
from explorer.engine.tcpgraph import TcpGraph

from .conftest import sample_capture, tshark

pytestmark = pytest.mark.engine

FAST = sample_capture("retransmit-fast009.pcap")
CLIENT = ("10.0.88.85", "50368")
SERVER = ("192.168.0.27", "80")


def rows(path: Path, display_filter: str, *names: str) -> list[list[str]]:
    args = ["-2", "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "occurrence=a"]
    for name in names:
        args += ["-e", name]
    return [line.split("\t") for line in tshark(*args).splitlines() if line]


def sent_by(stream: int, sender: tuple[str, str], extra: str = "") -> str:
    address, port = sender
    return f"tcp.stream == {stream} && ip.src == {address} && tcp.srcport == {port}" + extra


def optional(text: str) -> int | None:
    return int(text) if text else None


async def graph(
    kind: str, direction: str = "server-to-client", path: Path = FAST, **options: object
) -> TcpGraph:
    return await tcpgraph.tcp_graph(path, 0, kind, direction, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("direction", "sender"), [("client-to-server", CLIENT), ("server-to-client", SERVER)]
)
async def test_stevens_points_are_the_senders_segments(direction: str, sender: tuple[str, str]) -> None:
    drawn = await graph("stevens", direction)
    expected = rows(
        FAST, sent_by(0, sender), "frame.number", "frame.time_relative", "tcp.seq", "tcp.nxtseq", "tcp.len"
    )
    assert [(p.frame, p.time, p.seq, p.next_seq, p.length) for p in drawn.segments] == [
        (int(f), float(t), int(s), int(n), int(length)) for f, t, s, n, length in expected
    ]
    assert (drawn.sender.address, str(drawn.sender.port)) == sender
    assert not drawn.acks and not drawn.throughput and not drawn.thinned
    assert drawn.points == len(expected)


async def test_tcptrace_has_the_segments_acks_windows_and_sack_blocks() -> None:
    drawn = await graph("tcptrace")
    retransmitted = {
        int(f) for (f,) in rows(FAST, sent_by(0, SERVER, " && tcp.analysis.retransmission"), "frame.number")
    }
    assert {p.frame for p in drawn.segments if "retransmissions" in p.analysis} == retransmitted
    fast = {int(f) for (f,) in rows(FAST, "tcp.analysis.fast_retransmission", "frame.number")}
    assert {p.frame for p in drawn.segments if "fast_retransmissions" in p.analysis} == fast

    acks = rows(
        FAST,
        sent_by(0, CLIENT, " && tcp.flags.ack == 1"),
        "frame.number",
        "frame.time_relative",
        "tcp.ack",
        "tcp.window_size",
        "tcp.analysis.duplicate_ack",
    )
    assert [(p.frame, p.time, p.ack, p.window, p.duplicate) for p in drawn.acks] == [
        (int(f), float(t), int(a), int(w), bool(d)) for f, t, a, w, d in acks
    ]
    assert all(p.receive_edge == p.ack + (p.window or 0) for p in drawn.acks)

    blocks = []
    for frame, time, lefts, rights in rows(
        FAST,
        sent_by(0, CLIENT, " && tcp.options.sack_le"),
        "frame.number",
        "frame.time_relative",
        "tcp.options.sack_le",
        "tcp.options.sack_re",
    ):
        for left, right in zip(lefts.split(","), rights.split(","), strict=True):
            blocks.append((int(frame), float(time), int(left), int(right)))
    assert [(p.frame, p.time, p.left, p.right) for p in drawn.sacks] == blocks
    assert len(blocks) == 8


@pytest.mark.parametrize(
    ("direction", "receiver"), [("client-to-server", SERVER), ("server-to-client", CLIENT)]
)
async def test_round_trip_times_are_tsharks_ack_rtt(direction: str, receiver: tuple[str, str]) -> None:
    drawn = await graph("rtt", direction)
    expected = rows(
        FAST,
        sent_by(0, receiver, " && tcp.analysis.ack_rtt"),
        "frame.number",
        "frame.time_relative",
        "tcp.analysis.ack_rtt",
        "tcp.analysis.acks_frame",
    )
    assert [(p.frame, p.time, p.rtt, p.acked_frame) for p in drawn.rtt] == [
        (int(f), float(t), float(r), int(a)) for f, t, r, a in expected
    ]
    seqs = {int(f): int(s) for f, s in rows(FAST, "tcp.stream == 0", "frame.number", "tcp.seq")}
    assert all(p.seq == seqs[p.acked_frame] for p in drawn.rtt if p.acked_frame)


async def test_window_scaling_is_bytes_in_flight_and_the_receivers_window() -> None:
    drawn = await graph("window")
    in_flight = rows(
        FAST,
        sent_by(0, SERVER, " && tcp.analysis.bytes_in_flight"),
        "frame.number",
        "tcp.analysis.bytes_in_flight",
    )
    assert [(p.frame, p.bytes) for p in drawn.in_flight] == [(int(f), int(b)) for f, b in in_flight]
    windows = rows(FAST, sent_by(0, CLIENT), "frame.number", "tcp.window_size")
    assert [(p.frame, p.window) for p in drawn.windows] == [(int(f), int(w)) for f, w in windows]


def moving_average(points: list[tuple[float, int]], window: float) -> list[float]:
    """Bits per second of the sizes within the last `window` seconds of each point (counted plainly)."""
    return [
        8 * sum(size for then, size in points[: i + 1] if now - then <= window) / window
        for i, (now, _) in enumerate(points)
    ]


@pytest.mark.parametrize("window", [1.0, 0.05])
async def test_throughput_and_goodput_are_moving_averages_of_tsharks_lengths(window: float) -> None:
    drawn = await graph("throughput", window_seconds=window)
    segments = [
        (float(t), int(n)) for t, n in rows(FAST, sent_by(0, SERVER), "frame.time_relative", "tcp.len")
    ]
    assert [p.length for p in drawn.throughput] == [n for _, n in segments]
    assert [p.bits_per_second for p in drawn.throughput] == pytest.approx(moving_average(segments, window))
    assert max(p.bits_per_second for p in drawn.throughput) > 0
    acks = [
        (float(t), int(a))
        for t, a in rows(FAST, sent_by(0, CLIENT, " && tcp.flags.ack == 1"), "frame.time_relative", "tcp.ack")
    ]
    advances, highest = [], acks[0][1]
    for _, ack in acks:
        advances.append(max(ack - highest, 0))
        highest = max(highest, ack)
    assert [p.acked_bytes for p in drawn.goodput] == advances
    assert sum(advances) == acks[-1][1] - acks[0][1]
    expected = moving_average([(t, a) for (t, _), a in zip(acks, advances, strict=True)], window)
    assert [p.bits_per_second for p in drawn.goodput] == pytest.approx(expected)


async def test_a_time_range_keeps_the_points_within_it() -> None:
    whole = await graph("stevens")
    part = await graph("stevens", start=0.3, end=0.45)
    assert part.segments == [p for p in whole.segments if 0.3 <= p.time <= 0.45]
    assert 0 < len(part.segments) < len(whole.segments)
    assert (part.first_time, part.last_time) == (whole.first_time, whole.last_time)


async def test_a_long_graph_is_thinned_to_packets_that_keep_its_extremes() -> None:
    path = sample_capture("http_espn.pcapng")
    stream = 3
    whole = await tcpgraph.tcp_graph(path, stream, "stevens", "server-to-client", max_points=20_000)
    thinned = await tcpgraph.tcp_graph(path, stream, "stevens", "server-to-client", max_points=20)
    assert thinned.thinned and not whole.thinned
    assert thinned.points == whole.points == len(whole.segments) > 20
    assert len(thinned.segments) <= 20
    assert all(p in whole.segments for p in thinned.segments)
    seqs = [p.seq for p in whole.segments]
    assert {min(seqs), max(seqs)} <= {p.seq for p in thinned.segments}
    # What tshark flagged stays in sight however thin the graph.
    flagged = {p.frame for p in whole.segments if p.analysis}
    assert flagged and flagged <= {p.frame for p in thinned.segments}


async def test_a_stream_longer_than_the_limit_is_drawn_from_its_first_packets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tcpstream, "MAX_STREAM_PACKETS", 10)
    path = tmp_path / "fast.pcap"
    shutil.copy(FAST, path)
    drawn = await tcpgraph.tcp_graph(path, 0, "stevens", "client-to-server")
    assert drawn.truncated
    assert max(p.frame for p in drawn.segments) <= 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "pie"}, "unknown graph"),
        ({"direction": "sideways"}, "unknown direction"),
        ({"window_seconds": 0.0}, "moving-average window"),
        ({"window_seconds": float("nan")}, "moving-average window"),
        ({"start": 2.0, "end": 1.0}, "must not end before"),
        ({"max_points": 0}, "points"),
        ({"max_points": 10**6}, "points"),
        ({"stream": 5}, "no TCP stream 5"),
        ({"stream": 2**40}, "stream must be"),
    ],
)
async def test_it_refuses_a_graph_it_cannot_draw(options: dict[str, object], message: str) -> None:
    asked: dict[str, object] = {"stream": 0, "kind": "stevens", "direction": "client-to-server", **options}
    with pytest.raises(EngineError, match=message):
        await tcpgraph.tcp_graph(FAST, **asked)  # type: ignore[arg-type]

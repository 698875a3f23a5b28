"""The TCP health table and each conversation's story hold the numbers tshark's own analysis prints."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from explorer.engine import fieldpass, tcphealth, tcpstory, tcpstream
from explorer.engine.errors import EngineError
from explorer.engine.sessions import EngineBusy
from explorer.engine.tcphealth import TcpConversation

from .conftest import repeated_synscan, sample_capture, tshark, tshark_numbers

pytestmark = pytest.mark.engine

NAMES = [
    "tcp_retransmissions.pcapng",
    "retransmit-fast009.pcap",
    "tcp_dupack.pcapng",
    "tcp_zerowindowrecovery.pcapng",
    "tcp_teardown.pcapng",
    "tcp_refuseconnection.pcapng",
    "tcp_handshake.pcapng",
    "http_espn.pcapng",
    "v6-http.pcap",
    "synscan.pcapng",
]


def fields(path: Path, display_filter: str, *names: str) -> list[list[str]]:
    """Return tshark's two-pass values of fields (occurrences joined by commas), a row per packet."""
    args = ["-2", "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "occurrence=a"]
    for name in names:
        args += ["-e", name]
    return [line.split("\t") for line in tshark(*args).splitlines() if line]


def endpoint(v4: str, v6: str, port: str) -> tuple[str, int]:
    return (v4.split(",")[-1] or v6.split(",")[-1], int(port.split(",")[-1]))


def by_stream(table: tcphealth.HealthTable) -> dict[int, TcpConversation]:
    return {c.stream: c for c in table.conversations}


def side_of(conversation: TcpConversation, sender: tuple[str, int]) -> str:
    client = conversation.client.endpoint
    return "client" if (client.address, client.port) == sender else "server"


@pytest.mark.parametrize("name", NAMES)
async def test_it_counts_what_tshark_counts_per_conversation_and_side(name: str) -> None:
    path = sample_capture(name)
    table = await tcphealth.tcp_health(path)
    conversations = by_stream(table)
    flags = [tcphealth.FIELDS[index] for index in tcphealth.PROBLEM_FIELDS.values()]
    rows = fields(
        path, "tcp", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "frame.len", "tcp.len", *flags
    )
    assert sorted(conversations) == sorted({int(row[0]) for row in rows})
    assert table.untallied == 0 and table.problem is None

    packets: Counter[tuple[int, str]] = Counter()
    size: Counter[tuple[int, str]] = Counter()
    payload: Counter[tuple[int, str]] = Counter()
    flagged: Counter[tuple[int, str, str]] = Counter()
    for stream_text, v4, v6, port, frame_length, length, *marks in rows:
        number = int(stream_text)
        side = side_of(conversations[number], endpoint(v4, v6, port))
        packets[number, side] += 1
        size[number, side] += int(frame_length)
        payload[number, side] += int(length)
        for problem, mark in zip(tcphealth.PROBLEM_FIELDS, marks, strict=True):
            flagged[number, side, problem] += bool(mark)
    for stream, c in conversations.items():
        assert (c.client.packets, c.server.packets) == (packets[stream, "client"], packets[stream, "server"])
        assert (c.client.bytes, c.server.bytes) == (size[stream, "client"], size[stream, "server"])
        assert (c.client.payload_bytes, c.server.payload_bytes) == (
            payload[stream, "client"],
            payload[stream, "server"],
        )
        for problem in tcphealth.PROBLEM_FIELDS:
            counted = (getattr(c.client.problems, problem), getattr(c.server.problems, problem))
            expected = (flagged[stream, "client", problem], flagged[stream, "server", problem])
            assert counted == expected, (problem, stream)


async def test_the_frame_counts_agree_with_tsharks_conversation_table() -> None:
    path = sample_capture("http_espn.pcapng")
    table = await tcphealth.tcp_health(path)
    output = tshark("-2", "-n", "-r", str(path), "-q", "-z", "conv,tcp")
    # "a:port <-> b:port  frames bytes  frames bytes  total..." with "<-" (b to a) first.
    totals = {}
    for line in output.splitlines():
        if "<->" in line:
            parts = line.split()
            ends = frozenset((parts[0], parts[2]))
            totals[ends] = int(parts[3]) + int(parts[6])
    assert len(totals) == len(table.conversations)
    for c in table.conversations:
        assert totals[frozenset((c.client.endpoint.label, c.server.endpoint.label))] == c.packets


@pytest.mark.parametrize(
    "name", ["retransmit-fast009.pcap", "http_espn.pcapng", "v6-http.pcap", "tcp_handshake.pcapng"]
)
async def test_the_handshake_is_tsharks(name: str) -> None:
    path = sample_capture(name)
    conversations = by_stream(await tcphealth.tcp_health(path))
    syns: dict[int, list[int]] = defaultdict(list)
    for number, frame in fields(
        path, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "tcp.stream", "frame.number"
    ):
        syns[int(number)].append(int(frame))
    synacks: dict[int, list[int]] = defaultdict(list)
    for number, frame in fields(
        path, "tcp.flags.syn == 1 && tcp.flags.ack == 1", "tcp.stream", "frame.number"
    ):
        synacks[int(number)].append(int(frame))
    options = {
        int(frame): (mss, shift, sack)
        for frame, mss, shift, sack in fields(
            path,
            "tcp.flags.syn == 1",
            "frame.number",
            "tcp.options.mss_val",
            "tcp.options.wscale.shift",
            "tcp.options.sack_perm",
        )
    }
    irtt = {
        int(number): float(value)
        for number, value in fields(
            path, "tcp.analysis.initial_rtt", "tcp.stream", "tcp.analysis.initial_rtt"
        )
    }
    checked = 0
    for stream, c in conversations.items():
        handshake = c.handshake
        assert handshake.syn_frames == syns[stream]
        assert handshake.synack_frame == (synacks[stream][0] if synacks[stream] else None)
        if not handshake.complete:
            continue
        checked += 1
        # The two halves of the round trip add up to tshark's initial RTT.
        assert handshake.server_rtt is not None and handshake.client_rtt is not None
        assert handshake.server_rtt + handshake.client_rtt == pytest.approx(irtt[stream], abs=1e-9)
        assert handshake.initial_rtt == irtt[stream]
        mss, shift, sack = options[handshake.syn_frames[0]]
        assert handshake.client_options is not None
        assert handshake.client_options.mss == (int(mss) if mss else None)
        assert handshake.client_options.window_shift == (int(shift) if shift else None)
        assert handshake.client_options.sack_permitted == bool(sack)
        assert handshake.server_options is not None and handshake.synack_frame is not None
        assert handshake.server_options.mss == (int(options[handshake.synack_frame][0] or 0) or None)
    assert checked > 0


async def test_it_tells_how_each_conversation_ended() -> None:
    teardown = (await tcphealth.tcp_health(sample_capture("tcp_teardown.pcapng"))).conversations[0]
    fins = tshark_numbers(sample_capture("tcp_teardown.pcapng"), "tcp.flags.fin == 1")
    assert teardown.ending.state == "closed"
    assert teardown.ending.closed_by == "server"  # port 80 sent the first FIN
    assert (teardown.ending.server_fin_frame, teardown.ending.client_fin_frame) == tuple(fins)
    assert not teardown.client_known

    refused = (await tcphealth.tcp_health(sample_capture("tcp_refuseconnection.pcapng"))).conversations[0]
    assert refused.ending.state == "refused" and refused.ending.reset_by == "server"
    assert (
        refused.ending.server_rst_frame
        == tshark_numbers(sample_capture("tcp_refuseconnection.pcapng"), "tcp.flags.reset == 1")[0]
    )

    reset = (await tcphealth.tcp_health(sample_capture("retransmit-fast009.pcap"))).conversations[0]
    assert reset.ending.state == "reset" and reset.ending.reset_by == "client"
    assert reset.ending.client_rst_frame == 39

    assert (await tcphealth.tcp_health(sample_capture("tcp_handshake.pcapng"))).conversations[
        0
    ].ending.state == "open"


async def test_a_scans_probes_are_refused_or_unanswered_as_tshark_shows() -> None:
    path = sample_capture("synscan.pcapng")
    conversations = by_stream(await tcphealth.tcp_health(path))
    answered = {int(s) for (s,) in fields(path, "tcp.flags.syn == 1 && tcp.flags.ack == 1", "tcp.stream")}
    reset = {int(s) for (s,) in fields(path, "tcp.flags.reset == 1 && tcp.flags.syn == 0", "tcp.stream")}
    states = Counter(c.ending.state for c in conversations.values())
    for stream, c in conversations.items():
        if stream not in answered and stream in reset:
            assert c.ending.state == "refused", stream
        elif stream not in answered:
            assert c.ending.state == "unanswered", stream
    # The scanner's capture shows its SYNs: most went unanswered, a few were refused.
    assert states["refused"] == len(reset - answered) > 0
    assert states["unanswered"] > 1900


async def test_the_worst_conversations_come_first() -> None:
    table = await tcphealth.tcp_health(sample_capture("http_espn.pcapng"))
    ranked = tcphealth.worst_first(table.conversations)
    scores = [c.score for c in ranked]
    assert scores == sorted(scores, reverse=True)
    worst = ranked[0]
    assert worst.has_problems and worst.problems.lost_segments == 1
    assert worst.stream == int(
        tshark_fields_first(sample_capture("http_espn.pcapng"), "tcp.analysis.lost_segment")
    )
    healthy = [c for c in ranked if not c.has_problems]
    assert healthy and all(c.score == 0 and c.problems.score == 0 for c in healthy)
    # Examples link the row to tshark's flagged packets.
    assert worst.server.examples["lost_segments"] == tshark_numbers(
        sample_capture("http_espn.pcapng"), "tcp.analysis.lost_segment"
    )


async def test_the_table_sorts_by_any_column_and_keeps_only_the_troubled_if_asked() -> None:
    table = await tcphealth.tcp_health(sample_capture("http_espn.pcapng"))
    by_packets = tcphealth.ordered(table, "packets")
    assert [c.packets for c in by_packets] == sorted((c.packets for c in table.conversations), reverse=True)
    by_start = tcphealth.ordered(table, "start", descending=False)
    assert [c.start for c in by_start] == sorted(c.start for c in table.conversations)
    troubled = tcphealth.ordered(table, problems_only=True)
    assert troubled == [c for c in tcphealth.worst_first(table.conversations) if c.has_problems]
    with pytest.raises(EngineError, match="unknown sort"):
        tcphealth.ordered(table, "colour")


def tshark_fields_first(path: Path, display_filter: str) -> str:
    return fields(path, display_filter, "tcp.stream")[0][0]


async def test_a_capture_without_tcp_has_an_empty_table() -> None:
    assert (await tcphealth.tcp_health(sample_capture("dns-udp.pcap"))).conversations == []
    assert (await tcphealth.tcp_health(sample_capture("empty.pcapng"))).conversations == []


async def test_it_refuses_a_file_that_is_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_text("not a capture\n" * 100)
    with pytest.raises(EngineError) as raised:
        await tcphealth.tcp_health(path)
    assert "capture file" in raised.value.message
    assert str(tmp_path) not in raised.value.message


async def test_a_capture_cut_short_keeps_what_was_read(tmp_path: Path) -> None:
    source = sample_capture("http_espn.pcapng")
    path = tmp_path / "cut.pcapng"
    path.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
    table = await tcphealth.tcp_health(path)
    assert table.problem and "cut short" in table.problem
    assert sum(c.packets for c in table.conversations) == len(tshark_numbers(path, "tcp"))


async def test_the_table_keeps_at_most_its_limit_of_conversations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tcphealth, "MAX_CONVERSATIONS", 100)
    path = tmp_path / "synscan.pcapng"
    shutil.copy(sample_capture("synscan.pcapng"), path)
    table = await tcphealth.tcp_health(path)
    assert [c.stream for c in table.conversations] == list(range(100))
    assert table.untallied == len({s for (s,) in fields(path, "tcp", "tcp.stream")}) - 100


@pytest.mark.slow
async def test_analyses_beyond_the_limit_wait_then_are_told_the_engine_is_busy(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ENGINE_BUSY_WAIT_SECONDS = 1
    monkeypatch.setattr(fieldpass, "PASSES_AT_ONCE", 1)
    monkeypatch.setattr(fieldpass, "_room", {})
    big = repeated_synscan(tmp_path, 60)  # about 120,000 packets: a pass of several seconds
    small = tmp_path / "handshake.pcapng"
    shutil.copy(sample_capture("tcp_handshake.pcapng"), small)
    long_pass = asyncio.create_task(tcphealth.tcp_health(big))
    await asyncio.sleep(0.5)
    with pytest.raises(EngineBusy):
        await tcphealth.tcp_health(small)
    assert len((await long_pass).conversations) > 1000
    assert len((await tcphealth.tcp_health(small)).conversations) == 1


@pytest.mark.slow
async def test_a_pass_past_the_time_limit_is_stopped_with_its_tshark(
    tmp_path: Path, settings: Settings
) -> None:
    settings.ENGINE_REQUEST_TIMEOUT = 1
    big = repeated_synscan(tmp_path, 100)
    with pytest.raises(EngineError) as raised:
        await tcphealth.tcp_health(big)
    assert "longer than 1 s" in raised.value.message
    left = subprocess.run(["pgrep", "-f", str(big)], capture_output=True, text=True).stdout
    assert left == ""


async def test_callers_asking_at_once_share_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "espn.pcapng"
    shutil.copy(sample_capture("http_espn.pcapng"), path)
    passes = []
    original = fieldpass.run

    async def counted(*args: object, **kwargs: object) -> fieldpass.PassOutcome:
        passes.append(args[0])
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fieldpass, "run", counted)
    tables = await asyncio.gather(*(tcphealth.tcp_health(path) for _ in range(4)))
    assert len(passes) == 1
    assert all(t is tables[0] for t in tables)


# --- stories -------------------------------------------------------------------------------------


def times(path: Path, display_filter: str = "tcp") -> dict[int, float]:
    return {int(f): float(t) for f, t in fields(path, display_filter, "frame.number", "frame.time_relative")}


def sentence(story: tcpstory.Story, kind: str, containing: str = "") -> tcpstory.Sentence:
    found = [s for s in story.sentences if s.kind == kind and containing in s.text]
    assert len(found) == 1, [s.text for s in story.sentences]
    return found[0]


async def test_the_story_of_repeated_retransmissions() -> None:
    path = sample_capture("tcp_retransmissions.pcapng")
    story = await tcpstory.tcp_story(path, 0)
    at = times(path)
    retransmitted = tshark_numbers(path, "tcp.analysis.retransmission")
    (first_try,) = set(tshark_numbers(path, "tcp")) - set(retransmitted)
    told = sentence(story, "retransmission")
    delays = [tcpstory.duration_text(at[f] - at[first_try]) for f in retransmitted]
    assert told.text == (
        f"The client sent bytes 1-648 again 5 times, {tcpstory.joined(delays)} after the first try "
        f"(packet {first_try}): {tcpstory.packets_text(retransmitted)}."
    )
    assert delays == ["206 ms", "806 ms", "2.0 s", "4.4 s", "9.2 s"]
    assert told.frames == [first_try, *retransmitted]
    (seq, next_seq) = fields(path, f"frame.number == {first_try}", "tcp.seq", "tcp.nxtseq")[0]
    assert f"{int(seq)}-{int(next_seq) - 1}" == "1-648"


async def test_the_story_of_a_fast_retransmission_with_duplicate_acks_and_a_reset() -> None:
    path = sample_capture("retransmit-fast009.pcap")
    story = await tcpstory.tcp_story(path, 0)
    at = times(path)
    syn, synack, ack = tshark_numbers(path, "tcp.flags.syn == 1 || frame.number == 3")
    assert sentence(story, "handshake", "answered the SYN").text == (
        f"The server answered the SYN after {tcpstory.duration_text(at[synack] - at[syn])} (packet {synack})."
    )
    fast = tshark_numbers(path, "tcp.analysis.fast_retransmission")
    told = sentence(story, "retransmission", "fast retransmission")
    assert told.frames[-1:] == fast
    duplicates = tshark_numbers(path, "tcp.analysis.duplicate_ack")
    (acked,) = {int(a) for (a,) in fields(path, "tcp.analysis.duplicate_ack", "tcp.ack")}
    assert sentence(story, "duplicate-ack").frames == duplicates
    assert f"{len(duplicates)} duplicate ACKs of {acked:,}" in sentence(story, "duplicate-ack").text
    resets = tshark_numbers(path, "tcp.flags.reset == 1")
    assert sentence(story, "ending").text == (
        f"The client reset the connection at {tcpstory.time_text(at[resets[0]])} (packet {resets[0]})."
    )
    retransmitted = {f for s in story.sentences if s.kind == "retransmission" for f in s.frames}
    assert set(tshark_numbers(path, "tcp.analysis.retransmission")) <= retransmitted


async def test_the_story_of_a_zero_window_a_refusal_and_a_close() -> None:
    path = sample_capture("tcp_zerowindowrecovery.pcapng")
    at = times(path)
    (zero,) = tshark_numbers(path, "tcp.analysis.zero_window")
    story = await tcpstory.tcp_story(path, 0)
    told = sentence(story, "window")
    assert told.frames[0] == zero
    assert f"at {tcpstory.time_text(at[zero])} (packet {zero})" in told.text

    path = sample_capture("tcp_refuseconnection.pcapng")
    at = times(path)
    (rst,) = tshark_numbers(path, "tcp.flags.reset == 1")
    story = await tcpstory.tcp_story(path, 0)
    assert sentence(story, "handshake", "refused").text == (
        f"The server refused the connection: it answered with a reset "
        f"{tcpstory.duration_text(at[rst] - at[1])} after the SYN (packet {rst})."
    )
    assert not [s for s in story.sentences if s.kind == "ending"]

    path = sample_capture("tcp_teardown.pcapng")
    at = times(path)
    first, second = tshark_numbers(path, "tcp.flags.fin == 1")
    story = await tcpstory.tcp_story(path, 0)
    assert sentence(story, "ending").text == (
        f"The server closed with a FIN (packet {first}); the client sent its own FIN "
        f"{tcpstory.duration_text(at[second] - at[first])} later (packet {second})."
    )


async def test_the_story_names_the_options_and_the_losses_tshark_saw() -> None:
    path = sample_capture("http_espn.pcapng")
    story = await tcpstory.tcp_story(path, 3)
    (syn_mss, syn_shift), (synack_mss, synack_shift) = (
        (int(m), int(s))
        for m, s in fields(
            path, "tcp.stream == 3 && tcp.flags.syn == 1", "tcp.options.mss_val", "tcp.options.wscale.shift"
        )
    )
    options = sentence(story, "options").text
    assert f"(MSS) of {syn_mss:,} bytes, the server {synack_mss:,}" in options
    assert f"window scaling (client ×{2**syn_shift}, server ×{2**synack_shift})" in options
    lost = tshark_numbers(path, "tcp.stream == 3 && tcp.analysis.lost_segment")
    assert sentence(story, "loss", "missed").frames == lost
    unseen = tshark_numbers(path, "tcp.stream == 3 && tcp.analysis.ack_lost_segment")
    assert sentence(story, "loss", "never saw").frames == unseen


async def test_a_story_of_a_stream_that_is_not_there_is_refused() -> None:
    with pytest.raises(EngineError, match="no TCP stream 7"):
        await tcpstory.tcp_story(sample_capture("tcp_handshake.pcapng"), 7)
    with pytest.raises(EngineError, match="stream must be"):
        await tcpstory.tcp_story(sample_capture("tcp_handshake.pcapng"), -1)


async def test_one_streams_health_from_its_own_pass_is_its_row_of_the_table() -> None:
    path = sample_capture("retransmit-fast009.pcap")
    (row,) = (await tcphealth.tcp_health(path)).conversations
    assert await tcpstream.stream_conversation(path, 0) == row


def tcp_capture(path: Path, packets: list[tuple[str, int, int, int, float]]) -> None:
    """Write a pcap of one TCP connection: (sender "c" or "s", flags, seq, ack, seconds) per packet."""
    client, server = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
    records = []
    for sender, flags, seq, ack, seconds in packets:
        source, destination, ports = (
            (client, server, (50000, 80)) if sender == "c" else (server, client, (80, 50000))
        )
        tcp = struct.pack("!HHIIBBHHH", *ports, seq, ack, 5 << 4, flags, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, source, destination)
        frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp
        whole, micros = divmod(round((1_700_000_000 + seconds) * 1_000_000), 1_000_000)
        records.append(struct.pack("<IIII", whole, micros, len(frame), len(frame)) + frame)
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(records))


SYN, SYN_ACK, ACK, FIN_ACK, RST = 0x02, 0x12, 0x10, 0x11, 0x04


async def test_the_ending_is_told_in_the_order_it_happened(tmp_path: Path) -> None:
    path = tmp_path / "reset-then-fin.pcap"
    tcp_capture(
        path,
        [
            ("c", SYN, 100, 0, 0.0),
            ("s", SYN_ACK, 900, 101, 0.010),
            ("c", ACK, 101, 901, 0.020),
            ("c", RST, 101, 0, 0.500),
            ("s", FIN_ACK, 901, 101, 0.502),
        ],
    )
    conversation = (await tcphealth.tcp_health(path)).conversations[0]
    assert (conversation.ending.state, conversation.ending.reset_by) == ("reset", "client")
    at = times(path)
    assert sentence(await tcpstory.tcp_story(path, 0), "ending").text == (
        f"The client reset the connection at {tcpstory.time_text(at[4])} (packet 4); the server sent a FIN "
        f"{tcpstory.duration_text(at[5] - at[4])} later (packet 5)."
    )


async def test_a_half_closed_conversation(tmp_path: Path) -> None:
    path = tmp_path / "half.pcap"
    tcp_capture(
        path,
        [
            ("c", SYN, 100, 0, 0.0),
            ("s", SYN_ACK, 900, 101, 0.010),
            ("c", ACK, 101, 901, 0.020),
            ("c", FIN_ACK, 101, 901, 1.0),
            ("s", ACK, 901, 102, 1.01),
        ],
    )
    conversation = (await tcphealth.tcp_health(path)).conversations[0]
    assert (conversation.ending.state, conversation.ending.closed_by) == ("half-closed", "client")
    assert conversation.handshake.complete and conversation.client_known
    assert sentence(await tcpstory.tcp_story(path, 0), "ending").text == (
        "The client closed with a FIN (packet 4); the server had not closed its side when the capture ended."
    )

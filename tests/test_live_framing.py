"""The record boundaries of a growing pcap or pcapng stream, against what tshark reads of the same bytes."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from explorer.live.framing import NOT_A_CAPTURE, NotAStream, PacketStream, check_file_header

from .conftest import sample_capture

pytestmark = pytest.mark.engine

PIECE_SIZES = [1, 3, 17, 1000, 4096, 16384]


def tshark_lengths(path: Path) -> tuple[list[int], int]:
    """Return the length of each packet tshark reads in a file, and tshark's exit status."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return [int(line) for line in done.stdout.split()], done.returncode


@pytest.mark.parametrize("name", ["bro.org.pcap", "http_espn.pcapng", "ndpi-rtp.pcapng"])
def test_it_passes_on_whole_records_of_a_stream_fed_in_pieces_of_any_size(name: str, tmp_path: Path) -> None:
    data = sample_capture(name).read_bytes()
    stream = PacketStream()
    passed = bytearray()
    cuts: list[tuple[int, int]] = []  # (bytes passed on, packets counted) after each piece
    starts: list[int] = []
    pieces = random.Random(name)
    offset = 0
    while offset < len(data):
        size = pieces.choice(PIECE_SIZES)
        records = stream.feed(data[offset : offset + size])
        offset += size
        starts += [len(passed) + start for start in records.starts]
        passed += records.data
        cuts.append((len(passed), stream.packets))
    assert bytes(passed) == data
    # The same records, whatever the pieces.
    assert starts == PacketStream().feed(data).starts
    lengths, _ = tshark_lengths(sample_capture(name))
    assert stream.packets == len(lengths)
    # Wherever a piece ended, what was passed on so far is a capture that tshark reads to its end.
    inside = sorted({cut for cut in cuts if 0 < cut[1] < len(lengths)})
    assert inside
    for cut, packets in pieces.sample(inside, min(3, len(inside))):
        prefix = tmp_path / f"prefix{Path(name).suffix}"
        prefix.write_bytes(data[:cut])
        read, status = tshark_lengths(prefix)
        assert status == 0
        assert read == lengths[:packets]


def test_a_file_of_the_preamble_and_any_later_records_is_a_capture(tmp_path: Path) -> None:
    # A ring buffer's next file starts with the preamble, then the records from where it split.
    data = sample_capture("ndpi-rtp.pcapng").read_bytes()
    stream = PacketStream()
    records = stream.feed(data)
    lengths, _ = tshark_lengths(sample_capture("ndpi-rtp.pcapng"))
    assert records.data == data and stream.packets == len(lengths) == 112
    split = records.starts[60]
    assert split >= records.earliest_split
    before = PacketStream()
    before.feed(data[:split])
    later = tmp_path / "later.pcapng"
    later.write_bytes(bytes(stream.preamble) + data[split:])
    read, status = tshark_lengths(later)
    assert status == 0
    assert read == lengths[before.packets :] and 0 < len(read) < len(lengths)


def test_it_leaves_the_records_past_the_room_for_later() -> None:
    data = sample_capture("bro.org.pcap").read_bytes()
    stream = PacketStream()
    room = 10_000
    first = stream.feed(data, room)
    # Up to the record that passes the room, however much arrived at once.
    assert first.starts[-1] <= room < len(first.data)
    assert data.startswith(first.data)
    rest = stream.feed(b"")
    assert first.data + rest.data == data


def test_it_passes_on_the_records_before_damage_then_refuses_more() -> None:
    data = sample_capture("dns-udp.pcap").read_bytes()
    offset = 24
    for _ in range(2):
        offset += 16 + int.from_bytes(data[offset + 8 : offset + 12], "little")
    stream = PacketStream()
    records = stream.feed(data[:offset] + b"\x00" * 8 + b"\xff\xff\xff\x7f" * 2 + b"junk" * 10)
    assert records.data == data[:offset] and stream.packets == 2
    with pytest.raises(NotAStream, match="damaged pcap stream: a packet of"):
        stream.feed(b"")


def test_it_tells_a_capture_stream_from_anything_else() -> None:
    check_file_header(sample_capture("bro.org.pcap").read_bytes()[:24])
    check_file_header(sample_capture("http_espn.pcapng").read_bytes()[:24])
    for junk in (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", b"\x0a\x0d\x0d\x0a" + b"\x00" * 20):
        with pytest.raises(NotAStream) as refused:
            check_file_header(junk)
        assert refused.value.message == NOT_A_CAPTURE

"""explorer.engine.capinfo on real capinfos output, and how it tells captures from other files."""

from __future__ import annotations

import json
import random
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from explorer.engine import capinfo, commands
from explorer.engine.errors import NotACapture

from .conftest import sample_capture

pytestmark = pytest.mark.engine


def capinfos_output(path: Path) -> str:
    """Run the explorer's own capinfos command line and return what it prints."""
    return subprocess.run(commands.capinfos(path), capture_output=True, text=True, timeout=60).stdout


def test_it_parses_a_pcapng_with_two_interfaces_and_a_comment() -> None:
    info = capinfo.parse(capinfos_output(sample_capture("ndpi-rtp.pcapng")))
    assert info.file_type == "pcapng"
    assert info.encapsulation == "ether"
    assert info.time_precision == "microseconds (6)"
    assert info.precision_digits == 6
    assert info.packets == 112
    assert info.data_size == 59807
    assert info.first_time == Decimal("1332741131.936370")
    assert info.last_time == Decimal("1643703821.596170")
    assert info.duration == Decimal("310962689.659800")
    assert info.average_packet_size == pytest.approx(533.99)
    assert len(info.comments) == 1
    assert info.comments[0].startswith("File created by TraceWrangler by merging")
    assert len(info.interfaces) == 2
    assert info.interfaces[0]["Name"] == "Unknown"
    assert info.interfaces[0]["Description"] == "Generic Interface from PCAP File"
    assert info.interfaces[0]["Number of packets"] == "75"
    assert info.interfaces[1]["Name"] == "em1"
    assert info.interfaces[1]["Filter string"] == "host 172.16.168.24"
    assert info.interfaces[1]["Operating system"] == "Linux 3.19.7-200.fc21.x86_64"
    assert info.interfaces[1]["Number of packets"] == "37"
    assert info.link_types == ["Ethernet (1 - ether)"]
    assert info.extra["Capture application"].startswith("Mergecap (Wireshark)")
    assert info.extra["Strict time order"] == "True"
    assert info.warning == ""


def test_it_parses_a_nanosecond_pcap() -> None:
    info = capinfo.parse(capinfos_output(sample_capture("tcp-handshake-nano.pcap")))
    assert info.file_type == "nsecpcap"
    assert info.encapsulation == "linux-sll"
    assert info.time_precision == "nanoseconds (9)"
    assert info.precision_digits == 9
    assert info.packets == 3
    assert str(info.first_time) == "1418145369.924505488"
    assert info.first_time is not None and info.first_time.as_tuple().exponent == -9
    assert str(info.last_time) == "1418145370.052115157"
    assert str(info.duration) == "0.127609669"
    assert info.comments == []
    assert info.link_types == ["Linux cooked-mode capture v1 (25 - linux-sll)"]


def test_it_parses_an_empty_pcap() -> None:
    info = capinfo.parse(capinfos_output(sample_capture("empty.pcap")))
    assert info.file_type == "pcap"
    assert info.packets == 0
    assert info.data_size == 0
    assert info.first_time is None
    assert info.last_time is None
    assert info.duration is None
    assert info.data_byte_rate is None
    assert info.average_packet_rate is None
    assert len(info.interfaces) == 1


def test_parse_of_nothing_has_no_file_type() -> None:
    info = capinfo.parse("")
    assert info.file_type == ""
    assert info.packets == 0
    assert info.first_time is None


async def test_read_returns_the_properties_of_a_capture() -> None:
    info = await capinfo.read(sample_capture("dns-udp.pcap"))
    assert info.file_type == "pcap"
    assert info.packets == 5
    assert info.warning == ""


async def test_read_refuses_a_text_file() -> None:
    with pytest.raises(NotACapture) as refused:
        await capinfo.read(sample_capture("MANIFEST.tsv"))
    assert refused.value.message == "not a capture file"


async def test_read_refuses_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(random.Random(7).randbytes(4096))
    with pytest.raises(NotACapture) as refused:
        await capinfo.read(path)
    assert refused.value.message == "not a capture file"


async def test_read_refuses_a_file_wiretap_reads_as_json(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"a": [1, 2, 3]}))
    with pytest.raises(NotACapture) as refused:
        await capinfo.read(path)
    assert refused.value.message == "not a capture file (it reads as a json file)"


async def test_read_warns_about_a_capture_cut_mid_packet() -> None:
    info = await capinfo.read(sample_capture("truncated_dns_2.pcap"))
    assert info.packets == 1
    assert info.warning == "file is truncated after packet 1: 1 packet readable"


async def test_read_refuses_a_capture_cut_before_its_first_packet(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(sample_capture("dns-udp.pcap").read_bytes()[:30])
    with pytest.raises(NotACapture) as refused:
        await capinfo.read(path)
    assert refused.value.message == "file is truncated before its first packet: no packet readable"


async def test_read_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotACapture) as refused:
        await capinfo.read(tmp_path / "missing.pcap")
    assert refused.value.message.startswith("not a readable capture file: ")

"""The engine's JSON codec reads and writes what the standard library did, faster where it can."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from explorer.engine import jsoncodec, wire
from explorer.engine.packets import PacketRow, TreeNode


@dataclass
class Branch:
    name: str
    children: list[Branch] = field(default_factory=list)


def test_dataclasses_encode_as_objects_of_their_fields() -> None:
    row = PacketRow(1, "0.000000", "10.0.0.1", "10.0.0.2", "TCP", 60, "80 → 443 [SYN]", None, "#12272e")
    tree = [Branch("Frame 1", [Branch("Arrival Time")])]
    value = {"packets": [row], "tree": tree, "pair": ("tcp", "tcp.stream eq 0"), 7: "seven"}
    assert json.loads(jsoncodec.dumps(value)) == {
        "packets": [vars(row)],
        "tree": [{"name": "Frame 1", "children": [{"name": "Arrival Time", "children": []}]}],
        "pair": ["tcp", "tcp.stream eq 0"],
        "7": "seven",
    }


def test_text_beyond_ascii_is_written_as_utf8_and_read_back() -> None:
    node = TreeNode("Ünïcode ✓ 𝄞", None, 0, 4, 0, None, False, None, [])
    encoded = jsoncodec.dumps(node)
    assert "𝄞".encode() in encoded
    assert jsoncodec.loads(encoded)["label"] == "Ünïcode ✓ 𝄞"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # sharkd copies a damaged packet's bytes into its strings as they are.
        (b'{"l":"GET /\xff\xfe HTTP/1.1"}', {"l": "GET /\ufffd\ufffd HTTP/1.1"}),
        (b'{"l":"\\ud800 alone"}', {"l": "\ud800 alone"}),
        (b'{"v":NaN}', {"v": float("nan")}),
    ],
)
def test_what_orjson_refuses_is_read_as_the_standard_library_reads_it(line: bytes, expected: dict) -> None:
    value = jsoncodec.loads(line)
    assert json.dumps(value) == json.dumps(expected)


@pytest.mark.parametrize("value", ["\ud800 alone", 2**65])
def test_what_orjson_cannot_write_is_written_by_the_standard_library(value: object) -> None:
    line = wire.encode({"id": 1, "result": value})
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert wire.decode(line) == {"id": 1, "result": value}


def test_a_line_that_is_not_json_raises_value_error() -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads(b"Hello in child.\n")

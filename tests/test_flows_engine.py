"""The flow graph's choices, in the engine: every protocol, hosts or endpoints, some conversations or nodes.

Apart from tests/test_flows.py, whose browser tests hold an event loop these tests cannot share.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from explorer.engine import flows as engine_flows
from explorer.engine.errors import EngineError
from explorer.engine.sessions import engine

from .conftest import sample_capture, tshark_numbers
from .test_flows import node, tshark_fields

pytestmark = pytest.mark.engine


@pytest.fixture
async def closed_engine() -> AsyncIterator[None]:
    yield
    await engine().close()


def first_appearance(path: Path, display_filter: str, hosts: bool) -> list[str]:
    """Return the nodes of the packets tshark shows for a filter, in the order they first appear."""
    names: list[str] = []
    rows = tshark_fields(
        path,
        display_filter,
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "udp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
        "udp.dstport",
    )
    for src4, src6, tcp_sport, udp_sport, dst4, dst6, tcp_dport, udp_dport in rows:
        source, destination = src4 or src6, dst4 or dst6
        if not hosts:
            source = node(source, tcp_sport or udp_sport)
            destination = node(destination, tcp_dport or udp_dport)
        names += [n for n in (source, destination) if n not in names]
    return list(dict.fromkeys(names))


@pytest.mark.usefixtures("closed_engine")
async def test_every_protocol_is_drawn_by_default_with_udp_ports() -> None:
    path = sample_capture("dns-udp.pcap")
    drawn = await engine_flows.flow(path, engine_flows.flow_filter(""))
    assert drawn.filter == ""
    assert [a.frame for a in drawn.arrows] == tshark_numbers(path, "frame")
    expected = tshark_fields(path, "frame", "ip.src", "udp.srcport", "ip.dst", "udp.dstport")
    assert [(a.source, a.destination) for a in drawn.arrows] == [
        (node(s, sp), node(d, dp)) for s, sp, d, dp in expected
    ]
    assert {a.protocol for a in drawn.arrows} == {"DNS"}


@pytest.mark.usefixtures("closed_engine")
async def test_hosts_are_nodes_without_ports_in_the_order_they_appear() -> None:
    path = sample_capture("http_espn.pcapng")
    by_port = await engine_flows.flow(path, "", limit=500)
    by_host = await engine_flows.flow(path, "", limit=500, addresses="hosts")
    assert [a.frame for a in by_host.arrows] == [a.frame for a in by_port.arrows]
    assert [n.id for n in by_host.nodes] == first_appearance(path, "frame.number <= 500", hosts=True)
    assert len(by_host.nodes) < len(by_port.nodes)
    assert all(":" not in a.source or a.source.count(":") > 1 for a in by_host.arrows)


@pytest.mark.usefixtures("closed_engine")
async def test_a_graph_of_chosen_conversations() -> None:
    path = sample_capture("http_espn.pcapng")
    expression = engine_flows.flow_filter("", conversations=[("tcp", 3), ("tcp", 1), ("tcp", 3)])
    assert expression == "tcp.stream in {3, 1}"
    drawn = await engine_flows.flow(path, expression)
    assert [a.frame for a in drawn.arrows] == tshark_numbers(path, "tcp.stream == 1 || tcp.stream == 3")[:500]
    assert drawn.total == len(tshark_numbers(path, "tcp.stream == 1 || tcp.stream == 3"))
    narrowed = engine_flows.flow_filter("http", conversations=[("tcp", 3), ("udp", 0)])
    assert narrowed == "(http) && (tcp.stream in {3} || udp.stream in {0})"
    drawn = await engine_flows.flow(path, narrowed)
    assert [a.frame for a in drawn.arrows] == tshark_numbers(path, narrowed)


@pytest.mark.usefixtures("closed_engine")
async def test_a_whole_capture_draws_its_first_nodes_and_one_column_for_the_rest() -> None:
    path = sample_capture("http_espn.pcapng")
    listed = await engine_flows.flow_nodes(path, "", "hosts")
    order = first_appearance(path, "frame", hosts=True)
    assert [n.id for n in listed.nodes] == order and not listed.unlisted
    assert sum(n.packets for n in listed.nodes) == 2 * len(tshark_numbers(path, "frame"))
    first_page = await engine_flows.flow(path, "", addresses="hosts", max_nodes=3)
    later_page = await engine_flows.flow(path, "", offset=500, addresses="hosts", max_nodes=3)
    for page in (first_page, later_page):
        assert [n.id for n in page.nodes] == [*order[:3], engine_flows.OTHER_NODE]
        for arrow in page.arrows:
            assert arrow.source_node == (
                arrow.source if arrow.source in order[:3] else engine_flows.OTHER_NODE
            )
            assert arrow.destination_node == (
                arrow.destination if arrow.destination in order[:3] else engine_flows.OTHER_NODE
            )
    chosen = await engine_flows.flow(path, "", addresses="hosts", nodes=[order[2], order[0]])
    assert [n.id for n in chosen.nodes][:2] == [order[2], order[0]]


@pytest.mark.usefixtures("closed_engine")
async def test_the_list_of_nodes_stops_at_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_flows, "MAX_LISTED_NODES", 5)
    listed = await engine_flows.flow_nodes(
        sample_capture("synscan.pcapng"), "tcp.flags.syn == 1", "endpoints"
    )
    assert len(listed.nodes) == 5 and listed.unlisted


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: engine_flows.flow_filter("", conversations=[("sctp", 1)]), "unknown conversation protocol"),
        (lambda: engine_flows.flow_filter("", conversations=[("tcp", n) for n in range(101)]), "at most 100"),
        (lambda: engine_flows.flow_filter("", conversations=[("udp", -1)]), "stream must be"),
    ],
)
def test_it_refuses_conversations_it_cannot_draw(call: Any, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        call()


@pytest.mark.usefixtures("closed_engine")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"addresses": "ports"}, "unknown addresses"),
        ({"max_nodes": 0}, "from 1 to 200 nodes"),
        ({"nodes": [f"10.0.0.{n}" for n in range(201)]}, "from 1 to 200 nodes"),
    ],
)
async def test_it_refuses_nodes_it_cannot_draw(options: dict[str, Any], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        await engine_flows.flow(sample_capture("tcp_handshake.pcapng"), "", **options)

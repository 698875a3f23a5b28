"""Analysis operations (follow, conversations, I/O graph, flow, export): server vs raw engine.

Fairness. The server and the raw baseline run separate sharkd processes, so nothing one side
caches helps the other; what matters is that nothing earlier *on the same side* has already
computed an operation's filter. So both sides do identical work on the same targets:

* streams are chosen the same way on both sides (the tcp.stream of the first two distinct
  `http.request` frames, a filter both sides have already run), A for Follow and B for the
  flow diagram, so that no side's flow reuses the `tcp.stream eq A` of its own follow;
* `tcp.stream eq A`, `tcp.stream eq B`, the conv:TCP tap, the I/O graph and `dns` are each
  asked for exactly once per side, after the page/filter measurements, which never use them
  (the server's I/O graph is then asked for a second, later window, timed on its own).

The raw side runs in the already-loaded raw sharkd session (no reload between operations: a
fresh filter string already defeats sharkd's per-filter bitmap cache, and taps/follow/iograph
always rescan every frame). Exports are compared with `tshark -2 -Y dns -w`, the natural raw
equivalent; tshark also writes the frames that matching ones depend on, so the two frame
counts are recorded side by side.
"""

from __future__ import annotations

import asyncio
import struct
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.errors import BenchError, ServerUnavailable
from bench.procs import spawned
from bench.timing import timed

if TYPE_CHECKING:
    from bench.sharkd import Sharkd

STREAM_SOURCE_FILTER = "http.request"  # already run on both sides by the filter measurements
EXPORT_FILTER = "dns"
# The built capture's sources span ~10 years: hundreds of millions of 1 s intervals. The server
# answers at most 200,000 intervals at once (explorer/engine/iograph.py), so it is asked for the
# first window its I/O graph page draws (IOGRAPH_WINDOW intervals from the first packet), then
# for the last window, which ends with the last packet. sharkd's `iograph` has no range: it
# tallies intervals 0..249,999 in one tap that dissects every frame, and drops every later
# frame. So the two sides do not do the same work: the server counts unfiltered packets from
# the record headers without dissecting; both record the first window's packet count, which
# must agree.
IOGRAPH_INTERVAL_MS = 1000
IOGRAPH_WINDOW = 1000  # explorer/views/iograph.py MAX_BARS
FLOW_LIMIT = 500  # explorer/engine/flows.py MAX_ARROWS, the API's default `limit`
# The columns explorer/engine/flows.py asks sharkd for (copied, not imported: importing the
# app's engine would pull in Django settings).
FLOW_COLUMNS = [
    "frame.number:0",
    "frame.time_relative:0",
    "32",
    "30",
    "42",
    "11",
    "tcp.srcport:-1",
    "tcp.dstport:-1",
    "udp.srcport:-1",
    "udp.dstport:-1",
    "tcp.flags:-1",
    "tcp.seq:-1",
    "tcp.ack:-1",
    "tcp.len:-1",
    "28",
    "37",
]
OPERATIONS = ("follow", "conversations", "iograph", "flow", "export")


def _two_streams(streams: list[int]) -> tuple[int, int]:
    distinct = list(dict.fromkeys(streams))
    if len(distinct) < 2:
        raise BenchError(f"need two TCP streams with `{STREAM_SOURCE_FILTER}` frames, found {distinct}")
    return distinct[0], distinct[1]


def _seconds(index: int) -> str:
    """Return when I/O graph interval `index` starts, in seconds from the first packet."""
    return str(Decimal(index * IOGRAPH_INTERVAL_MS) / 1000)


def _decode(items: list[Any]) -> list[int]:
    """Expand sharkd's sparse iograph items (explorer/engine/iograph.py decode, copied)."""
    values: list[int] = []
    for item in items:
        if isinstance(item, str):
            values.extend([0] * max(int(item, 16) - len(values), 0))
        else:
            values.append(round(float(item)))
    return values


def count_pcapng_packets(data: bytes) -> int:
    """Enhanced/simple packet blocks in a pcapng file (what editcap and tshark -w write)."""
    if len(data) < 12:
        return 0
    order = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    packets, offset = 0, 0
    while offset + 8 <= len(data):
        kind, length = struct.unpack_from(f"{order}II", data, offset)
        if length < 12:
            raise BenchError(f"corrupt pcapng block at byte {offset}")
        if kind in (3, 6):
            packets += 1
        offset += length
    return packets


# --- raw engine ------------------------------------------------------------------------------


async def raw_operations(shark: Sharkd) -> dict[str, Any]:
    """The five operations in a loaded raw sharkd session, each on a filter it has not seen."""
    rows = await shark.call(
        "frames", {"filter": STREAM_SOURCE_FILTER, "limit": 200, "column0": "tcp.stream:0"}
    )
    stream_a, stream_b = _two_streams([int(r["c"][0]) for r in rows if str(r["c"][0]).isdigit()])
    result: dict[str, Any] = {"streams": [stream_a, stream_b]}

    seconds, followed = await timed(
        shark.call("follow", {"follow": "TCP", "filter": f"tcp.stream eq {stream_a}"})
    )
    result["follow"] = {"s": seconds, "stream": stream_a, "segments": len(followed.get("payloads", []))}

    seconds, tapped = await timed(shark.call("tap", {"tap0": "conv:TCP"}))
    result["conversations"] = {"s": seconds, "rows": len(tapped["taps"][0].get("convs", []))}

    # One unfiltered packets graph, the server's series; its first IOGRAPH_WINDOW values are
    # what the server's first window holds (a cross-check, counted after the clock stops).
    interval = IOGRAPH_INTERVAL_MS
    seconds, graph = await timed(shark.call("iograph", {"interval": interval, "graph0": "packets"}))
    graphs = graph.get("iograph", [])
    result["iograph"] = {
        "s": seconds,
        "interval_ms": interval,
        "graphs": len(graphs),
        "window_packets": sum(_decode(graphs[0].get("items", []))[:IOGRAPH_WINDOW]) if graphs else None,
    }

    flow_params: dict[str, Any] = {"limit": FLOW_LIMIT, "filter": f"tcp.stream eq {stream_b}"}
    flow_params.update({f"column{i}": c for i, c in enumerate(FLOW_COLUMNS)})
    seconds, arrows = await timed(shark.call("frames", flow_params))
    result["flow"] = {"s": seconds, "stream": stream_b, "arrows": len(arrows)}
    return result


async def tshark_export(path: Path) -> dict[str, Any]:
    """`tshark -2 -r FILE -Y dns -w OUT`, timed to exit; OUT's packets counted."""
    with tempfile.TemporaryDirectory(prefix="bench-export-", dir="/tmp") as tmp:
        out = Path(tmp) / "x.pcapng"
        cmd = ("tshark", "-2", "-r", str(path), "-Y", EXPORT_FILTER, "-w", str(out))
        started = time.perf_counter()
        async with spawned(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        ) as proc:
            await proc.wait()
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} exited with {proc.returncode}")
        data = out.read_bytes()
    return {"s": seconds, "filter": EXPORT_FILTER, "bytes": len(data), "frames": count_pcapng_packets(data)}


# --- server ----------------------------------------------------------------------------------


def _ok(resp: httpx.Response) -> Any:
    if resp.status_code != 200:
        raise ServerUnavailable(
            f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text[:300]}"
        )
    return resp.json()


async def _server_streams(client: httpx.AsyncClient, capture_id: int) -> tuple[int, int]:
    """Streams of the first two distinct http.request frames, from the packet details' follow hints."""
    page = _ok(
        await client.get(
            f"/api/captures/{capture_id}/packets", params={"filter": STREAM_SOURCE_FILTER, "limit": 200}
        )
    )
    streams: list[int] = []
    for packet in page["packets"]:
        detail = _ok(await client.get(f"/api/captures/{capture_id}/packets/{packet['number']}/"))
        for kind, expression in detail.get("follow", []):
            if kind == "TCP" and expression.startswith("tcp.stream eq "):
                streams.append(int(expression.split()[-1]))
                break
        if len(set(streams)) >= 2:
            break
    return _two_streams(streams)


async def _export(client: httpx.AsyncClient, capture_id: int) -> tuple[int, bytes]:
    """Stream the export to its last byte; the bytes are counted after the clock stops."""
    chunks: list[bytes] = []
    url = f"/api/captures/{capture_id}/export"
    async with client.stream("GET", url, params={"filter": EXPORT_FILTER}) as resp:
        if resp.status_code != 200:
            await resp.aread()
            _ok(resp)
        async for chunk in resp.aiter_raw():
            chunks.append(chunk)  # kept instead of written to /dev/null, to count the frames
    data = b"".join(chunks)
    return len(data), data


async def server_operations(client: httpx.AsyncClient, capture_id: int) -> dict[str, Any]:
    """The five operations through the JSON API, one lone client, each on a new filter."""
    base = f"/api/captures/{capture_id}"
    capture = _ok(await client.get(f"{base}/"))
    sessions = int(capture["engine_sessions"])
    interval = IOGRAPH_INTERVAL_MS
    stream_a, stream_b = await _server_streams(client, capture_id)
    result: dict[str, Any] = {"streams": [stream_a, stream_b], "engine_sessions_at_start": sessions}

    seconds, followed = await timed(client.get(f"{base}/follow", params={"kind": "TCP", "stream": stream_a}))
    result["follow"] = {"s": seconds, "stream": stream_a, "segments": len(_ok(followed)["segments"])}

    seconds, convs = await timed(client.get(f"{base}/conversations", params={"kind": "TCP"}))
    result["conversations"] = {"s": seconds, "rows": len(_ok(convs))}

    # The first window reads every record header once (the timing includes that); the late
    # window is answered from what that read kept.
    params: dict[str, str | int] = {"interval": interval, "graph": "packets", "filter": ""}
    window = {"start": _seconds(0), "end": _seconds(IOGRAPH_WINDOW)}
    seconds, graph = await timed(client.get(f"{base}/iograph", params={**params, **window}))
    if graph.status_code == 400:
        refused = str(graph.json().get("error"))
        result["iograph"] = {"s": None, "interval_ms": interval, "refused_s": seconds, "error": refused}
    else:
        body = _ok(graph)
        total = int(body["total"])
        late_first = max(total - IOGRAPH_WINDOW, 0)
        late = {"start": _seconds(late_first), "end": _seconds(late_first + IOGRAPH_WINDOW)}
        late_seconds, late_graph = await timed(client.get(f"{base}/iograph", params={**params, **late}))
        result["iograph"] = {
            "s": seconds,
            "interval_ms": interval,
            "graphs": len(body["series"]),
            "window_packets": sum(body["series"][0]["values"]),
            "total_intervals": total,
            "late_window_s": late_seconds,
            "late_window_first": late_first,
            "late_window_packets": sum(_ok(late_graph)["series"][0]["values"]),
        }

    seconds, flow = await timed(client.get(f"{base}/flow", params={"stream": stream_b}))
    flow_body = _ok(flow)
    result["flow"] = {
        "s": seconds,
        "stream": stream_b,
        "arrows": len(flow_body["arrows"]),
        "total": flow_body["total"],
    }

    seconds, (size, data) = await timed(_export(client, capture_id))
    result["export"] = {
        "s": seconds,
        "filter": EXPORT_FILTER,
        "bytes": size,
        "frames": count_pcapng_packets(data),
    }
    return result

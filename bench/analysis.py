"""TCP and VoIP analyses on the benchmark capture, beside raw tshark doing the same work.

    .venv/bin/python -m bench.analysis [--packets N]

Runs the engine's analyses in this process (Django settings, no server): the TCP health table
of every conversation, the tcptrace graph of the busiest TCP stream (then its throughput graph
and its story, from the same pass), and the VoIP summary (SIP calls and RTP streams). Each is
timed beside the tshark command that prints the same fields of the same frames to /dev/null:
what is left is what reading and tallying them costs. Peak memory is the largest resident set
of this process and of any tshark it ran (getrusage).

Writes bench/results/analysis.json and analysis.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.__main__ import default_source_dir
from bench.capture import build_capture
from bench.errors import BenchError
from bench.report import machine_info

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--packets", type=int, default=1_000_000, help="capture size (default 1,000,000)")
    parser.add_argument("--source-dir", type=Path, default=None, help="real captures to build from")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data", help="capture cache")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--name", default="analysis", help="results file name (analysis)")
    parser.add_argument(
        "--long-stream", type=int, default=200_000, help="data segments of the long-stream capture (200,000)"
    )
    args = parser.parse_args(argv)
    args.source_dir = (args.source_dir or default_source_dir()).resolve()
    return args


def say(message: str) -> None:
    print(f"bench.analysis: {message}", file=sys.stderr, flush=True)


def peak_mb(who: int) -> float:
    """The largest resident set so far of this process or of its reaped children, in MB."""
    return resource.getrusage(who).ru_maxrss / 1024


def raw_tshark(
    path: Path, fields: list[str], display_filter: str, statistics: list[str] | None = None
) -> float:
    """Seconds tshark takes to print the fields of the frames a filter shows, to /dev/null."""
    command = ["tshark", "-2", "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    command += ["-E", "occurrence=a", "-E", "aggregator=\x1f", "-E", "quote=n"]
    for field in fields:
        command += ["-e", field]
    for statistic in statistics or []:
        command += ["-z", statistic]
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"tshark failed: {done.stderr.strip()[-300:]}")
    return time.perf_counter() - started


async def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call
    return time.perf_counter() - started, result


async def measure(path: Path) -> dict[str, Any]:
    from explorer.engine import tcpgraph, tcphealth, tcpstory, tcpstream, voip

    results: dict[str, Any] = {}
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # the file in the page cache

    say("TCP health table")
    seconds, table = await timed(tcphealth.tcp_health(path))
    results["health"] = {
        "s": seconds,
        "raw_s": raw_tshark(path, tcphealth.FIELDS, "tcp"),
        "conversations": len(table.conversations),
        "untallied": table.untallied,
        "with_problems": sum(1 for c in table.conversations if c.has_problems),
        "packets": sum(c.packets for c in table.conversations),
        "process_peak_mb": peak_mb(resource.RUSAGE_SELF),
        "tshark_peak_mb": peak_mb(resource.RUSAGE_CHILDREN),
    }
    busiest = max(table.conversations, key=lambda c: c.packets)
    say(f"graphs of stream {busiest.stream} ({busiest.packets:,} packets)")
    seconds, graph = await timed(tcpgraph.tcp_graph(path, busiest.stream, "tcptrace", "server-to-client"))
    results["graph"] = {
        "stream": busiest.stream,
        "stream_packets": busiest.packets,
        "s": seconds,
        "raw_s": raw_tshark(path, tcpstream.FIELDS, f"tcp.stream eq {busiest.stream}"),
        "points": graph.points,
        "thinned": graph.thinned,
    }
    seconds, _ = await timed(tcpgraph.tcp_graph(path, busiest.stream, "throughput", "server-to-client"))
    results["graph"]["second_graph_s"] = seconds
    seconds, story = await timed(tcpstory.tcp_story(path, busiest.stream))
    results["graph"]["story_s"] = seconds
    results["graph"]["sentences"] = len(story.sentences)

    say("VoIP summary")
    seconds, summary = await timed(voip.voip_summary(path))
    results["voip"] = {
        "s": seconds,
        "raw_s": raw_tshark(path, voip.FIELDS, voip.FILTER, voip.STATISTICS),
        "sip_messages": len(summary.messages),
        "calls": len(voip.calls_of(summary)),
        "rtp_streams": len(summary.streams),
    }
    results["process_peak_mb"] = peak_mb(resource.RUSAGE_SELF)
    results["tshark_peak_mb"] = peak_mb(resource.RUSAGE_CHILDREN)
    return results


async def measure_long_stream(path: Path) -> dict[str, Any]:
    """The graphs and story of one very long TCP stream: what Python does per packet shows here."""
    from explorer.engine import tcpgraph, tcphealth, tcpstory, tcpstream

    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    say(f"one long stream ({path.name})")
    result: dict[str, Any] = {"file_size": path.stat().st_size}
    seconds, graph = await timed(tcpgraph.tcp_graph(path, 0, "tcptrace", "server-to-client"))
    result.update(
        s=seconds,
        raw_s=raw_tshark(path, tcpstream.FIELDS, "tcp.stream eq 0"),
        points=graph.points,
        shown=len(graph.segments) + len(graph.acks) + len(graph.sacks),
    )
    for kind in ("throughput", "rtt", "window", "stevens"):
        result[f"{kind}_s"], _ = await timed(tcpgraph.tcp_graph(path, 0, kind, "server-to-client"))
    result["story_s"], story = await timed(tcpstory.tcp_story(path, 0))
    result["sentences"] = len(story.sentences)
    seconds, table = await timed(tcphealth.tcp_health(path))
    result["health_s"], result["health_raw_s"] = seconds, raw_tshark(path, tcphealth.FIELDS, "tcp")
    result["packets"] = table.conversations[0].packets
    result["process_peak_mb"] = peak_mb(resource.RUSAGE_SELF)
    return result


def long_stream_capture(path: Path, segments: int) -> Path:
    """Write one TCP connection of `segments` 100-byte data segments, each other one ACKed, a few lost.

    One segment in a thousand is missing at first and sent again after the next ones, so that
    tshark's analysis finds duplicate ACKs, retransmissions and SACK-less recovery in it.
    """
    if path.exists():
        return path
    client, server = bytes([10, 1, 0, 1]), bytes([10, 1, 0, 2])
    records: list[bytes] = []
    clock = 1_700_000_000_000_000  # microseconds

    def packet(
        source: bytes,
        destination: bytes,
        ports: tuple[int, int],
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
    ) -> None:
        nonlocal clock
        clock += 50
        tcp = struct.pack(
            "!HHIIBBHHH", *ports, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0
        )
        total = 20 + len(tcp) + len(payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, source, destination)
        frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload
        seconds, micros = divmod(clock, 1_000_000)
        records.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)

    up, down = (40000, 80), (80, 40000)
    packet(client, server, up, 1000, 0, 0x02)
    packet(server, client, down, 5000, 1001, 0x12)
    packet(client, server, up, 1001, 5001, 0x10)
    data = bytes(100)
    acked = 5001
    held: int | None = None
    for index in range(segments):
        seq = 5001 + 100 * index
        if index % 1000 == 500:
            held = seq  # lost on the way: sent again after the next few
        else:
            packet(server, client, down, seq, 1001, 0x10, data)
        if held is not None and index % 1000 == 503:
            packet(server, client, down, held, 1001, 0x10, data)
            held = None
        if index % 2:
            acked = seq + 100 if held is None else held
            packet(client, server, up, 1001, acked, 0x10)
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    partial = path.with_suffix(".partial")
    partial.write_bytes(header + b"".join(records))
    partial.rename(path)
    return path


def ratio(engine: float, raw: float) -> str:
    return f"{engine / raw:.2f}×" if raw else "—"


def _load(values: list[float] | None) -> str:
    return ", ".join(f"{v:.1f}" for v in values) if values else "not recorded"


def markdown(results: dict[str, Any]) -> str:
    capture, machine, r = results["capture"], results["machine"], results["analysis"]
    health, graph, voip = r["health"], r["graph"], r["voip"]

    def seconds(value: float) -> str:
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"

    lines = [
        "# TCP and VoIP analyses",
        "",
        f"{results['date']} · {capture['packets']:,} packets · {capture['file_size'] / 1e6:.0f} MB · "
        f"{machine['cpu_count']} CPUs · {machine['tshark_version']}",
        "",
        "The machine's load average (1, 5, 15 min) before and after: "
        f"{_load(results.get('load_before'))} and {_load(results.get('load_after'))}; on a machine shared "
        "with other work, compare the ratios of one run rather than its absolute times.",
        "",
        "| analysis | explorer engine | raw tshark, same fields | ratio |",
        "|---|---|---|---|",
        f"| TCP health table ({health['conversations']:,} conversations, {health['packets']:,} packets) "
        f"| {seconds(health['s'])} | {seconds(health['raw_s'])} | {ratio(health['s'], health['raw_s'])} |",
        f"| tcptrace graph of stream {graph['stream']} ({graph['stream_packets']:,} packets) "
        f"| {seconds(graph['s'])} | {seconds(graph['raw_s'])} | {ratio(graph['s'], graph['raw_s'])} |",
        f"| … its throughput graph next (same pass) | {seconds(graph['second_graph_s'])} | — | — |",
        f"| … its story next (same pass) | {seconds(graph['story_s'])} | — | — |",
        f"| VoIP summary ({voip['calls']} calls, {voip['rtp_streams']} RTP streams) "
        f"| {seconds(voip['s'])} | {seconds(voip['raw_s'])} | {ratio(voip['s'], voip['raw_s'])} |",
        "",
        f"Peak resident memory: this process {r['process_peak_mb']:.0f} MB (Python, the tallies and "
        f"the kept stream), the largest tshark {r['tshark_peak_mb']:.0f} MB.",
        f"Conversations with problems: {health['with_problems']:,}; graph points: {graph['points']:,} "
        f"({'thinned' if graph['thinned'] else 'all shown'}).",
    ]
    long = results.get("long_stream")
    if long:
        lines += [
            "",
            f"One TCP stream of {long['packets']:,} packets ({long['file_size'] / 1e6:.0f} MB, written by "
            "the benchmark): its first graph reads the stream, the others reuse that pass.",
            "",
            "| analysis | explorer engine | raw tshark, same fields | ratio |",
            "|---|---|---|---|",
            f"| tcptrace graph ({long['points']:,} points, {long['shown']:,} shown) | {seconds(long['s'])} "
            f"| {seconds(long['raw_s'])} | {ratio(long['s'], long['raw_s'])} |",
            *(
                f"| … then {kind} | {seconds(long[f'{kind}_s'])} | — | — |"
                for kind in ("throughput", "rtt", "window", "stevens")
            ),
            f"| … then its story | {seconds(long['story_s'])} | — | — |",
            f"| health table of the capture | {seconds(long['health_s'])} | {seconds(long['health_raw_s'])} "
            f"| {ratio(long['health_s'], long['health_raw_s'])} |",
            "",
            f"Peak resident memory of this process by then: {long['process_peak_mb']:.0f} MB.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explorer_site.settings")
    os.environ.setdefault("CAPTURES_DIR", tempfile.mkdtemp(prefix="bench-analysis-"))
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    say(f"building/reusing a {args.packets:,}-packet capture from {args.source_dir}")
    try:
        capture = build_capture(args.source_dir, args.packets, args.data_dir)
        import dataclasses

        results: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "capture": dataclasses.asdict(capture),
        }
        results["load_before"] = os.getloadavg()
        results["analysis"] = asyncio.run(measure(capture.path))
        long_stream = long_stream_capture(
            args.data_dir / f"long-stream-{args.long_stream}.pcap", args.long_stream
        )
        results["long_stream"] = asyncio.run(measure_long_stream(long_stream))
        results["load_after"] = os.getloadavg()
    except BenchError as error:
        say(f"error: {error}")
        return 1
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results)
    (args.results_dir / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Entry point: `.venv/bin/python -m bench [--quick] [--packets N] [--source-dir DIR]`.

Exit status: 0 when every measurement was made (targets may still be missed), 1 on an
error that stopped the run, 2 when only the server half could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.capture import BLOCK_PACKETS, build_capture
from bench.errors import BenchError, ServerUnavailable
from bench.procs import kill_all_sync
from bench.report import machine_info, write
from bench.server import measure_server
from bench.sharkd import measure_sharkd, measure_tshark

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def default_source_dir() -> Path:
    """The real captures kept with the tests (tests/captures, with their MANIFEST.tsv)."""
    return REPO / "tests" / "captures"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=1_000_000, help="capture size (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run on {BLOCK_PACKETS:,} packets")
    parser.add_argument("--source-dir", type=Path, default=None, help="real captures to build from")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data", help="capture cache")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--skip-server", action="store_true", help="measure only the raw engine")
    args = parser.parse_args(argv)
    if args.quick:
        args.packets = BLOCK_PACKETS
    if args.packets <= 0:
        parser.error("--packets must be positive")
    args.source_dir = (args.source_dir or default_source_dir()).resolve()
    if not args.source_dir.is_dir():
        parser.error(f"source directory {args.source_dir} not found; pass --source-dir")
    return args


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    say(f"building/reusing a {args.packets:,}-packet capture from {args.source_dir}")
    capture = build_capture(args.source_dir, args.packets, args.data_dir)
    say(
        f"capture {capture.path} ({capture.file_size / 1e6:.0f} MB, "
        f"{'reused' if capture.reused else f'built in {capture.build_seconds:.1f} s'})"
    )
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "capture": dataclasses.asdict(capture),
    }
    say("raw sharkd baselines")
    results["raw"] = await measure_sharkd(capture.path)
    say("tshark references")
    results["tshark"] = await measure_tshark(capture.path)
    if args.skip_server:
        results["server"] = {"error": "skipped (--skip-server)"}
        return results
    say("server (daphne) measurements")
    try:
        results["server"] = await measure_server(REPO, capture.path)
        # Measured beside the server's own operations (see bench/server.py).
        results["raw"]["operations"] = results["server"].pop("raw_operations", None)
    except ServerUnavailable as exc:
        say(f"server half failed: {exc}")
        results["server"] = {"error": str(exc)}
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        results = asyncio.run(measure(args))
    except BenchError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        kill_all_sync()  # last resort if the event loop was torn down mid-cleanup
    print(write(results, args.results_dir))
    failed = "error" in results["server"] and not args.skip_server
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

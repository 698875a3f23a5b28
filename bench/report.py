"""Results: machine facts, the JSON record and the markdown comparison table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE_TARGET_S = 0.050
FIRST_ROWS_TARGET_S = 1.0
LOAD_RATIO = 1.2
FILTER_RATIO = 1.2
MEMORY_RATIO = 1.3


def machine_info() -> dict[str, Any]:
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _proc_value("/proc/cpuinfo", "model name"),
        "memory_total": _proc_value("/proc/meminfo", "MemTotal"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tshark_version": version.stdout.splitlines()[0] if version.stdout else "unknown",
    }


def _proc_value(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]... or None when any level is missing (e.g. the server half failed)."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


@dataclass(frozen=True)
class Target:
    """Either an absolute limit on the server value or a limit on server / raw."""

    limit: float
    ratio: bool = False
    strict: bool = False  # "<" instead of "<="

    def text(self) -> str:
        sign = "<" if self.strict else "≤"
        return f"{sign} {self.limit:g}× raw" if self.ratio else f"{sign} {_fmt_time(self.limit)}"

    def met(self, server: float | None, raw: float | None) -> bool | None:
        if server is None or (self.ratio and not raw):
            return None
        value = server / raw if self.ratio and raw else server
        return value < self.limit if self.strict else value <= self.limit


@dataclass(frozen=True)
class Row:
    operation: str
    server: float | None
    raw: float | None
    unit: str  # "s" (formatted as ms or s) or "MB"
    target: Target | None = None


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} MB" if unit == "MB" else _fmt_time(value)


def rows(results: dict[str, Any]) -> list[Row]:
    raw, srv = results.get("raw", {}), results.get("server", {})
    page = Target(PAGE_TARGET_S, strict=True)
    filt = "http.request"
    rows = [
        Row("Upload (POST /api/captures/)", dig(srv, "upload_s"), None, "s"),
        Row(
            "First rows after upload (websocket)",
            dig(srv, "load", "first_rows_s"),
            None,
            "s",
            Target(FIRST_ROWS_TARGET_S),
        ),
        Row(
            "Full load (load.done / sharkd load)",
            dig(srv, "load", "done_s"),
            dig(raw, "load_s"),
            "s",
            Target(LOAD_RATIO, ratio=True),
        ),
        Row(
            "First GET page after upload (cross-check)",
            dig(srv, "load", "first_page_s"),
            dig(raw, "load_s"),
            "s",
        ),
    ]
    for name, label in (("start", "offset 0"), ("middle", "50%"), ("end", "end")):
        rows.append(
            Row(
                f"Page of 100 at {label} (median of 5)",
                dig(srv, "pages", name, "median_s"),
                dig(raw, "pages", name, "median_s"),
                "s",
                page,
            )
        )
    rows += [
        Row(
            "Packet details (median of 5)",
            dig(srv, "details", "median_s"),
            dig(raw, "details", "median_s"),
            "s",
            page,
        ),
        Row(
            f"New filter `{filt}` (count + page 1)",
            dig(srv, "filters", filt, "new_s"),
            dig(raw, "filters", filt, "new_s"),
            "s",
            Target(FILTER_RATIO, ratio=True),
        ),
        Row(
            "Same filter again",
            dig(srv, "filters", filt, "again_s"),
            dig(raw, "filters", filt, "again_s"),
            "s",
            page,
        ),
        Row(
            "Filtered page 2",
            dig(srv, "filters", filt, "page2_s"),
            dig(raw, "filters", filt, "page2_s"),
            "s",
            page,
        ),
        Row("Standby session loaded once a second viewer joins", dig(srv, "standby_load_s"), None, "s"),
        Row(
            "Page/details during another viewer's new filter (max)",
            dig(srv, "concurrency", "max_s"),
            None,
            "s",
            page,
        ),
        Row(
            "Second new filter `tcp.analysis.retransmission` (with probes)",
            dig(srv, "concurrency", "filter_s"),
            dig(raw, "filters", "tcp.analysis.retransmission", "new_s"),
            "s",
        ),
        Row(
            "Memory after load (RSS, server = daphne and its sharkd)",
            serving_memory(srv),
            dig(raw, "memory_after_load", "rss_mb"),
            "MB",
            Target(MEMORY_RATIO, ratio=True),
        ),
        Row(
            "… and the search summary's tshark, still running then (one-off)",
            dig(srv, "memory_after_load_summary_mb"),
            None,
            "MB",
        ),
        Row(
            "Memory with two viewers (standby session)",
            dig(srv, "memory_two_viewers_mb"),
            dig(raw, "memory_after_load", "rss_mb"),
            "MB",
        ),
        Row(
            "Memory peak (server sampled / sharkd VmHWM)",
            dig(srv, "memory_peak_mb"),
            dig(raw, "memory_end", "peak_mb"),
            "MB",
        ),
        *operation_rows(results),
        Row("Reference: `tshark -r FILE > /dev/null`", None, dig(results, "tshark", "summary_s"), "s"),
        Row(f"Reference: `tshark -2 -Y {filt} -T fields`", None, dig(results, "tshark", "filter_s"), "s"),
    ]
    return rows


def serving_memory(server: dict[str, Any] | None) -> float | None:
    """The server's memory after load without the background summary (results before it: all)."""
    total = dig(server, "memory_after_load_mb")
    summary = dig(server, "memory_after_load_summary_mb") or 0
    return None if total is None else total - summary


OPERATION_RATIO = 1.2


def operation_rows(results: dict[str, Any]) -> list[Row]:
    """Follow, conversations, I/O graph, flow and export: server API vs raw sharkd/tshark."""
    raw, srv = dig(results, "raw", "operations"), dig(results, "server", "operations")
    target = Target(OPERATION_RATIO, ratio=True)
    streams = dig(srv, "streams") or dig(raw, "streams") or ["?", "?"]
    interval_ms = dig(srv, "iograph", "interval_ms") or dig(raw, "iograph", "interval_ms")
    interval = f"{interval_ms / 1000:g} s" if interval_ms else "?"
    labels = {
        "follow": f"Follow TCP stream {streams[0]} (sharkd `follow`)",
        "conversations": "Conversations TCP (sharkd `conv:TCP` tap)",
        "iograph": f"I/O graph {interval}, packets (sharkd `iograph`)",
        "flow": f"Flow diagram of stream {streams[1]} (sharkd `frames`)",
    }
    if dig(srv, "iograph", "error"):
        labels["iograph"] += " — server refused (see below)"
    rows = [Row(label, dig(srv, key, "s"), dig(raw, key, "s"), "s", target) for key, label in labels.items()]
    rows.append(
        Row(
            "Export `dns` to last byte (vs `tshark -2 -Y dns -w`)",
            dig(srv, "export", "s"),
            dig(results, "tshark", "export", "s"),
            "s",
            target,
        )
    )
    return rows


def _ratio(row: Row) -> str:
    if row.server is None or not row.raw:
        return "—"
    return f"{row.server / row.raw:.2f}×"


def _met(row: Row) -> str:
    if row.target is None:
        return "—"
    met = row.target.met(row.server, row.raw)
    return "n/a" if met is None else ("yes" if met else "**no**")


def markdown(results: dict[str, Any]) -> str:
    capture, machine = results["capture"], results["machine"]
    lines = [
        "# Capture Explorer benchmark",
        "",
        f"{results['date']} · {capture['packets']:,} packets · "
        f"{capture['file_size'] / 1e6:.0f} MB · {machine['cpu_count']} CPUs · {machine['tshark_version']}",
        "",
        "| operation | server | raw engine | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows(results):
        target = row.target.text() if row.target else "—"
        lines.append(
            f"| {row.operation} | {_fmt(row.server, row.unit)} | {_fmt(row.raw, row.unit)} "
            f"| {_ratio(row)} | {target} | {_met(row)} |"
        )
    error = dig(results, "server", "error")
    if error:
        lines += ["", f"Server half not measured: {error.splitlines()[0]}"]
    matched = (
        dig(results, "raw", "filters", "http.request", "matched"),
        dig(results, "server", "filters", "http.request", "displayed"),
        dig(results, "tshark", "filter_matched"),
    )
    lines += [
        "",
        f"`http.request` matches — sharkd: {matched[0]}, server: {matched[1]}, tshark -2: {matched[2]}.",
        f"`dns` export frames — server: {dig(results, 'server', 'operations', 'export', 'frames')}, "
        f"tshark -2 -w: {dig(results, 'tshark', 'export', 'frames')} (tshark adds depended-on frames).",
    ]
    refused = dig(results, "server", "operations", "iograph", "error")
    if refused:
        lines.append(f"Server I/O graph refused (400): {refused}")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], results_dir: Path) -> str:
    """Write latest.json and latest.md; return the markdown."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results)
    (results_dir / "latest.md").write_text(text)
    return text

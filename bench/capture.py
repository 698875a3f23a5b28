"""Build the benchmark capture (about 1M packets) from the real captures in tests/captures.

Three levels of concatenation, each copy shifted forward in time with `editcap -t` and
joined with `mergecap -a` (append, keeps file order):

1. one *pass*: every usable source once, each starting where the previous one ended;
2. a *block* of ~50k packets: copies of the pass;
3. the capture: copies of the block, trimmed so the total is exactly the requested count.

Each pass instance also gets its own IP addresses (bench.readdress): identical copies of
a TCP flow would otherwise be dissected as retransmissions of the first copy, which is
cheaper than real traffic and hides them from filters such as `http.request`.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.readdress import readdress

BLOCK_PACKETS = 50_000
# Some sources span years (modbus.pcap, ndpi-rtp.pcapng have a few far-off timestamps);
# advancing the clock by their full span would push later copies past year 2106, the end
# of the pcap format's 32-bit seconds. Cap the step each source contributes instead.
MAX_STEP_S = 3600.0
GAP_S = 1.0
BASE_EPOCH = 1_600_000_000.0  # 2020-09-13: the first source starts here
BUILD_VERSION = 2  # part of the cache file name: bump when the built content changes
ROOT_WARNING = "Running as user"  # tshark's warning when run as root; not a read error


@dataclass(frozen=True)
class Source:
    path: Path
    packets: int
    start: float  # earliest timestamp in the file, epoch seconds
    duration: float

    @property
    def step(self) -> float:
        """How far the clock advances after this source in a pass."""
        return min(self.duration, MAX_STEP_S) + GAP_S


@dataclass(frozen=True)
class Capture:
    path: Path
    packets: int
    file_size: int
    sources: list[str]
    reused: bool
    build_seconds: float


def run_tool(*cmd: str) -> str:
    """Run a Wireshark command-line tool; raise BenchError with its stderr on failure."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:3])}... failed ({done.returncode}): {_errors(done.stderr)}")
    return done.stdout


def _errors(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if ROOT_WARNING not in line).strip()


def count_packets(path: Path) -> int:
    """Packet count via capinfos -c -M (machine-readable, exact)."""
    out = run_tool("capinfos", "-T", "-r", "-c", "-M", str(path))
    return int(out.strip().split("\t")[-1])


def _capinfos_row(path: Path) -> dict[str, str] | None:
    """capinfos table row keyed by header, or None when capinfos can't read the file."""
    done = subprocess.run(
        ["capinfos", "-T", "-M", "-E", "-c", "-u", "-a", "-S", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or len(lines) != 2:
        return None
    return dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=False))


def _read_cleanly(path: Path) -> bool:
    """True when tshark dissects the whole file without error (no truncation etc.)."""
    done = subprocess.run(
        ["tshark", "-n", "-r", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    return done.returncode == 0 and not _errors(done.stderr)


def _as_source(path: Path) -> Source | None:
    """A usable source: Ethernet linktype, at least one packet, readable by capinfos."""
    row = _capinfos_row(path)
    if row is None or row.get("File encapsulation") != "ether":
        return None
    try:
        packets = int(row["Number of packets"])
        duration = float(row["Capture duration (seconds)"])
        start = float(row["Start time"])
    except (KeyError, ValueError):
        return None  # empty files report "n/a"
    return Source(path, packets, start, duration) if packets > 0 else None


def select_sources(source_dir: Path) -> list[Source]:
    """Ethernet pcap/pcapng files of source_dir that tshark reads cleanly, sorted by name."""
    files = sorted(p for p in source_dir.iterdir() if p.suffix in (".pcap", ".pcapng"))
    candidates = [s for s in map(_as_source, files) if s is not None]
    # tshark start-up dominates (~0.4 s per file); check the candidates in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        clean = list(pool.map(lambda s: _read_cleanly(s.path), candidates))
    sources = [s for s, ok in zip(candidates, clean, strict=True) if ok]
    if not sources:
        raise BenchError(f"no usable Ethernet captures in {source_dir}")
    return sources


def _shift(src: Path, offset: float, dst: Path, keep: int | None = None) -> None:
    """Copy src to dst as pcap with timestamps moved by offset, optionally the first keep packets."""
    cmd = ["editcap", "-F", "pcap", "-t", f"{offset:.6f}"]
    if keep is not None:
        cmd += ["-r", str(src), str(dst), f"1-{keep}"]
    else:
        cmd += [str(src), str(dst)]
    run_tool(*cmd)


def _concat(parts: list[Path], dst: Path) -> None:
    run_tool("mergecap", "-a", "-F", "pcap", "-w", str(dst), *map(str, parts))
    for part in parts:
        part.unlink()  # intermediates of the 1M level are ~600 MB in total


def build_pass(sources: list[Source], tmp: Path) -> tuple[Path, float, list[Source]]:
    """Every source once, back to back in time. Returns (file, time span, sources used).

    Sources editcap cannot write as pcap (e.g. pcapng with decryption secrets) are skipped.
    """
    parts: list[Path] = []
    used: list[Source] = []
    cursor = BASE_EPOCH
    for i, source in enumerate(sources):
        part = tmp / f"src-{i:03d}.pcap"
        try:
            _shift(source.path, cursor - source.start, part)
        except BenchError:
            part.unlink(missing_ok=True)
            continue
        parts.append(part)
        used.append(source)
        cursor += source.step
    if not parts:
        raise BenchError("no source could be converted to pcap")
    out = tmp / "pass.pcap"
    _concat(parts, out)
    return out, cursor - BASE_EPOCH, used


def repeat(
    src: Path, src_packets: int, span: float, variants: int, want: int, dst: Path, tmp: Path
) -> tuple[float, int]:
    """Write want packets to dst as time-shifted copies of src.

    src already holds `variants` address variants (0..variants-1); copy k adds k*variants
    so every pass instance in the result gets its own addresses. Returns dst's time span
    and variant count.
    """
    copies = math.ceil(want / src_packets)
    parts: list[Path] = []
    for k in range(copies):
        part = tmp / f"{dst.stem}-copy-{k:04d}.pcap"
        remaining = want - k * src_packets
        _shift(src, k * span, part, keep=remaining if remaining < src_packets else None)
        readdress(part, k * variants)
        parts.append(part)
    _concat(parts, dst)
    return copies * span, copies * variants


def build_capture(source_dir: Path, packets: int, data_dir: Path) -> Capture:
    """Return the cached capture of `packets` packets, building it when missing or wrong."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out = data_dir / f"capture-{packets}-v{BUILD_VERSION}.pcap"
    # Sidecar listing the sources used, so a cache hit skips the slow source checks.
    listing = out.with_suffix(".sources.txt")
    if out.exists() and listing.exists() and count_packets(out) == packets:
        names = listing.read_text().split()
        return Capture(out, packets, out.stat().st_size, names, True, 0.0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=data_dir, prefix="build-") as tmp_name:
        tmp = Path(tmp_name)
        one_pass, pass_span, used = build_pass(select_sources(source_dir), tmp)
        names = [s.path.name for s in used]
        pass_packets = sum(s.packets for s in used)
        block_packets = min(BLOCK_PACKETS, packets)
        block = tmp / "block.pcap"
        block_span, variants = repeat(one_pass, pass_packets, pass_span, 1, block_packets, block, tmp)
        partial = tmp / "capture.pcap"
        repeat(block, block_packets, block_span, variants, packets, partial, tmp)
        got = count_packets(partial)
        if got != packets:
            raise BenchError(f"built capture has {got} packets, expected {packets}")
        # Move into place only when complete so an interrupted build is never reused.
        shutil.move(str(partial), out)
    listing.write_text("\n".join(names) + "\n")
    elapsed = time.perf_counter() - started
    return Capture(out, packets, out.stat().st_size, names, False, elapsed)

"""Fuzz the upload and exploration paths with damaged captures: `python -m bench.fuzz [--count N]`.

Every sample is a small window (a few KB) of one of the shared real captures, damaged in one
of the ways real files get damaged or hostile files are built: bit flips, truncation, garbled
pcap and pcapng headers, wrong block lengths and types, other link types, `editcap -E` byte
errors, random bytes after a valid header, duplicated or reordered blocks and huge declared
lengths. The same seed gives the same files.

Each file is uploaded through the API; every accepted one is then explored (the first page of
packets and one packet's details, and for a sample a display filter and a statistic). The
outcome of each file is either "explorable" or a refusal whose message is counted; anything
else (an HTTP 500, a request that does not answer, an empty message or a traceback) is a
failure. tests/test_fuzz.py runs a thousand samples; this module's command runs as many as
asked and writes bench/results/fuzz.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# A sample holds the file's own header blocks and a window of packets of about this size.
WINDOW_BYTES = 4096
# Packets longer than this are cut (as a snap length would) so that every file stays small.
MAX_PACKET_BYTES = 1600

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanosecond pcap
    b"\xa1\xb2\x3c\x4d": ">",
}
SHB = 0x0A0D0D0A
IDB, SPB, EPB, OPB = 1, 3, 6, 2
PACKET_BLOCKS = {SPB, EPB, OPB}
# Block types of pcapng and a few values that are not.
BLOCK_TYPES = [SHB, IDB, OPB, SPB, 4, 5, EPB, 7, 8, 9, 0x0A, 0x0B, 0xBAD, 0x40000BAD, 0, 0xFFFFFFFF]
# Link types with dissectors behind them, so that packets meet dissectors they were not for.
LINK_TYPES = [
    0, 1, 6, 8, 9, 10, 12, 14, 50, 51, 101, 104, 105, 107, 108, 113, 114, 117, 118, 119, 122,
    123, 127, 138, 139, 140, 141, 142, 143, 144, 147, 161, 163, 165, 166, 169, 170, 177, 187,
    189, 192, 195, 196, 197, 201, 203, 204, 206, 209, 215, 220, 224, 225, 226, 227, 228, 229,
    230, 231, 235, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
    254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288,
]  # fmt: skip
HUGE = [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000000, 0x01000000, 262145, 65536, 65535]


@dataclass
class Layout:
    """A capture split into its parts: pcap's global header and records, or pcapng's blocks."""

    kind: str  # "pcap" or "pcapng"
    endian: str  # struct byte order of the file, "<" or ">"
    header: bytes  # pcap's 24-byte global header; empty for pcapng
    blocks: list[bytes]  # pcap records (header and data), or every pcapng block
    name: str = ""

    @property
    def suffix(self) -> str:
        return "." + self.kind

    def build(self, blocks: list[bytes] | None = None) -> bytes:
        return self.header + b"".join(self.blocks if blocks is None else blocks)

    def packet_indexes(self) -> list[int]:
        if self.kind == "pcap":
            return list(range(len(self.blocks)))
        return [i for i, block in enumerate(self.blocks) if self.block_type(block) in PACKET_BLOCKS]

    def block_type(self, block: bytes) -> int:
        return int(struct.unpack(self.endian + "I", block[:4])[0])


def _u32(endian: str, data: bytes, offset: int) -> int:
    return int(struct.unpack_from(endian + "I", data, offset)[0])


def _pcap_record(endian: str, record: bytes) -> bytes:
    """Return the record with its data cut to MAX_PACKET_BYTES (the original length kept)."""
    included = _u32(endian, record, 8)
    if included <= MAX_PACKET_BYTES:
        return record
    return record[:8] + struct.pack(endian + "I", MAX_PACKET_BYTES) + record[12 : 16 + MAX_PACKET_BYTES]


def _pcapng_block(endian: str, block: bytes) -> bytes:
    """Return the block with an enhanced packet's data cut to MAX_PACKET_BYTES, options dropped."""
    if len(block) < 32 or _u32(endian, block, 0) != EPB:
        return block
    captured = _u32(endian, block, 20)
    if captured <= MAX_PACKET_BYTES:
        return block
    data = block[28 : 28 + MAX_PACKET_BYTES]
    total = 28 + len(data) + 4
    fixed = struct.pack(endian + "II", EPB, total) + block[8:20] + struct.pack(endian + "I", len(data))
    return fixed + block[24:28] + data + struct.pack(endian + "I", total)


def parse(data: bytes, name: str = "") -> Layout | None:
    """Split a pcap or pcapng file into its parts; None when it is neither (or already broken)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:4] in PCAP_MAGICS:
        endian = PCAP_MAGICS[data[:4]]
        records, offset = [], 24
        while offset + 16 <= len(data):
            included = _u32(endian, data, offset + 8)
            end = offset + 16 + included
            if end > len(data):
                break
            records.append(_pcap_record(endian, data[offset:end]))
            offset = end
        return Layout("pcap", endian, data[:24], records, name)
    if len(data) >= 12 and data[:4] == struct.pack("<I", SHB):
        endian = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        blocks, offset = [], 0
        while offset + 12 <= len(data):
            total = _u32(endian, data, offset + 4)
            if total < 12 or offset + total > len(data):
                break
            blocks.append(_pcapng_block(endian, data[offset : offset + total]))
            offset += total
        return Layout("pcapng", endian, b"", blocks, name)
    return None


def load_seeds(source_dir: Path) -> list[Layout]:
    """Parse every pcap and pcapng file of the folder that has at least one packet."""
    seeds = []
    for path in sorted(source_dir.iterdir()):
        if path.suffix not in (".pcap", ".pcapng", ".gz"):
            continue
        layout = parse(path.read_bytes(), path.name)
        if layout is not None and layout.packet_indexes():
            seeds.append(layout)
    return seeds


def window(rng: random.Random, seed: Layout) -> Layout:
    """Return the seed's header blocks and a run of its packets of about WINDOW_BYTES."""
    packets = seed.packet_indexes()
    start = packets[rng.randrange(len(packets))] if rng.random() < 0.7 else packets[0]
    # pcapng: the section header, interfaces and other blocks that came before the window.
    is_packet = set(packets)
    # A large one (a decryption secrets block of many keys) is left out to keep files small.
    blocks = [
        block
        for i, block in enumerate(seed.blocks[:start])
        if i not in is_packet and (i == 0 or len(block) <= WINDOW_BYTES)
    ]
    size = sum(map(len, blocks))
    taken = 0
    for block in seed.blocks[start:]:
        if taken and size + len(block) > WINDOW_BYTES:
            break
        blocks.append(block)
        size += len(block)
        taken += 1
    return Layout(seed.kind, seed.endian, seed.header, blocks, seed.name)


def _set_u32(data: bytearray, offset: int, value: int, endian: str) -> None:
    if offset + 4 <= len(data):
        struct.pack_into(endian + "I", data, offset, value & 0xFFFFFFFF)


def _pick_packet(rng: random.Random, layout: Layout) -> int:
    packets = layout.packet_indexes()
    return rng.choice(packets) if packets else rng.randrange(len(layout.blocks))


# Each mutation takes the random generator and an intact window and returns the file's bytes.


def _flipped(rng: random.Random, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(rng.choice([1, 1, 2, 4, 8, 32])):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data)


def bit_flips(rng: random.Random, layout: Layout) -> bytes:
    return _flipped(rng, layout.build())


def truncation(rng: random.Random, layout: Layout) -> bytes:
    data = layout.build()
    # Half of the cuts fall in the first blocks, where the headers are.
    end = rng.randrange(1, min(len(data), 200)) if rng.random() < 0.5 else rng.randrange(1, len(data))
    return data[:end]


def garbled_header(rng: random.Random, layout: Layout) -> bytes:
    endian = layout.endian
    if layout.kind == "pcap":
        header = bytearray(layout.header)
        offset = rng.choice([0, 4, 6, 8, 12, 16, 20])
        if offset == 0:
            header[:4] = rng.choice(
                [*PCAP_MAGICS, b"\xa1\xb2\xcd\x34", b"\x00\x00\x00\x00", rng.randbytes(4)]
            )
        elif offset in (4, 6):
            struct.pack_into(endian + "H", header, offset, rng.choice([0, 1, 2, 3, 4, 0xFFFF]))
        else:
            _set_u32(header, offset, rng.choice([0, 1, 14, *HUGE, rng.getrandbits(32)]), endian)
        return bytes(header) + b"".join(layout.blocks)
    blocks = list(layout.blocks)
    shb = bytearray(blocks[0])
    choice = rng.choice(["byte order", "version", "section length", "interface", "options"])
    if choice == "byte order":
        shb[8:12] = rng.choice([shb[8:12][::-1], rng.randbytes(4), b"\x00" * 4])
    elif choice == "version":
        struct.pack_into(endian + "HH", shb, 12, rng.choice([0, 1, 2, 0xFFFF]), rng.choice([0, 1, 2, 0xFFFF]))
    elif choice == "section length":
        shb[16:24] = rng.choice([b"\xff" * 8, b"\x00" * 8, rng.randbytes(8)])
    blocks[0] = bytes(shb)
    interfaces = [i for i, b in enumerate(blocks) if layout.block_type(b) == IDB]
    if choice == "interface" and interfaces:
        index = rng.choice(interfaces)
        idb = bytearray(blocks[index])
        _set_u32(idb, 12, rng.choice([0, 1, 14, *HUGE, rng.getrandbits(32)]), endian)  # snap length
        blocks[index] = bytes(idb)
    elif choice == "options":
        # Random bytes where a block's options are: option codes and lengths of any value.
        index = rng.choice(interfaces or [0])
        block = bytearray(blocks[index])
        fixed = 16 if layout.block_type(block) == IDB else 24
        for position in range(fixed, len(block) - 4):
            if rng.random() < 0.3:
                block[position] = rng.randrange(256)
        blocks[index] = bytes(block)
    return layout.build(blocks)


def block_length(rng: random.Random, layout: Layout) -> bytes:
    blocks = list(layout.blocks)
    index = _pick_packet(rng, layout) if rng.random() < 0.7 else rng.randrange(len(blocks))
    block = bytearray(blocks[index])
    value = rng.choice([0, 4, 11, 12, 13, len(block) - 4, len(block) + 4, len(block) + 1, *HUGE])
    if layout.kind == "pcap":
        _set_u32(block, rng.choice([8, 12]), value, layout.endian)  # included or original length
    else:
        _set_u32(block, rng.choice([4, 4, len(block) - 4]), value, layout.endian)  # leading or trailing
    blocks[index] = bytes(block)
    return layout.build(blocks)


def block_type(rng: random.Random, layout: Layout) -> bytes:
    blocks = list(layout.blocks)
    if layout.kind == "pcap":
        # pcap records have no type: swap two record headers instead.
        if len(blocks) < 2:
            return bit_flips(rng, layout)
        a, b = rng.sample(range(len(blocks)), 2)
        blocks[a], blocks[b] = blocks[b][:16] + blocks[a][16:], blocks[a][:16] + blocks[b][16:]
        return layout.build(blocks)
    index = rng.randrange(len(blocks))
    block = bytearray(blocks[index])
    _set_u32(block, 0, rng.choice([*BLOCK_TYPES, rng.getrandbits(32)]), layout.endian)
    blocks[index] = bytes(block)
    return layout.build(blocks)


def link_type(rng: random.Random, layout: Layout) -> bytes:
    value = rng.choice(LINK_TYPES) if rng.random() < 0.9 else rng.getrandbits(16)
    if layout.kind == "pcap":
        header = bytearray(layout.header)
        _set_u32(header, 20, value, layout.endian)
        return bytes(header) + b"".join(layout.blocks)
    blocks = list(layout.blocks)
    for index, block in enumerate(blocks):
        if layout.block_type(block) == IDB:
            changed = bytearray(block)
            struct.pack_into(layout.endian + "H", changed, 8, value)
            blocks[index] = bytes(changed)
    return layout.build(blocks)


def random_tail(rng: random.Random, layout: Layout) -> bytes:
    keep = (
        rng.randrange(len(layout.blocks)) if layout.kind == "pcap" else rng.randrange(1, len(layout.blocks))
    )
    return layout.build(layout.blocks[:keep]) + rng.randbytes(rng.choice([1, 15, 16, 100, 1000, 3000]))


def duplicated_blocks(rng: random.Random, layout: Layout) -> bytes:
    blocks = list(layout.blocks)
    for _ in range(rng.randint(1, 4)):
        index = rng.randrange(len(blocks))
        blocks.insert(rng.randrange(len(blocks) + 1), blocks[index])
    return layout.build(blocks)


def reordered_blocks(rng: random.Random, layout: Layout) -> bytes:
    blocks = list(layout.blocks)
    if rng.random() < 0.5:
        rng.shuffle(blocks)
    else:
        packets = layout.packet_indexes()
        moved = [blocks[i] for i in packets]
        rng.shuffle(moved)
        for index, block in zip(packets, moved, strict=True):
            blocks[index] = block
    return layout.build(blocks)


def huge_length(rng: random.Random, layout: Layout) -> bytes:
    blocks = list(layout.blocks)
    index = _pick_packet(rng, layout)
    block = bytearray(blocks[index])
    value = rng.choice(HUGE)
    if layout.kind == "pcap":
        _set_u32(block, rng.choice([8, 12]), value, layout.endian)
    elif layout.block_type(block) == EPB:
        _set_u32(block, rng.choice([20, 24, 4]), value, layout.endian)  # captured, original, block
    else:
        _set_u32(block, rng.choice([4, 8]), value, layout.endian)
    blocks[index] = bytes(block)
    if rng.random() < 0.3:
        blocks = blocks[: index + 1]  # the declared data is not there at all
    return layout.build(blocks)


def editcap_errors(rng: random.Random, layout: Layout) -> bytes:
    probability = rng.choice(["0.001", "0.01", "0.05", "0.2", "0.5"])
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        source, target = Path(folder) / ("in" + layout.suffix), Path(folder) / ("out" + layout.suffix)
        source.write_bytes(layout.build())
        done = subprocess.run(
            ["editcap", "-E", probability, "--seed", str(rng.getrandbits(31)), str(source), str(target)],
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0:
            # editcap cannot write some blocks back (a pcapng with decryption secrets).
            return bit_flips(rng, layout)
        return target.read_bytes()


def stacked(rng: random.Random, layout: Layout) -> bytes:
    """Change the structure, then flip bits in the result."""
    first = rng.choice([garbled_header, block_length, link_type, duplicated_blocks, huge_length])
    return _flipped(rng, first(rng, layout))


def intact(rng: random.Random, layout: Layout) -> bytes:
    return layout.build()


Mutation = Callable[[random.Random, Layout], bytes]
# Weights: more of the kinds that reach the dissectors, some of every kind.
MUTATIONS: list[tuple[Mutation, int]] = [
    (bit_flips, 16),
    (truncation, 8),
    (garbled_header, 10),
    (block_length, 8),
    (block_type, 6),
    (link_type, 14),
    (editcap_errors, 12),
    (random_tail, 6),
    (duplicated_blocks, 5),
    (reordered_blocks, 5),
    (huge_length, 6),
    (stacked, 8),
    (intact, 2),
]


@dataclass
class Sample:
    index: int
    mutation: str
    seed: str
    data: bytes

    @property
    def name(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.seed.split(".")[0])[:40]
        suffix = ".pcapng" if self.seed.endswith(".pcapng") else ".pcap"
        return f"fuzz-{self.index:06d}-{self.mutation}-{stem}{suffix}"


def samples(source_dir: Path, count: int, seed: int = 1) -> Iterator[Sample]:
    """Yield count damaged captures; the same seed always gives the same files."""
    seeds = load_seeds(source_dir)
    if not seeds:
        raise ValueError(f"no pcap or pcapng file with packets in {source_dir}")
    functions = [function for function, _ in MUTATIONS]
    weights = [weight for _, weight in MUTATIONS]
    for index in range(count):
        rng = random.Random(f"{seed}:{index}")
        layout = window(rng, rng.choice(seeds))
        mutation = rng.choices(functions, weights)[0]
        data = mutation(rng, layout)
        yield Sample(index, mutation.__name__, layout.name, data or b"\x00")


# What a sample's exploration runs, chosen by its index.
FILTERS = ["tcp || udp", "frame.len > 100", "ip || ipv6", "_ws.malformed || _ws.expert", "eth.src"]
STATISTICS = [
    "conversations?kind=TCP",
    "endpoints?kind=IPv4",
    "protocol-hierarchy",
    "iograph?interval=1000&graph=packets",
    "conversations?kind=UDP",
    "expert",
    "follow?kind=TCP&stream=0",
    "flow",
]
# Signs of a message written for a developer rather than for the person using the explorer:
# a failure. A message naming a file on the server is counted apart and flagged in the table.
INTERNALS = re.compile(r"Traceback|File \"[^\"]*\", line \d+|Error\(|Exception\b")
SERVER_FILE = re.compile(r"\.staging|/[^\s\"]+\.(cap|part)\b")
SERVER_FILE_FLAG = " [the message names a file on the server]"


@dataclass
class Outcome:
    index: int
    mutation: str
    name: str
    outcome: str  # the table's row: "explorable", "rejected: <message>", "FAILED: ..."
    detail: str = ""  # for a failure: the request and what came back

    @property
    def failed(self) -> bool:
        return self.outcome.startswith("FAILED")


def normalized(message: str) -> str:
    """Return the message with its numbers and file paths replaced, so that alike messages count together."""
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "N", re.sub(r'"/[^"]*"', '"FILE"', message))


class Refused(Exception):
    """A request was answered with a clear refusal; its message is the outcome."""


class Failure(Exception):
    """A request was answered in a way that is never acceptable."""


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        raise Failure(f"HTTP {response.status_code} without a message: {response.text[:300]!r}")
    if INTERNALS.search(message):
        raise Failure(f"HTTP {response.status_code} with an internal message: {message[:300]!r}")
    return message + SERVER_FILE_FLAG if SERVER_FILE.search(message) else message


async def _get(client: httpx.AsyncClient, step: str, url: str, **params: Any) -> Any:
    try:
        response = await client.get(url, params=params)
    except httpx.TimeoutException as error:
        raise Failure(f"{step}: no answer ({type(error).__name__}) from GET {url}") from error
    except httpx.TransportError as error:
        raise Failure(f"{step}: connection failed ({type(error).__name__}: {error}) on GET {url}") from error
    if response.status_code == 200:
        return response.json()
    if response.status_code >= 500 and response.status_code != 503:
        raise Failure(f"{step}: HTTP {response.status_code} from GET {url}: {response.text[:300]!r}")
    message = _message(response)
    raise Refused(f"{step} refused ({response.status_code}): {message}")


async def explore(client: httpx.AsyncClient, sample: Sample, capture: dict[str, Any], deep: bool) -> str:
    """Explore an accepted capture as a person would; return the outcome or raise Refused/Failure."""
    base = f"/api/captures/{capture['id']}"
    page = await _get(client, "packet list", f"{base}/packets", limit=50)
    rows = page.get("packets")
    if not isinstance(rows, list) or page.get("total", -1) < len(rows):
        raise Failure(f"packet list: unexpected answer {str(page)[:300]}")
    if rows:
        number = rows[sample.index % len(rows)]["number"]
        detail = await _get(client, "packet details", f"{base}/packets/{number}/")
        if not detail.get("tree"):
            raise Failure(f"packet details of {number}: no protocol tree")
    if deep:
        display_filter = FILTERS[sample.index // 7 % len(FILTERS)]
        await _get(client, "display filter", f"{base}/packets", filter=display_filter, limit=50)
        await _get(client, "statistic", f"{base}/{STATISTICS[sample.index // 7 % len(STATISTICS)]}")
    outcome = "explorable" if rows else "explorable, no packets"
    if capture.get("warning"):
        outcome += f", with warning: {capture['warning']}"
    return outcome


async def _upload(client: httpx.AsyncClient, batch: list[Sample]) -> dict[str, Any]:
    files = [("file", (sample.name, sample.data, "application/octet-stream")) for sample in batch]
    try:
        response = await client.post("/api/captures/", files=files)
    except httpx.TimeoutException as error:
        raise Failure(f"upload: no answer ({type(error).__name__})") from error
    except httpx.TransportError as error:
        raise Failure(f"upload: connection failed ({type(error).__name__}: {error})") from error
    if response.status_code not in (201, 400):
        raise Failure(f"upload: HTTP {response.status_code}: {response.text[:300]!r}")
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("captures"), list):
        raise Failure(f"upload: unexpected answer {response.text[:300]!r}")
    return body


async def _run_batch(client: httpx.AsyncClient, batch: list[Sample], deep_every: int) -> list[Outcome]:
    def outcome(sample: Sample, text: str, detail: str = "") -> Outcome:
        return Outcome(sample.index, sample.mutation, sample.name, text, detail)

    try:
        body = await _upload(client, batch)
    except Failure as failure:
        return [outcome(sample, "FAILED: upload", str(failure)) for sample in batch]
    accepted = {capture["name"]: capture for capture in body["captures"]}
    rejected = {error.get("name", ""): error.get("error", "") for error in body.get("errors", [])}
    outcomes = []
    for sample in batch:
        if sample.name in rejected:
            message = rejected[sample.name]
            if not message.strip() or INTERNALS.search(message):
                outcomes.append(outcome(sample, "FAILED: unclear rejection", message))
            else:
                flag = SERVER_FILE_FLAG if SERVER_FILE.search(message) else ""
                outcomes.append(outcome(sample, f"rejected: {normalized(message)}{flag}"))
        elif sample.name in accepted:
            deep = sample.index % deep_every == 0
            try:
                result = await explore(client, sample, accepted[sample.name], deep)
                outcomes.append(outcome(sample, normalized(result)))
            except Refused as refusal:
                outcomes.append(outcome(sample, f"accepted, then {normalized(str(refusal))}"))
            except Failure as failure:
                step = str(failure).split(":", 1)[0]
                outcomes.append(outcome(sample, f"FAILED: {step}", str(failure)))
        else:
            outcomes.append(outcome(sample, "FAILED: neither stored nor rejected"))
    return outcomes


async def run(
    client: httpx.AsyncClient,
    all_samples: Iterator[Sample],
    *,
    workers: int = 8,
    batch_size: int = 4,
    deep_every: int = 7,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Upload and explore every sample with a few clients at once; return their outcomes."""
    outcomes: list[Outcome] = []
    queue: asyncio.Queue[list[Sample]] = asyncio.Queue(maxsize=workers * 2)

    async def worker() -> None:
        while True:
            batch = await queue.get()
            try:
                if batch:
                    outcomes.extend(await _run_batch(client, batch, deep_every))
                    if progress is not None:
                        progress(len(outcomes))
            finally:
                queue.task_done()
            if not batch:
                return

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    loop = asyncio.get_running_loop()
    batch: list[Sample] = []
    iterator = iter(all_samples)
    while True:
        # Building a sample may run editcap: keep it off the loop the clients run on.
        sample = await loop.run_in_executor(None, next, iterator, None)
        if sample is not None:
            batch.append(sample)
        if batch and (len(batch) == batch_size or sample is None):
            await queue.put(batch)
            batch = []
        if sample is None:
            break
    for _ in tasks:
        await queue.put([])
    await asyncio.gather(*tasks)
    return sorted(outcomes, key=lambda outcome: outcome.index)


def outcome_table(outcomes: list[Outcome]) -> str:
    """Return a markdown table of how many files had each outcome, then each failure."""
    counts = Counter(o.outcome for o in outcomes)
    lines = ["| files | outcome |", "|---:|---|"]
    for text, files in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"| {files} | {text.replace('|', '/')} |")
    by_mutation: dict[str, Counter[str]] = {}
    for o in outcomes:
        kind = "failed" if o.failed else o.outcome.split(":")[0].split(",")[0]
        by_mutation.setdefault(o.mutation, Counter())[kind] += 1
    kinds = ["explorable", "accepted", "rejected", "failed"]
    lines += ["", "| mutation | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for mutation, kind_counts in sorted(by_mutation.items()):
        lines.append(f"| {mutation} | " + " | ".join(str(kind_counts[kind]) for kind in kinds) + " |")
    failures = [outcome for outcome in outcomes if outcome.failed]
    if failures:
        lines += ["", "Failures:"]
        lines += [f"- {o.name}: {o.outcome}: {o.detail}" for o in failures[:50]]
    return "\n".join(lines)


@dataclass
class Report:
    count: int
    seed: int
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    answering: bool = True

    def markdown(self) -> str:
        failures = sum(outcome.failed for outcome in self.outcomes)
        return "\n".join(
            [
                "# Fuzzing uploads and exploration with damaged captures",
                "",
                f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {self.count} files (seed {self.seed}) in "
                f"{self.seconds:.0f} s ({self.count / max(self.seconds, 0.001):.1f} files/s); "
                f"{failures} failures; server answering at the end: {'yes' if self.answering else 'NO'}.",
                "",
                "Every file is uploaded through the API; each accepted one is explored (first page, one",
                "packet's details, and for every seventh a display filter and a statistic).",
                "",
                outcome_table(self.outcomes),
                "",
            ]
        )


async def _fuzz_server(args: argparse.Namespace) -> Report:
    from bench.procs import spawned
    from bench.server import _create_user, _free_port, _migrate, _server_env, _tail, _wait_ready

    with tempfile.TemporaryDirectory(prefix="capture-fuzz-", dir="/tmp") as folder:
        tmp = Path(folder)
        env = {
            **_server_env(tmp),
            "MAX_UPLOAD_MB": "8",
            "ENGINE_REQUEST_TIMEOUT": "60",
            # One user uploads every file within minutes: no rate limits or quotas here.
            "RATE_LIMIT_UPLOADS": "0",
            "RATE_LIMIT_FILTERS": "0",
            "UPLOAD_MAX_CAPTURES_PER_USER": "0",
        }
        await _migrate(REPO, env)
        token = await _create_user(REPO, env)
        port = _free_port()
        log = tmp / "daphne.log"
        with log.open("wb") as log_file:
            command = [str(REPO / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port)]
            async with spawned(
                *command,
                "explorer_site.asgi:application",
                cwd=REPO,
                env=env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            ) as proc:
                headers = {"Authorization": f"Token {token}"}
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=180
                ) as client:
                    await _wait_ready(client, proc)
                    started = time.monotonic()

                    def progress(done: int) -> None:
                        if done % 500 < args.batch:
                            print(f"fuzz: {done} files", file=sys.stderr, flush=True)

                    outcomes = await run(
                        client,
                        samples(args.source_dir, args.count, args.seed),
                        workers=args.workers,
                        batch_size=args.batch,
                        progress=progress,
                    )
                    seconds = time.monotonic() - started
                    try:
                        answering = (
                            await client.get("/api/captures/", params={"q": "fuzz-000000"})
                        ).is_success
                    except httpx.HTTPError:
                        answering = False
                if not answering:
                    print(_tail(log), file=sys.stderr)
    return Report(args.count, args.seed, seconds, outcomes, answering)


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import default_source_dir

    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="how many damaged files (default 20,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=8, help="clients at once (default 8)")
    parser.add_argument("--batch", type=int, default=4, help="files per upload request (default 4)")
    parser.add_argument("--source-dir", type=Path, default=None, help="real captures to damage")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results" / "fuzz.md")
    args = parser.parse_args(argv)
    args.source_dir = (args.source_dir or default_source_dir()).resolve()
    report = asyncio.run(_fuzz_server(args))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(report.markdown())
    print(report.markdown())
    failures = sum(outcome.failed for outcome in report.outcomes)
    return 0 if failures == 0 and report.answering else 1


if __name__ == "__main__":
    sys.exit(main())

"""One tshark fields pass: lines as tshark prints them, stopped early, refused clearly, shared by callers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from explorer.engine import fieldpass
from explorer.engine.errors import EngineError

from .conftest import sample_capture, tshark

pytestmark = pytest.mark.engine

ESPN = sample_capture("http_espn.pcapng")
FAST = sample_capture("retransmit-fast009.pcap")  # two SACK blocks in some ACKs


async def test_it_hands_over_each_frames_fields_as_tshark_prints_them() -> None:
    lines: list[list[str]] = []
    outcome = await fieldpass.run(
        FAST, ["frame.number", "tcp.options.sack_le", "ip.src"], "tcp", lines.append
    )
    expected = tshark(
        "-2",
        "-n",
        "-r",
        str(FAST),
        "-Y",
        "tcp",
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-e",
        "frame.number",
        "-e",
        "tcp.options.sack_le",
        "-e",
        "ip.src",
    ).splitlines()
    assert outcome.rows == len(lines) == len(expected) and outcome.problem is None
    assert [[c.replace(fieldpass.AGGREGATOR, ",") for c in cells] for cells in lines] == [
        line.split("\t") for line in expected
    ]
    several = next(cells for cells in lines if fieldpass.AGGREGATOR in cells[1])
    assert fieldpass.values(several[1]) == several[1].split(fieldpass.AGGREGATOR)
    assert fieldpass.last("a" + fieldpass.AGGREGATOR + "b") == "b" and fieldpass.values("") == []


async def test_a_consumer_that_has_enough_stops_the_pass() -> None:
    seen: list[list[str]] = []

    def consume(cells: list[str]) -> None:
        if len(seen) == 5:
            raise fieldpass.EnoughRows
        seen.append(cells)

    outcome = await fieldpass.run(ESPN, ["frame.number"], "frame", consume)
    assert outcome.stopped and outcome.rows == 5
    assert [cells[0] for cells in seen] == ["1", "2", "3", "4", "5"]


async def test_an_unreadable_line_is_a_clear_error() -> None:
    def consume(cells: list[str]) -> None:
        int(cells[0] + "x")

    with pytest.raises(EngineError, match="cannot read"):
        await fieldpass.run(ESPN, ["frame.number"], "frame", consume)


async def test_a_missing_capture_is_refused_without_naming_its_path(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as raised:
        await fieldpass.run(tmp_path / "gone.pcap", ["frame.number"], "frame", lambda cells: None)
    assert str(tmp_path) not in raised.value.message


async def test_callers_of_one_computation_share_its_result_and_its_error() -> None:
    runs = 0

    async def compute() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.1)
        return 42

    assert await asyncio.gather(*(fieldpass.shared("answer", compute) for _ in range(5))) == [42] * 5
    assert runs == 1

    async def fail() -> int:
        await asyncio.sleep(0.1)
        raise EngineError("no")

    results = await asyncio.gather(
        *(fieldpass.shared("failure", fail) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, EngineError) for r in results)


async def test_a_computation_goes_on_for_the_others_when_its_first_caller_gives_up() -> None:
    started = asyncio.Event()

    async def compute() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "done"

    first = asyncio.create_task(fieldpass.shared("patient", compute))
    await started.wait()
    second = asyncio.create_task(fieldpass.shared("patient", compute))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first

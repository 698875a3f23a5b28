"""sharkd sessions: shared, restarted when they die, and not blocking fast work behind slow work."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from explorer.engine import packets, sharkd
from explorer.engine.errors import EngineCrashed, EngineError
from explorer.engine.sessions import CaptureSessions, engine
from explorer.engine.sharkd import SharkdProcess

from .conftest import sample_capture, tshark_numbers

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
async def closed_engine() -> AsyncIterator[None]:
    yield
    await engine().close()


def sharkd_pids(sessions: CaptureSessions) -> list[int]:
    return [p.pid for p in sessions.processes if p.alive and p.pid is not None]


async def test_viewers_of_a_capture_share_one_session() -> None:
    path = sample_capture("http_espn.pcapng")
    await asyncio.gather(*(packets.packets(path, "", offset, 50) for offset in range(0, 900, 50)))
    assert len(sharkd_pids(engine().sessions(path))) == 1


async def test_a_killed_session_is_restarted_transparently() -> None:
    path = sample_capture("http_google.pcapng")
    first = await packets.packets(path, "http", 0, 10)
    sessions = engine().sessions(path)
    [pid] = sharkd_pids(sessions)
    os.killpg(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    again = await packets.packets(path, "http", 0, 10)
    assert again.packets == first.packets
    detail = await packets.detail(path, 4)
    assert detail.tree[0].label.startswith("Frame 4:")
    assert sharkd_pids(sessions) and sharkd_pids(sessions) != [pid]


async def test_an_engine_that_keeps_dying_gives_a_clear_error(settings, tmp_path: Path) -> None:
    fake = tmp_path / "sharkd"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    settings.WIRESHARK_BIN_DIR = str(tmp_path)
    with pytest.raises(EngineCrashed, match="stopped unexpectedly"):
        await packets.detail(sample_capture("http_google.pcapng"), 1)


async def test_a_missing_file_is_reported_by_the_engine(tmp_path: Path) -> None:
    with pytest.raises(EngineError):
        await packets.packets(tmp_path / "gone.pcap")


async def test_a_truncated_file_loads_what_is_readable() -> None:
    page = await packets.packets(sample_capture("truncated_dns_2.pcap"))
    assert page.total == 1 and page.packets[0].protocol == "DNS"


@pytest.fixture(scope="module")
def large_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A capture large enough that a new filter takes a noticeable time (about 100k packets)."""
    path = tmp_path_factory.mktemp("large") / "large.pcap"
    source = sample_capture("synscan.pcapng")
    subprocess.run(["mergecap", "-F", "pcap", "-a", "-w", str(path)] + [str(source)] * 50, check=True)
    return path


async def two_loaded_sessions(path: Path) -> CaptureSessions:
    """Open the capture as two viewers do: a session and its standby, both loaded."""
    sessions = engine().sessions(path)
    sessions.viewer_joined()
    sessions.viewer_joined()
    await sessions.wait_loaded()
    while sum(p.loaded.is_set() and p.alive for p in sessions.processes) < 2:
        await asyncio.sleep(0.05)
    return sessions


@pytest.mark.slow
async def test_fast_work_is_not_held_behind_a_new_filter_when_several_watch(large_capture: Path) -> None:
    await two_loaded_sessions(large_capture)

    started = time.monotonic()
    new_filter = asyncio.create_task(packets.packets(large_capture, "tcp.flags.reset == 1 && frame.len > 10"))
    await asyncio.sleep(0.05)
    detail = await packets.detail(large_capture, 70_000)
    page = await packets.packets(large_capture, "", 90_000, 100)
    fast_done = time.monotonic() - started
    filtered = await new_filter
    filter_done = time.monotonic() - started

    assert detail.tree[0].label.startswith("Frame 70000:")
    assert page.packets[0].number == 90_001
    assert fast_done < filter_done / 2, (fast_done, filter_done)
    expected = tshark_numbers(large_capture, "tcp.flags.reset == 1 && frame.len > 10")
    assert filtered.displayed == len(expected)


@pytest.mark.slow
async def test_a_filter_goes_back_to_the_session_that_ran_it(large_capture: Path) -> None:
    sessions = await two_loaded_sessions(large_capture)
    display_filter = "tcp.flags.reset == 1 && frame.len > 20"
    first = await packets.packets(large_capture, display_filter, 0, 100)
    [ran] = [p for p in sessions.processes if display_filter in p.filters_done]
    [other] = [p for p in sessions.processes if p is not ran]
    # The session that ran the filter is answering another viewer's page (fast work) when the
    # next page of the filter is asked for: it waits for that session rather than making the
    # idle one re-dissect the whole capture, which would hold everyone's fast work behind it.
    ran.pending += 1
    try:
        second = await packets.packets(large_capture, display_filter, 100, 100)
    finally:
        ran.pending -= 1
    assert display_filter not in other.filters_done
    assert second.displayed == first.displayed
    assert second.packets[0].number > first.packets[-1].number


@pytest.mark.slow
async def test_a_new_filter_goes_to_the_session_with_fewer_filters(large_capture: Path) -> None:
    sessions = await two_loaded_sessions(large_capture)
    await packets.packets(large_capture, "tcp.flags.reset == 1 && frame.len > 25", 0, 100)
    [ran] = [p for p in sessions.processes if p.filters_done]
    [other] = [p for p in sessions.processes if p is not ran]
    # The session holding the team's filter stays free for pages through it, even when the
    # other one is answering someone's page at that moment.
    other.pending += 1
    try:
        await packets.packets(large_capture, "tcp.flags.syn == 1 && frame.len > 25", 0, 100)
    finally:
        other.pending -= 1
    assert other.filters_done == {"tcp.flags.syn == 1 && frame.len > 25"}
    assert ran.filters_done == {"tcp.flags.reset == 1 && frame.len > 25"}


async def a_session_and_its_standby_loading(path: Path) -> tuple[SharkdProcess, SharkdProcess]:
    """Open the capture as one viewer, wait until it is loaded, then as a second one."""
    sessions = engine().sessions(path)
    sessions.viewer_joined()
    await sessions.wait_loaded()
    [first] = sessions.processes
    sessions.viewer_joined()
    [standby] = [p for p in sessions.processes if p is not first]
    return first, standby


@pytest.mark.slow
async def test_a_new_filter_waits_for_the_standby_rather_than_hold_up_the_only_loaded_session(
    large_capture: Path,
) -> None:
    # A second viewer: the standby starts loading; meanwhile one viewer runs a new filter.
    first, standby = await a_session_and_its_standby_loading(large_capture)
    assert not standby.loaded.is_set()
    display_filter = "tcp.flags.reset == 1 && frame.len > 30"
    new_filter = asyncio.create_task(packets.packets(large_capture, display_filter, 0, 100))
    page = await packets.packets(large_capture, "", 90_000, 100)
    assert page.packets[0].number == 90_001
    # No whole pass on the loaded session until the standby can answer the others.
    watched_loading = False
    while not new_filter.done():
        if not standby.loaded.is_set():
            watched_loading = True
            assert first.slow_pending == 0 and not first.filters_done
        await asyncio.sleep(0.005)
    filtered = await new_filter
    assert watched_loading
    assert filtered.displayed == len(tshark_numbers(large_capture, display_filter))


async def standby_niceness_while_loading(path: Path) -> tuple[int, int, SharkdProcess]:
    """Open the capture as two viewers; return the niceness of both sessions while the standby loads."""
    first, standby = await a_session_and_its_standby_loading(path)
    while standby.pid is None:
        await asyncio.sleep(0.001)
    loading = os.getpriority(os.PRIO_PROCESS, standby.pid)
    assert not standby.loaded.is_set(), "the standby loaded before its priority was read"
    assert first.pid is not None
    return os.getpriority(os.PRIO_PROCESS, first.pid), loading, standby


@pytest.mark.slow
async def test_a_standby_loads_at_a_lower_priority_then_serves_at_the_servers(large_capture: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    serving, loading, standby = await standby_niceness_while_loading(large_capture)
    assert (serving, loading) == (own, own + sharkd.BACKGROUND_NICENESS)
    await standby.loaded.wait()
    assert standby.alive and standby.pid is not None
    assert os.getpriority(os.PRIO_PROCESS, standby.pid) == own


@pytest.mark.slow
async def test_without_the_right_to_raise_it_a_standby_keeps_the_lower_priority(
    large_capture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []
    allowed = os.setpriority

    def set_priority(which: int, pid: int, niceness: int) -> None:
        if niceness < os.getpriority(which, pid):
            refused.append(pid)
            raise PermissionError(1, "Operation not permitted")
        allowed(which, pid, niceness)

    monkeypatch.setattr(sharkd.os, "setpriority", set_priority, raising=True)
    monkeypatch.setattr(sharkd, "_may_raise_priority", True)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    _, loading, standby = await standby_niceness_while_loading(large_capture)
    await standby.loaded.wait()
    assert standby.alive and standby.pid is not None
    assert os.getpriority(os.PRIO_PROCESS, standby.pid) == loading == own + sharkd.BACKGROUND_NICENESS
    assert refused == [standby.pid]
    assert await packets.detail(large_capture, 5)


async def test_viewers_asking_at_once_for_a_new_filter_count_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    path = sample_capture("http_google.pcapng")
    sessions = engine().sessions(path)
    asked: list[str] = []
    call = sessions.call

    async def counted_call(method: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(method)
        return await call(method, *args, **kwargs)

    monkeypatch.setattr(sessions, "call", counted_call)
    counts = await asyncio.gather(*(packets.count(path, "http") for _ in range(20)))
    assert counts == [len(tshark_numbers(path, "http"))] * 20
    assert asked.count("intervals") == 1


async def test_idle_sessions_are_evicted() -> None:
    path = sample_capture("tcp_handshake.pcapng")
    await packets.packets(path)
    sessions = engine().sessions(path)
    [pid] = sharkd_pids(sessions)
    await sessions.evict_idle(keep_seconds=0, extra_seconds=0)
    assert sessions.processes == []
    await asyncio.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_capture_waiting_for_room_is_not_forgotten_by_the_evictor(settings: Any) -> None:
    settings.ENGINE_MAX_PROCESSES = 1
    busy_path, waiting_path = sample_capture("http_google.pcapng"), sample_capture("tcp_handshake.pcapng")
    await packets.packets(busy_path)
    [busy] = engine().sessions(busy_path).processes
    busy.pending += 1  # answering someone: not to be closed to make room
    try:
        waiting = asyncio.create_task(packets.packets(waiting_path))
        await asyncio.sleep(0.3)
        assert not engine().sessions(waiting_path).processes
        # The evictor passes while the request waits for room, its capture holding no session.
        await engine().evict_idle()
        assert engine().sessions(waiting_path).waiting == 1
    finally:
        busy.pending -= 1
    async with engine().sessions(busy_path).changed:
        engine().sessions(busy_path).changed.notify_all()
    page = await waiting
    assert [row.number for row in page.packets] == [int(n) for n in tshark_numbers(waiting_path, "")]
    # The session it started is one the engine knows: counted against the limit, and closed
    # when idle.
    started = engine().sessions(waiting_path).processes
    assert len(started) == 1 and started[0].alive
    assert sum(len(s.processes) for p, s in engine().captures.items() if p is not None) == 1


async def test_sessions_kept_across_their_eviction_still_count_against_the_limit(settings: Any) -> None:
    settings.ENGINE_MAX_PROCESSES = 1
    path = sample_capture("tcp_handshake.pcapng")
    kept = engine().sessions(path)  # as a websocket keeps it
    await engine().evict_idle()  # no session yet: the capture is forgotten
    other = engine().sessions(path)
    assert other is not kept
    await other.call("status")
    await kept.call("status")
    # With room for one session, the kept object's start closed the other's idle one.
    await asyncio.sleep(0.3)
    alive = [p for s in (*engine().captures.values(), *engine().detached) for p in s.processes if p.alive]
    assert len([p for p in alive if p.capture_path is not None]) == 1
    assert kept in engine().detached
    await kept.evict_idle(keep_seconds=0, extra_seconds=0)
    await engine().evict_idle()
    assert kept not in engine().detached

"""Child-process helpers: own process groups, guaranteed cleanup, /proc memory readings.

Every long-lived child is started in its own session so that a whole tree (daphne and the
sharkd sessions it forks) can be signalled without touching the benchmark's own group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

PROC = Path("/proc")
# StreamReader line limit: sharkd answers `frame` with the whole tree and bytes on one line.
LINE_LIMIT = 256 * 1024 * 1024


def _parent_map() -> dict[int, list[int]]:
    """Map each pid to its direct children, from /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process exited while we were walking
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of pid (children, grandchildren, ...)."""
    tree = _parent_map()
    found: list[int] = []
    stack = list(tree.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(tree.get(child, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of pid in KiB; (0, 0) when it is gone."""
    values = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in values:
                values[parts[0]] = int(parts[1])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values["VmRSS:"], values["VmHWM:"]


def tree_rss_kib(pid: int, only: str | None = None) -> int:
    """Resident memory of pid plus all of its descendants in KiB; with only, of those so named."""
    tree = [pid, *descendants(pid)]
    if only is not None:
        tree = [p for p in tree if command_name(p) == only]
    return sum(memory_kib(p)[0] for p in tree)


def command_name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _signal_groups(pids: list[int], sig: signal.Signals) -> None:
    """Signal the process group of every pid, never our own group."""
    own = os.getpgrp()
    groups: set[int] = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            groups.add(os.getpgid(pid))
    for group in groups - {own}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def _alive(pid: int) -> bool:
    try:
        state = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"  # zombies are dead, just not reaped


async def terminate_tree(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """SIGTERM the process tree, then SIGKILL whatever survived the grace period."""
    if proc.returncode is not None:
        return
    # Collect descendants first: sharkd children live in their own sessions and would
    # be orphaned (not signalled) if we only killed daphne's group.
    pids = [proc.pid, *descendants(proc.pid)]
    _signal_groups(pids, signal.SIGTERM)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    survivors = [p for p in pids if _alive(p)]
    if survivors:
        _signal_groups(survivors, signal.SIGKILL)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)


# Roots of the trees started by spawned() and not yet cleaned up; kill_all_sync() is the
# last resort when the event loop itself is torn down (e.g. a second Ctrl-C).
_live_roots: set[int] = set()


@contextlib.asynccontextmanager
async def spawned(*cmd: str, **kwargs: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start cmd in a new session and kill its whole tree on exit, errors and Ctrl-C."""
    proc = await asyncio.create_subprocess_exec(*cmd, start_new_session=True, limit=LINE_LIMIT, **kwargs)
    _live_roots.add(proc.pid)
    try:
        yield proc
    finally:
        await terminate_tree(proc)
        _live_roots.discard(proc.pid)


def kill_all_sync() -> None:
    """SIGKILL every tree spawned() started that is still registered."""
    for root in list(_live_roots):
        _signal_groups([root, *descendants(root)], signal.SIGKILL)
        _live_roots.discard(root)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_kind(own_pid: int) -> dict[str, float]:
    """CPU time (user + system) of every live process on the machine, summed by what it is.

    Kinds: the daphne servers, the engine service, workers, sharkd, tshark, PostgreSQL, Redis,
    this benchmark's own client ("load client"), and everything else ("other").
    """
    totals: dict[str, float] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process exited while we were walking
        fields = stat[stat.rfind(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        kind = _kind_of(int(entry.name), stat[stat.find("(") + 1 : stat.rfind(")")], command, own_pid)
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


def _kind_of(pid: int, name: str, command: str, own_pid: int) -> str:
    if pid == own_pid:
        return "load client"
    if name in ("sharkd", "tshark", "redis-server"):
        return {"redis-server": "Redis"}.get(name, name)
    if name == "postgres":
        return "PostgreSQL"
    for marker, kind in (("daphne", "daphne"), ("run_engine", "engine service"), ("run_worker", "worker")):
        if marker in command:
            return kind
    return "other"

"""Recording from the server's interfaces with dumpcap: interfaces, capture filters, the recorder."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from .commands import _binary

# `dumpcap -D` lines: "3. lo (Loopback)"
INTERFACE_LINE = re.compile(r"(\d+)\. (\S+)(?: \((.*)\))?")
# Interfaces that are not network traffic (or that block forever without a peer).
NOT_NETWORK = {"nflog", "nfqueue", "dbus-system", "dbus-session", "bluetooth-monitor", "randpkt"}
MAX_FILTER_LENGTH = 1000
# What dumpcap prints when it ends, even with -q.
CAPTURED = re.compile(r"Packets captured: (\d+)")
CHECK_SECONDS = 20


class CaptureRefused(Exception):
    """dumpcap cannot record with these settings; the message says why, in dumpcap's words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Interface:
    name: str
    description: str


@dataclass(frozen=True)
class Limits:
    """When dumpcap stops on its own; None for no limit."""

    seconds: int | None = None
    packets: int | None = None
    kilobytes: int | None = None


async def _run(command: list[str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CHECK_SECONDS)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise CaptureRefused("dumpcap did not answer in time") from None
    return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def list_command() -> list[str]:
    return [_binary("dumpcap"), "-D"]


def check_command(interface: str, capture_filter: str) -> list[str]:
    """Return the command that compiles a capture filter for an interface (and checks both)."""
    return [_binary("dumpcap"), "-i", interface, "-f", capture_filter, "-d"]


def record_command(interface: str, capture_filter: str, limits: Limits) -> list[str]:
    """Return the command that records pcapng to its standard output until a limit or SIGINT."""
    command = [_binary("dumpcap"), "-q", "-i", interface]
    if capture_filter:
        command += ["-f", capture_filter]
    if limits.seconds:
        command += ["-a", f"duration:{limits.seconds}"]
    if limits.packets:
        command += ["-c", str(limits.packets)]
    if limits.kilobytes:
        command += ["-a", f"filesize:{limits.kilobytes}"]
    return [*command, "-w", "-"]


async def interfaces() -> list[Interface]:
    """Return the interfaces dumpcap can record from, as `dumpcap -D` lists them."""
    code, out, err = await _run(list_command())
    if code != 0:
        raise CaptureRefused(_last_words(err) or "dumpcap cannot list the interfaces")
    found = []
    for line in out.splitlines():
        match = INTERFACE_LINE.fullmatch(line.strip())
        if match and match[2] not in NOT_NETWORK:
            found.append(Interface(match[2], match[3] or ""))
    return found


def _last_words(stderr: str) -> str:
    """Return dumpcap's error without its chatter (the root warning, the guide's advice)."""
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip()
        and not line.strip().startswith(
            ("Running as user", "See the User's Guide", "Capturing on", "File:", "Packets captured:")
        )
    ]
    return " ".join(lines)[:400]


async def check(interface: str, capture_filter: str) -> None:
    """Raise CaptureRefused unless the interface is listed and the filter compiles for it."""
    if interface not in {known.name for known in await interfaces()}:
        raise CaptureRefused(f"no interface named {interface!r} on this server")
    if len(capture_filter) > MAX_FILTER_LENGTH:
        raise CaptureRefused(f"capture filter longer than {MAX_FILTER_LENGTH} characters")
    if "\x00" in capture_filter or "\n" in capture_filter:
        raise CaptureRefused("capture filter holds a control character")
    if not capture_filter:
        return
    code, out, err = await _run(check_command(interface, capture_filter))
    # dumpcap 4.0 exits with 0 even when the filter does not compile: only the printed
    # program (empty then) and its message tell.
    if code != 0 or not out.strip() or "Invalid capture filter" in err:
        raise CaptureRefused(f"capture filter {capture_filter!r}: {_last_words(err) or 'not valid'}")


async def start(interface: str, capture_filter: str, limits: Limits) -> asyncio.subprocess.Process:
    """Start dumpcap in its own process group, pcapng on its standard output."""
    return await asyncio.create_subprocess_exec(
        *record_command(interface, capture_filter, limits),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


def stop(process: asyncio.subprocess.Process) -> None:
    """Ask dumpcap to finish: it writes what it holds and closes its output."""
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass


@dataclass(frozen=True)
class Ending:
    failure: str  # empty when dumpcap ended well (a limit, or asked to stop)
    captured: int | None  # packets dumpcap says it wrote


async def ending(process: asyncio.subprocess.Process) -> Ending:
    """Wait for dumpcap to exit; return why it ended and how many packets it says it wrote."""
    assert process.stderr is not None
    err = (await process.stderr.read()).decode(errors="replace")
    code = await process.wait()
    captured = CAPTURED.findall(err)
    failure = "" if code == 0 or code == -signal.SIGINT else _last_words(err) or f"dumpcap exited with {code}"
    return Ending(failure, int(captured[-1]) if captured else None)


def concatenate_command(paths: list[Path], destination: Path) -> list[str]:
    """Return the command that writes the packets of several files, one file after another, to one."""
    return [_binary("mergecap"), "-a", "-w", str(destination), "--", *map(str, paths)]


async def concatenate(paths: list[Path], destination: Path) -> None:
    """Join capture files end to end into destination; raise CaptureRefused if mergecap fails."""
    process = await asyncio.create_subprocess_exec(
        *concatenate_command(paths, destination),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        destination.unlink(missing_ok=True)
        raise CaptureRefused(_last_words(err.decode(errors="replace")) or "mergecap failed")

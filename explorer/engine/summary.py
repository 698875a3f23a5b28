"""What a capture holds, for the search box: its protocols, addresses and DNS names.

One tshark pass prints three statistics and the names DNS answers gave: the protocol
hierarchy (`io,phs`), every IPv4 and IPv6 address with its packet count, busiest first
(`ip_hosts,tree`, `ipv6_hosts,tree`), and `hosts`, one "address<TAB>name" line per name
resolved from the capture's own DNS packets. Only distinct words are kept, so the result
stays small however many packets the capture has.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from . import commands
from .errors import EngineError
from .stats import PHS_TITLE, parse_protocol_hierarchy

# Distinct words kept of each kind; addresses are kept busiest first, so a capture with more
# (a scan of a whole network) keeps the ones that carried most packets.
MAX_ADDRESSES = 5000
MAX_NAMES = 5000
# A summary of a very large capture may take minutes; one that takes longer is given up.
TIMEOUT_SECONDS = 3600

HOSTS_TITLE = "# TShark hosts output"
ADDRESS_TITLES = ("IPv4 Statistics/All Addresses:", "IPv6 Statistics/All Addresses:")
NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


@dataclass
class Summary:
    protocols: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        """Return the addresses, then the names, as searched for by the host words."""
        return self.addresses + self.names


def address(text: str) -> str | None:
    """Return text as an IP address in its canonical form (IPv6 compressed), or None."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def host_name(text: str) -> str | None:
    """Return a DNS name in lowercase without its final dot, or None for anything else."""
    name = text.lower().removesuffix(".")
    return name if NAME.fullmatch(name) else None


def _add(words: list[str], seen: set[str], word: str | None, limit: int) -> None:
    if word is not None and word not in seen and len(words) < limit:
        seen.add(word)
        words.append(word)


def parse(output: str) -> Summary:
    """Parse the output of commands.tshark_summary()."""
    summary = Summary()
    protocols: set[str] = set()
    addresses: dict[str, list[str]] = {title: [] for title in ADDRESS_TITLES}
    seen_addresses: set[str] = set()
    seen_names: set[str] = set()
    phs: list[str] = []
    section = ""
    for line in output.splitlines():
        title = line.strip()
        if title in (PHS_TITLE, HOSTS_TITLE, *ADDRESS_TITLES):
            section = title
        elif line.startswith("==="):
            section = ""
        elif section == PHS_TITLE:
            phs.append(line)
        elif section in ADDRESS_TITLES and line.startswith(" "):
            # " 10.0.0.1   12   ...": the rows are indented under "All Addresses".
            _add(addresses[section], seen_addresses, address(line.split()[0]), MAX_ADDRESSES)
        elif section == HOSTS_TITLE and "\t" in line and not line.startswith("#"):
            where, name = line.split("\t", 1)
            if address(where.strip()) is not None:
                _add(summary.names, seen_names, host_name(name.strip()), MAX_NAMES)
    for _depth, protocol, _frames, _bytes in parse_protocol_hierarchy("\n".join(phs)):
        _add(summary.protocols, protocols, protocol.lower(), MAX_NAMES)
    for found in addresses.values():
        summary.addresses += found
    return summary


async def summarize(path: Path) -> Summary:
    """Return the protocols, addresses and DNS names of a capture; raise EngineError."""
    command = commands.tshark_summary(path)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            stdout, stderr = await process.communicate()
    except BaseException:
        # Given up (timeout, or the server is stopping): tshark must not run on alone.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise
    output = stdout.decode(errors="replace")
    # tshark also exits non-zero for a capture cut short, after printing what it read.
    if PHS_TITLE not in output:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if "as user" not in line]
        raise EngineError(lines[-1] if lines else f"tshark exited with status {process.returncode}")
    return parse(output)

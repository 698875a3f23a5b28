"""Every command line the explorer runs: the only place that names an engine binary."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from .keylog import keylog_for

# capinfos fields we display; hashes are left out because the upload computes sha256
# itself while streaming, and hashing again would read a large file twice more.
CAPINFOS_FLAGS = ["-t", "-E", "-c", "-s", "-d", "-u", "-a", "-e", "-S", "-y", "-i", "-z", "-x"]
CAPINFOS_FLAGS += ["-F", "-k", "-I", "-o", "-l"]


def _binary(name: str) -> str:
    return str(Path(settings.WIRESHARK_BIN_DIR) / name) if settings.WIRESHARK_BIN_DIR else name


def sharkd() -> list[str]:
    """Return the command for one sharkd session on stdin/stdout, within ENGINE_MEMORY_MB.

    prlimit sets the address-space limit and then becomes sharkd (same pid): no Python code
    runs in the forked server process, as a preexec_fn would beside the server's threads.
    sharkd reserves about 350 MB of address space before it reads anything; with a capture
    of a million packets loaded and filtered it peaks at about 1.7 GB.
    """
    command = [_binary("sharkd"), "-"]
    if settings.ENGINE_MEMORY_MB > 0:
        return ["prlimit", f"--as={settings.ENGINE_MEMORY_MB * 1024 * 1024}", "--", *command]
    return command


def capinfos(path: Path) -> list[str]:
    """Return the command that reads a capture file's properties."""
    return [_binary("capinfos"), "-M", *CAPINFOS_FLAGS, "--", str(path)]


# The columns of the first rows shown while the engine loads, in Wireshark's order.
PREVIEW_FIELDS = [
    "_ws.col.No.",
    "_ws.col.Time",
    "_ws.col.Source",
    "_ws.col.Destination",
    "_ws.col.Protocol",
    "_ws.col.Length",
    "_ws.col.Info",
    "frame.coloring_rule.name",
]


def tls_options(path: Path) -> list[str]:
    """Return the tshark options that decrypt TLS with the capture's attached key log."""
    keylog = keylog_for(path)
    return ["-o", f"tls.keylog_file:{keylog}"] if keylog else []


def _packet_list_columns() -> list[str]:
    """tshark options that print the packet list's columns and coloring rule, a line per packet."""
    fields = ["--color", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"]
    for field in PREVIEW_FIELDS:
        fields += ["-e", field]
    return fields


def tshark_preview(path: Path, count: int) -> list[str]:
    """Return the command that prints the first packets' columns while sharkd loads."""
    return [_binary("tshark"), *tls_options(path), "-r", str(path), "-c", str(count), *_packet_list_columns()]


def tshark_live_decoder(display_filter: str = "") -> list[str]:
    """Return the command that prints the columns of every packet read on stdin as it arrives."""
    selection = ["-Y", display_filter] if display_filter else []
    return [_binary("tshark"), "-l", "-r", "-", *selection, *_packet_list_columns()]


def editcap_pcapng(path: Path, destination: Path) -> list[str]:
    """Return the command that rewrites a capture of any format readable by Wireshark as pcapng."""
    return [_binary("editcap"), "-F", "pcapng", "--", str(path), str(destination)]


def tshark_protocol_hierarchy(path: Path, display_filter: str = "") -> list[str]:
    """Return the command that prints the protocol hierarchy of the frames matching a filter."""
    statistic = f"io,phs,{display_filter}" if display_filter else "io,phs"
    return [_binary("tshark"), "-2", "-n", *tls_options(path), "-q", "-r", str(path), "-z", statistic]


def tshark_summary(path: Path) -> list[str]:
    """Return the command that lists a capture's protocols, addresses and DNS names in one pass.

    It runs at the lowest CPU priority, which on Linux also gives it the lowest best-effort
    disk priority: people looking at captures come first. Names are taken only from the
    capture's own DNS answers (-n, then -N d); nothing is looked up outside it.
    """
    return [
        "nice",
        "-n",
        "19",
        _binary("tshark"),
        "-n",
        "-N",
        "d",
        *tls_options(path),
        "-q",
        "-r",
        str(path),
        "-z",
        "io,phs",
        "-z",
        "ip_hosts,tree",
        "-z",
        "ipv6_hosts,tree",
        "-z",
        "hosts",
    ]


# Joins the occurrences of a field that a frame holds several times (SACK blocks, tunnelled
# headers): a control character, which no value tshark prints for a field holds.
FIELD_AGGREGATOR = "\x1f"


def _within_memory_limit(command: list[str]) -> list[str]:
    """Return the command under ENGINE_MEMORY_MB of address space, as sharkd runs."""
    if settings.ENGINE_MEMORY_MB > 0:
        return ["prlimit", f"--as={settings.ENGINE_MEMORY_MB * 1024 * 1024}", "--", *command]
    return command


def tshark_fields(
    path: Path,
    fields: list[str],
    display_filter: str,
    preferences: list[str] | None = None,
    statistics: list[str] | None = None,
) -> list[str]:
    """Return the command that prints fields of every frame a display filter shows, in two passes.

    One line per frame, the fields separated by tabs and each field's occurrences by
    FIELD_AGGREGATOR; `preferences` are "name:value" settings such as "rtp.heuristic_rtp:TRUE",
    and `statistics` are -z statistics (of every frame) printed after the frames' lines.
    """
    options: list[str] = []
    for preference in preferences or []:
        options += ["-o", preference]
    for statistic in statistics or []:
        options += ["-z", statistic]
    command = [_binary("tshark"), "-2", "-n", *tls_options(path), *options, "-r", str(path)]
    command += ["-Y", display_filter, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"]
    command += ["-E", f"aggregator={FIELD_AGGREGATOR}", "-E", "quote=n"]
    for field in fields:
        command += ["-e", field]
    return _within_memory_limit(command)

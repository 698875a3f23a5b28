"""Expert information, as Wireshark's Analyze → Expert Information lists it, from sharkd's `expert` tap.

sharkd 4.0's taps take no display filter, so a filtered list keeps the items of the frames
that sharkd displays for the filter (chosen with the whole capture as context, as tshark -2
chooses the frames its `-z expert,FILTER` tap sees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .sessions import engine
from .stats import _checked, _recall, _remember, matching_frames

# Wireshark's severities, most severe first, and the names its display filters use for them.
SEVERITIES = ["Error", "Warning", "Note", "Chat", "Comment"]
SEVERITY_FILTER_NAMES = {severity: severity.lower() for severity in SEVERITIES}


@dataclass
class ExpertItem:
    frame: int
    severity: str
    group: str
    protocol: str
    message: str


@dataclass
class ExpertGroup:
    """The items of one severity, group, protocol and message, as a row of tshark's -z expert."""

    severity: str
    group: str
    protocol: str
    message: str
    count: int
    frames: list[int] = field(default_factory=list)

    @property
    def filter(self) -> str:
        return message_filter(self.message)


def quoted(text: str) -> str:
    """Return text as a display filter string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def message_filter(message: str) -> str:
    return f"_ws.expert.message == {quoted(message)}"


def severity_filter(severity: str) -> str:
    return f"_ws.expert.severity == {SEVERITY_FILTER_NAMES.get(severity, severity.lower())}"


def _severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


async def _all_items(path: Path) -> list[ExpertItem]:
    key = (path, "expert", None)
    if (known := _recall(key)) is not None:
        return list(known)
    result = await engine().sessions(path).call("tap", {"tap0": "expert"})
    taps = result.get("taps", [])
    details = taps[0].get("details", []) if taps else []
    # sharkd lists the last frame's items first; put them back in capture order.
    items = [
        ExpertItem(
            frame=int(raw.get("f", 0)),
            severity=str(raw.get("s", "")),
            group=str(raw.get("g", "")),
            protocol=str(raw.get("p", "")),
            message=str(raw.get("m", "")),
        )
        for raw in reversed(details)
    ]
    items.sort(key=lambda item: item.frame)
    return list(_remember(key, items))


async def expert_items(path: Path, filter_text: str = "") -> list[ExpertItem]:
    """Return the expert items of the frames matching the display filter (all without one), in frame order."""
    expression = await _checked(path, filter_text)
    items = await _all_items(path)
    if expression is None:
        return items
    key = (path, "expert", expression)
    if (known := _recall(key)) is not None:
        return list(known)
    wanted = set(await matching_frames(path, expression))
    return list(_remember(key, [item for item in items if item.frame in wanted]))


def summarize(items: list[ExpertItem]) -> list[ExpertGroup]:
    """Count items per severity, group, protocol and message: most severe first, then as first seen."""
    groups: dict[tuple[str, str, str, str], ExpertGroup] = {}
    for item in items:
        key = (item.severity, item.group, item.protocol, item.message)
        group = groups.get(key)
        if group is None:
            group = groups[key] = ExpertGroup(item.severity, item.group, item.protocol, item.message, 0)
        group.count += 1
        group.frames.append(item.frame)
    return sorted(groups.values(), key=lambda group: _severity_rank(group.severity))

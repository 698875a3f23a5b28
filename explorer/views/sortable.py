"""Tables sorted on the server: `?sort=KEY` or `?sort=-KEY`, and header cells linking to the other order.

Every sortable table of the pages (the capture list, the statistics, expert information) is
sorted here and renders its header with `explorer/sortable_columns.html`, so that they all
read `?sort=` the same way and mark the sorted column the same way (aria-sort, ▲ ▼).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

Record = TypeVar("Record")


@dataclass(frozen=True)
class SortColumn:
    """A column of a table: `key` names the records' field and is the `?sort=` value."""

    key: str
    label: str
    numeric: bool = False  # right-aligned, and its digits compare as numbers
    largest_first: bool = False  # the first click sorts descending (counts and sizes)
    sortable: bool = True


@dataclass
class HeaderCell:
    key: str
    label: str
    numeric: bool
    href: str  # the table sorted by this column ("" for a column that does not sort)
    direction: str  # aria-sort: "ascending", "descending" or ""


def chosen_sort(sort: str, columns: Iterable[SortColumn], default: str = "") -> str:
    """Return `?sort=` if it names one of the columns that sort, else the default."""
    keys = {column.key for column in columns if column.sortable}
    return sort if sort.removeprefix("-") in keys else default


def sort_value(value: Any) -> tuple[int, Any, str]:
    """Order ports and counts as numbers, addresses and names as text, numbers first."""
    if isinstance(value, str) and value.isdigit():
        return (0, int(value), "")
    if isinstance(value, (int, float, Decimal)):
        return (0, value, "")
    return (1, 0, str(value))


def sorted_records(records: Sequence[Record], sort: str, columns: Iterable[SortColumn]) -> list[Record]:
    """Return the records in the order `?sort=` asks (as given if it names no column).

    Empty cells (a request without a response yet) stay last whichever way a column is sorted.
    """
    field = chosen_sort(sort, columns).removeprefix("-")
    if not field:
        return list(records)
    present = [r for r in records if getattr(r, field) not in (None, "")]
    empty = [r for r in records if getattr(r, field) in (None, "")]
    present.sort(key=lambda r: sort_value(getattr(r, field)), reverse=sort.startswith("-"))
    return present + empty


def header(columns: Iterable[SortColumn], sort: str, url_of: Callable[[str], str]) -> list[HeaderCell]:
    """Return the header cells: each links (through url_of a `?sort=` value) to its column sorted.

    The sorted column's link reverses it; another column's sorts it ascending, or descending
    when it is one whose largest values matter first.
    """
    cells = []
    for column in columns:
        if not column.sortable:
            cells.append(HeaderCell(column.key, column.label, column.numeric, "", ""))
            continue
        direction, next_sort = "", f"-{column.key}" if column.largest_first else column.key
        if sort.removeprefix("-") == column.key:
            direction = "descending" if sort.startswith("-") else "ascending"
            next_sort = column.key if sort.startswith("-") else f"-{column.key}"
        cells.append(HeaderCell(column.key, column.label, column.numeric, url_of(next_sort), direction))
    return cells


@dataclass
class Cell:
    """A body cell: its text, right-aligned when numeric, a link when it has a URL."""

    text: str
    numeric: bool
    url: str = ""

"""Tables sorted on the server read ?sort= alike and link each header to the other order."""

from __future__ import annotations

from dataclasses import dataclass

from explorer.views.sortable import SortColumn, chosen_sort, header, sorted_records


@dataclass
class Request:
    frame: int
    host: str
    status: int | None
    port: str


COLUMNS = [
    SortColumn("frame", "Frame", numeric=True),
    SortColumn("host", "Host"),
    SortColumn("status", "Status", numeric=True, largest_first=True),
    SortColumn("port", "Port", numeric=True),
    SortColumn("", "Notes", sortable=False),
]
RECORDS = [
    Request(1, "b.example", 200, "9"),
    Request(2, "a.example", None, "10"),
    Request(3, "c.example", 404, ""),
    Request(4, "a.example", 301, "80"),
]


def frames(records: list[Request]) -> list[int]:
    return [r.frame for r in records]


def test_it_sorts_text_as_text_and_keeps_ties_in_their_order() -> None:
    assert frames(sorted_records(RECORDS, "host", COLUMNS)) == [2, 4, 1, 3]
    assert frames(sorted_records(RECORDS, "-host", COLUMNS)) == [3, 1, 2, 4]


def test_it_sorts_digits_as_numbers() -> None:
    assert frames(sorted_records(RECORDS, "port", COLUMNS)) == [1, 2, 4, 3]


def test_empty_cells_stay_last_whichever_way_a_column_is_sorted() -> None:
    assert frames(sorted_records(RECORDS, "status", COLUMNS)) == [1, 4, 3, 2]
    assert frames(sorted_records(RECORDS, "-status", COLUMNS)) == [3, 4, 1, 2]
    assert frames(sorted_records(RECORDS, "-port", COLUMNS)) == [4, 2, 1, 3]


def test_a_sort_naming_no_column_leaves_the_records_as_they_came() -> None:
    for sort in ("", "-", "bogus", "-notes", "frame ", "status;drop"):
        assert frames(sorted_records(RECORDS, sort, COLUMNS)) == [1, 2, 3, 4]
        assert chosen_sort(sort, COLUMNS, default="-frame") == "-frame"
    assert chosen_sort("-status", COLUMNS) == "-status"


def test_each_header_links_to_its_column_sorted_and_marks_the_sorted_one() -> None:
    cells = {cell.label: cell for cell in header(COLUMNS, "-frame", lambda sort: f"/t/?sort={sort}")}
    assert (cells["Frame"].href, cells["Frame"].direction) == ("/t/?sort=frame", "descending")
    assert (cells["Host"].href, cells["Host"].direction) == ("/t/?sort=host", "")
    # Counts open with their largest values.
    assert cells["Status"].href == "/t/?sort=-status"
    assert (cells["Notes"].href, cells["Notes"].direction) == ("", "")
    ascending = {cell.key: cell for cell in header(COLUMNS, "status", lambda sort: sort)}
    assert (ascending["status"].href, ascending["status"].direction) == ("-status", "ascending")

"""The I/O graph: packets or bytes per interval from the first packet, for up to four filters."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import WithJsonSchema, field_validator

from ..access import capture_for
from ..engine import iograph as engine_iograph
from .schemas import Error, schema_of

router = Router()

# Seconds as a number; the schema says so (a decimal is otherwise documented as any string too).
Seconds = Annotated[Decimal | None, WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}]})]


class IOGraphQuery(Schema):
    interval: int = Field(1000, description="Interval in ms: 1, 10, 100, 1000, 10000, 60000 or 600000")
    graph: list[str] = Field(
        [], description="Unit of each series, packets or bytes; repeat once per series (at most 4)"
    )
    filter: list[str] = Field(
        [],
        description="Display filter of each series, paired with `graph` by position; empty for every packet",
    )
    start: Seconds = Field(
        None, description="Seconds from the first packet: answer from the interval holding this time"
    )
    end: Seconds = Field(
        None,
        description="Seconds from the first packet: answer up to the interval holding this time; "
        f"a range (or, without one, a capture) of more than {engine_iograph.MAX_INTERVALS:,} "
        "intervals is refused",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def blank_is_none(cls, value: Any) -> Any:
        """Read an empty bound (a form's empty field) as no bound."""
        return None if isinstance(value, str) and not value.strip() else value


IOSeriesOut: Any = schema_of(
    engine_iograph.Series, "IOSeriesOut", values="One value per interval, from interval `first` on"
)
IOGraphOut: Any = schema_of(
    engine_iograph.IOGraph,
    "IOGraphOut",
    first="The first interval answered; interval i starts at i × interval_ms",
    total="Intervals in the whole capture at this interval",
    previous_active="The last interval before the answer that may hold a packet of a series",
    next_active="The first interval after the answer that may hold a packet of a series",
)


@router.get(
    "/captures/{capture_id}/iograph",
    response={200: IOGraphOut, 400: Error, 404: Error},
    summary="I/O graph: packets or bytes per interval from the first packet, for up to four filters",
)
async def io_graph(
    request: HttpRequest, capture_id: int, query: Query[IOGraphQuery]
) -> engine_iograph.IOGraph:
    capture = await capture_for(request, capture_id)
    series = engine_iograph.pair_series(query.graph, query.filter)
    return await engine_iograph.io_graph(capture.path, query.interval, series, query.start, query.end)

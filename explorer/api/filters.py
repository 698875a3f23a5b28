"""Display filters: a filter's syntax checked, field names completed."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from ..engine import packets as engine_packets

router = Router()


class FilterCheckOut(Schema):
    valid: bool
    error: str | None


class FieldOut(Schema):
    field: str
    name: str


@router.get("/filters/check", response=FilterCheckOut, summary="Check a display filter's syntax")
async def check_filter(request: HttpRequest, filter: str = "") -> dict[str, Any]:  # noqa: A002
    error = await engine_packets.check_filter(filter)
    return {"valid": error is None, "error": error}


@router.get("/fields/complete", response=list[FieldOut], summary="Field names for display filter completion")
async def complete_field(request: HttpRequest, prefix: str = "") -> list[dict[str, str]]:
    return await engine_packets.complete_field(prefix)

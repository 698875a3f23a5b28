"""Reading a page's query parameters: a choice among known values, a number, the display filter."""

from __future__ import annotations

from collections.abc import Collection

from django.http import HttpRequest


def choice(request: HttpRequest, name: str, allowed: Collection[str], default: str) -> str:
    """Return the parameter if it is one of the allowed values, else the default."""
    value = request.GET.get(name, default)
    return value if value in allowed else default


def query_int(request: HttpRequest, name: str) -> int | None:
    """Return the parameter as a whole number from 0 up, or None when it is not one."""
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() else None


def display_filter(request: HttpRequest) -> str:
    """Return the display filter a page is limited to ("" for every packet)."""
    return request.GET.get("filter", "").strip()

"""What the page views share: the not-found page and choosing a partial for htmx."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, Concatenate, ParamSpec

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django_htmx.middleware import HtmxDetails

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponse]]


def not_found_page(view: View[P]) -> View[P]:
    """Render the app's 404 page for unknown captures, even with DEBUG on."""

    @wraps(view)
    async def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        try:
            return await view(request, *args, **kwargs)
        except Http404 as error:
            return render(request, "404.html", {"exception": str(error)}, status=404)

    return wrapper


def wants_partial(request: HttpRequest) -> bool:
    """Tell whether htmx asked for a fragment (a history restore needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return isinstance(htmx, HtmxDetails) and bool(htmx) and not htmx.history_restore_request


def varies_on_htmx(response: HttpResponse) -> HttpResponse:
    """Keep browsers from serving a cached fragment as the page, or the page as a fragment."""
    patch_vary_headers(response, ["HX-Request"])
    return response

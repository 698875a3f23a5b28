"""What the page views share: the not-found page and choosing a partial for htmx."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, Concatenate, ParamSpec

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django_htmx.middleware import HtmxDetails

from ..access import user_of

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponse]]


def not_found_page(view: View[P]) -> View[P]:
    """Render the app's 404 page for captures one may not see, even with DEBUG on.

    Someone not signed in is sent to sign in first: the capture may be theirs.
    """

    @wraps(view)
    async def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        try:
            return await view(request, *args, **kwargs)
        except Http404 as error:
            if not (await user_of(request)).is_authenticated:
                return redirect_to_login(request.get_full_path())
            return render(request, "404.html", {"exception": str(error)}, status=404)
        except PermissionDenied as error:
            return render(request, "403.html", {"exception": str(error)}, status=403)

    return wrapper


def wants_partial(request: HttpRequest) -> bool:
    """Tell whether htmx asked for a fragment (a history restore needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return isinstance(htmx, HtmxDetails) and bool(htmx) and not htmx.history_restore_request


def varies_on_htmx(response: HttpResponse) -> HttpResponse:
    """Keep browsers from serving a cached fragment as the page, or the page as a fragment."""
    patch_vary_headers(response, ["HX-Request"])
    return response

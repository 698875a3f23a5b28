"""Answer 503 while the database is unavailable, instead of a server error, and recover after."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.signals import got_request_exception
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.template.loader import render_to_string

from explorer.middleware import AsyncMiddleware

log = logging.getLogger(__name__)

MESSAGE = "the database is unavailable for a moment"
RETRY_AFTER_SECONDS = 5
# Set on a request that failed because of the database, by the receiver below.
FAILED = "_database_failed"


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """Answer 503 with Retry-After: JSON on the API, a page otherwise."""
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": f"{MESSAGE}: try again shortly"}, status=503)
    else:
        # Rendered without the request: its context processors would ask the database.
        page = render_to_string("503.html", {"message": MESSAGE.capitalize()})
        response = HttpResponse(page, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _note_database_error(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    # Django turns an exception into a 500 response in whichever middleware or view raised
    # it and sends this signal while handling it; only then is the exception itself known.
    error = sys.exc_info()[1]
    if request is not None and isinstance(error, DatabaseError):
        setattr(request, FAILED, True)
        log.warning("database unavailable on %s %s: %s", request.method, request.path, error)


got_request_exception.connect(_note_database_error, dispatch_uid="explorer.availability")


class DatabaseUnavailableMiddleware(AsyncMiddleware):
    """Replace the server error of a request that failed on the database with a clear 503.

    Placed before the session and authentication middleware, which query the database too.
    Connections are opened per request, so the next request after the database is back
    succeeds without anything to reset.
    """

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        if getattr(request, FAILED, False) and response.status_code >= 500:
            return database_unavailable(request)
        return response

"""API tokens on HTTP and websocket requests, and CSRF checks on the API for browser sessions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware

from .tokens import user_for_token

SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
SCHEME = "token "


def token_of(header: str) -> str | None:
    """Return the key of an `Authorization: Token <key>` header, or None for another scheme."""
    if header[: len(SCHEME)].lower() != SCHEME:
        return None
    return header[len(SCHEME) :].strip()


def _needs_no_view(request: HttpRequest) -> HttpResponse:
    raise AssertionError("only passed to CsrfViewMiddleware.process_view, never called")


class TokenAuthenticationMiddleware:
    """Authenticate `Authorization: Token <key>`; check CSRF on the API for everyone else.

    A browser never sends an Authorization header on its own, so token requests cannot be
    forged across sites and skip CSRF. The API's views are CSRF-exempt (django-ninja), so a
    session's unsafe API requests are checked here, as Django checks every other view.
    """

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        self.csrf = CsrfViewMiddleware(_needs_no_view)
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        key = token_of(request.headers.get("Authorization", ""))
        if key is not None:
            user = await user_for_token(key)
            if user is None:
                return JsonResponse({"error": "invalid or revoked API token"}, status=401)
            request.token_user = user  # type: ignore[attr-defined]
            request.user = user

            async def auser() -> Any:
                return user

            request.auser = auser
            request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
            # The access rules, views and messages read the session (opened share links)
            # synchronously; a script that keeps cookies sends one along with its token, and
            # loading it there would query the database from the event loop. `auser()` loads
            # it here for everyone else.
            session = getattr(request, "session", None)
            if session is not None:
                await session.aitems()
        else:
            # Resolved here, in async code: templates read request.user, and resolving the
            # lazy user there would query the database from the event loop.
            request.user = await request.auser()
        if key is None and request.path.startswith("/api/") and request.method not in SAFE_METHODS:
            # A plain function stands in for the view: CsrfViewMiddleware checks it is not exempt.
            rejected = self.csrf.process_view(request, _needs_no_view, (), {})
            if rejected is not None:
                return JsonResponse({"error": "CSRF check failed: reload the page"}, status=403)
        return await self.get_response(request)


class TokenAuthWebsocketMiddleware:
    """Channels middleware: a websocket opened with `Authorization: Token <key>` is that user's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        key = token_of(headers.get(b"authorization", b"").decode("latin-1"))
        if key is not None:
            user = await user_for_token(key)
            if user is not None:
                scope = {**scope, "user": user}
        return await self.inner(scope, receive, send)

"""The project's middleware base, Django's middleware made to run in the event loop, and the
threads that run a request's sync code.

Django runs each hook of a sync middleware (`MiddlewareMixin`) under ASGI in a worker thread,
one hand-off there and back per hook: with a dozen hooks on every request those hand-offs cost
more than the view. The classes below are Django's own middleware with the same hooks, called
in the event loop where they only read the request and the settings and set headers; a hook
that may read or write the database (saving a session, storing messages in it, checking a
form's CSRF token) still runs in a worker thread, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, markcoroutinefunction, sync_to_async
from autobahn.exception import Disconnected
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponseBase
from django.middleware import clickjacking, common, csrf, security
from django.utils.deprecation import MiddlewareMixin
from whitenoise.middleware import WhiteNoiseMiddleware

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


class AsyncMiddleware:
    """Middleware that Django calls as a coroutine; subclasses define `async __call__`."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return await self.get_response(request)


def in_thread(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Return `function` to be run in the request's worker thread, where Django runs sync code."""
    return sync_to_async(function, thread_sensitive=True)


async def respond(middleware: MiddlewareMixin, request: HttpRequest) -> Any:
    """Return the response of what comes after `middleware`, which runs as a coroutine."""
    get_response: Any = middleware.get_response
    return await get_response(request)


class InEventLoop(MiddlewareMixin):
    """Base for a Django middleware: under ASGI, call its hooks in the event loop.

    For middleware whose hooks compute only, with no database, file or network access.
    Under WSGI (the test client) the middleware runs as Django wrote it.
    """

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            response = process_request(request)
        response = response or await respond(self, request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            response = process_response(request, response)
        return response


class SecurityMiddleware(InEventLoop, security.SecurityMiddleware):
    """Django's security headers (HSTS, nosniff, referrer policy, COOP) and HTTPS redirect."""


class CommonMiddleware(InEventLoop, common.CommonMiddleware):
    """Django's host check, slash redirects and Content-Length."""


class XFrameOptionsMiddleware(InEventLoop, clickjacking.XFrameOptionsMiddleware):
    """Django's X-Frame-Options header."""


class AuthenticationMiddleware(InEventLoop, auth.AuthenticationMiddleware):
    """Django's lazy `request.user` and `request.auser()`: neither reads the database here."""


class SessionMiddleware(sessions.SessionMiddleware):
    """Django's sessions: the session is read lazily by whoever needs it; saved in a thread."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)  # makes an unloaded session store: no query
        response = await respond(self, request)
        if self.saves(request):
            return await in_thread(self.process_response)(request, response)
        return self.process_response(request, response)

    @staticmethod
    def saves(request: HttpRequest) -> bool:
        """Tell whether process_response will save the session (the test Django itself makes)."""
        session = getattr(request, "session", None)
        if session is None:
            return False
        return bool(session.modified or settings.SESSION_SAVE_EVERY_REQUEST) and not session.is_empty()


class MessageMiddleware(messages.MessageMiddleware):
    """Django's messages: stored in a thread only when some were read or added (the session)."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)  # makes the storage: nothing is read yet
        response = await respond(self, request)
        storage = getattr(request, "_messages", None)
        if storage is not None and (storage.used or storage.added_new):
            return await in_thread(self.process_response)(request, response)
        return self.process_response(request, response)


class CsrfViewMiddleware(csrf.CsrfViewMiddleware):
    """Django's CSRF protection; the check of an unsafe request, which reads its form, in a thread.

    The CSRF cookie and a safe request's acceptance need no I/O unless the secret is kept in
    the session (CSRF_USE_SESSIONS), which then runs every hook in a thread as Django does.
    """

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(get_response):
            # Django calls a coroutine process_view as it is, and a plain one in a thread.
            self.process_view = self.aprocess_view  # type: ignore[method-assign,assignment]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        in_session = settings.CSRF_USE_SESSIONS
        if in_session:
            await in_thread(self.process_request)(request)
        else:
            self.process_request(request)
        response = await respond(self, request)
        if in_session:
            return await in_thread(self.process_response)(request, response)
        return self.process_response(request, response)

    async def aprocess_view(
        self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
    ) -> HttpResponseBase | None:
        checked = csrf.CsrfViewMiddleware.process_view
        if request.method in SAFE_METHODS and not settings.CSRF_USE_SESSIONS:
            return checked(self, request, callback, callback_args, callback_kwargs)
        return await in_thread(checked)(self, request, callback, callback_args, callback_kwargs)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise's static files; any other request passes by without a thread.

    WhiteNoise is sync only, so Django used to run it, and everything after it, in a thread.
    A path under none of its folders is never a file it serves: only those look for one.
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response: Any, settings: Any = settings) -> None:
        super().__init__(get_response, settings)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        prefixes = [prefix for _, prefix in self.directories]
        if self.use_finders:
            prefixes.append(self.static_prefix)
        self.prefixes = tuple(prefixes)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        path = request.path_info
        if self.autorefresh:
            # Looks on disk, under its folders only.
            found = await in_thread(self.find_file)(path) if path.startswith(self.prefixes) else None
        else:
            found = self.files.get(path)
        if found is not None:
            return await in_thread(self.serve)(found, request)
        return await self.get_response(request)


class RequestThread(ThreadPoolExecutor):
    """One worker thread that runs the sync code (queries, signals) of one request at a time."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self.last: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.last = super().submit(fn, *args, **kwargs)
        return self.last

    def idle(self) -> bool:
        """Tell whether everything submitted has finished (one worker runs them in order)."""
        return self.last is None or self.last.done()


class RequestThreads:
    """ASGI middleware: run each HTTP request's sync code on a thread kept from an earlier one.

    Django gives every request a thread of its own for its sync code, started with the
    request's first query or signal and ended with it. Starting a thread waits for it to take
    the interpreter lock, and with many requests in flight the event loop spent a third of its
    time there. One request at a time uses a kept thread, as a WSGI server's threads serve one
    request after another. A thread still running something when its request ends (the client
    went away mid-query) is not kept.
    """

    KEEP = 64

    def __init__(self, app: Any) -> None:
        self.app = app
        self.kept: list[RequestThread] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        thread = self.kept.pop() if self.kept else RequestThread()
        try:
            # Django's own ThreadSensitiveContext inside this one leaves it in place.
            async with ThreadSensitiveContext(executor=thread):
                await self.app(scope, receive, send)
        finally:
            if thread.idle() and len(self.kept) < self.KEEP:
                self.kept.append(thread)
            else:
                thread.shutdown(wait=False)


class OwnContext:
    """ASGI middleware: start every connection's application in a context of its own.

    The server re-arms a connection's socket callbacks while it sends a response, and asyncio
    gives each callback the context it was armed in: the next request on a kept-alive
    connection then started with the previous request's context, inside its thread-sensitive
    context that had already exited, where asgiref refuses the thread-sensitive calls a cache
    or a database access makes ("ThreadSensitiveContext has exited").
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Cancelling this task (the client went away) cancels the one it awaits.
        await asyncio.create_task(self.run(scope, receive, send), context=contextvars.Context())

    async def run(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return

        async def send_unless_closed(message: dict[str, Any]) -> None:
            try:
                await send(message)
            except Disconnected:
                pass  # the browser closed the socket while a push to it was on its way

        # Each websocket's database work (signing in, checking the capture) on a thread of
        # its own: Channels would run that of every consumer of the process on one thread,
        # one after another, and the last of many tabs opening at once waited for them all.
        async with ThreadSensitiveContext():
            await self.app(scope, receive, send_unless_closed)

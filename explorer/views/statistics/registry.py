"""The statistics a capture offers: each view module of this package registers its own.

A statistic is a page that sums a capture up (conversations, expert information, an I/O
graph...), usually limited to a display filter. Its module decorates its view with
`@statistic(key, title, order=...)`; from what is registered here come the Statistics tabs (in
`order`), the capture page's menu entries, the titles, the URL names and the URL patterns. The
URL of a statistic is derived from its URL name (`io_graph` → `captures/<id>/io-graph/`);
statistics registered with the same URL name share one page and are told apart by `?view=KEY`
(the Statistics page's conversations, endpoints and protocol hierarchy).

A new statistic is therefore one engine module, one view module in this package and one
template: the package's modules are found and imported by `load()`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import urlencode as quote_query
from django.urls import URLPattern, path, reverse

from ...models import Capture
from ..links import page_url
from ..params import choice

PageView = Callable[..., Coroutine[Any, Any, HttpResponse]]
View = TypeVar("View", bound=PageView)

# What a tab's link carries from the page it is on: the display filter ("filter") and the
# address type ("kind") of the statistics that show one.
Carried = Mapping[str, str]


def filter_only(carried: Carried) -> dict[str, str]:
    """Return the query of a tab that keeps only the display filter (most statistics' tabs)."""
    return {"filter": carried.get("filter", "")}


def filter_and_kind(default_kind: str) -> Callable[[Carried], dict[str, str]]:
    """Return how a tab keeps the display filter and the address type (default_kind if none is carried)."""

    def query(carried: Carried) -> dict[str, str]:
        return {"kind": carried.get("kind") or default_kind, "filter": carried.get("filter", "")}

    return query


@dataclass(frozen=True)
class MenuEntry:
    """A link to a statistic in the capture page's menu."""

    label: str
    element_id: str
    # The link shows the packets the capture view shows: it keeps (and the page's script
    # updates) the view's display filter.
    carries_filter: bool = False


@dataclass(frozen=True)
class Statistic:
    key: str  # names its tab (data-view) and, on a shared page, its ?view=
    title: str  # its tab's label and its page's title
    view: PageView
    order: int  # where its tab is among the Statistics tabs
    url_name: str  # explorer:<url_name>; its path is the name with dashes
    tab: bool  # listed among the Statistics tabs
    menu: MenuEntry | None
    tab_query: Callable[[Carried], dict[str, str]]

    @property
    def path(self) -> str:
        return self.url_name.replace("_", "-")


_registered: dict[str, Statistic] = {}
_loaded = False


def statistic(
    key: str,
    title: str,
    *,
    order: int,
    url_name: str = "",
    tab: bool = True,
    menu: MenuEntry | None = None,
    tab_query: Callable[[Carried], dict[str, str]] = filter_only,
) -> Callable[[View], View]:
    """Register the decorated page view as a statistic (its URL name is its key unless given)."""

    def register(view: View) -> View:
        if key in _registered:
            raise ImproperlyConfigured(f"two statistics are registered as {key!r}")
        _registered[key] = Statistic(key, title, view, order, url_name or key, tab, menu, tab_query)
        return view

    return register


def load() -> None:
    """Import every module of this package, so that each registers its statistics."""
    global _loaded
    if _loaded:
        return
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")
    _loaded = True


def registered() -> list[Statistic]:
    """Return every statistic, in tab order."""
    load()
    return sorted(_registered.values(), key=lambda s: (s.order, s.key))


def named(key: str) -> Statistic:
    load()
    return _registered[key]


def on_page(url_name: str) -> list[Statistic]:
    """Return the statistics of one page, in tab order (several when they share it)."""
    return [s for s in registered() if s.url_name == url_name]


def shares_page(statistic: Statistic) -> bool:
    return len(on_page(statistic.url_name)) > 1


def tab_url(capture: Capture, statistic: Statistic, carried: Carried) -> str:
    view = {"view": statistic.key} if shares_page(statistic) else {}
    return page_url(capture, statistic.url_name, **view, **statistic.tab_query(carried))


def tabs(capture: Capture, carried: Carried) -> list[tuple[str, str, str]]:
    """Return (key, label, URL) of every Statistics tab, each carrying the filter (and kind) along."""
    return [(s.key, s.title, tab_url(capture, s, carried)) for s in registered() if s.tab]


def menu(capture: Capture, filter_text: str) -> list[tuple[MenuEntry, str]]:
    """Return the capture page's menu entries and their URLs, under the view's display filter."""
    entries = []
    for statistic in registered():
        if statistic.menu is None:
            continue
        url = reverse(f"explorer:{statistic.url_name}", args=[capture.pk])
        if statistic.menu.carries_filter and filter_text:
            url += f"?filter={quote_query(filter_text)}"
        entries.append((statistic.menu, url))
    return entries


def page_view(url_name: str) -> PageView:
    """Return the view of a page: its statistic's, or one choosing among those sharing it by ?view=."""
    shared = on_page(url_name)
    if len(shared) == 1:
        return shared[0].view

    async def chosen(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = choice(request, "view", [s.key for s in shared], shared[0].key)
        return await named(key).view(request, *args, **kwargs)

    return chosen


def urlpatterns() -> list[URLPattern]:
    """Return one URL pattern per statistics page: `captures/<id>/<url name with dashes>/`."""
    names = list(dict.fromkeys(s.url_name for s in registered()))
    return [
        path(f"captures/<int:capture_id>/{name.replace('_', '-')}/", page_view(name), name=name)
        for name in names
    ]


def paths() -> set[str]:
    """Return the path segment of every statistics page (each runs the engine over the capture)."""
    return {s.path for s in registered()}

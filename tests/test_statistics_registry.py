"""The statistics register themselves: their tabs, menu entries, URLs and rate limit come from there."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.urls import resolve, reverse

from explorer import ratelimit
from explorer.models import Capture
from explorer.views.statistics import registry

CAPTURE = Capture(pk=7)


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def test_the_tabs_are_the_statistics_in_their_order() -> None:
    labels = [label for _, label, _ in registry.tabs(CAPTURE, {})]
    assert labels == [
        "Conversations",
        "Endpoints",
        "Protocol Hierarchy",
        "Expert Information",
        "I/O Graph",
        "HTTP Objects",
        "HTTP Requests",
        "DNS Queries",
        "Conversation graph",
    ]
    assert "flow" not in [key for key, _, _ in registry.tabs(CAPTURE, {})]


def test_each_statistic_has_its_page_at_the_url_its_name_gives() -> None:
    for statistic in registry.registered():
        url = reverse(f"explorer:{statistic.url_name}", args=[CAPTURE.pk])
        assert url == f"/captures/7/{statistic.url_name.replace('_', '-')}/"
        assert resolve(url).url_name == statistic.url_name
    assert reverse("explorer:io_graph", args=[7]) == "/captures/7/io-graph/"


def test_statistics_sharing_a_page_are_told_apart_by_their_view() -> None:
    urls = {key: url for key, _, url in registry.tabs(CAPTURE, {})}
    for key in ("conversations", "endpoints", "hierarchy"):
        assert urlsplit(urls[key]).path == "/captures/7/statistics/"
        assert query(urls[key])["view"] == key
    assert "view" not in query(urls["expert"])


def test_a_tab_carries_the_filter_and_the_address_type_to_the_statistics_that_show_one() -> None:
    urls = {key: url for key, _, url in registry.tabs(CAPTURE, {"filter": "tcp.port == 80", "kind": "UDP"})}
    assert query(urls["endpoints"]) == {"view": "endpoints", "kind": "UDP", "filter": "tcp.port == 80"}
    assert query(urls["expert"]) == {"filter": "tcp.port == 80"}
    # The conversation graph draws IPv4 or IPv6 hosts: another address type opens it on IPv4.
    assert query(urls["conversation_graph"]) == {"kind": "IPv4", "filter": "tcp.port == 80"}
    plain = {key: url for key, _, url in registry.tabs(CAPTURE, {})}
    assert query(plain["conversations"]) == {"view": "conversations", "kind": "TCP"}
    assert plain["expert"] == "/captures/7/expert/"


def test_the_menu_carries_the_display_filter_only_where_a_statistic_asks() -> None:
    links = {entry.element_id: (entry.label, url) for entry, url in registry.menu(CAPTURE, "tcp.port == 80")}
    assert links == {
        "statistics-link": ("Statistics", "/captures/7/statistics/"),
        "flow-graph-link": ("Flow graph", "/captures/7/flow/?filter=tcp.port%20%3D%3D%2080"),
    }
    assert "/captures/7/flow/" in [url for _, url in registry.menu(CAPTURE, "")]


def test_a_key_registered_twice_is_refused() -> None:
    async def another(request: HttpRequest, capture_id: int) -> HttpResponse:
        return HttpResponse()

    with pytest.raises(ImproperlyConfigured, match="expert"):
        registry.statistic("expert", "Expert Information again", order=1)(another)
    assert registry.named("expert").title == "Expert Information"


def test_the_rate_limit_counts_every_statistics_page_as_a_filter_run() -> None:
    assert {statistic.path for statistic in registry.registered()} <= ratelimit.filter_pages()
    assert "properties" not in ratelimit.filter_pages()

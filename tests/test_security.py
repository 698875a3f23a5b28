"""Pages carry a Content-Security-Policy that forbids inline and foreign scripts."""

from __future__ import annotations

import httpx


def test_pages_forbid_inline_scripts(api: httpx.Client) -> None:
    policy = api.get("/").headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert directives["object-src"] == "'none'"


def test_api_answers_carry_the_policy_too(api: httpx.Client) -> None:
    assert "script-src 'self'" in api.get("/api/captures/").headers["content-security-policy"]

"""Django's security deploy checks, run on the project's middleware.

Django's checks find its middleware by dotted path in MIDDLEWARE. The project lists subclasses
that run in the event loop (explorer.middleware), so `check --deploy` said the security, CSRF and
clickjacking middleware were missing (W001-W003) and, taking them for absent, skipped the checks
of the settings they apply: HSTS, the HTTPS redirect, secure CSRF cookies. Django's own checks
run here instead, with each subclass named by the Django middleware it extends.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import registry
from django.core.checks.messages import CheckMessage
from django.core.checks.security import base, csrf, sessions
from django.test.utils import override_settings
from django.utils.module_loading import import_string

MIDDLEWARE_CHECK_MODULES = {base.__name__, csrf.__name__, sessions.__name__}


def django_names(middleware: list[str]) -> list[str]:
    """Name each project subclass of a Django middleware by that Django class."""
    named = []
    for path in middleware:
        found = path
        if path.startswith("explorer."):
            for klass in import_string(path).__mro__[1:]:
                module = klass.__module__
                if module.startswith("django.") and module != "django.utils.deprecation":
                    found = f"{module}.{klass.__qualname__}"
                    break
        named.append(found)
    return named


def on_django_names(check: Any) -> Any:
    """Return the check run with MIDDLEWARE named by django_names (it keeps the check's tags)."""

    @functools.wraps(check)
    def checked(app_configs: Any = None, **kwargs: Any) -> Sequence[CheckMessage]:
        with override_settings(MIDDLEWARE=django_names(list(settings.MIDDLEWARE))):
            return check(app_configs, **kwargs)

    return checked


def check_middleware_by_its_django_names() -> None:
    """Replace Django's middleware-dependent security checks by the same run on django_names."""
    for checks in (registry.registry.registered_checks, registry.registry.deployment_checks):
        for check in [c for c in checks if getattr(c, "__module__", "") in MIDDLEWARE_CHECK_MODULES]:
            checks.discard(check)
            checks.add(on_django_names(check))

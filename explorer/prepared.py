"""Queries of the request path, built by the ORM once and then run as their SQL.

Building a queryset in Python (filter, annotate, a subquery) costs more than the database
takes to answer it: the capture lookup that every page, packet and API request makes spent a
seventh of a server process's time under load building its one query. A PreparedQuery builds
its queryset once, with stand-in values, compiles it for the database in use, and from then
on runs that SQL with the request's values as a raw query: the same columns, annotations and
model instances (with their fields' converters) as the ORM's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)


class Value:
    """A parameter of a prepared query: the position of the value passed to `first`."""

    def __init__(self, position: int) -> None:
        self.position = position


class PreparedQuery(Generic[M]):
    """`build(*stand_ins)` is the query; `await first(*values)` runs it with those values.

    The stand-ins are integers that no request sends (negative, beyond any key); a parameter of
    the compiled SQL that is none of them is a constant of the query and stays as it is.
    """

    STAND_IN_BASE = -7_365_000_000_000

    def __init__(self, model: type[M], build: Callable[..., QuerySet[M]], arity: int) -> None:
        self.model = model
        self.build = build
        self.arity = arity
        self.compiled: dict[str, tuple[str, list[Any]]] = {}
        self.lock = threading.Lock()

    def _compile(self, alias: str) -> tuple[str, list[Any]]:
        stand_ins = [self.STAND_IN_BASE - position for position in range(self.arity)]
        queryset = self.build(*stand_ins)
        sql, params = queryset.query.get_compiler(using=alias).as_sql()
        template = [Value(stand_ins.index(p)) if p in stand_ins else p for p in params]
        if {p.position for p in template if isinstance(p, Value)} != set(range(self.arity)):
            raise ValueError(f"a prepared query of {self.model.__name__} does not use all its values")
        return sql, template

    def sql(self, alias: str = DEFAULT_DB_ALIAS) -> tuple[str, list[Any]]:
        """Return the SQL and its parameters' template for a database, compiled on first use."""
        found = self.compiled.get(alias)
        if found is None:
            with self.lock:
                # Compiled in the thread that runs queries: a backend may ask the server its
                # version while compiling.
                found = self.compiled.setdefault(alias, self._compile(alias))
        return found

    def _first_sync(self, *values: Any) -> M | None:
        sql, template = self.sql()
        params = [values[p.position] if isinstance(p, Value) else p for p in template]
        for instance in self.model._default_manager.raw(sql, params):
            return instance
        return None

    async def first(self, *values: Any) -> M | None:
        """Return the first model instance the query finds with these values, or None."""
        if len(values) != self.arity:
            raise TypeError(f"expected {self.arity} values, got {len(values)}")
        return await sync_to_async(self._first_sync)(*values)

"""What every part of the API shares in its schema: the error answer, files, and engine types."""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from decimal import Decimal
from typing import Any

from ninja import Field, Schema
from pydantic import create_model


class Error(Schema):
    error: str


def file_response(content_type: str = "application/octet-stream") -> dict[str, Any]:
    """Return the OpenAPI of a 200 answer that is a file to save, not JSON."""
    content = {content_type: {"schema": {"type": "string", "format": "binary"}}}
    disposition = {"schema": {"type": "string"}, "description": "attachment, with the file's name"}
    headers = {"Content-Disposition": disposition}
    return {"responses": {"200": {"description": "The file", "headers": headers, "content": content}}}


# The schemas derived from engine dataclasses, which stand for them inside other derived schemas.
_derived: dict[Any, Any] = {}


def schema_of(engine_type: type, name: str, **descriptions: str) -> Any:
    """Return the response schema of an engine dataclass: its fields, seconds as JSON numbers.

    Every field is required, as the answers always hold them (pydantic would document a field
    with a default as one that may be left out). The engine keeps times exact as Decimal, which
    pydantic documents and writes as strings; the API has always answered them as numbers.
    A dataclass in a field is answered as its own derived schema, made before.
    Descriptions document some of the fields.
    """
    hints = typing.get_type_hints(engine_type)
    _derived[engine_type] = name  # a tree's nodes hold nodes: its fields name the schema made here
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(engine_type):
        description = descriptions.pop(field.name, None)
        fields[field.name] = (_answered_as(hints[field.name]), Field(description=description))
    assert not descriptions, f"{engine_type.__name__} has no field {', '.join(descriptions)}"
    schema = create_model(name, __base__=Schema, __module__=__name__, **fields)
    _derived[engine_type] = schema
    return schema


def _answered_as(hint: Any) -> Any:
    """Return the type in which the API answers a value of an engine dataclass's field."""
    if hint is Decimal:
        return float
    if hint in _derived:
        return _derived[hint]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        raise TypeError(f"make the schema of {hint.__name__} first: its fields are answered as it says")
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return list[_answered_as(arguments[0])]  # type: ignore[misc]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, map(_answered_as, arguments))
    return hint

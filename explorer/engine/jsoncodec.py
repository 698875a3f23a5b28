"""JSON in and out of the engine, and of the API's packet list and details, with orjson.

Every page and packet detail is JSON three times over: sharkd's answer, the engine service's
message, the API's response. The standard library's encoder and decoder took about a seventh
of a server process's time under load, and a third of the engine service's. orjson does the
same work in C, dataclasses included.

What orjson refuses, the standard library still takes, as before: a string that is not UTF-8
(sharkd copies the bytes of a damaged packet into its strings as they are), a lone surrogate,
NaN; and, to write, an integer past 64 bits. (orjson reads such an integer as a float; sharkd's
numbers are 64 bits at most.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson

DUMP_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Return value as compact JSON in UTF-8; dataclasses become objects of their fields."""
    try:
        return orjson.dumps(value, option=DUMP_OPTIONS)
    except TypeError:
        # orjson.JSONEncodeError is a TypeError: a lone surrogate, a 65-bit integer, a type
        # it does not know (vars: a plain object's attributes, as a dataclass's fields).
        return json.dumps(value, separators=(",", ":"), default=vars).encode()


def loads(data: bytes) -> Any:
    """Return the value of a JSON text; bytes that are not UTF-8 read as U+FFFD. Raise ValueError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode(errors="replace"))

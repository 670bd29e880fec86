"""JSON request bodies read in small pieces, with a bound on one array's length.

``json.loads`` of a 4 MB body is one call into C that holds the GIL from start to end, and
it builds every element of a huge array before anyone can count them. :func:`loads_bounded`
gives the same result and the same errors (message and position) as ``json.loads`` of the
bytes, but parses the top-level object one member at a time and the array named ``array``
one element at a time, and stops with :class:`TooManyItems` as soon as that array holds more
than ``limit`` elements - before the rest is parsed or anything is validated. Run in a worker
thread, the many short calls let the event loop take its turn between them.
"""

from __future__ import annotations

import json
import re
from typing import Any

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


class TooManyItems(ValueError):
    """The bounded array holds more than ``limit`` elements (counting stopped there)."""

    def __init__(self, limit: int, where: str) -> None:
        super().__init__(f"more than {limit} elements in {where or 'the top-level array'}")
        self.limit = limit
        self.where = where  # the member's name; "" for a top-level array


def decode_text(raw: bytes) -> str:
    """The body as text, in the encoding ``json.loads`` would detect (UTF-8, -16 or -32).

    Raises ``UnicodeDecodeError`` for bytes that are not text in that encoding.
    """
    return raw.decode(json.detect_encoding(raw), "surrogatepass")


def loads_bounded(raw: bytes, *, array: str, limit: int) -> Any:
    """``json.loads(raw)``, raising :class:`TooManyItems` once the top-level object's member
    ``array`` (when it is an array), or a top-level array, has more than ``limit`` elements.

    Raises ``json.JSONDecodeError`` as ``json.loads`` does, and ``UnicodeDecodeError`` for
    bytes that are not text.
    """
    text = decode_text(raw)
    i = _skip(text, 0)
    value: Any
    if text.startswith("{", i):
        value, i = _object(text, i, array, limit)
    elif text.startswith("[", i):  # bounded too: a huge top-level array is as costly
        value, i = _array(text, i, limit, "")
    else:
        value, i = _value(text, i)
    i = _skip(text, i)
    if i != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return value


def _skip(text: str, i: int) -> int:
    match = _SPACE.match(text, i)
    return match.end() if match else i


def _value(text: str, i: int) -> tuple[Any, int]:
    value, end = _DECODER.raw_decode(text, i)
    return value, end


def _object(text: str, i: int, array: str | None, limit: int) -> tuple[dict[str, Any], int]:
    """The object starting at ``text[i] == "{"`` and the index after it."""
    result: dict[str, Any] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        return result, i + 1
    while True:
        if not text.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        name, i = _value(text, i)
        i = _skip(text, i)
        if not text.startswith(":", i):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
        i = _skip(text, i + 1)
        if name == array and text.startswith("[", i):
            result[name], i = _array(text, i, limit, name)
        else:
            result[name], i = _value(text, i)
        i = _skip(text, i)
        if text.startswith("}", i):
            return result, i + 1
        if not text.startswith(",", i):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        i = _skip(text, i + 1)


def _array(text: str, i: int, limit: int, where: str) -> tuple[list[Any], int]:
    """The array starting at ``text[i] == "["``, element by element, and the index after it."""
    items: list[Any] = []
    i = _skip(text, i + 1)
    if text.startswith("]", i):
        return items, i + 1
    while True:
        if len(items) >= limit:
            raise TooManyItems(limit, where)
        item, i = _value(text, i)
        items.append(item)
        i = _skip(text, i)
        if text.startswith("]", i):
            return items, i + 1
        if not text.startswith(",", i):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        i = _skip(text, i + 1)

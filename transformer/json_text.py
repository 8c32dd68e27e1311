"""JSON text -> Python values, the one parser every reader of our JSON files goes through: a document
nested deeper than Python can follow (json's scanner recurses and raises RecursionError) is invalid
JSON like any other, a JSONDecodeError (a ValueError) whose message is "nested too deeply"."""

from __future__ import annotations

import json


class NestedTooDeeply(json.JSONDecodeError):
    """A document nested deeper than the parser can follow (a 100,000-deep `[[[...]]]`)."""

    def __init__(self) -> None:
        super().__init__("nested too deeply", "", 0)

    def __str__(self) -> str:
        return self.msg


def loads(text: str | bytes):
    """json.loads(text), with too deep a nesting raised as NestedTooDeeply."""
    try:
        return json.loads(text)
    except RecursionError:
        raise NestedTooDeeply() from None

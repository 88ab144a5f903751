"""JSON decoding that a hostile body cannot turn into a crash.

The C decoders (msgspec, json) recurse per nesting level, so ~1,000 nested brackets in one
field raise RecursionError. Left alone that is a 500 and the whole batch is lost; here it
is `TooDeep`, a ValueError the caller maps to 400 (a whole body) or to one rejected item
with reason `too_deep`. `split_array` splits a top-level array into its items without
recursing, so the other items of a batch still decode when one of them is too deep.
Decoding is strict JSON: `NaN`, `Infinity` and numbers past the float range are refused
rather than turned into non-finite floats (json.loads accepts all three).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

TOO_DEEP = "too_deep"


class TooDeep(ValueError):
    """A JSON value nested deeper than the decoder can follow; callers reject that one value."""

    def __init__(self) -> None:
        super().__init__("JSON nested too deep")


class NotJson(ValueError):
    """The bytes are not JSON at all; HTTP handlers answer 400 with this message."""


_any = msgspec.json.Decoder()
# a JSON string (escapes included) or one structural character: strings are skipped whole,
# so brackets and commas inside them never count
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')


def loads(raw: bytes | str) -> Any:
    """Decode any JSON value; TooDeep for a nesting the decoder cannot follow, NotJson else."""
    try:
        value = _any.decode(raw)
    except RecursionError:
        raise TooDeep() from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise NotJson(f"body is not valid JSON: {exc}") from None
    if not _finite(value):
        raise NotJson("body is not valid JSON: a number is out of range")
    return value


def _finite(value: Any) -> bool:
    """msgspec decodes 1e400 to inf: refuse it like the NaN literal it stands for."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def split_array(body: bytes) -> list[bytes]:
    """The raw items of a top-level JSON array, found by scanning (no recursion).

    Only called when the body could not be decoded in one pass (an item too deep or
    broken), so its cost (a regex pass over the body) is paid by bad batches only. A
    broken item stays one slice and is rejected when decoded on its own. NotJson when the
    array itself is not closed.
    """
    start = body.index(b"[") + 1
    items: list[bytes] = []
    depth = 0
    item_start = start
    for match in _TOKENS.finditer(body, start):
        token = match.group()
        if token[0] == 0x22:  # a string
            continue
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            if depth == 0:
                if token == b"]":
                    last = body[item_start:match.start()].strip()
                    if last or items:
                        items.append(last)
                    if body[match.end():].strip():
                        raise NotJson("body is not valid JSON: trailing data after the array")
                    return items
                raise NotJson("body is not valid JSON: unbalanced brackets")
            depth -= 1
        elif depth == 0:  # a comma between items
            items.append(body[item_start:match.start()].strip())
            item_start = match.end()
    raise NotJson("body is not valid JSON: the array is not closed")


def json_safe(value: Any) -> Any:
    """A copy with every non-finite float as None: json.dumps would write `Infinity`/`NaN`,
    which no strict JSON reader (Slack, Discord, Teams, jq, Go) accepts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """json.dumps for outgoing bodies (`web.json_response(..., dumps=dumps)`): valid JSON only."""
    return json.dumps(json_safe(value), allow_nan=False)

"""Mutated real LiteLLM bodies for the ingest fuzz suite (tests/test_fuzz_ingest.py).

Every body starts from a capture in tests/fixtures/litellm (a generic_api batch, a single
callback, or an alert webhook) and is broken the ways the issue-19 run broke them: a value
anywhere replaced by a hostile one (deep nesting, numbers past float range, negative or
NaN-as-string costs, 20 KB label values, mentions and links, wrong types), keys removed,
the encoding changed (array / NDJSON / single), bytes cut, flipped or inserted, and a
Content-Encoding that does or does not match the body.
"""

from __future__ import annotations

import copy
import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.conftest import FIXTURES, capture_items, load_capture

EVENT_CAPTURES = sorted(p.name for p in FIXTURES.glob("generic_api_*.json"))
ALERT_CAPTURES = sorted(p.name for p in FIXTURES.glob("alert_*.json"))
_ITEMS: dict[str, list[Any]] = {}


def items_of(name: str) -> list[Any]:
    if name not in _ITEMS:
        _ITEMS[name] = capture_items(name) if name.startswith("generic_api") else _alert_items(name)
    return copy.deepcopy(_ITEMS[name])


def _alert_items(name: str) -> list[Any]:
    body = load_capture(name)["body_json"]
    return body if isinstance(body, list) else [body]


# raw JSON text put where a value was: what json.dumps cannot write
RAW = {
    "@@DEEP@@": "[" * 3000 + "]" * 3000,
    "@@DEEPOBJ@@": '{"a":' * 1500 + "1" + "}" * 1500,
    "@@HUGE@@": "1" + "0" * 400,
    "@@HUGEF@@": "1e400",
    "@@NAN@@": "NaN",
    "@@INF@@": "-Infinity",
}

HOSTILE: list[Any] = [
    *RAW.keys(), -1, -0.5, 0, 2**63, 2**64, -(2**63) - 1, 1e308, -1e308, 5e-324, 1e300, "NaN", "Infinity", "-1",
    "12", "", "g" * 20000, "<!channel>", "<https://evil.example/login|Click to re-auth>", "@everyone",
    "[Click](https://evil.example)", "\x00\x1b[31m", "ü€😀", None, True, False, [], {}, [1, 2], {"a": {"b": [None]}},
    "2027-01-15T00:00:00Z",
]


def values() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40), st.integers(),
                     st.floats(allow_nan=False, allow_infinity=False))


def _slots(value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree, iteratively."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                out.append((node, key))
                stack.append(child)
        elif isinstance(node, list):
            for i, child in enumerate(node):
                out.append((node, i))
                stack.append(child)
    return out


@dataclass
class Body:
    route: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    source: str = ""
    mutations: list[str] = field(default_factory=list)


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    alerts = draw(st.integers(0, 5)) == 0
    name = draw(st.sampled_from(ALERT_CAPTURES if alerts else EVENT_CAPTURES))
    items = items_of(name)
    done: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        slots = _slots(items, [])
        if not slots:
            break
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        if isinstance(container, dict) and draw(st.booleans()) and draw(st.booleans()):
            del container[key]
            done.append(f"del {key}")
        else:
            container[key] = copy.deepcopy(draw(values()))  # HOSTILE's [] and {} must stay empty
            done.append(f"set {key}")
    fmt = draw(st.sampled_from(["array", "ndjson", "single"]))
    text = _encode(items, fmt)
    for marker, raw in RAW.items():
        text = text.replace(json.dumps(marker), raw)
    data = text.encode("utf-8", "surrogatepass")
    cut = draw(st.sampled_from([None, None, None, "truncate", "flip", "insert"]))
    if cut and data:
        at = draw(st.integers(0, len(data) - 1))
        if cut == "truncate":
            data = data[:at]
        elif cut == "flip":
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        else:
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        done.append(cut)
    headers = {"Content-Type": "application/json"}
    encoding = draw(st.sampled_from([None, None, None, "gzip", "gzip-lie"]))
    if encoding == "gzip":
        data = gzip.compress(data)
    if encoding:
        headers["Content-Encoding"] = "gzip"
        done.append(encoding)
    route = "/v1/litellm/alerts" if alerts else "/v1/litellm/events"
    return Body(route, data, headers, name, done)


def _encode(items: list[Any], fmt: str) -> str:
    def dumps(value: Any) -> str:
        return json.dumps(value, allow_nan=True)

    if fmt == "ndjson":
        return "\n".join(dumps(i) for i in items)
    if fmt == "single" or len(items) == 1:
        return dumps(items[0] if items else {})
    return dumps(items)


@dataclass
class Tally:
    """What the fuzz run saw: the figures bench/README.md reports."""

    bodies: int = 0
    bytes: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)  # route -> items answered as accepted
    rejected: int = 0
    server_errors: list[str] = field(default_factory=list)

    def record(self, body: Body, status: int, answer: Any) -> None:
        self.bodies += 1
        self.bytes += len(body.data)
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if status >= 500 and status != 503:
            self.server_errors.append(f"{status} {body.route} {body.source} {body.mutations}")
        if status == 200 and isinstance(answer, dict):
            self.accepted[body.route] = self.accepted.get(body.route, 0) + int(answer.get("accepted", 0))
            self.rejected += int(answer.get("rejected", 0))



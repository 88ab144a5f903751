"""Helpers for the CloudWatch tests: expected totals straight from the raw LiteLLM captures,
an EMF validator written from the specification, and the fixture replay."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import FIXTURES, batch_files, load_capture

HEALTH = "litellm-internal-health-check"


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_ms: list[float] = field(default_factory=list)

    def add(self, item: dict[str, Any]) -> None:
        self.requests += 1
        if item["status"] != "success":
            self.errors += 1
        else:
            self.latency_ms.append((item["endTime"] - item["startTime"]) * 1000.0)
        self.input_tokens += int(item.get("prompt_tokens") or 0)
        self.output_tokens += int(item.get("completion_tokens") or 0)
        self.cost += float(item.get("response_cost") or 0.0)


def raw_items() -> list[dict[str, Any]]:
    """Every StandardLoggingPayload of the batching logger's captures, health checks excluded."""
    items = []
    for path in batch_files():
        body = load_capture(path.name)["body_json"]
        for item in body if isinstance(body, list) else [body]:
            metadata = item.get("metadata") or {}
            if metadata.get("user_api_key_alias") == HEALTH or HEALTH in (item.get("request_tags") or []):
                continue
            items.append(item)
    return items


def raw_totals_by_model_group() -> dict[str, Totals]:
    out: dict[str, Totals] = defaultdict(Totals)
    for item in raw_items():
        out[item.get("model_group") or "unknown"].add(item)
    return dict(out)


def grand_totals() -> Totals:
    total = Totals()
    for item in raw_items():
        total.add(item)
    return total


def fixture_bodies() -> list[bytes]:
    """The generic_api POST bodies exactly as LiteLLM sent them."""
    bodies = []
    for path in batch_files():
        capture = load_capture(path.name)
        text = capture.get("body_text")
        bodies.append(text.encode() if text else json.dumps(capture["body_json"]).encode())
    return bodies


def gateway_config(tmp_path: Any, cloudwatch: dict[str, Any]) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "litellm": {"config": str(FIXTURES / "config.yaml")},
        "attribution": {"ecs_metadata": False},
        "cloudwatch": {"enabled": True, **cloudwatch},
    }


# -- EMF specification checks ------------------------------------------------------

UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
    "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
    "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}

# The JSON schema published with the EMF specification, with today's limits (30 dimension
# keys per set) and StorageResolution.
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer"},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 255},
                            "Dimensions": {
                                "type": "array", "minItems": 1,
                                "items": {"type": "array", "minItems": 0, "maxItems": 30,
                                          "items": {"type": "string", "minLength": 1, "maxLength": 255}},
                            },
                            "Metrics": {
                                "type": "array", "maxItems": 100,
                                "items": {
                                    "type": "object", "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 255},
                                        "Unit": {"type": "string", "enum": sorted(UNITS)},
                                        "StorageResolution": {"type": "integer", "enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-JSON number {name}")


def check_emf_line(line: str, max_bytes: int = 256 * 1024) -> dict[str, Any]:
    """Raise AssertionError unless `line` is a valid EMF document; return it parsed."""
    import jsonschema

    assert "\n" not in line, "one document per line"
    assert len(line.encode()) <= max_bytes, "larger than a CloudWatch Logs event"
    doc = json.loads(line, parse_constant=_reject_constant)
    jsonschema.validate(doc, EMF_SCHEMA)
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dims in directive["Dimensions"]:
            assert len(set(dims)) == len(dims)
            for name in dims:
                value = doc.get(name)
                assert isinstance(value, str), f"dimension target {name} must be a string member of the root"
                assert 1 <= len(value) <= 1024 and value.isascii() and value.isprintable() and value.strip()
        names = [m["Name"] for m in directive["Metrics"]]
        assert len(set(names)) == len(names)
        for name in names:
            assert name in doc, f"metric target {name} missing from the root"
            check_metric_value(doc[name])
    return doc


def check_metric_value(value: Any) -> None:
    if isinstance(value, bool):
        raise AssertionError("booleans are not metric values")
    if isinstance(value, (int, float)):
        assert math.isfinite(value)
        return
    if isinstance(value, list):
        assert 1 <= len(value) <= 100, "at most 100 values per metric"
        for v in value:
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return
    assert isinstance(value, dict), f"unexpected metric value {value!r}"
    assert set(value) == {"Values", "Counts", "Min", "Max", "Count", "Sum"}
    values, counts = value["Values"], value["Counts"]
    assert 1 <= len(values) <= 100 and len(values) == len(counts)
    assert all(isinstance(c, int) and c > 0 for c in counts)
    assert value["Count"] == sum(counts)
    assert value["Min"] <= min(values) and max(values) <= value["Max"]
    assert math.isclose(value["Sum"], sum(v * c for v, c in zip(values, counts, strict=True)), rel_tol=1e-9)


def emf_totals(lines: list[str]) -> dict[tuple[tuple[str, str], ...], dict[str, float]]:
    """Parse EMF lines back into per-series totals: {((dim, value), ...): {metric: total}}.
    Distributions give `<name>.count` and `<name>.sum`."""
    out: dict[tuple[tuple[str, str], ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in lines:
        doc = check_emf_line(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dims in directive["Dimensions"]:
                key = tuple((d, doc[d]) for d in dims)
                for metric in directive["Metrics"]:
                    value = doc[metric["Name"]]
                    if isinstance(value, dict):
                        out[key][metric["Name"] + ".count"] += value["Count"]
                        out[key][metric["Name"] + ".sum"] += value["Sum"]
                    elif isinstance(value, list):
                        out[key][metric["Name"] + ".count"] += len(value)
                        out[key][metric["Name"] + ".sum"] += sum(value)
                    else:
                        out[key][metric["Name"]] += value
    return out

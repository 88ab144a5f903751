"""Reading Prometheus text exposition in tests (with the official parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.append((sample.name, dict(sample.labels), sample.value))
    return out


def total(text: str | list, name: str, **match: str) -> float:
    rows = samples(text) if isinstance(text, str) else text
    return sum(v for n, labels, v in rows if n == name and all(labels.get(k) == val for k, val in match.items()))


def series(text: str | list, name: str) -> list[dict[str, str]]:
    rows = samples(text) if isinstance(text, str) else text
    return [labels for n, labels, _ in rows if n == name]

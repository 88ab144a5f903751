"""Read Prometheus text exposition and compare counts between two witnesses.

Parsing uses prometheus_client's own parser. Label values are compared after folding
LiteLLM's spellings of "missing" ("", "None") into one, since gatewatch writes "None"
where LiteLLM sometimes writes "" for the same missing value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

MISSING = ("", "None")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[Sample] = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples.append(Sample(s.name, dict(s.labels), float(s.value)))

    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def select(self, name: str, where: Mapping[str, str] | Callable[[Mapping[str, str]], bool] | None = None
               ) -> list[Sample]:
        out = []
        for s in self.samples:
            if s.name != name:
                continue
            if callable(where):
                if not where(s.labels):
                    continue
            elif where and any(norm(s.labels.get(k, "")) != norm(v) for k, v in where.items()):
                continue
            out.append(s)
        return out

    def total(self, name: str, by: Iterable[str] = (), where=None) -> dict[tuple[str, ...], float]:
        """Sum of `name` grouped by the `by` labels (missing-value spellings folded)."""
        keys = tuple(by)
        out: dict[tuple[str, ...], float] = {}
        for s in self.select(name, where):
            key = tuple(norm(s.labels.get(k, "")) for k in keys)
            out[key] = out.get(key, 0.0) + s.value
        return out

    def value(self, name: str, where=None) -> float:
        return sum(s.value for s in self.select(name, where))


def norm(value: str) -> str:
    return "" if value in MISSING else value


def drop_zero(counts: Mapping[tuple, float]) -> dict[tuple, float]:
    return {k: v for k, v in counts.items() if v}


def diff(witnesses: Mapping[str, Mapping[tuple, float]], rel_tol: float = 0.0, abs_tol: float = 1e-9
         ) -> list[str]:
    """Rows where the witnesses disagree, each naming every witness's number."""
    keys = sorted({k for counts in witnesses.values() for k in counts})
    rows = []
    for key in keys:
        values = {name: counts.get(key, 0.0) for name, counts in witnesses.items()}
        first = next(iter(values.values()))
        if not all(math.isclose(v, first, rel_tol=rel_tol, abs_tol=abs_tol) for v in values.values()):
            rows.append(f"{key}: " + ", ".join(f"{name}={v:g}" for name, v in values.items()))
    return rows


def table(title: str, witnesses: Mapping[str, Mapping[tuple, float]], columns: Iterable[str]) -> str:
    """Every row with every witness's number: printed when a comparison fails."""
    keys = sorted({k for counts in witnesses.values() for k in counts})
    names = list(witnesses)
    lines = [title, "  " + " | ".join([*columns, *names])]
    for key in keys:
        numbers = [f"{witnesses[n].get(key, 0.0):g}" for n in names]
        flag = "" if len({*numbers}) == 1 else "   <-- differs"
        lines.append("  " + " | ".join([*key, *numbers]) + flag)
    return "\n".join(lines)

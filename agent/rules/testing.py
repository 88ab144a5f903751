"""`gatewatch rules test`: promtool-style unit tests for rule files.

```yaml
rule_files: [../latency.yml]          # relative to this file
values_files: []                      # optional threshold overrides
evaluation_interval: 15s              # optional; default: each group's own interval
catalog: litellm-config.yaml          # optional LiteLLM config for account/region attribution
tests:
  - name: slow deployment fires after `for`
    start_time: 2026-01-15T00:00:00Z  # optional (default: the epoch)
    input_events:
      - event: {model_group: gpt-lab, deployment: d1, latency: 25}   # Event fields
        at: 0s                        # first occurrence (relative to start_time)
        every: 10s                    # spacing
        count: 40                     # or `until: 6m40s`
      - fixture: generic_api_outage.json   # a LiteLLM capture / log file, times rebased to `at`
        at: 1m
    alert_rule_test:
      - eval_time: 2m
        alertname: SlowDeployment
        exp_alerts:                   # the FIRING alerts, exactly (labels without alertname)
          - exp_labels: {severity: warning, model_group: gpt-lab, deployment: d1}
            exp_annotations: {summary: "..."}   # checked for the keys given
        exp_pending: []               # optional: the PENDING alerts
```

Events go through the real enricher, the retry/fallback merge and the real rule engine,
with the clock driven by the test: evaluations happen at every group interval from
`start_time`, and each `eval_time` sees the state after the last evaluation at or before it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.configtypes import ConfigError
from agent.enrich import Catalog, Enricher, catalog_from_config_text
from agent.events import Event, Kind
from agent.pipeline import RequestTracker
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.loader import load_rule_set
from agent.rules.model import RuleSetError
from agent.rules.schema import parse_rule_duration
from agent.rules.yamlines import YamlError
from agent.rules.yamlines import load as load_yaml

TEST_KEYS = ("rule_files", "values_files", "evaluation_interval", "catalog", "tests")
CASE_KEYS = ("name", "start_time", "input_events", "alert_rule_test", "merge_window")
INPUT_KEYS = ("event", "fixture", "at", "every", "count", "until", "times", "set")
CHECK_KEYS = ("eval_time", "alertname", "exp_alerts", "exp_pending")
EXP_KEYS = ("exp_labels", "exp_annotations")
_EVENT_HINTS = typing.get_type_hints(Event)
_EVENT_FIELDS = {f.name for f in fields(Event)} - {"time", "input_messages", "output_messages"}


class TestFileError(ValueError):
    pass


class MemoryState:
    """The state backend, in memory (unit tests and benchmarks need no SQLite)."""

    name = "memory"

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.counters: dict[str, dict[str, float]] = {}
        self.claims: dict[str, str] = {}

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None

    async def get_json(self, key: str) -> Any | None:
        return self.docs.get(key)

    async def put_json(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.docs[key] = value

    async def delete(self, key: str) -> None:
        self.docs.pop(key, None)

    async def list_json(self, prefix: str) -> dict[str, Any]:
        return {k: v for k, v in self.docs.items() if k.startswith(prefix)}

    async def incr_many(self, key: str, amounts: dict[str, float], ttl: float | None = None) -> None:
        bucket = self.counters.setdefault(key, {})
        for name, amount in amounts.items():
            bucket[name] = bucket.get(name, 0.0) + amount

    async def get_counters(self, key: str) -> dict[str, float]:
        return dict(self.counters.get(key, {}))

    async def claim(self, key: str, owner: str, ttl: float) -> bool:
        return self.claims.setdefault(key, owner) == owner

    async def release(self, key: str, owner: str) -> None:
        if self.claims.get(key) == owner:
            del self.claims[key]

    def healthy(self) -> tuple[bool, str]:
        return True, "memory"


@dataclass
class CaseResult:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# -- input parsing ------------------------------------------------------------------


def _dur(value: Any, where: str) -> float:
    try:
        return parse_rule_duration(value, where)
    except ConfigError as exc:
        raise TestFileError(f"{where}: {exc.reason}") from None


def _start_time(value: Any, where: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TestFileError(f"{where}: expected an ISO time like 2026-01-15T00:00:00Z, got {value!r}") from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    raise TestFileError(f"{where}: expected an ISO time or epoch seconds, got {value!r}")


def event_from_template(template: dict[str, Any], t: float, where: str) -> Event:
    """An Event from a YAML mapping of its fields (kind defaults to request)."""
    kwargs: dict[str, Any] = {}
    for name, value in template.items():
        if name not in _EVENT_FIELDS:
            raise TestFileError(f"{where}: unknown event field {name!r}; expected Event fields such as "
                                "kind, model_group, deployment, status, latency, ttft, cost_usd, tags")
        kwargs[name] = _convert_field(name, value, where)
    kind = kwargs.pop("kind", Kind.REQUEST)
    if kind not in Kind.ALL:
        raise TestFileError(f"{where}: unknown kind {kind!r}; expected one of: {', '.join(Kind.ALL)}")
    if kwargs.get("status", "success") != "success" and "status_code" not in kwargs:
        kwargs["status_code"] = "500"
    return Event(kind=kind, time=t, **kwargs)


def _convert_field(name: str, value: Any, where: str) -> Any:
    hint = _EVENT_HINTS[name]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if hint is bool:
            return bool(value)
        if hint is str:
            return str(value)
        if hint is int:
            return int(value)
        if hint is float or (float in args and value is not None):
            return float(value)
        if origin is tuple:
            return tuple(str(v) for v in (value or []))
        if origin is dict or hint is dict:
            return dict(value or {})
    except (TypeError, ValueError):
        raise TestFileError(f"{where}.{name}: cannot use {value!r}") from None
    return value


def _resolve_fixture(name: str, base: Path) -> Path:
    candidates = [Path(name), base / name]
    if os.environ.get("GATEWATCH_FIXTURES"):
        candidates.append(Path(os.environ["GATEWATCH_FIXTURES"]) / name)
    repo = Path(__file__).resolve().parents[2]
    candidates.append(repo / "tests" / "fixtures" / "litellm" / name)  # a checkout's own captures
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise TestFileError(f"fixture {name!r} not found (looked next to the test file and in $GATEWATCH_FIXTURES)")


def _fixture_events(path: Path) -> list[Event]:
    from agent.replay import ReplayStats, events_from_file

    parser = None
    try:
        from agent.parse.logs import LogParser

        parser = LogParser()
    except ImportError:
        parser = None
    stats = ReplayStats()
    return [e for batch in events_from_file(path, stats, parser) for e in batch]


def build_inputs(items: Any, start: float, base: Path, where: str) -> list[tuple[float, int, Event, bool]]:
    """(time, order, event, explicit account/region) for every input event of a test case."""
    if not isinstance(items, list):
        raise TestFileError(f"{where}: expected a list")
    out: list[tuple[float, int, Event, bool]] = []
    seq = 0
    for i, item in enumerate(items):
        iwhere = f"{where}[{i}]"
        if not isinstance(item, dict) or ("event" in item) == ("fixture" in item):
            raise TestFileError(f"{iwhere}: expected a mapping with `event:` (fields) or `fixture:` (a file)")
        unknown = [k for k in item if k not in INPUT_KEYS]
        if unknown:
            raise TestFileError(f"{iwhere}.{unknown[0]}: unknown key; expected one of: {', '.join(INPUT_KEYS)}")
        at = _dur(item.get("at", 0), f"{iwhere}.at")
        every = _dur(item.get("every", "15s"), f"{iwhere}.every")
        if "times" in item:
            offsets = [_dur(x, f"{iwhere}.times") for x in (item["times"] or [])]
        else:
            if "until" in item:
                until = _dur(item["until"], f"{iwhere}.until")
                count = int((until - at) // every) + 1 if every > 0 else 1
            else:
                count = item.get("count", 1)
                if not isinstance(count, int) or count < 1:
                    raise TestFileError(f"{iwhere}.count: expected a positive whole number")
            offsets = [at + k * every for k in range(count)]
        overrides = item.get("set") or {}
        if not isinstance(overrides, dict):
            raise TestFileError(f"{iwhere}.set: expected a mapping of event fields")
        if "event" in item:
            template = item["event"]
            if not isinstance(template, dict):
                raise TestFileError(f"{iwhere}.event: expected a mapping of event fields")
            template = {**template, **overrides}
            explicit = "aws_account" in template or "aws_region" in template
            for offset in offsets:
                out.append((start + offset, seq, event_from_template(template, start + offset, f"{iwhere}.event"),
                            explicit))
                seq += 1
            continue
        events = _fixture_events(_resolve_fixture(str(item["fixture"]), base))
        if not events:
            continue
        first = min(e.time for e in events)
        for offset in offsets:
            for e in events:
                shift = start + offset - first
                copy = e.copy(time=e.time + shift,
                              start_time=e.start_time + shift if e.start_time is not None else None)
                for name, value in overrides.items():
                    if name not in _EVENT_FIELDS:
                        raise TestFileError(f"{iwhere}.set: unknown event field {name!r}")
                    setattr(copy, name, _convert_field(name, value, f"{iwhere}.set"))
                out.append((copy.time, seq, copy, "aws_account" in overrides or "aws_region" in overrides))
                seq += 1
    out.sort(key=lambda x: (x[0], x[1]))
    return out


# -- running ------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.received: list[Any] = []

    def receive(self, alerts: Sequence[Any]) -> None:
        self.received.extend(alerts)


def _label_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _fmt(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "[]"
    return "[" + ", ".join("{labels: " + str(dict(sorted(a["labels"].items()))) + ("" if not a.get("annotations")
                           else ", annotations: " + str(a["annotations"])) + "}" for a in alerts) + "]"


def _compare(kind: str, expected: Any, got: list[dict[str, Any]], where: str) -> list[str]:
    if expected is None:
        return []
    if not isinstance(expected, list):
        raise TestFileError(f"{where}: expected a list of alerts")
    exp_norm = []
    for i, item in enumerate(expected):
        if not isinstance(item, dict):
            raise TestFileError(f"{where}[{i}]: expected a mapping with exp_labels, exp_annotations")
        unknown = [k for k in item if k not in EXP_KEYS]
        if unknown:
            raise TestFileError(f"{where}[{i}].{unknown[0]}: unknown key; expected exp_labels, exp_annotations")
        labels = {str(k): str(v) for k, v in (item.get("exp_labels") or {}).items()}
        annotations = {str(k): str(v) for k, v in (item.get("exp_annotations") or {}).items()}
        exp_norm.append({"labels": labels, "annotations": annotations})
    exp_sorted = sorted(exp_norm, key=lambda a: _label_key(a["labels"]))
    got_sorted = sorted(got, key=lambda a: _label_key(a["labels"]))
    problems = []
    if [a["labels"] for a in exp_sorted] != [a["labels"] for a in got_sorted]:
        problems.append(f"{kind} alerts differ:\n        exp: {_fmt(exp_sorted)}\n        got: "
                        f"{_fmt([{'labels': a['labels']} for a in got_sorted])}")
        return problems
    for exp, actual in zip(exp_sorted, got_sorted, strict=True):
        for name, text in exp["annotations"].items():
            if actual["annotations"].get(name) != text:
                problems.append(f"{kind} alert {exp['labels']}: annotation {name!r}\n        exp: {text!r}\n"
                                f"        got: {actual['annotations'].get(name)!r}")
    return problems


async def run_case(rule_set: Any, case: dict[str, Any], base: Path, file: str, index: int,
                   catalog: Catalog, interval_override: float | None) -> CaseResult:
    where = f"tests[{index}]"
    if not isinstance(case, dict):
        raise TestFileError(f"{where}: expected a mapping")
    unknown = [k for k in case if k not in CASE_KEYS]
    if unknown:
        raise TestFileError(f"{where}.{unknown[0]}: unknown key; expected one of: {', '.join(CASE_KEYS)}")
    result = CaseResult(file, str(case.get("name") or f"test #{index + 1}"))
    start = _start_time(case.get("start_time"), f"{where}.start_time")
    inputs = build_inputs(case.get("input_events") or [], start, base, f"{where}.input_events")
    checks = case.get("alert_rule_test") or []
    if not isinstance(checks, list):
        raise TestFileError(f"{where}.alert_rule_test: expected a list")
    parsed_checks = []
    for i, check in enumerate(checks):
        cwhere = f"{where}.alert_rule_test[{i}]"
        if not isinstance(check, dict) or "eval_time" not in check or "alertname" not in check:
            raise TestFileError(f"{cwhere}: expected a mapping with eval_time, alertname, exp_alerts")
        unknown = [k for k in check if k not in CHECK_KEYS]
        if unknown:
            raise TestFileError(f"{cwhere}.{unknown[0]}: unknown key; expected one of: {', '.join(CHECK_KEYS)}")
        names = {r.alert for r in rule_set.rules()}
        if check["alertname"] not in names:
            raise TestFileError(f"{cwhere}.alertname: no rule named {check['alertname']!r} in the rule files")
        parsed_checks.append((start + _dur(check["eval_time"], f"{cwhere}.eval_time"), check, cwhere))
    merge_window = _dur(case.get("merge_window", "60s"), f"{where}.merge_window")

    clock = [start]
    engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), catalog,
                        receiver=_Recorder, clock=lambda: clock[0], run_loops=False)
    engine.apply(rule_set, start)
    enricher = Enricher(catalog)
    tracker = RequestTracker(merge_window, clock=lambda: clock[0])
    end = max([t for t, _, _ in parsed_checks] + [start])
    schedule: dict[float, list[Any]] = {}
    for group in engine.groups:
        interval = interval_override or group.group.interval
        k = 0
        while start + k * interval <= end + 1e-9:
            schedule.setdefault(round(start + k * interval, 6), []).append(group)
            k += 1
    points = sorted(set(schedule) | {round(t, 6) for t, _, _ in parsed_checks})
    pos = 0
    for point in points:
        batch: list[Event] = []
        while pos < len(inputs) and inputs[pos][0] <= point + 1e-9:
            t, _, event, explicit = inputs[pos]
            pos += 1
            clock[0] = t
            if not explicit:
                enricher.enrich(event)
            outcomes: list[Event] = []
            tracker.observe(event, outcomes)
            batch.append(event)
            batch.extend(outcomes)
        clock[0] = point
        batch.extend(tracker.expire(point))
        if batch:
            engine.handle(batch)
        for group in schedule.get(point, []):
            await engine.evaluate_group(group, point)
        for t, check, cwhere in parsed_checks:
            if abs(round(t, 6) - point) > 1e-9:
                continue
            name = check["alertname"]
            active = [(r, a) for r, a in engine.active_alerts() if r.rule.alert == name]
            for state, key in (("firing", "exp_alerts"), ("pending", "exp_pending")):
                got = [{"labels": {k: v for k, v in a.labels.items() if k != "alertname"},
                        "annotations": a.annotations} for _, a in active if a.state == state]
                expected = check.get(key, [] if key == "exp_alerts" else None)
                for problem in _compare(state, expected, got, f"{cwhere}.{key}"):
                    result.failures.append(f"alertname: {name}, time: {_fmt_offset(t - start)}: {problem}")
    return result


def _fmt_offset(seconds: float) -> str:
    seconds = round(seconds, 3)
    parts = []
    for size, unit in ((3600, "h"), (60, "m")):
        if seconds >= size:
            parts.append(f"{int(seconds // size)}{unit}")
            seconds -= (seconds // size) * size
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


async def run_file(path: str | Path) -> tuple[list[CaseResult], list[str]]:
    """Run one test file; returns (case results, file-level errors)."""
    path = Path(path)
    try:
        data, _ = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror or exc}"]
    except YamlError as exc:
        return [], [f"{path}:{exc.line}: {exc.message}"]
    if not isinstance(data, dict):
        return [], [f"{path}: a test file is a mapping with rule_files and tests"]
    unknown = [k for k in data if k not in TEST_KEYS]
    if unknown:
        return [], [f"{path}: {unknown[0]}: unknown key; expected one of: {', '.join(TEST_KEYS)}"]
    base = path.parent
    rule_files = [str(base / f) if not str(f).startswith("s3://") else str(f) for f in (data.get("rule_files") or [])]
    values_files = [str(base / f) for f in (data.get("values_files") or [])]
    if not rule_files:
        return [], [f"{path}: rule_files: list at least one rule file"]
    try:
        interval = _dur(data["evaluation_interval"], "evaluation_interval") if data.get("evaluation_interval") \
            else None
        rule_set = load_rule_set(rule_files, values_files)
        catalog = Catalog()
        if data.get("catalog"):
            from agent.config import read_text

            catalog = catalog_from_config_text(read_text(str(base / data["catalog"])), source=str(data["catalog"]))
    except RuleSetError as exc:
        return [], [f"{path}: rule files do not load:\n{exc}"]
    except (ConfigError, TestFileError) as exc:
        return [], [f"{path}: {exc}"]
    cases = data.get("tests") or []
    if not isinstance(cases, list) or not cases:
        return [], [f"{path}: tests: list at least one test"]
    results = []
    for i, case in enumerate(cases):
        try:
            results.append(await run_case(rule_set, case, base, str(path), i, catalog, interval))
        except TestFileError as exc:
            return results, [f"{path}: {exc}"]
    return results, []


def run_files(paths: Iterable[str | Path], out: Any = None) -> bool:
    """Run test files, print a promtool-like report; True when every test passed."""
    import sys

    out = out or sys.stdout
    ok = True
    for path in paths:
        print(f"Unit Testing: {path}", file=out)
        results, errors = asyncio.run(run_file(path))
        for error in errors:
            ok = False
            print(f"  ERROR: {error}", file=out)
        failed = [r for r in results if not r.ok]
        if failed:
            ok = False
            print("  FAILED:", file=out)
            for result in failed:
                print(f"    name: {result.name}", file=out)
                for failure in result.failures:
                    print(f"      {failure}", file=out)
        elif not errors:
            print(f"  SUCCESS ({len(results)} tests)", file=out)
    return ok

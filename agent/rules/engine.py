"""The rule engine: a Sink that feeds rule windows and a Component that evaluates them.

- `handle(events)` (ingest path): dispatch each event to the rules whose signal reads its
  kind; no I/O, only list appends and dict updates.
- one asyncio task per rule group evaluates it every `interval`, hands every firing alert
  (and each resolved one, once) to `app.alert_receiver`, persists alert state on change
  and flushes budget accumulators.
- reload (SIGHUP, `POST /-/reload`): the new files are read and validated first; a bad
  file keeps the running rules and says why. Unchanged rules keep their windows and
  alerts; a rule whose threshold/for/labels changed keeps its window.

The clock is injectable (`clock`), so tests and `gatewatch rules test` drive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.alert import Alert, AlertReceiver
from agent.configtypes import ConfigError
from agent.enrich import Catalog, task_identity
from agent.events import Event
from agent.rules.batch import BatchMemo
from agent.rules.budget import BudgetRule
from agent.rules.config import RuleEngineConfig
from agent.rules.evaluate import CompiledRule, make_window
from agent.rules.loader import load_rule_set
from agent.rules.model import Group, Rule, RuleSet, RuleSetError
from agent.rules.state import ActiveAlert, to_alert
from agent.state.base import StateBackend

if TYPE_CHECKING:
    from agent.config import Config

log = logging.getLogger(__name__)

ALERT_STATE_PREFIX = "gatewatch:rules:alerts:"
ALERT_STATE_TTL = 7 * 86400.0
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Runtime = CompiledRule | BudgetRule


@dataclass
class GroupRuntime:
    group: Group
    rules: list[Runtime]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_evaluation: float | None = None
    evaluation_seconds: float = 0.0


@dataclass
class ReloadStatus:
    ok: bool = True
    at: float = 0.0
    error: str = ""
    files: list[str] = field(default_factory=list)
    rules: int = 0
    kept: int = 0
    changed: int = 0
    added: int = 0
    removed: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RuleSink:
    """The ingest side, registered with `app.add_sink` (the engine itself is the component)."""

    name = "rules"

    def __init__(self, engine: RuleEngine) -> None:
        self.engine = engine

    def handle(self, events: Sequence[Event]) -> int:
        return self.engine.handle(events)

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None


class RuleEngine:
    name = "rule-engine"

    def __init__(self, settings: RuleEngineConfig, locations: list[str] | None, state: StateBackend,
                 catalog: Catalog | None = None, registry: CollectorRegistry | None = None,
                 receiver: Callable[[], AlertReceiver] | None = None, clock: Callable[[], float] = time.time,
                 run_loops: bool = True) -> None:
        self.settings = settings
        self.locations = locations
        self.state = state
        self.catalog = catalog
        self.clock = clock
        self.run_loops = run_loops
        self._receiver = receiver or (lambda: _NullReceiver())
        self.sink = RuleSink(self)
        self.rule_set = RuleSet()
        self.groups: list[GroupRuntime] = []
        self.rules: dict[str, Runtime] = {}
        self._observers: list[Callable[[BatchMemo], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.last_reload = ReloadStatus()
        self.observe_errors = 0
        self.started = False
        self.metrics = _Metrics(self, registry) if registry is not None else None
        # set by a shared state backend (agent/state/feature.py): (rule, make local window) -> window
        # for `scope: global` rules; None = every window is local
        self.shared_windows: Callable[[Rule, Callable[[], Any]], Any] | None = None
        self.task = ""  # this sidecar's task (ECS task ARN or host), named by `scope: local` alerts

    # -- ingest --------------------------------------------------------------------------
    def handle(self, events: Sequence[Event]) -> int:
        """Feed a batch to every rule: each rule reads the whole batch at once (agent/rules/batch.py),
        so what rules share (a kind filter, a signal, a `by` tuple) is computed once per batch.
        Returns how many events some rule could not take (the pipeline counts them)."""
        live = [e for e in events if not e.health_check]
        if not live:
            return 0
        batch = BatchMemo(live)
        failed: set[int] = set()
        for observe in self._observers:
            try:
                observe(batch)
            except Exception:  # a bad event must not stop the batch: redo this rule event by event
                self._observe_each(observe, batch, failed)
        if failed:
            self.observe_errors += len(failed)
        return len(failed)

    def _observe_each(self, observe: Callable[[BatchMemo], None], batch: BatchMemo, failed: set[int]) -> None:
        """The slow path after a rule raised on a batch: nothing of it was applied (a batch is read
        in full before anything is written), so each event goes in alone; the bad ones are
        counted (once per event, however many rules it breaks) and skipped."""
        logged = False
        for e in batch.events:
            try:
                observe(BatchMemo([e]))
            except Exception:
                failed.add(id(e))
                if not logged:
                    logged = True
                    log.exception("rule window update failed for a %s event", e.kind)

    def _index(self) -> None:
        self._observers = [runtime.observe_batch for runtime in self.rules.values() if runtime.kinds]

    # -- loading -----------------------------------------------------------------------
    def load(self) -> RuleSet:
        """Read and validate the configured files (blocking: run in an executor)."""
        try:
            return load_rule_set(self.locations, self.settings.values, float(self.settings.default_interval))
        except ConfigError as exc:  # e.g. an unreadable s3:// prefix
            raise RuleSetError([_as_rule_error(exc)]) from None

    def apply(self, rule_set: RuleSet, now: float | None = None) -> list[Alert]:
        """Swap in a validated rule set, keeping what unchanged rules know; returns alerts to resolve."""
        now = self.clock() if now is None else now
        old = self.rules
        new: dict[str, Runtime] = {}
        resolve: list[Alert] = []
        status = ReloadStatus(ok=True, at=now, files=list(rule_set.files), rules=len(rule_set))
        groups = []
        for group in rule_set.groups:
            runtimes: list[Runtime] = []
            for rule in group.rules:
                runtime, outcome, gone = self._carry(rule, old.get(rule.id), now)
                setattr(status, outcome, getattr(status, outcome) + 1)
                resolve.extend(to_alert(a, group.name, rule.scope, now) for a in gone)
                new[rule.id] = runtime
                runtimes.append(runtime)
            groups.append(GroupRuntime(group, runtimes))
        for rule_id, runtime in old.items():
            if rule_id not in new:
                status.removed += 1
                resolve.extend(to_alert(a, runtime.rule.group, runtime.rule.scope, now)
                               for a in runtime.states.active.values() if a.state == "firing")
        self.rule_set = rule_set
        self.rules = new
        self.groups = groups
        self._index()
        self.last_reload = status
        return resolve

    def _carry(self, rule: Rule, prev: Runtime | None, now: float) -> tuple[Runtime, str, list[ActiveAlert]]:
        budget = rule.budget is not None
        if prev is None or (prev.rule.budget is not None) != budget:
            return (self._budget(rule) if budget else self._compiled(rule)), "added", []
        if prev.rule.digest == rule.digest:
            prev.rule = rule
            return prev, "kept", []
        same_window = prev.rule.window_identity() == rule.window_identity()
        if budget:
            runtime: Runtime = self._budget(rule)
            if same_window:
                assert isinstance(prev, BudgetRule) and isinstance(runtime, BudgetRule)
                runtime.pending, runtime.totals, runtime.period = prev.pending, prev.totals, prev.period
                runtime.loaded = prev.loaded
        else:
            window = prev.window if same_window and isinstance(prev, CompiledRule) else None
            runtime = self._compiled(rule, window)
            if not same_window:
                runtime.states.hold_until = now + rule.over  # the new window must fill first
        runtime.states.active = prev.states.active
        gone = runtime.states.relabel(runtime.labels_for)
        return runtime, "changed", gone

    def _budget(self, rule: Rule) -> BudgetRule:
        return BudgetRule(rule, self.clock, self.settings.max_series_per_rule)

    def _compiled(self, rule: Rule, window: Any = None) -> CompiledRule:
        max_series = self.settings.max_series_per_rule
        if window is None and rule.scope == "global" and self.shared_windows is not None:
            window = self.shared_windows(rule, lambda: make_window(rule, self.clock, max_series))
        return CompiledRule(rule, self.clock, max_series, window=window,
                            header_max_age=float(self.settings.header_max_age))

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if not self.task:
            self.task = await task_identity()
        loop = asyncio.get_running_loop()
        try:
            rule_set = await loop.run_in_executor(None, self.load)
        except RuleSetError as exc:
            raise ConfigError("rules", f"invalid rule files:\n{exc}") from None
        self.apply(rule_set)
        for runtime in self.rules.values():  # budgets know the stored label sets before the first event
            if isinstance(runtime, BudgetRule):
                try:
                    await runtime.sync(self.state, self.clock())
                except Exception:
                    log.exception("loading budget %s failed; it loads at its first evaluation", runtime.rule.id)
        if self.settings.persist_alerts:
            await self._restore()
        self.started = True
        log.info("rules: %d rules in %d groups from %d files", len(rule_set), len(rule_set.groups),
                 len(rule_set.files))
        if self.run_loops:
            self._start_loops()

    async def stop(self, deadline: float) -> None:
        """Stop the loops, then write pending budget increments and alert state until `deadline`."""
        await self._stop_loops()
        if not self.started:
            return
        for runtime in self.rules.values():
            if time.monotonic() >= deadline:
                log.error("rules: shutdown deadline reached; budgets not yet synced are left unsynced")
                break
            if isinstance(runtime, BudgetRule) and runtime.pending:
                try:
                    await runtime.sync(self.state, self.clock())
                except Exception:
                    log.exception("flushing budget %s at shutdown failed", runtime.rule.id)
        if self.settings.persist_alerts:
            for group in self.groups:
                await self._persist(group)

    async def pause(self) -> None:
        """Stop the evaluation loops (tests drive `evaluate_group` with their own clock)."""
        self.run_loops = False
        await self._stop_loops()

    def _start_loops(self) -> None:
        for group in self.groups:
            self._tasks.append(asyncio.create_task(self._run_group(group), name=f"rules-{group.group.name}"))

    async def _stop_loops(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for group in self.groups:  # an evaluation in flight (shielded) finishes before anything changes
            async with group.lock:
                pass

    async def _run_group(self, group: GroupRuntime) -> None:
        interval = group.group.interval
        # spread groups over the interval (like Prometheus), stable per name
        offset = (zlib.crc32(group.group.name.encode()) % 1000) / 1000.0 * interval
        while True:
            wall = time.time()
            await asyncio.sleep(interval - ((wall - offset) % interval))
            try:
                # shielded: stopping the loop never cuts an evaluation (and its budget flush) in half
                await asyncio.shield(self.evaluate_group(group))
            except asyncio.CancelledError:
                raise
            except Exception:  # evaluate_group counts its own failures; this is a last resort
                log.exception("rule group %s evaluation crashed", group.group.name, extra={"group": group.group.name})

    # -- evaluation --------------------------------------------------------------------
    async def evaluate_all(self, now: float | None = None) -> list[Alert]:
        out: list[Alert] = []
        for group in list(self.groups):
            out.extend(await self.evaluate_group(group, now))
        return out

    def group(self, name: str) -> GroupRuntime | None:
        return next((g for g in self.groups if g.group.name == name), None)

    async def evaluate_group(self, group: GroupRuntime | str, now: float | None = None) -> list[Alert]:
        """Evaluate one group at `now` and hand the alerts to the receiver; returns them."""
        if isinstance(group, str):
            found = self.group(group)
            if found is None:
                raise KeyError(group)
            group = found
        async with group.lock:
            now = self.clock() if now is None else now
            started = time.perf_counter()
            name = group.group.name
            alerts: list[Alert] = []
            changed = False
            failed = False
            for runtime in group.rules:
                rule_started = time.perf_counter()
                try:
                    if isinstance(runtime, BudgetRule):
                        await runtime.sync(self.state, now)
                        transitions = runtime.evaluate(now)
                    else:
                        refresh = getattr(runtime.window, "refresh", None)
                        if refresh is not None:  # a shared window: read every sidecar's buckets first
                            await refresh(now)
                        transitions = runtime.evaluate(now, self.catalog)
                except Exception as exc:
                    failed = True
                    runtime.health = "err"
                    runtime.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("rule %s failed to evaluate", runtime.rule.id, extra={"rule": runtime.rule.id})
                    continue
                runtime.health = "ok"
                runtime.last_error = ""
                runtime.last_evaluation = now
                runtime.evaluation_seconds = time.perf_counter() - rule_started
                changed = changed or transitions.changed
                scope = runtime.rule.scope
                unit, task = runtime.unit, self.task
                alerts.extend(to_alert(a, name, scope, unit=unit, task=task) for a in transitions.firing)
                alerts.extend(to_alert(a, name, scope, at, unit=unit, task=task) for a, at in transitions.resolved)
            group.last_evaluation = now
            group.evaluation_seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe(name, group.evaluation_seconds, failed)
            if alerts:
                self._send(alerts)
            if changed and self.settings.persist_alerts:
                await self._persist(group)
            return alerts

    def _send(self, alerts: list[Alert]) -> None:
        try:
            self._receiver().receive(alerts)
        except Exception:  # the receiver must not break evaluation; it is retried next interval
            log.exception("alert receiver failed on %d alerts", len(alerts))

    # -- persistence ---------------------------------------------------------------------
    def _persisted(self, rule: Rule) -> bool:
        """With a state backend shared by every task (Redis), only `scope: global` alerts are the
        service's: a local alert saved by one task must not be restored (and resolved) by another."""
        return rule.scope == "global" or not getattr(self.state, "shared", False)

    async def _persist(self, group: GroupRuntime) -> None:
        doc = {runtime.rule.id: {"digest": runtime.rule.digest,
                                 "alerts": [a.to_json() for a in runtime.states.active.values()]}
               for runtime in group.rules if runtime.states.active and self._persisted(runtime.rule)}
        try:
            if doc:
                await self.state.put_json(ALERT_STATE_PREFIX + group.group.name, doc, ttl=ALERT_STATE_TTL)
            else:
                await self.state.delete(ALERT_STATE_PREFIX + group.group.name)
        except Exception:
            log.exception("saving alert state of group %s failed", group.group.name)

    async def _restore(self) -> None:
        try:
            docs = await self.state.list_json(ALERT_STATE_PREFIX)
        except Exception:
            log.exception("reading saved alert state failed; starting with no active alerts")
            return
        now = self.clock()
        restored = 0
        for doc in docs.values():
            if not isinstance(doc, dict):
                continue
            for rule_id, saved in doc.items():
                runtime = self.rules.get(rule_id)
                if runtime is None or not isinstance(saved, dict) or not self._persisted(runtime.rule):
                    continue
                for item in saved.get("alerts") or []:
                    try:
                        alert = ActiveAlert.from_json(item)
                    except (KeyError, TypeError, ValueError):
                        continue
                    if runtime.labels_for(alert.key) != alert.labels:
                        continue  # the rule's labels changed while we were down
                    runtime.states.active[alert.key] = alert
                    restored += 1
                if isinstance(runtime, CompiledRule):
                    runtime.states.hold_until = now + runtime.rule.over
        if restored:
            log.info("restored %d pending/firing alerts from the state backend", restored)

    # -- reload ----------------------------------------------------------------------------
    async def reload(self, locations: list[str] | None = None, settings: RuleEngineConfig | None = None
                     ) -> ReloadStatus:
        """Re-read the rule files; on any error keep the running rules and report why."""
        old_locations, old_settings = self.locations, self.settings
        if settings is not None:
            self.settings = settings
        self.locations = locations
        loop = asyncio.get_running_loop()
        try:
            rule_set = await loop.run_in_executor(None, self.load)
        except RuleSetError as exc:
            self.locations, self.settings = old_locations, old_settings
            self.last_reload = ReloadStatus(ok=False, at=self.clock(), error=str(exc),
                                            files=list(self.rule_set.files), rules=len(self.rule_set))
            if self.metrics is not None:
                self.metrics.reloads.labels("error").inc()
            log.error("rules reload refused, keeping the %d running rules:\n%s", len(self.rule_set), exc)
            return self.last_reload
        await self._stop_loops()
        resolve = self.apply(rule_set)
        if resolve:
            self._send(resolve)
        if self.settings.persist_alerts:
            for group in self.groups:
                await self._persist(group)
        if self.run_loops and self.started:
            self._start_loops()
        if self.metrics is not None:
            self.metrics.reloads.labels("ok").inc()
        s = self.last_reload
        log.info("rules reloaded: %d rules (%d kept, %d changed, %d added, %d removed)", s.rules, s.kept, s.changed,
                 s.added, s.removed)
        return s

    async def reload_config(self, config: Config) -> None:
        """`app.reload_hooks` entry: new config -> new rule locations and settings."""
        await self.reload(config.rules, getattr(config, "rule_engine", self.settings))

    # -- views for the API, metrics and `check-config` -----------------------------------
    def active_alerts(self) -> list[tuple[Runtime, ActiveAlert]]:
        return [(r, a) for r in self.rules.values() for a in r.states.active.values()]

    def ready(self) -> tuple[bool, str]:
        detail = f"{len(self.rule_set)} rules in {len(self.groups)} groups"
        if not self.last_reload.ok:
            detail += "; last reload failed (running the previous rules)"
        failing = [r for r in self.rules.values() if r.health == "err"]
        if failing:  # cleared by the next evaluation that works (gatewatch_rule_evaluation_failures_total)
            detail += f"; degraded: {len(failing)} rule(s) failing: " + "; ".join(
                f"{r.rule.id}: {r.last_error}"[:200] for r in failing[:3])
        return self.started, detail


class _NullReceiver:
    def receive(self, alerts: Sequence[Alert]) -> None:
        return None


def _as_rule_error(exc: ConfigError) -> Any:
    from agent.rules.model import RuleError

    return RuleError(exc.file or "rules", 0, exc.key_path, exc.reason)


class _Metrics:
    def __init__(self, engine: RuleEngine, registry: CollectorRegistry) -> None:
        self.evaluations = Counter("gatewatch_rule_evaluations", "Rule group evaluations.", ["group"],
                                   registry=registry)
        self.failures = Counter("gatewatch_rule_evaluation_failures",
                                "Rule group evaluations in which at least one rule failed.", ["group"],
                                registry=registry)
        self.duration = Histogram("gatewatch_rule_evaluation_duration_seconds", "Time to evaluate a rule group.",
                                  ["group"], buckets=DURATION_BUCKETS, registry=registry)
        self.reloads = Counter("gatewatch_rule_reloads", "Rule file reloads by outcome.", ["outcome"],
                               registry=registry)
        registry.register(_EngineCollector(engine))

    def observe(self, group: str, seconds: float, failed: bool) -> None:
        self.evaluations.labels(group).inc()
        self.duration.labels(group).observe(seconds)
        failures = self.failures.labels(group)  # exported as 0 until the first failure
        if failed:
            failures.inc()


class _EngineCollector(Collector):
    """Gauges read from the engine at scrape time (no stale series to clean up)."""

    BUDGET_KEYS_PER_RULE = 100

    def __init__(self, engine: RuleEngine) -> None:
        self.engine = engine

    def describe(self):
        return []

    def collect(self):
        engine = self.engine
        alerts = GaugeMetricFamily("gatewatch_alerts", "Active alerts by name, severity and state.",
                                   labels=["alertname", "severity", "state"])
        counts: dict[tuple[str, str, str], int] = {}
        for runtime, alert in engine.active_alerts():
            key = (runtime.rule.alert, alert.labels.get("severity", ""), alert.state)
            counts[key] = counts.get(key, 0) + 1
        for runtime in engine.rules.values():  # zero rows so alerts that stop show 0, not vanish
            for state in ("pending", "firing"):
                counts.setdefault((runtime.rule.alert, runtime.rule.labels.get("severity", ""), state), 0)
        for key, value in sorted(counts.items()):
            alerts.add_metric(list(key), value)
        yield alerts
        series = GaugeMetricFamily("gatewatch_rule_series", "Label sets a rule currently tracks.",
                                   labels=["group", "alertname"])
        dropped = CounterMetricFamily("gatewatch_rule_series_dropped", "Observations refused by a rule's series "
                                      "limit (rule_engine.max_series_per_rule); for budgets, folded into the "
                                      "__overflow__ key.", labels=["group", "alertname"])
        late = CounterMetricFamily("gatewatch_rule_late_observations", "Observations older than the rule's window, "
                                   "dropped.", labels=["group", "alertname"])
        spend = GaugeMetricFamily("gatewatch_budget_spend", "Spend of the current budget period (largest keys).",
                                  labels=["rule", "key", "period"])
        usage = GaugeMetricFamily("gatewatch_budget_usage_ratio", "Spend / limit of the current budget period.",
                                  labels=["rule", "key", "period"])
        for runtime in engine.rules.values():
            rule = runtime.rule
            name = rule.id.split("/", 1)[1]  # alert name, with #n when a group repeats it
            series.add_metric([rule.group, name], runtime.series())
            if isinstance(runtime, CompiledRule):
                dropped.add_metric([rule.group, name], getattr(runtime.window, "dropped", 0))
                late.add_metric([rule.group, name], getattr(runtime.window, "late", 0))
            else:
                dropped.add_metric([rule.group, name], runtime.dropped)
                for key, amount, limit in runtime.top(self.BUDGET_KEYS_PER_RULE):
                    label = ",".join(key)
                    spend.add_metric([rule.id, label, runtime.period.id], amount)
                    if limit:
                        usage.add_metric([rule.id, label, runtime.period.id], amount / limit)
        yield series
        yield dropped
        yield late
        yield spend
        yield usage
        loaded = GaugeMetricFamily("gatewatch_rules_loaded", "Rules currently evaluated.")
        loaded.add_metric([], len(engine.rules))
        yield loaded
        ok = GaugeMetricFamily("gatewatch_rules_last_reload_successful", "1 if the last rule (re)load worked.")
        ok.add_metric([], 1.0 if engine.last_reload.ok else 0.0)
        yield ok



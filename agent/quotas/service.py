"""The quota headroom component: limits from Service Quotas, use from three views, utilization.

Three loops, none of them on the event loop's time: Service Quotas every
`quotas.refresh_interval` (sooner after a failure; the last values are kept), the
account-wide CloudWatch read every `quotas.account_usage_interval`, and an evaluation every
`quotas.evaluate_interval` that turns limits and use into the gauges and into `Kind.QUOTA`
events for the rules. Utilization is the highest *fresh* view: the proxy's completed and
reserved use are always fresh; a CloudWatch datapoint only within `account_usage_freshness`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.enrich import Catalog
from agent.events import UNKNOWN, Event, Kind
from agent.quotas.account import AccountUse, read_account_use
from agent.quotas.config import QuotasConfig
from agent.quotas.credentials import SessionCache
from agent.quotas.mapping import ListedQuota, MatchedQuota, ModelTable, match_quotas, quota_name_candidates
from agent.quotas.plan import Plan, build_plan, litellm_params_by_id
from agent.quotas.servicequotas import list_bedrock_quotas
from agent.quotas.usage import VIEWS, QuotaTarget, UsageRecorder

log = logging.getLogger(__name__)

FORECAST_WINDOW = 300.0  # seconds of utilization history the exhaustion slope is fitted on
FORECAST_MIN_SPAN = 45.0


@dataclass
class QuotaRow:
    """One quota of one account/region/model, with its use in each view."""

    aws_account: str
    aws_region: str
    model: str
    inference: str
    quota: str
    matched: MatchedQuota
    deployments: list[str]
    use: dict[str, float] = field(default_factory=dict)  # view -> use over the quota's period
    view_utilization: dict[str, float] = field(default_factory=dict)
    utilization: float = 0.0
    view: str = "completed"
    exhaustion_minutes: float | None = None

    @property
    def labels(self) -> tuple[str, str, str, str, str]:
        return (self.aws_account, self.aws_region, self.model, self.quota, self.inference)


@dataclass
class Unmatched:
    deployment: str
    model: str
    aws_account: str
    aws_region: str
    reason: str


class QuotaService:
    """Owns the quota loops; installed by agent/quotas/feature.py, read by the CLI and the collector."""

    name = "quotas"

    def __init__(self, config: QuotasConfig, catalog: Catalog, config_text: Callable[[], str | None],
                 publish: Callable[[Sequence[Event]], None], recorder: UsageRecorder,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.catalog = catalog
        self.config_text = config_text
        self.publish = publish
        self.recorder = recorder
        self.clock = clock
        self.table = ModelTable.load(config.models)
        self.sessions = SessionCache()
        self.plan = Plan()
        self.limits: dict[tuple[str, str], list[ListedQuota]] = {}  # last known per account/region
        self.limit_errors: dict[tuple[str, str], str] = {}
        self.refreshed_at: dict[tuple[str, str], float] = {}
        self.account_use: dict[tuple[str, str], dict[str, AccountUse]] = {}
        self.account_errors: dict[tuple[str, str], str] = {}
        self.matches: dict[str, dict[str, MatchedQuota]] = {}
        self.rows: list[QuotaRow] = []
        self.unmatched: list[Unmatched] = []
        self.history: dict[tuple[str, ...], deque[tuple[float, float]]] = {}
        self.calls: dict[tuple[str, str], int] = {}  # (api, outcome) -> count
        self.throttled: dict[str, int] = {}  # api -> throttled attempts (retried by botocore)
        self._tasks: list[asyncio.Task[None]] = []
        self._limits_lock = asyncio.Lock()
        # set by the feature when the CloudWatch sink is on: (rows, timestamp) -> queued with its next interval
        self.cloudwatch: Callable[[list[tuple[dict[str, str], dict[str, float]]], float], None] | None = None
        self.cloudwatch_interval = 60.0
        self._cloudwatch_last = 0.0
        self._params: dict[str, Any] = {}
        self._signature: tuple[Any, ...] = ()
        self._refresh_task: asyncio.Task[bool] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._limits_loop(), name="quotas-limits"),
                       asyncio.create_task(self._evaluate_loop(), name="quotas-evaluate")]
        if self.config.account_usage_interval:
            self._tasks.append(asyncio.create_task(self._account_loop(), name="quotas-account"))

    async def stop(self, deadline: float) -> None:
        if self._refresh_task is not None:
            self._tasks.append(self._refresh_task)  # type: ignore[arg-type]
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _limits_loop(self) -> None:
        while True:
            try:
                failed = await self.refresh_limits()
            except Exception:  # a bug or an unreadable LiteLLM config: keep what we have, try again soon
                log.exception("quotas: refresh failed")
                failed = True
            await asyncio.sleep(min(self.config.refresh_interval, 60.0) if failed else self.config.refresh_interval)

    async def _account_loop(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.config.account_usage_interval))  # let the first limits read start
            try:
                await self.refresh_account_use()
            except Exception:
                log.exception("quotas: AWS/Bedrock metrics read failed")
            await asyncio.sleep(max(0.0, self.config.account_usage_interval - 5.0))

    async def _evaluate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.evaluate_interval)
            try:
                await self.evaluate()
            except Exception:
                log.exception("quota evaluation failed")

    # -- limits ------------------------------------------------------------------------
    def catalog_signature(self) -> tuple[Any, ...]:
        return tuple((d.id, d.model, d.provider, d.aws_account, d.aws_region) for d in self.catalog
                     if d.provider == "bedrock") + (self.catalog.fallback,)

    def build_plan(self, params: dict[str, Any] | None = None) -> Plan:
        """Re-read the LiteLLM config's credentials (blocking) unless `params` are given; rebuild the plan."""
        if params is None:
            params = litellm_params_by_id(self.config_text())
        self._params = params
        self._signature = self.catalog_signature()
        fallback = self.catalog.fallback
        self.plan = build_plan(self.catalog, params, self.table, self.config.roles,
                               fallback.aws_account, fallback.aws_region)
        self.recorder.targets = {d.deployment: QuotaTarget(d.target_key, d.info) for d in self.plan.deployments
                                 if not d.problem}
        return self.plan

    def _count(self, api: str, outcome: str) -> None:
        self.calls[(api, outcome)] = self.calls.get((api, outcome), 0) + 1

    def _throttle(self, api: str) -> Callable[[], None]:
        def seen() -> None:
            self.throttled[api] = self.throttled.get(api, 0) + 1
        return seen

    async def refresh_limits(self) -> bool:
        """Re-read every account/region's Bedrock quotas; True when one of them failed."""
        async with self._limits_lock:
            loop = asyncio.get_running_loop()
            plan = await loop.run_in_executor(None, self.build_plan)
            failed = False
            for (account, region), source in plan.accounts().items():
                call = functools.partial(list_bedrock_quotas, self.sessions, source, region, self.config.max_attempts,
                                         self._throttle("list_service_quotas"))
                try:
                    listed = await loop.run_in_executor(None, call)
                except Exception as exc:  # botocore already retried: keep the last values
                    failed = True
                    self._count("list_service_quotas", "error")
                    self.limit_errors[(account, region)] = _describe(exc)
                    log.warning("quotas: Service Quotas for %s/%s not read (%s); keeping the last values",
                                account, region, _describe(exc))
                    continue
                self._count("list_service_quotas", "ok")
                self.limits[(account, region)] = listed
                self.limit_errors.pop((account, region), None)
                self.refreshed_at[(account, region)] = self.clock()
                self.match()  # at once: an evaluation may run while the next account is read
            self.match()
            return failed

    def match(self) -> None:
        matches: dict[str, dict[str, MatchedQuota]] = {}
        for d in self.plan.deployments:
            listed = self.limits.get((d.aws_account, d.aws_region))
            if d.problem or listed is None or d.ref is None or d.info is None:
                continue
            matches[d.deployment] = match_quotas(d.ref, d.info, listed)
        self.matches = matches

    def why_unmatched(self, d: Any) -> str:
        if d.problem:
            return d.problem
        where = (d.aws_account, d.aws_region)
        if where not in self.limits:
            error = self.limit_errors.get(where)
            return f"Service Quotas not read for {d.aws_account}/{d.aws_region}: {error}" if error else ""
        if d.deployment not in self.matches:
            return ""  # read, but not matched yet
        if not self.matches[d.deployment]:
            names = quota_name_candidates("tokens_per_minute", d.ref.inference, d.info.quota_names[0],
                                          d.ref.invoked.startswith("global."))
            aliases = ", ".join(repr(n) for n in d.info.quota_names[1:]) or "any alias"
            return (f"no quota named {names[-1]!r} (nor {aliases})"
                    f" among the {len(self.limits[where])} Bedrock quotas of {d.aws_account}/{d.aws_region}")
        return ""

    # -- account-wide use --------------------------------------------------------------
    async def refresh_account_use(self) -> None:
        loop = asyncio.get_running_loop()
        models: dict[tuple[str, str], set[str]] = {}
        for d in self.plan.deployments:
            if d.deployment in self.matches and d.ref is not None:
                models.setdefault((d.aws_account, d.aws_region), set()).add(d.ref.invoked)
        sources = self.plan.accounts()
        for where, ids in models.items():
            call = functools.partial(read_account_use, self.sessions, sources[where], where[1], sorted(ids),
                                     self.clock(), self.config.max_attempts, self._throttle("get_metric_data"))
            try:
                self.account_use[where] = await loop.run_in_executor(None, call)
                self.account_errors.pop(where, None)
                self._count("get_metric_data", "ok")
            except Exception as exc:  # keep the last datapoints; they age out by freshness
                self._count("get_metric_data", "error")
                self.account_errors[where] = _describe(exc)
                log.warning("quotas: AWS/Bedrock metrics for %s/%s not read (%s)", where[0], where[1], _describe(exc))

    # -- evaluation --------------------------------------------------------------------
    def follow_catalog(self) -> None:
        """The catalog was reloaded (SIGHUP, refresh): re-plan now, and read new accounts without
        waiting for the hourly refresh."""
        if self.catalog_signature() == self._signature:
            return
        self.build_plan(self._params)
        self.match()
        new = set(self.plan.accounts()) - set(self.limits) - set(self.limit_errors)
        if new and (self._refresh_task is None or self._refresh_task.done()):
            self._refresh_task = asyncio.get_running_loop().create_task(self.refresh_limits())

    async def evaluate(self, now: float | None = None) -> list[Event]:
        now = self.clock() if now is None else now
        if self._signature:
            self.follow_catalog()
        minute = await self.recorder.per_minute(now)
        day = await self.recorder.per_day(now)
        self.recorder.forget(now)
        fresh_after = now - self.config.account_usage_freshness
        rows: dict[tuple[str, ...], QuotaRow] = {}
        unmatched: list[Unmatched] = []
        for d in self.plan.deployments:
            matched = self.matches.get(d.deployment)
            if not matched:
                reason = self.why_unmatched(d)
                if reason:
                    unmatched.append(Unmatched(d.deployment, d.model, d.aws_account, d.aws_region, reason))
                continue
            assert d.ref is not None
            key = d.target_key
            account = self.account_use.get((d.aws_account, d.aws_region), {}).get(d.ref.invoked)
            for quota, m in matched.items():
                row_key = (key, quota)
                if row_key in rows:
                    rows[row_key].deployments.append(d.deployment)
                    continue
                row = QuotaRow(d.aws_account, d.aws_region, d.ref.invoked, d.ref.inference, quota, m, [d.deployment])
                for view in ("completed", "reserved"):
                    if quota == "tokens_per_day":
                        row.use[view] = day.get(f"{key}|{view}", 0.0)
                    else:
                        row.use[view] = minute.get(f"{key}|{view}", (0.0, 0.0))[0 if quota == "tokens_per_minute"
                                                                                 else 1]
                if account is not None and quota == "tokens_per_minute" and account.tpm is not None \
                        and (account.tpm_time or 0) >= fresh_after:
                    row.use["account"] = account.tpm
                elif account is not None and quota == "requests_per_minute" and account.invocations is not None \
                        and (account.invocations_time or 0) >= fresh_after:
                    row.use["account"] = account.invocations
                if m.value > 0:
                    row.view_utilization = {v: u / m.value for v, u in row.use.items()}
                    row.view = max(VIEWS, key=lambda v: row.view_utilization.get(v, -1.0))
                    row.utilization = row.view_utilization[row.view]
                row.exhaustion_minutes = self._forecast(row_key, now, row.utilization)
                rows[row_key] = row
        self.rows = list(rows.values())
        self.unmatched = unmatched
        if self.cloudwatch is not None and self.rows and now - self._cloudwatch_last >= self.cloudwatch_interval:
            self._cloudwatch_last = now
            self.cloudwatch(cloudwatch_rows(self.rows), now)
        events = [self._event(row, now) for row in self.rows] + [self._unmatched_event(u, now) for u in unmatched]
        if events:
            self.publish(events)
        return events

    def _forecast(self, key: tuple[str, ...], now: float, utilization: float) -> float | None:
        """Minutes until 100 % at the slope of the last few minutes; None when not rising."""
        points = self.history.setdefault(key, deque())
        points.append((now, utilization))
        while points and points[0][0] < now - FORECAST_WINDOW:
            points.popleft()
        if utilization >= 1.0:
            return 0.0
        if len(points) < 3 or points[-1][0] - points[0][0] < FORECAST_MIN_SPAN:
            return None
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_u = sum(u for _, u in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points)
        if var <= 0:
            return None
        slope = sum((t - mean_t) * (u - mean_u) for t, u in points) / var  # per second
        if slope <= 0:
            return None
        return (1.0 - utilization) / slope / 60.0

    def _event(self, row: QuotaRow, now: float) -> Event:
        attrs: dict[str, Any] = {"quota": row.quota, "inference": row.inference, "view": row.view,
                                 "quota_code": row.matched.code, "quota_name": row.matched.name,
                                 "limit": row.matched.value}
        if row.exhaustion_minutes is not None:
            attrs["exhaustion_minutes"] = row.exhaustion_minutes
        return Event(kind=Kind.QUOTA, time=now, source="quotas", model=row.model, api_provider="bedrock",
                     aws_account=row.aws_account, aws_region=row.aws_region, value=row.utilization, attrs=attrs)

    def _unmatched_event(self, u: Unmatched, now: float) -> Event:
        return Event(kind=Kind.QUOTA, time=now, source="quotas", model=u.model, api_provider="bedrock",
                     deployment=u.deployment, aws_account=u.aws_account or UNKNOWN,
                     aws_region=u.aws_region or UNKNOWN,
                     attrs={"unmatched": u.reason})


def cloudwatch_rows(rows: Sequence[QuotaRow]) -> list[tuple[dict[str, str], dict[str, float]]]:
    """The same numbers for CloudWatch: QuotaLimit, QuotaUtilization and one QuotaUtilization<View> per view."""
    out = []
    for row in rows:
        dims = {"AwsAccount": row.aws_account, "AwsRegion": row.aws_region, "Model": row.model, "Quota": row.quota,
                "Inference": row.inference}
        values = {"QuotaLimit": row.matched.value, "QuotaUtilization": row.utilization}
        for view, value in row.view_utilization.items():
            values[f"QuotaUtilization{view.capitalize()}"] = value
        out.append((dims, values))
    return out


def _describe(exc: BaseException) -> str:
    """An AWS error without anything secret: the error code and message, or the exception type."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        return f"{error.get('Code', type(exc).__name__)}: {str(error.get('Message', ''))[:200]}"
    return type(exc).__name__

"""Helpers for the notification tests: a fake clock, alerts, a receiver process, polling."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from agent.alert import Alert
from tests.conftest import ROOT, free_port


class FakeClock:
    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def alert(name: str = "SlowDeployment", state: str = "firing", value: float | None = 25.0, at: float = 0.0,
          resolved_at: float | None = None, annotations: dict[str, str] | None = None, **labels: str) -> Alert:
    return Alert(labels={"alertname": name, **labels}, annotations=annotations or {}, state=state,  # type: ignore[arg-type]
                 value=value, active_at=at, fired_at=at, resolved_at=resolved_at)


async def until(check: Callable[[], Awaitable[Any] | Any], limit: float = 20.0, interval: float = 0.05,
                what: str = "condition") -> Any:
    """Poll until `check()` is truthy; fail with `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(interval)


class ReceiverProcess:
    """tests/notify_receiver.py in its own process (a real peer that can fail, hang, throttle)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.notify_receiver", str(self.port)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if b"READY" not in line:
            self.proc.kill()
            raise RuntimeError(f"receiver did not start: {line!r}")

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    async def control(self, **mode: Any) -> None:
        async with aiohttp.ClientSession() as session, session.post(self.base + "/_control", json=mode) as response:
            assert response.status == 200

    async def reset(self) -> None:
        async with aiohttp.ClientSession() as session, session.post(self.base + "/_reset") as response:
            assert response.status == 200

    async def received(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(self.base + "/_received") as response:
            return await response.json()

    async def accepted(self) -> list[dict[str, Any]]:
        return [r for r in await self.received() if r["answered"] == 200]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


def fixture_rate_limited_alerts(capture: str = "generic_api_no_deployments.json", at: float = 0.0) -> list[Alert]:
    """One alert per deployment that was rate limited in a real LiteLLM capture.

    The capture goes through the real parser and the catalog built from the lab's
    config.yaml, so labels (model_group, deployment, aws_account, aws_region) and values
    (429 count) are what the pipeline would hand a rule. Needs the lab env (`lab_environ`).
    """
    import json
    from collections import Counter

    from agent.enrich import Catalog, Enricher, catalog_from_config_text
    from agent.parse.litellm import decode_body
    from tests.conftest import FIXTURES, load_capture

    catalog: Catalog = catalog_from_config_text((FIXTURES / "config.yaml").read_text())
    enricher = Enricher(catalog)
    batch = decode_body(json.dumps(load_capture(capture)["body_json"]).encode())
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for event in batch.events:
        if not event.deployment or not event.rate_limited:
            continue
        enricher.enrich(event)
        counts[(event.model_group, event.deployment, event.aws_account, event.aws_region)] += 1
    return [alert("DeploymentRateLimited", value=float(n), at=at, severity="critical", model_group=mg, deployment=dep,
                  aws_account=acct, aws_region=region,
                  annotations={"summary": f"{n} rate-limited calls on {dep} in {region}",
                               "runbook_url": "https://runbooks.example.com/rate-limits"})
            for (mg, dep, acct, region), n in sorted(counts.items())]


class ServiceStack:
    """The notify service on a real local state backend, as the app wires it (async context)."""

    def __init__(self, state_dir: Any, notify: dict[str, Any], poll: float = 0.05,
                 clock: Callable[[], float] = time.time) -> None:
        from prometheus_client import CollectorRegistry

        from agent.alerts.service import NotifyService
        from agent.config import parse_config
        from agent.state.local import LocalState

        self.config = parse_config({"notify": notify}).notify
        self.state = LocalState(state_dir)
        self.registry = CollectorRegistry()
        self.service = NotifyService(self.config, self.state, self.registry, state_dir, clock=clock, poll=poll)

    async def __aenter__(self) -> ServiceStack:
        await self.state.start()
        await self.service.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.service.stop(time.monotonic() + 30)
        await self.state.stop(time.monotonic() + 30)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

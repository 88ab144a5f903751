"""Several `gatewatch run` processes on one redis-server, fed real LiteLLM captures (shared-state tests)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agent.parse.litellm import decode_body
from agent.rules.signals import SIGNALS
from tests.conftest import FIXTURES, ROOT, free_port, lab_env, load_capture
from tests.notify_support import ReceiverProcess, until

STORM_CAPTURE = "generic_api_no_deployments.json"  # every gpt-lab deployment answering 429


def storm_rules_yaml(storm_above: int, over: str) -> str:
    """The `storm` rule group: a 429 storm over all sidecars (`scope: global`) pages above `storm_above`."""
    return f"""
  - name: storm
    interval: 1s
    rules:
      - alert: RateLimitStorm
        signal: rate_limited
        aggregate: count
        over: {over}
        by: [model_group]
        where: {{model_group: gpt-lab}}
        above: {storm_above}
        scope: global
        labels: {{severity: critical}}
"""


def retimed_body(capture: str, tag: str, end: float | None = None) -> bytes:
    """The capture's batch with times moved to end now and ids made unique by `tag` (a new request each post)."""
    items: list[dict[str, Any]] = json.loads(json.dumps(load_capture(capture)["body_json"]))
    if not isinstance(items, list):
        items = [items]
    shift = (end if end is not None else time.time()) - max(float(i["endTime"]) for i in items)
    for item in items:
        for key in ("startTime", "endTime", "completionStartTime"):
            if isinstance(item.get(key), (int, float)):
                item[key] = float(item[key]) + shift
        for key in ("id", "litellm_call_id", "trace_id"):
            if isinstance(item.get(key), str):
                item[key] = f"{item[key]}-{tag}"
    return json.dumps(items).encode()


def fixture_sum(bodies: list[bytes], signal: str, model_group: str) -> tuple[float, float]:
    """(sum, smallest non-zero value) of a rule signal over bodies, through the real parser."""
    extract = SIGNALS[signal].extract
    total, smallest = 0.0, float("inf")
    for body in bodies:
        for event in decode_body(body).events:
            if event.health_check or event.kind not in SIGNALS[signal].kinds or event.model_group != model_group:
                continue
            value = extract(event)
            if value:
                total += value
                smallest = min(smallest, value)
    return total, smallest


class Sidecar:
    """One `gatewatch run` process (its own state_dir, the shared Redis)."""

    def __init__(self, index: int, workdir: Path, config: dict[str, Any]) -> None:
        self.index = index
        self.task_id = f"task-{index}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "gatewatch.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "gatewatch.log"
        self._log = open(self.log_path, "ab")
        env = {**os.environ, **lab_env(), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path), "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession() as session, session.get(self.base + path) as response:
                return response.status, await response.text()
        except aiohttp.ClientError:
            return 0, ""

    async def ready(self) -> None:
        async def up() -> bool:
            assert self.alive, f"gatewatch {self.task_id} exited:\n{self.log_path.read_text()[-3000:]}"
            return (await self.get("/readyz"))[0] == 200

        await until(up, limit=60, interval=0.1, what=f"{self.task_id} ready")

    async def post(self, body: bytes) -> None:
        async with aiohttp.ClientSession() as session, session.post(
                self.base + "/v1/litellm/events", data=body, headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200, await response.text()

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        status, text = await self.get("/metrics")
        total = 0.0
        for line in text.splitlines() if status == 200 else []:
            if line.startswith("#") or not (line.startswith(name + " ") or line.startswith(name + "{")):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def sidecar_config(index: int, workdir: Path, redis_url: str, rules: Path, hook_url: str,
                   **state: Any) -> dict[str, Any]:
    return {
        "state_dir": str(workdir / "state"),
        "litellm": {"config": str(FIXTURES / "config.yaml")},
        "attribution": {"ecs_metadata": False},
        "prometheus": {"process_metrics": False},
        "rules": [str(rules)],
        "state": {"url": redis_url, "key_prefix": "gw:test:", "flush_interval": "200ms", "claim_ttl": "3s",
                  "timeout": "500ms", "connect_timeout": "500ms", **state},
        "notify": {
            "task_id": f"task-{index}",
            "receivers": [{"name": "oncall", "webhook": {"url": hook_url}}],
            "route": {"receiver": "oncall", "group_by": ["alertname", "model_group"], "group_wait": "0s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "outbox": {"initial_backoff": "200ms", "max_backoff": "1s"},
        },
    }


def notifications(pages: list[dict[str, Any]], alertname: str) -> list[dict[str, Any]]:
    """Webhook bodies that carry `alertname`."""
    return [p["body"] for p in pages
            if any(a["labels"].get("alertname") == alertname for a in p["body"].get("alerts", []))]


class Sidecars:
    """Starts groups of sidecars on one Redis (node or cluster) and one webhook receiver, for a
    test's fixture; `stop()` ends every one started, even when a start failed half-way."""

    def __init__(self, workdir: Path, redis: Any, hook_url: str) -> None:
        self.workdir, self.redis, self.hook_url = workdir, redis, hook_url
        self.started: list[Sidecar] = []

    async def start(self, rules_yaml: str, n: int = 3, **state: Any) -> list[Sidecar]:
        """`n` sidecars with the rule file `rules_yaml` and extra `state` settings, once all are ready."""
        rules = self.workdir / "rules.yml"
        rules.write_text(rules_yaml)
        where = self.redis.state_config()
        extra = {k: v for k, v in where.items() if k != "url"}
        group = [Sidecar(i, self.workdir / f"sidecar{i}",
                         sidecar_config(i, self.workdir / f"sidecar{i}", where["url"], rules, self.hook_url,
                                        **extra, **state)) for i in range(n)]
        self.started.extend(group)
        await asyncio.gather(*(s.ready() for s in group))
        return group

    def stop(self) -> None:
        for sidecar in self.started:
            sidecar.stop()


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[ReceiverProcess]:
    """`receiver`: the webhook receiver process the sidecars page (import it into the test module)."""
    process = ReceiverProcess()
    yield process
    process.close()

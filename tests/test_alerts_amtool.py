"""The real Alertmanager tools against gatewatch: Debian's amtool (0.25) with the bearer token
in `--http.config.file`, and a real Prometheus (2.42) with gatewatch as its alertmanager."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts_v2_support import TOKEN, Api, notify_config
from tests.conftest import free_port
from tests.notify_support import ReceiverProcess, until

pytestmark = [pytest.mark.integration]

AMTOOL = shutil.which("amtool")
PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def hook() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    yield process
    process.close()


class Amtool:
    def __init__(self, base: str, tmp: Path, token: str = TOKEN) -> None:
        self.http_config = tmp / "amtool-http.yml"
        self.http_config.write_text(yaml.safe_dump({"authorization": {"type": "Bearer", "credentials": token}}))
        self.base = base

    async def run(self, *argv: str, ok: bool = True) -> str:
        assert AMTOOL, "amtool missing: run scripts/install-test-deps.sh (Debian package prometheus-alertmanager)"
        proc = await asyncio.create_subprocess_exec(
            AMTOOL, f"--alertmanager.url={self.base}", f"--http.config.file={self.http_config}", *argv,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        if ok:
            assert proc.returncode == 0, f"amtool {' '.join(argv)} -> {proc.returncode}: {err.decode()}"
        return out.decode()


async def test_amtool_alerts_and_silences(gatewatch_server: Any, tmp_path: Path, hook: ReceiverProcess) -> None:
    config = notify_config(tmp_path)
    config["notify"]["receivers"] = [{"name": "oncall", "webhook": {"url": hook.url("/am")}}]
    _gw, base = await gatewatch_server(config)
    amtool = Amtool(base, tmp_path)

    await amtool.run("alert", "add", "DeploymentRateLimited", "severity=critical", "deployment=gpt-lab-acct111-use1",
                     "aws_region=us-east-1", "--annotation=summary=429s on gpt-lab-acct111-use1")
    await amtool.run("alert", "add", "DeploymentRateLimited", "severity=critical", "deployment=gpt-lab-acct222-euw1",
                     "aws_region=eu-west-1", "--annotation=summary=429s on gpt-lab-acct222-euw1")
    alerts = json.loads(await amtool.run("alert", "query", "-o", "json"))
    assert sorted(a["labels"]["deployment"] for a in alerts) == ["gpt-lab-acct111-use1", "gpt-lab-acct222-euw1"]
    assert {a["status"]["state"] for a in alerts} == {"active"}
    simple = await amtool.run("alert", "query", "deployment=gpt-lab-acct222-euw1")
    assert "429s on gpt-lab-acct222-euw1" in simple and "gpt-lab-acct111-use1" not in simple

    # the alerts went through gatewatch's router and outbox to the webhook receiver
    async def delivered() -> set[str]:
        bodies = [r["body"] for r in await hook.accepted()]
        assert all(b["receiver"] == "oncall" and b["status"] == "firing" for b in bodies)
        found = {a["labels"]["deployment"] for b in bodies for a in b["alerts"]}
        return found if len(found) == 2 else set()

    assert await until(delivered, limit=30, what="both alerts at the webhook") == {"gpt-lab-acct111-use1",
                                                                                  "gpt-lab-acct222-euw1"}

    silence_id = (await amtool.run("silence", "add", "deployment=gpt-lab-acct111-use1", "-c", "provider incident",
                                   "-d", "2h", "-a", "oncall-engineer")).strip()
    assert len(silence_id) == 36
    listed = json.loads(await amtool.run("silence", "query", "-o", "json"))
    assert [(s["id"], s["createdBy"], s["comment"], s["status"]["state"]) for s in listed] == [
        (silence_id, "oncall-engineer", "provider incident", "active")]
    assert (await amtool.run("silence", "query", "-q")).split() == [silence_id]
    # amtool alert query hides silenced alerts unless -s / -a
    shown = await amtool.run("alert", "query")
    assert "gpt-lab-acct222-euw1" in shown and "gpt-lab-acct111-use1" not in shown
    silenced = json.loads(await amtool.run("alert", "query", "-s", "-o", "json"))
    assert [a["status"]["silencedBy"] for a in silenced] == [[silence_id]]

    await amtool.run("silence", "expire", silence_id)
    assert (await amtool.run("silence", "query", "-q")).split() == []
    expired = json.loads(await amtool.run("silence", "query", "--expired", "-o", "json"))
    assert [(s["id"], s["status"]["state"]) for s in expired] == [(silence_id, "expired")]
    assert "gpt-lab-acct111-use1" in await amtool.run("alert", "query")

    routes = await amtool.run("config", "routes")
    assert "receiver: oncall" in routes


async def test_amtool_with_a_wrong_token_is_refused(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    amtool = Amtool(base, tmp_path, token="wrong")
    out = await amtool.run("alert", "add", "X", "a=b", ok=False)
    assert out == ""
    assert (await Api(base).call("GET", "/api/v2/alerts"))[1] == []


def start_prometheus(tmp_path: Path) -> tuple[subprocess.Popen, Any]:
    assert PROMETHEUS
    log = open(tmp_path / "prometheus.log", "wb")  # closed by the caller
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{free_port()}", "--log.level=warn",
                             "--rules.alert.resend-delay=1s"],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, log


@pytest.mark.slow
async def test_prometheus_delivers_a_rule_alert_through_gatewatch(gatewatch_server: Any, tmp_path: Path,
                                                                  hook: ReceiverProcess) -> None:
    assert PROMETHEUS, "prometheus missing: run scripts/install-test-deps.sh (Debian package prometheus)"
    config = notify_config(tmp_path)
    config["notify"]["receivers"] = [{"name": "oncall", "webhook": {"url": hook.url("/am")}}]
    _gw, base = await gatewatch_server(config)
    host = base.split("://", 1)[1]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "gatewatch-test", "rules": [{
        "alert": "LiteLLMSpendHigh", "expr": "vector(42)", "labels": {"severity": "warning", "team": "platform"},
        "annotations": {"summary": "spend is {{ $value }} USD", "runbook_url": "https://runbooks.example/spend"},
    }]}]}))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"evaluation_interval": "1s", "scrape_interval": "5s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": [host]}],
                                        "authorization": {"type": "Bearer", "credentials": TOKEN}}]},
    }))
    proc, log = start_prometheus(tmp_path)
    try:
        received = await until(hook.accepted, limit=90, interval=0.5, what="Prometheus's alert at the webhook")
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()
        log.close()
    body = received[0]["body"]
    [alert] = body["alerts"]
    assert alert["labels"] == {"alertname": "LiteLLMSpendHigh", "severity": "warning", "team": "platform"}
    assert alert["annotations"]["summary"] == "spend is 42 USD"
    assert alert["status"] == "firing"
    _, listed = await Api(base).call("GET", "/api/v2/alerts")
    assert [a["labels"]["alertname"] for a in listed] == ["LiteLLMSpendHigh"]
    assert listed[0]["generatorURL"].startswith("http")  # Prometheus's link to the expression

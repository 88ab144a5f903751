"""The gatewatch command line, run as a user would (a subprocess of the installed script)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES, batch_files, capture_items, lab_env
from tests.promtext import total

GATEWATCH = [sys.executable, "-m", "agent.cli"]


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **lab_env(), **(env or {})}
    full_env.pop("GATEWATCH_CONFIG", None)
    return subprocess.run([*GATEWATCH, *args], capture_output=True, text=True, env=full_env, timeout=120,
                          cwd=cwd)


def test_version():
    result = run("version")
    assert result.returncode == 0 and result.stdout.startswith("gatewatch ")


def test_help_on_each_verb():
    for verb in ("run", "check-config", "replay", "version"):
        result = run(verb, "--help")
        assert result.returncode == 0 and "usage" in result.stdout


def test_replay_prints_metrics_equal_to_the_payloads(tmp_path):
    config = tmp_path / "gw.yaml"
    config.write_text(f"litellm:\n  config: {FIXTURES / 'config.yaml'}\nstate_dir: {tmp_path / 'state'}\n")
    files = [str(p) for p in batch_files()]
    result = run("replay", "--config", str(config), *files)
    assert result.returncode == 0, result.stderr
    items = [i for p in batch_files() for i in capture_items(p.name)]
    assert f"{len(items)} events, 0 rejected" in result.stderr
    ok = [i for i in items if i["status"] == "success" and (i["metadata"] or {}).get("user_api_key_alias")
          != "litellm-internal-health-check"]
    assert total(result.stdout, "litellm_input_tokens_metric_total") == sum(i["prompt_tokens"] for i in ok)
    assert total(result.stdout, "litellm_deployment_total_requests_total", model_id="bedrock-acct555-apse2",
                 aws_account="555555555555", aws_region="ap-southeast-2") == 1
    assert "process_cpu_seconds_total" not in result.stdout


def test_check_config_ok_and_bad(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(f"litellm:\n  config: {FIXTURES / 'config.yaml'}\nstate_dir: {tmp_path / 'state'}\n")
    result = run("check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert "catalog: 12 deployments" in result.stdout
    assert "bedrock-acct555-apse2: account=555555555555 region=ap-southeast-2" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: 80\n  auth_tokn: x\n")
    result = run("check-config", str(bad))
    assert result.returncode == 1
    assert f"{bad}: server.auth_tokn: unknown key" in result.stderr


def test_run_refuses_a_bad_config_at_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: lots\n")
    result = run("run", "--config", str(bad))
    assert result.returncode == 2
    assert "server.port" in result.stderr and "integer" in result.stderr

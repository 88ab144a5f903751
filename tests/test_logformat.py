"""`log_format: json`: gatewatch's own log lines as JSON objects, for awslogs / FireLens."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.logformat import JsonFormatter
from agent.redact import register_secret
from tests.conftest import ROOT, free_port


def record(msg: str, *args: object, level: int = logging.WARNING, exc: bool = False, **extra: object):
    logger = logging.getLogger("agent.alerts.delivery")
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logger.makeRecord(logger.name, level, "delivery.py", 42, msg, args, exc_info, extra=extra)
    rec.created = 1_764_104_500.123456  # 2025-11-25T21:01:40.123Z
    return rec


def test_a_line_has_timestamp_level_logger_message_and_the_context_fields():
    line = JsonFormatter().format(record("delivery to %s failed: %s", "oncall", "HTTP 500",
                                         rule="budget/DailyBudgetExceeded", receiver="oncall",
                                         deployment="gpt-lab-acct111-use1", attempt=3))
    assert "\n" not in line
    assert json.loads(line) == {
        "timestamp": "2025-11-25T21:01:40.123Z", "level": "WARNING", "logger": "agent.alerts.delivery",
        "message": "delivery to oncall failed: HTTP 500", "rule": "budget/DailyBudgetExceeded",
        "receiver": "oncall", "deployment": "gpt-lab-acct111-use1", "attempt": 3,
    }


def test_exceptions_other_types_and_secrets():
    secret = "https://hooks.slack.com/services/T000/B000/sEcReTsEcReT"
    register_secret(secret)
    line = json.loads(JsonFormatter().format(record("posting to %s", secret, level=logging.ERROR, exc=True,
                                                    url=secret, labels={"team": "a"}, since=object())))
    assert line["message"] == "posting to ***" and line["url"] == "***"
    assert secret not in json.dumps(line)
    assert line["labels"] == {"team": "a"} and line["since"].startswith("<object object")
    assert line["exception"].startswith("Traceback") and "ValueError: boom" in line["exception"]


def test_the_config_key_takes_text_or_json_only():
    assert parse_config({}).log_format == "text"
    assert parse_config({"log_format": "json"}).log_format == "json"
    with pytest.raises(ConfigError) as err:
        parse_config({"log_format": "xml"}, file="gw.yaml")
    assert "gw.yaml: log_format:" in str(err.value) and "json" in str(err.value)


@pytest.mark.slow
def test_gatewatch_run_writes_only_json_lines(tmp_path):
    port = free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"log_format": "json", "state_dir": str(tmp_path / "state"),
                                      "attribution": {"ecs_metadata": False}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWATCH_")}
    with (tmp_path / "stderr.log").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--host",
                                 "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stderr=err,
                                stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                        if resp.status == 200:
                            break
                except (OSError, urllib.error.HTTPError):
                    time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    assert lines, "no log lines"
    parsed = [json.loads(line) for line in lines]  # every line, not only most
    assert all({"timestamp", "level", "logger", "message"} <= set(p) for p in parsed)
    messages = [p["message"] for p in parsed]
    assert any(m.startswith("listening on 127.0.0.1:") for m in messages), messages
    assert any(m == "gatewatch stopped" for m in messages), messages

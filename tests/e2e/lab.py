"""The e2e lab: fake upstream + gatewatch + a real LiteLLM proxy, all on 127.0.0.1.

    openai SDK ──> LiteLLM proxy ──> fake upstream (ports A B C D = openai deployments, E = bedrock + STS)
                      │  generic_api callback (batched JSON, bearer token) ──> gatewatch /v1/litellm/events
                      │  JSON logs (stdout+stderr) ──> proxy.log ──tailed by──> gatewatch
                      └─ /metrics/ (LiteLLM's own prometheus callback)        gatewatch /metrics

Every port is a random free one; every process is stopped by `Lab.stop()` (called from a
finalizer) and, as a last resort, at interpreter exit (procs.stop_all).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, free_port
from tests.e2e.litellm_venv import ensure_litellm_venv, installed_version, venv_python
from tests.e2e.procs import ManagedProcess

HERE = Path(__file__).resolve().parent
LITELLM_CONFIG = HERE / "litellm_config.yaml"
UPSTREAM_NAMES = ("A", "B", "C", "D", "E")  # E serves bedrock and STS


@dataclass
class LabOptions:
    merge_window: str = "2s"  # gatewatch pipeline.request_merge_window
    flush_interval: int = 1  # LiteLLM DEFAULT_FLUSH_INTERVAL_SECONDS
    gatewatch_extra: dict[str, Any] = field(default_factory=dict)  # merged into gatewatch's config


class Lab:
    def __init__(self, workdir: Path, options: LabOptions | None = None) -> None:
        self.workdir = workdir
        self.options = options or LabOptions()
        self.master_key = "sk-e2e-" + secrets.token_hex(12)
        self.gatewatch_token = "gw-e2e-" + secrets.token_hex(12)
        self.ports = {name: free_port() for name in UPSTREAM_NAMES}
        self.gatewatch_port = free_port()
        self.proxy_port = free_port()
        self.proxy_log = workdir / "proxy.log"
        self.processes: list[ManagedProcess] = []
        self.litellm_version = ""
        self.litellm_config = workdir / "litellm_config.yaml"
        self.gatewatch_config = workdir / "gatewatch.yaml"

    # -- addresses ------------------------------------------------------------------
    def upstream_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def gatewatch_url(self) -> str:
        return f"http://127.0.0.1:{self.gatewatch_port}"

    def upstream_env(self) -> dict[str, str]:
        env = {f"UPSTREAM_{n}": self.upstream_url(n) + "/v1" for n in "ABCD"}
        env["BEDROCK_BASE"] = self.upstream_url("E")
        env["STS_ENDPOINT"] = self.upstream_url("E") + "/sts"
        return env

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Lab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        venv = ensure_litellm_venv(log=lambda msg: print(msg, file=sys.stderr, flush=True))
        self.litellm_version = installed_version(venv)
        self._start_upstream()
        self._start_gatewatch()
        self._start_proxy(venv)
        return self

    def stop(self) -> None:
        # the proxy first (its last callback batch goes to a gatewatch still running), then the rest
        for process in reversed(self.processes):
            process.stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.workdir / f"{name}.log", env=env, cwd=self.workdir).start()
        self.processes.append(process)
        return process

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "GENERIC_LOGGER_", "OPENAI_"))}
        env.update(self.upstream_env())
        env["PYTHONUNBUFFERED"] = "1"
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def _start_upstream(self) -> None:
        ports = ",".join(str(self.ports[n]) for n in UPSTREAM_NAMES)
        process = self._spawn("upstream", [sys.executable, str(HERE / "fake_upstream.py"), "--ports", ports,
                                           "--log", str(self.workdir / "upstream_requests.jsonl")], self._base_env())
        for name in UPSTREAM_NAMES:
            process.wait_http(self.upstream_url(name) + "/_health", timeout=30)

    def gatewatch_config_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": self.gatewatch_port, "auth_token": self.gatewatch_token},
            "state_dir": str(self.workdir / "gatewatch-state"),
            "litellm": {
                "config": str(self.litellm_config),
                "base_url": self.proxy_url,
                "api_key": self.master_key,
                "logs": [str(self.proxy_log)],
                "health_interval": "2s",
            },
            "attribution": {"ecs_metadata": False},
            "pipeline": {"request_merge_window": self.options.merge_window},
            "prometheus": {"process_metrics": False},
        }
        return _merge(data, self.options.gatewatch_extra)

    def _start_gatewatch(self) -> None:
        self.litellm_config.write_text(LITELLM_CONFIG.read_text())
        self.gatewatch_config.write_text(yaml.safe_dump(self.gatewatch_config_data(), sort_keys=False))
        gatewatch = ROOT / ".venv" / "bin" / "gatewatch"
        argv = [str(gatewatch)] if gatewatch.exists() else [sys.executable, "-m", "agent.cli"]
        process = self._spawn("gatewatch", [*argv, "run", "--config", str(self.gatewatch_config)], self._base_env())
        process.wait_http(self.gatewatch_url + "/healthz", timeout=60)

    def proxy_env(self) -> dict[str, str]:
        env = self._base_env()
        env.update({
            "LITELLM_MASTER_KEY": self.master_key,
            "GENERIC_LOGGER_ENDPOINT": f"{self.gatewatch_url}/v1/litellm/events",
            "GENERIC_LOGGER_HEADERS": f"Authorization=Bearer {self.gatewatch_token}",
            "DEFAULT_FLUSH_INTERVAL_SECONDS": str(self.options.flush_interval),
            "JSON_LOGS": "True",
            "LITELLM_LOG": "INFO",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network: use the cost map shipped in the wheel
            "DISABLE_SCHEMA_UPDATE": "True",
        })
        return env

    def _start_proxy(self, venv: Path) -> None:
        argv = [str(venv_python(venv)), "-m", "litellm.proxy.proxy_cli", "--config", str(self.litellm_config),
                "--host", "127.0.0.1", "--port", str(self.proxy_port), "--num_workers", "1"]
        process = ManagedProcess("proxy", argv, self.proxy_log, env=self.proxy_env(), cwd=self.workdir).start()
        self.processes.append(process)
        process.wait_http(self.proxy_url + "/health/readiness", timeout=120)

    # -- helpers for tests ---------------------------------------------------------------
    def set_upstream_mode(self, name: str, mode: str | None) -> None:
        """Make one fake deployment (port) fail: "500", "429:30", ... or None to heal it."""
        request = urllib.request.Request(self.upstream_url(name) + "/_control", method="POST",
                                         data=json.dumps({"mode": mode}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def upstream_counts(self, name: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.upstream_url(name) + "/_control", timeout=10) as response:
            return json.loads(response.read())

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"----- {p.name} ({p.log_path}) -----\n{p.log_tail(lines)}" for p in self.processes)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll `predicate()` until it returns a truthy value; return it, or raise with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)

"""deploy/compose cannot run here (no Docker engine), so this keeps it honest: the file is
valid Compose (docker-compose's own validator where installed), and its ports, volumes,
env and mounted configs agree with gatewatch's config schema and with each other."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from agent.config import Config, parse_config
from agent.configtypes import interpolate
from agent.enrich import catalog_from_config_text
from agent.sources.callbacks import EVENTS_ROUTE
from tests.conftest import ROOT, free_port

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"


def compose() -> dict[str, Any]:
    """The file with ${VAR:-default} resolved from the defaults, as `docker compose` would."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env={})


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def binds(svc: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """container path -> (host path or volume name, read-only)."""
    out = {}
    for spec in svc.get("volumes", []):
        parts = spec.split(":")
        out[parts[1]] = (parts[0], len(parts) > 2 and parts[2] == "ro")
    return out


def host_file(source: str) -> Path:
    return (COMPOSE_DIR / source).resolve()


def gatewatch_config() -> Config:
    gw = service("gatewatch")
    config_path = gw["environment"]["GATEWATCH_CONFIG"]
    source, _ = binds(gw)[config_path]
    return parse_config(yaml.safe_load(host_file(source).read_text()), source, env=gw["environment"])


def test_compose_file_is_valid_for_docker_compose():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (scripts/install-test-deps.sh installs it)")
    result = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=COMPOSE_DIR,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_bind_mount_exists_in_the_repository():
    for name, svc in compose()["services"].items():
        for target, (source, _) in binds(svc).items():
            if source.startswith((".", "/")):
                assert host_file(source).exists(), f"{name}: {source} -> {target} does not exist"
        build = svc.get("build")
        if build:
            assert (host_file(build["context"]) / build["dockerfile"]).exists()


def test_gatewatch_service_matches_its_config():
    gw, cfg = service("gatewatch"), gatewatch_config()
    mounts = binds(gw)
    assert [p.split(":")[-1] for p in gw["ports"]] == [str(cfg.server.port)]
    assert f"127.0.0.1:{cfg.server.port}/healthz" in " ".join(gw["healthcheck"]["test"])
    assert gw["read_only"] is True and "/tmp" in gw["tmpfs"]
    assert cfg.state_dir in mounts and not mounts[cfg.state_dir][1]  # writable named volume
    assert mounts[cfg.state_dir][0] in compose()["volumes"]
    assert cfg.server.auth_token == gw["environment"]["GATEWATCH_TOKEN"]
    assert cfg.server.shutdown_grace < float(gw["stop_grace_period"].rstrip("s"))


def test_litellm_reports_to_gatewatch_and_shares_config_and_logs():
    gw, proxy, cfg = service("gatewatch"), service("litellm"), gatewatch_config()
    gw_mounts, proxy_mounts = binds(gw), binds(proxy)
    endpoint = urlparse(proxy["environment"]["GENERIC_LOGGER_ENDPOINT"])
    assert (endpoint.hostname, endpoint.port, endpoint.path) == ("gatewatch", cfg.server.port, EVENTS_ROUTE)
    assert proxy["environment"]["GENERIC_LOGGER_HEADERS"] == f"Authorization=Bearer {cfg.server.auth_token}"
    assert proxy["depends_on"]["gatewatch"]["condition"] == "service_healthy"
    # same LiteLLM config file: the proxy runs it, gatewatch reads the catalog from it
    command = " ".join(proxy["command"])
    config_target = next(t for t in proxy_mounts if f"--config {t}" in command)
    assert proxy_mounts[config_target][0] == gw_mounts[cfg.litellm.config][0]
    # logs: the proxy's log pipe writes where gatewatch tails
    # the glob must take the live file and its rename-rotated predecessor (.1)
    assert len(cfg.litellm.logs) == 1
    assert fnmatch.fnmatch(proxy["environment"]["LITELLM_LOG_FILE"], cfg.litellm.logs[0])
    assert fnmatch.fnmatch(proxy["environment"]["LITELLM_LOG_FILE"] + ".1", cfg.litellm.logs[0])
    log_dir = str(Path(cfg.litellm.logs[0]).parent)
    assert proxy_mounts[log_dir][0] == gw_mounts[log_dir][0] == "litellm-logs"
    assert gw_mounts[log_dir][1] and not proxy_mounts[log_dir][1]
    pipe_target = next(t for t in proxy_mounts if t.endswith("logpipe.py"))
    assert f"python3 {pipe_target}" in command
    assert binds(service("log-volume"))[log_dir][0] == "litellm-logs"
    assert proxy["environment"]["JSON_LOGS"] == "True"


def test_litellm_config_of_the_lab_attributes_every_deployment():
    text = (COMPOSE_DIR / "litellm-config.yaml").read_text()
    data = yaml.safe_load(text)
    assert "generic_api" in data["litellm_settings"]["callbacks"]
    catalog = catalog_from_config_text(text)
    assert len(catalog) == len(data["model_list"])
    assert all(d.aws_account and d.aws_region for d in catalog)
    upstream = service("fake-upstream")
    ports = upstream["command"][upstream["command"].index("--ports") + 1].split(",")
    for entry in data["model_list"]:
        base = urlparse(entry["litellm_params"]["api_base"])
        assert base.hostname == "fake-upstream" and str(base.port) in ports


def test_prometheus_scrapes_gatewatch_and_loads_the_dashboards_rules(tmp_path):
    prom = service("prometheus")
    mounts = binds(prom)
    config_source = host_file(mounts["/etc/prometheus/prometheus.yml"][0])
    config = yaml.safe_load(config_source.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["gatewatch"] == [f"gatewatch:{gatewatch_config().server.port}"]
    litellm_job = next(job for job in config["scrape_configs"] if job["job_name"] == "litellm")
    assert litellm_job["authorization"]["credentials"] == service("litellm")["environment"]["LITELLM_MASTER_KEY"]
    for rule_file in config["rule_files"]:
        assert rule_file in mounts and host_file(mounts[rule_file][0]).exists()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    local = dict(config, rule_files=[str(host_file(mounts[r][0])) for r in config["rule_files"]])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_the_mounts():
    grafana = service("grafana")
    mounts = binds(grafana)
    provisioning = host_file(mounts["/etc/grafana/provisioning"][0])
    dashboards_dir = next(t for t, (s, _) in mounts.items() if host_file(s) == (ROOT / "dashboards" / "grafana"))
    assert list((ROOT / "dashboards" / "grafana").glob("*.json"))
    providers = [p for p in (provisioning / "dashboards").glob("*.y*ml")] if (provisioning / "dashboards").is_dir() \
        else []
    sources = [p for p in (provisioning / "datasources").glob("*.y*ml")] if (provisioning / "datasources").is_dir() \
        else []
    if not providers or not sources:
        pytest.skip("dashboards/grafana/provisioning has no provider/datasource files yet")
    for path in providers:
        for provider in yaml.safe_load(path.read_text()).get("providers", []):
            assert provider["options"]["path"].rstrip("/") == dashboards_dir, path
    urls = [ds.get("url", "") for path in sources for ds in yaml.safe_load(path.read_text()).get("datasources", [])
            if ds.get("type") == "prometheus"]
    assert urls and all(urlparse(u).hostname == "prometheus" and urlparse(u).port == 9090 for u in urls), urls


def test_fake_upstream_answers_like_openai(tmp_path):
    import openai

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(COMPOSE_DIR / "fake_upstream.py"), "--ports", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "fake upstream" in proc.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-fake", max_retries=0)
        answer = client.chat.completions.create(model="fake-ok", messages=[{"role": "user", "content": "hi there"}])
        assert answer.usage.prompt_tokens == 2 and answer.usage.total_tokens == 9
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fake-ok", messages=[{"role": "user", "content": "#mode=429"}])
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="fake-ok", messages=[{"role": "user", "content": "#mode=500"}])
    finally:
        proc.kill()
        proc.wait()

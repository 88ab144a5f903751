"""Local files (a mounted volume, the init container's copy): changes seen by stat, a broken
version refused, a forced reload (what SIGHUP calls) re-reading everything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from agent.app import GatewatchApp
from agent.config import Config, load_config
from agent.configtypes import ConfigError
from agent.refresh.refresher import rules_fingerprint
from tests.conftest import FIXTURES, free_port
from tests.test_refresh_s3 import checks, metric, reloads, until

LITELLM_CONFIG = (FIXTURES / "config.yaml").read_text()


def write(path: Path, text: str) -> None:
    """Write and move mtime forward, so two writes in one clock tick still differ."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    st = path.stat()
    if st.st_mtime_ns <= before:
        os.utime(path, ns=(st.st_atime_ns, before + 1_000_000))


def config_text(tmp_path: Path, interval: str = "200ms", **extra: Any) -> str:
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "refresh": {"interval": interval},
        "litellm": {"config": str(tmp_path / "litellm.yaml"), "config_refresh": interval},
        "rules": [str(tmp_path / "rules")],
    }
    data.update(extra)
    return yaml.safe_dump(data)


@pytest.fixture
async def file_app(tmp_path: Path, lab_environ):
    (tmp_path / "rules").mkdir()
    write(tmp_path / "rules" / "latency.yml", "groups: []\n")
    write(tmp_path / "litellm.yaml", LITELLM_CONFIG)
    write(tmp_path / "gatewatch.yaml", config_text(tmp_path))
    config = load_config(tmp_path / "gatewatch.yaml")
    config.prometheus.process_metrics = False
    gw = GatewatchApp(config)
    calls: list[Config] = []

    async def hook(new: Config) -> None:
        calls.append(new)

    gw.reload_hooks.append(hook)
    server = TestServer(gw.web_app(), host="127.0.0.1", port=free_port())
    await server.start_server()
    await gw.refresher.wait_baselined()
    yield gw, calls
    await server.close()


async def test_file_changes_are_picked_up_and_broken_ones_refused(file_app, tmp_path):
    gw, calls = file_app
    await until(lambda: checks(gw, "config", "unchanged") >= 2 and checks(gw, "rules", "unchanged") >= 2,
                what="unchanged checks")
    assert calls == []

    write(tmp_path / "gatewatch.yaml", config_text(tmp_path, labels={"series_limit": 1234}))
    await until(lambda: reloads(gw, "config", "ok") == 1, what="config reload")
    assert gw.config.labels.series_limit == 1234 and len(calls) == 1

    write(tmp_path / "gatewatch.yaml", config_text(tmp_path, labels={"series_limt": 1}))  # typo'd key
    await until(lambda: reloads(gw, "config", "error") == 1, what="refused config")
    assert gw.config.labels.series_limit == 1234 and len(calls) == 1

    write(tmp_path / "rules" / "quota.yaml", "groups: []\n")
    await until(lambda: reloads(gw, "rules", "ok") == 1, what="rules reload")
    assert len(calls) == 2 and calls[-1] is gw.config  # the rule engine re-reads with the running config

    model_list = yaml.safe_load(LITELLM_CONFIG)["model_list"][:3]
    write(tmp_path / "litellm.yaml", yaml.safe_dump({"model_list": model_list}))
    await until(lambda: reloads(gw, "litellm_config", "ok") == 1, what="catalog reload")
    assert sorted(d.id for d in gw.catalog) == sorted(e["model_info"]["id"] for e in model_list)

    (tmp_path / "litellm.yaml").unlink()
    await until(lambda: checks(gw, "litellm_config", "error") >= 1, what="missing file")
    assert len(gw.catalog) == 3


async def test_forced_reload_rereads_everything(file_app, tmp_path):
    """What SIGHUP runs: config, rules and catalog re-read even when no version changed."""
    gw, calls = file_app
    await gw.reload_handler()
    assert len(calls) == 1
    assert reloads(gw, "config", "ok") == 1 and reloads(gw, "litellm_config", "ok") == 1
    assert metric(gw, "gatewatch_catalog_reloads_total", source="file", outcome="ok") == 2  # start + forced


async def test_hook_that_refuses_keeps_the_old_config(file_app, tmp_path):
    gw, _calls = file_app
    old = gw.config

    async def refuse(new: Config) -> None:
        if new.labels.series_limit == 42:
            raise ConfigError("rules[0]", "groups: expected a list", "latency.yml")

    gw.reload_hooks.append(refuse)
    write(tmp_path / "gatewatch.yaml", config_text(tmp_path, labels={"series_limit": 42}))
    await until(lambda: reloads(gw, "config", "error") == 1, what="hook refusal")
    assert gw.config is old


def test_rules_fingerprint_of_folders_files_and_missing(tmp_path):
    (tmp_path / "r" / "sub").mkdir(parents=True)
    write(tmp_path / "r" / "a.yml", "groups: []\n")
    write(tmp_path / "r" / "sub" / "b.yaml", "groups: []\n")
    write(tmp_path / "r" / "notes.txt", "ignored")
    locations = [str(tmp_path / "r"), str(tmp_path / "r" / "sub" / "*.yaml"), str(tmp_path / "single.yml")]
    first = rules_fingerprint(locations)
    # a folder is not recursive (as in the rule loader); a glob reaches into sub/
    assert [name for name, _ in first] == [str(tmp_path / "r" / "a.yml"), str(tmp_path / "r" / "sub" / "b.yaml"),
                                           str(tmp_path / "single.yml")]
    assert first[-1][1] == "missing"
    write(tmp_path / "r" / "notes.txt", "still ignored")
    assert rules_fingerprint(locations) == first
    write(tmp_path / "r" / "sub" / "b.yaml", "groups: [] # edited\n")
    assert rules_fingerprint(locations) != first

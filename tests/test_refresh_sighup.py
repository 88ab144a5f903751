"""SIGHUP to a real `gatewatch run`: config and LiteLLM config re-read with periodic checks
off; a broken version is refused and the process keeps serving with the old one."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest
import yaml

from tests.conftest import FIXTURES, lab_env
from tests.promtext import total
from tests.test_shutdown_sigterm import Gatewatch

pytestmark = pytest.mark.integration


async def test_sighup_reloads_config_and_catalog_and_refuses_a_broken_one(tmp_path, monkeypatch):
    for key, value in lab_env().items():
        monkeypatch.setenv(key, value)
    litellm_path = tmp_path / "litellm.yaml"
    litellm_path.write_text((FIXTURES / "config.yaml").read_text())
    base = {
        "state_dir": str(tmp_path / "state"),
        "refresh": {"interval": 0},  # periodic checks off: only the signal reloads
        "litellm": {"config": str(litellm_path), "config_refresh": 0},
        "prometheus": {"process_metrics": False},
        "labels": {"series_limit": 100},
    }
    gw = Gatewatch(tmp_path, base)
    config_path = tmp_path / "gatewatch.yaml"
    full = yaml.safe_load((FIXTURES / "config.yaml").read_text())["model_list"]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await gw.ready(session)
            async def scrape() -> str:
                async with session.get(gw.base + "/metrics") as response:
                    return await response.text()

            async def metric_reaches(name: str, value: float, **labels: str) -> str:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while total(text := await scrape(), name, **labels) != value:
                    assert loop.time() < deadline, f"{name}{labels} never reached {value}"
                    await asyncio.sleep(0.05)
                return text

            assert total(await scrape(), "gatewatch_catalog_deployments") == len(full)
            config_path.write_text(yaml.safe_dump({**base, "labels": {"series_limit": 200}}))
            litellm_path.write_text(yaml.safe_dump({"model_list": full[:2]}))
            os.kill(gw.proc.pid, signal.SIGHUP)
            await metric_reaches("gatewatch_config_reloads_total", 1, source="config", outcome="ok")
            text = await metric_reaches("gatewatch_config_reloads_total", 1, source="litellm_config", outcome="ok")
            assert total(text, "gatewatch_catalog_deployments") == 2

            config_path.write_text("server: {port: not-a-port}\n")
            os.kill(gw.proc.pid, signal.SIGHUP)
            text = await metric_reaches("gatewatch_config_reloads_total", 1, source="config", outcome="error")
            assert total(text, "gatewatch_config_last_reload_successful", source="config") == 0
            async with session.get(gw.base + "/healthz") as response:
                assert response.status == 200  # still serving on the old config
        gw.proc.send_signal(signal.SIGTERM)
        await gw.exited(within=15)
        assert gw.proc.returncode == 0
        log = gw.log.read_text()
        assert "config reload refused" in log and "server.port" in log and str(config_path) in log
    finally:
        gw.close()

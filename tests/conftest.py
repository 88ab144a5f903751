"""Shared fixtures: the real LiteLLM captures, free ports, and a running gatewatch server."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fixtures_dir() -> Path:
    env = os.environ.get("GATEWATCH_FIXTURES")
    if env:
        return Path(env)
    return ROOT / "tests" / "fixtures" / "litellm"  # the captures are the project's own test data


FIXTURES = _fixtures_dir()


def load_capture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def capture_items(name: str) -> list[dict[str, Any]]:
    body = load_capture(name)["body_json"]
    return body if isinstance(body, list) else [body]


def batch_files() -> list[Path]:
    """generic_api captures of the env-configured (batching) logger."""
    return sorted(p for p in FIXTURES.glob("generic_api_*.json") if not p.name.startswith("generic_api_single_"))


def lab_env() -> dict[str, str]:
    """The env the fixture config.yaml expects (ports of the lab that produced the captures)."""
    return {
        "UPSTREAM_A": "http://127.0.0.1:18001/v1",
        "UPSTREAM_B": "http://127.0.0.1:18002/v1",
        "UPSTREAM_C": "http://127.0.0.1:18003/v1",
        "UPSTREAM_D": "http://127.0.0.1:18004/v1",
        "BEDROCK_BASE": "http://127.0.0.1:18001",
        "STS_ENDPOINT": "http://127.0.0.1:18005",
    }


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def lab_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = lab_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def gatewatch_server(tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: start a real gatewatch HTTP server on loopback for a config dict."""
    from aiohttp.test_utils import TestServer

    from agent.app import GatewatchApp
    from agent.config import parse_config

    started: list[TestServer] = []

    async def start(data: dict[str, Any] | None = None) -> tuple[GatewatchApp, str]:
        data = dict(data or {})
        data.setdefault("state_dir", str(tmp_path / f"state{len(started)}"))
        config = parse_config(data)
        config.prometheus.process_metrics = False
        gw = GatewatchApp(config)
        server = TestServer(gw.web_app(), host="127.0.0.1", port=free_port())
        await server.start_server()
        started.append(server)
        return gw, f"http://127.0.0.1:{server.port}"

    yield start
    for server in reversed(started):
        await server.close()

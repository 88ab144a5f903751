"""Helpers for the Alertmanager API v2, amtool and console tests: config, a client, a receiver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

TOKEN = "v2-test-token-5150"


class HookReceiver:
    """Captures what the json:// receiver posts (the notification gatewatch sends), with its headers."""

    def __init__(self, status: int = 200) -> None:
        self.got: list[dict[str, Any]] = []
        self.status = status  # 400 makes gatewatch dead-letter the notification

    async def start(self) -> HookReceiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.hook)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def hook(self, request: web.Request) -> web.Response:
        self.got.append({"path": request.path, "headers": dict(request.headers), "body": await request.json(),
                         "answered": self.status})
        return web.json_response({}, status=self.status)

    @property
    def port(self) -> int:
        return self.server.port

    def titles(self) -> list[str]:
        return [g["body"].get("title", "") for g in self.got if "title" in g["body"]]


def notify_config(tmp_path: Path, receiver: HookReceiver | None = None, *, state: str = "state",
                  hook_path: str = "hook", route: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    """A gatewatch config with one receiver `oncall` posting JSON to `receiver` at `/hook_path`;
    `route` replaces the default one (grouped by alertname, sent at once, 1 s apart), `server`
    adds server settings. State in `tmp_path/<state>`."""
    port = receiver.port if receiver is not None else 9  # discard: nothing listens, deliveries just retry
    return {
        "state_dir": str(tmp_path / state),
        "server": {"auth_token": TOKEN, **server},
        "notify": {
            "receivers": [{"name": "oncall", "urls": [f"json://127.0.0.1:{port}/{hook_path}"]}],
            "route": route or {"receiver": "oncall", "group_by": ["alertname"], "group_wait": "0s",
                               "group_interval": "1s"},
            "outbox": {"initial_backoff": "50ms", "max_backoff": "100ms"},
        },
    }


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    async def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        sent.update(headers or {})
        async with aiohttp.ClientSession() as session, session.request(
                method, self.base + path, data=None if body is None else json.dumps(body),
                headers={**sent, **({"Content-Type": "application/json"} if body is not None else {})}) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text) if text else None
            except ValueError:
                return response.status, text

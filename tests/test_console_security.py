"""The console over HTTP: page and assets, login, session cookie, CSRF, no token in logs,
anonymous writes refused, and the assets shipped in the wheel."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.console.routes import ASSETS
from agent.console.security import COOKIE, ConsoleAuth
from tests.alerts_v2_support import TOKEN, notify_config
from tests.conftest import ROOT
from tests.notify_support import FakeClock

SILENCE = {"matchers": ['alertname="X"'], "duration": "1h", "comment": "c", "createdBy": "t"}


async def test_root_serves_the_console_or_the_route_list(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/", headers={"Accept": "text/html"}) as r:
            html = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert "<title>gatewatch console</title>" in html
            assert "http://" not in html and "https://" not in html  # nothing from another host
        async with s.get(base + "/", headers={"Accept": "application/json"}) as r:
            assert "/api/v2/alerts" in (await r.json())["routes"]
        async with s.get(base + "/api") as r:
            assert "/api/v2/silences" in (await r.json())["routes"]
        for name in ASSETS:
            async with s.get(f"{base}/console/static/{name}") as r:
                body = await r.text()
                assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
                assert "//cdn" not in body and "https://" not in body.replace("http://www.w3.org/2000/svg", "")
        async with s.get(base + "/console/static/../../config.py") as r:
            assert r.status == 404
        async with s.get(base + "/api/v1/console/alerts") as r:
            assert r.status == 401  # the console's data is behind the token like any API


async def test_login_session_csrf_and_no_token_in_logs(gatewatch_server: Any, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.get(base + "/console/session") as r:
            assert await r.json() == {"auth_required": True, "authenticated": False, "csrf": None,
                                      "writes_allowed": True}
        async with s.post(base + "/console/login", json={"token": "wrong"}) as r:
            assert r.status == 401
        async with s.post(base + "/console/login", json={"token": TOKEN}) as r:
            assert r.status == 200
            csrf = (await r.json())["csrf"]
            cookie = r.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
            assert TOKEN not in cookie.value
        async with s.get(base + "/console/session") as r:
            assert (await r.json())["csrf"] == csrf
        async with s.get(base + "/api/v2/alerts") as r:
            assert r.status == 200
        async with s.post(base + "/api/v2/silences", json=SILENCE) as r:
            assert r.status == 403 and "CSRF" in await r.text()
        async with s.post(base + "/api/v2/silences", json=SILENCE, headers={"X-CSRF-Token": "forged"}) as r:
            assert r.status == 403
        async with s.post(base + "/api/v2/silences", json=SILENCE, headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200
        async with s.post(base + "/v1/litellm/events", data=b"[]", headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 401  # the session is for the console and the APIs, never for ingest
        async with s.post(base + "/console/logout") as r:
            assert r.status == 200
        async with s.get(base + "/api/v2/alerts") as r:
            assert r.status == 401
    async with aiohttp.ClientSession() as s:  # a tampered cookie is no session
        forged = cookie.value.rsplit(".", 1)[0] + ".AAAA"
        async with s.get(base + "/api/v2/alerts", headers={"Cookie": f"{COOKIE}={forged}"}) as r:
            assert r.status == 401
        async with s.post(base + "/console/login", json={"token": TOKEN},
                          headers={"X-Forwarded-Proto": "https"}) as r:
            assert r.cookies[COOKIE]["secure"]
        async with s.post(base + "/console/login", json={"token": TOKEN},
                          headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 403
        async with s.post(base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/" and COOKIE in r.cookies  # no-script form
    assert TOKEN not in caplog.text
    assert "console login refused" in caplog.text


def test_sessions_expire_and_end_when_the_token_changes() -> None:
    clock = FakeClock()
    token = {"value": "first-token"}
    auth = ConsoleAuth(lambda: token["value"], lambda: 3600.0, lambda: False, clock=clock)
    cookie = auth.new_session()
    assert auth.session_nonce(cookie) is not None
    clock.advance(3601)
    assert auth.session_nonce(cookie) is None
    cookie = auth.new_session()
    token["value"] = "rotated-token"
    assert auth.session_nonce(cookie) is None


async def test_without_a_token_console_writes_are_refused(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server({"state_dir": str(tmp_path / "s")})
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/console/session") as r:
            assert await r.json() == {"auth_required": False, "authenticated": True, "csrf": None,
                                      "writes_allowed": False}
        async with s.post(base + "/api/v2/silences", json=SILENCE) as r:
            assert r.status == 403 and "server.allow_unauthenticated_writes" in await r.text()
        async with s.post(base + "/api/v1/notifications/dead/x/retry") as r:
            assert r.status == 403
        async with s.get(base + "/api/v1/console/deployments") as r:
            assert r.status == 200 and (await r.json())["groups"] == []


async def test_the_build_ships_the_console_assets(tmp_path: Path) -> None:
    """setuptools' build_py (what a wheel is made from) copies the assets as package data."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "setup.py", "-q", "build_py", "--build-lib",
        str(tmp_path / "lib"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, out.decode()[-2000:]
    built = {p.name for p in (tmp_path / "lib" / "agent" / "console" / "static").iterdir()}
    assert set(ASSETS) <= built, sorted(built)


async def test_repeated_wrong_tokens_are_throttled(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    async with aiohttp.ClientSession() as s:
        codes = []
        for _ in range(21):
            async with s.post(base + "/console/login", json={"token": "guess"}) as r:
                codes.append(r.status)
        assert codes == [401] * 20 + [429]
        async with s.post(base + "/console/login", json={"token": TOKEN}) as r:
            assert r.status == 429  # even the right token waits out the window

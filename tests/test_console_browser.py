"""The console in a real browser: Debian's headless chromium driven by playwright.

Log in with the token, see a firing alert, silence it from the alert, expire the
silence, open Deployments and find the fixture deployments (replayed LiteLLM captures)
with their account and region, at desktop and phone width. Every request the page makes
is recorded: none may leave the sidecar's own origin. Screenshots go to
test-artifacts/console/ (GATEWATCH_ARTIFACTS overrides).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.alerts_v2_support import TOKEN, Api, HookReceiver, notify_config
from tests.conftest import FIXTURES, ROOT, batch_files
from tests.notify_support import until

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never playwright's own browser
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("GATEWATCH_ARTIFACTS") or ROOT / "test-artifacts") / "console"

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRING = [{"labels": {"alertname": "DeploymentRateLimited", "severity": "critical", "model_group": "gpt-lab",
                      "deployment": "gpt-lab-acct111-use1", "aws_account": "111111111111",
                      "aws_region": "us-east-1"},
           "annotations": {"summary": "429s on gpt-lab-acct111-use1 in us-east-1",
                           "runbook_url": "https://runbooks.example.com/rate-limits"}}]
CATALOG = {"gpt-lab-acct111-use1": ("111111111111", "us-east-1"),
           "gpt-lab-acct222-euw1": ("222222222222", "eu-west-1"),
           "bedrock-acct444-euc1": ("444444444444", "eu-central-1"),
           "bedrock-acct555-apse2": ("555555555555", "ap-southeast-2")}


async def replay_captures(base: str) -> int:
    accepted = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        for path in batch_files():
            body = json.dumps(json.loads(path.read_text())["body_json"]).encode()
            async with session.post(base + "/v1/litellm/events", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()
                accepted += (await response.json())["accepted"]
    return accepted


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


async def test_console_login_alert_silence_expire_deployments(gatewatch_server: Any, tmp_path: Path,
                                                              lab_environ: Any, artifacts: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    assert shutil.which(CHROMIUM), "chromium missing: run scripts/install-test-deps.sh (Debian package chromium)"
    config = notify_config(tmp_path)
    config["litellm"] = {"config": str(FIXTURES / "config.yaml")}
    config["attribution"] = {"ecs_metadata": False}
    _gw, base = await gatewatch_server(config)
    assert await replay_captures(base) > 0
    assert (await Api(base).call("POST", "/api/v2/alerts", FIRING))[0] == 200

    requests: list[str] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            errors: list[str] = []  # script errors and CSP violations show up as console errors
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            expect = playwright_api.expect

            # log in: the token goes in the body, never the URL
            await page.goto(base + "/")
            await expect(page.get_by_label("Access token")).to_be_visible()
            await page.get_by_label("Access token").fill(TOKEN)
            await page.get_by_role("button", name="Log in").click()

            # a firing alert, with its labels and runbook link
            alert = page.locator('article[data-fingerprint]', has_text="gpt-lab-acct111-use1")
            await expect(alert).to_be_visible(timeout=30000)
            await expect(alert.locator(".state")).to_have_text("firing")
            await expect(alert.get_by_role("link", name="Runbook")).to_have_attribute(
                "href", "https://runbooks.example.com/rate-limits")
            await expect(page.locator("#alerts-summary")).to_contain_text("1 firing")
            await page.screenshot(path=str(artifacts / "alerts.png"), full_page=True)

            # silence it from the alert
            await alert.get_by_role("button", name="Silence").click()
            await expect(page.get_by_label("Comment")).to_be_focused()
            matchers = await page.get_by_label("Matchers", exact=False).input_value()
            assert 'deployment="gpt-lab-acct111-use1"' in matchers
            await page.get_by_label("Comment").fill("provider incident, from the browser test")
            await page.get_by_role("button", name="Create silence").click()
            row = page.locator("tr[data-silence]", has_text="provider incident")
            await expect(row.locator(".state")).to_have_text("active", timeout=15000)
            await page.screenshot(path=str(artifacts / "silences.png"), full_page=True)
            await page.get_by_role("link", name="Alerts").click()
            await expect(alert.locator(".state")).to_have_text("silenced", timeout=15000)
            _, listed = await Api(base).call("GET", "/api/v2/alerts")
            assert listed[0]["status"]["state"] == "suppressed"

            # expire the silence
            await page.get_by_role("link", name="Silences").click()
            await row.get_by_role("button", name="Expire silence").click()
            await expect(row.locator(".state")).to_have_text("expired", timeout=15000)
            await page.get_by_role("link", name="Alerts").click()
            await expect(alert.locator(".state")).to_have_text("firing", timeout=15000)

            # deployments from the replayed captures, with account and region
            await page.get_by_role("link", name="Deployments").click()
            for deployment, (account, region) in CATALOG.items():
                line = page.locator(f'tr[data-deployment="{deployment}"]')
                await expect(line).to_be_visible(timeout=15000)
                cells = await line.locator("td").all_inner_texts()
                assert cells[1] == account and cells[2] == region, (deployment, cells)
            busy = page.locator('tr[data-deployment="gpt-lab-acct111-use1"]')
            await expect(busy.locator("svg.spark")).to_have_attribute("aria-label", __import__("re").compile(
                r"[1-9]\d* requests in the last hour"))
            await page.screenshot(path=str(artifacts / "deployments.png"), full_page=True)

            # phone width: nothing wider than the screen but the scrollable tables
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.get_by_role("link", name="Alerts").click()
            await expect(alert).to_be_visible()
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 392, width
            await page.screenshot(path=str(artifacts / "alerts-phone.png"), full_page=True)
            await page.get_by_role("link", name="Deployments").click()
            await expect(page.locator('tr[data-deployment="gpt-lab-acct111-use1"]')).to_be_visible()
            assert await page.evaluate("document.documentElement.scrollWidth") <= 392  # tables scroll inside
            await page.screenshot(path=str(artifacts / "deployments-phone.png"), full_page=True)

            assert errors == [], errors

            # the session cookie, and CSRF: a write without the page's token is refused
            cookies = {c["name"]: c for c in await context.cookies()}
            session = cookies["gatewatch_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict" and not session["secure"]
            assert TOKEN not in session["value"]
            status = await page.evaluate("""async () => (await fetch('/api/v2/silences', {method: 'POST',
                headers: {'Content-Type': 'application/json'}, body: JSON.stringify({matchers: ['a="b"'],
                duration: '1h', comment: 'csrf', createdBy: 'x'})})).status""")
            assert status == 403
            await context.close()
        finally:
            await browser.close()

    assert requests, "no request recorded"
    foreign = [url for url in requests if not url.startswith(base + "/")]
    assert foreign == [], f"the console loaded from other hosts: {foreign}"
    assert not any(TOKEN in url for url in requests)


async def test_console_notifications_dead_letter_retry(gatewatch_server: Any, tmp_path: Path,
                                                       artifacts: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    hook = await HookReceiver(status=400).start()
    try:
        _gw, base = await gatewatch_server(notify_config(tmp_path, hook))
        assert (await Api(base).call("POST", "/api/v2/alerts", FIRING))[0] == 200

        async def dead() -> bool:
            return (await Api(base).call("GET", "/api/v1/notifications/dead"))[1]["count"] == 1

        await until(dead, limit=30, what="a dead letter")
        hook.status = 200
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                expect = playwright_api.expect
                await page.goto(base + "/#notifications")
                await page.get_by_label("Access token").fill(TOKEN)
                await page.get_by_role("button", name="Log in").click()
                dead_table = page.get_by_role("region", name="Dead letters")
                await expect(dead_table).to_contain_text("DeploymentRateLimited", timeout=15000)
                await expect(dead_table).to_contain_text("json://***")  # masked, never the URL
                await dead_table.get_by_role("button", name="Retry").first.click()
                await expect(page.locator("#status")).to_contain_text("Requeued 1", timeout=15000)
                sent_table = page.get_by_role("region", name="Sent (latest)")
                await page.get_by_role("link", name="Alerts").click()
                await page.get_by_role("link", name="Notifications").click()
                await expect(sent_table.locator("tbody tr")).to_have_count(1, timeout=20000)
                await expect(sent_table).to_contain_text("oncall")
                await expect(dead_table).to_contain_text("None.")
                await page.screenshot(path=str(artifacts / "notifications.png"), full_page=True)
            finally:
                await browser.close()
        assert [g["answered"] for g in hook.got] == [400, 200]
    finally:
        await hook.server.close()

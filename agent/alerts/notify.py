"""Delivery to one channel: apprise URLs (Slack, Discord, Teams Workflows, json://, ...) and the
Alertmanager-compatible webhook (aiohttp, optional HMAC signature).

A target sends one notification and reports what happened (`SendResult`): the HTTP status
and `Retry-After` when there was an answer, so the outbox can back off correctly and give
up at once on a permanent 4xx. apprise's plugins are synchronous (`requests`), so they run
on a small thread pool, never on the event loop. URLs are never logged or returned: a
target is shown by `masked` (`slack://***`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import hmac
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from agent import __version__
from agent.alerts.config import NotifyConfig, ReceiverConfig, WebhookConfig, mask_url, quiet_apprise, url_scheme
from agent.alerts.escape import for_channel, json_safe
from agent.alerts.notification import Notification
from agent.alerts.templates import render, template_path
from agent.alerts.templates.webhook import webhook_payload
from agent.redact import register_secret

log = logging.getLogger(__name__)

ID_HEADER = "X-Gatewatch-Notification-Id"
SIGNATURE_HEADER = "X-Gatewatch-Signature"
RETRYABLE_4XX = {408, 425, 429}
# message body limits of the chat services (Slack section text 3000, Discord embed description 4096,
# Teams cards ~28 KB): a longer body is rejected with a 400, which would dead-letter the alert
BODY_LIMITS = {"slack": 2800, "discord": 4000, "workflows": 12000}


@dataclass
class SendResult:
    ok: bool
    status: int | None = None
    retry_after: float | None = None  # seconds, from a Retry-After answer
    error: str = ""  # safe to log and store: never contains the URL
    permanent: bool = False  # retrying cannot help (e.g. 400, 401, 404)


class Target(Protocol):
    id: str
    receiver: str
    masked: str
    kind: str

    async def send(self, note: Notification) -> SendResult: ...


def target_id(receiver: str, url: str) -> str:
    """Stable key of (receiver, URL) for outbox rows: survives reordering, reveals nothing."""
    return hashlib.sha256(f"{receiver}\x00{url}".encode()).hexdigest()[:16]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def result_from_status(status: int, retry_after: str | None) -> SendResult:
    if 200 <= status < 300:
        return SendResult(True, status)
    permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
    return SendResult(False, status, parse_retry_after(retry_after), f"HTTP {status}", permanent)


def _looks_like_token(text: str) -> bool:
    return len(text) >= 20 or (len(text) >= 8 and any(c.isdigit() for c in text))


def register_url_secrets(url: str) -> None:
    """Mask the token-like parts of a URL if a library logs them anyway (apprise, urllib3 at debug).

    Only parts that look like tokens (long, or with digits) are registered, so words like
    `alerts` in a path do not turn every log line into `***`.
    """
    register_secret(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    candidates = [parts.netloc.rpartition("@")[0], parts.password or "", *parts.path.split("/")]
    candidates += [value for _key, value in parse_qsl(parts.query)]
    if url_scheme(url) not in ("http", "https", "json", "jsons"):
        candidates.append(parts.hostname or "")  # slack://TOKEN_A/..., discord://WEBHOOK_ID/...
    for part in candidates:
        if _looks_like_token(part):
            register_secret(part)


# -- apprise ---------------------------------------------------------------------------
_recording = threading.local()


def _install_response_recorder() -> None:
    """Let a sending thread see the HTTP answers apprise's plugin got (status, Retry-After).

    apprise reports only success/failure; honouring a 429's Retry-After needs the answer
    itself. The wrapper records only on threads inside `_record_responses()` and is a
    plain pass-through everywhere else.
    """
    import requests

    original = requests.Session.send
    if getattr(original, "_gatewatch_recorder", False):
        return

    @functools.wraps(original)
    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        response = original(self, request, **kwargs)
        sink = getattr(_recording, "responses", None)
        if sink is not None:
            sink.append((response.status_code, response.headers.get("Retry-After")))
        return response

    send._gatewatch_recorder = True  # type: ignore[attr-defined]
    requests.Session.send = send  # type: ignore[method-assign]


@contextlib.contextmanager
def _record_responses() -> Iterator[list[tuple[int, str | None]]]:
    responses: list[tuple[int, str | None]] = []
    _recording.responses = responses
    try:
        yield responses
    finally:
        _recording.responses = None


def clip(text: str, limit: int | None) -> str:
    """Cut at a line end under `limit` characters and say so."""
    if limit is None or len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 40)
    cut = cut if cut > 0 else limit - 40
    return text[:cut] + "\n… (message shortened)"


def _channel(plugin: Any) -> str:
    name = type(plugin).__name__
    return {"NotifySlack": "slack", "NotifyDiscord": "discord", "NotifyWorkflows": "workflows",
            "NotifyJSON": "json"}.get(name, "other")


class AppriseTarget:
    """One apprise URL; the channel's JSON template (Slack/Discord/Teams) gives the layout."""

    def __init__(self, receiver: str, url: str, executor: ThreadPoolExecutor, timeout: float) -> None:
        from apprise import Apprise, AppriseAsset
        from apprise.plugins import url_to_dict

        self.receiver = receiver
        self.id = target_id(receiver, url)
        self.masked = mask_url(url)
        self._executor = executor
        self._timeout = timeout
        self._asset = AppriseAsset(app_id="gatewatch", app_desc="gatewatch alerts",
                                   app_url="https://github.com/gatewatch")
        register_url_secrets(url)
        with quiet_apprise():
            parsed = url_to_dict(url)
            plugin = Apprise.instantiate(parsed, asset=self._asset) if parsed else None
        if parsed is None or plugin is None:
            raise ValueError(f"receiver {receiver!r}: {url_scheme(url)}:// URL could not be parsed")
        self._base: dict[str, Any] = parsed
        self.kind = _channel(plugin)
        _install_response_recorder()

    def _plugin_args(self, note: Notification, tokens: dict[str, str]) -> dict[str, Any]:
        args = copy.deepcopy(self._base)
        args["rto"] = self._timeout
        args["cto"] = min(5.0, self._timeout)
        if self.kind in ("slack", "discord", "workflows"):
            args["template"] = template_path(self.kind)
            args["tokens"] = {**(args.get("tokens") or {}), **tokens}
            if self.kind == "slack":
                args["use_blocks"] = True
        elif self.kind == "json":
            args["headers"] = {**(args.get("headers") or {}), ID_HEADER: note.id}
            args["payload"] = {**(args.get("payload") or {}), "notification_id": note.id,
                               "status": note.status, "receiver": note.receiver,
                               "alertmanager": json_safe(webhook_payload(note))}
        return args

    def _send_sync(self, note: Notification) -> SendResult:
        from apprise import Apprise, NotifyFormat

        fields_note, body_note = for_channel(note, self.kind)  # payload text is text, never markup
        rendered = render(fields_note)
        text = clip(render(body_note).body, BODY_LIMITS.get(self.kind))
        with quiet_apprise():
            plugin = Apprise.instantiate(self._plugin_args(note, rendered.tokens), asset=self._asset)
        if plugin is None:
            return SendResult(False, error="apprise could not build the service", permanent=True)
        with _record_responses() as responses:
            try:
                ok = bool(plugin.notify(body=text, title=rendered.title, notify_type=rendered.notify_type,
                                        body_format=NotifyFormat.MARKDOWN))
            except Exception as exc:  # a plugin bug must not kill the delivery loop
                return SendResult(False, error=f"apprise {self.kind}: {type(exc).__name__}")
        failed = next(((s, ra) for s, ra in responses if not 200 <= s < 300), None)
        if ok:
            return SendResult(True, responses[-1][0] if responses else None)
        if failed is not None:
            result = result_from_status(*failed)
            result.error = f"apprise {self.kind}: HTTP {failed[0]}"
            return result
        return SendResult(False, error=f"apprise {self.kind}: not delivered (no answer or connection error)")

    async def send(self, note: Notification) -> SendResult:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._send_sync, note)
        try:
            return await asyncio.wait_for(future, timeout=self._timeout * 2 + 5)
        except TimeoutError:
            return SendResult(False, error=f"apprise {self.kind}: timed out")


# -- Alertmanager webhook ----------------------------------------------------------------
class WebhookTarget:
    kind = "webhook"

    def __init__(self, receiver: str, cfg: WebhookConfig, session: SessionHolder, timeout: float) -> None:
        self.receiver = receiver
        self.cfg = cfg
        self.id = target_id(receiver, cfg.url)
        self.masked = mask_url(cfg.url)
        self._session = session
        self._timeout = float(cfg.timeout) if cfg.timeout else timeout
        register_url_secrets(cfg.url)

    def body(self, note: Notification) -> bytes:
        import json

        payload = json_safe(webhook_payload(note, self.cfg.max_alerts))  # no Infinity/NaN: valid JSON only
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()

    async def send(self, note: Notification) -> SendResult:
        data = self.body(note)
        headers = {"Content-Type": "application/json", "User-Agent": f"gatewatch/{__version__}",
                   ID_HEADER: note.id, "Idempotency-Key": note.id}
        headers.update({str(k): str(v) for k, v in self.cfg.headers.items()})
        if self.cfg.hmac_secret:
            digest = hmac.new(str(self.cfg.hmac_secret).encode(), data, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        session = await self._session.get()
        try:
            async with session.post(str(self.cfg.url), data=data, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=self._timeout)) as response:
                await response.read()
                return result_from_status(response.status, response.headers.get("Retry-After"))
        except TimeoutError:
            return SendResult(False, error="webhook: timed out")
        except aiohttp.ClientError as exc:
            return SendResult(False, error=f"webhook: {type(exc).__name__}")


class SessionHolder:
    """One aiohttp session for every webhook target, created on first use in the loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Notifier:
    """The targets of every receiver, rebuilt on config reload."""

    def __init__(self, config: NotifyConfig, apprise_threads: int = 4) -> None:
        apprise_log = logging.getLogger("apprise")
        if apprise_log.level == logging.NOTSET:
            apprise_log.setLevel(logging.WARNING)  # its DEBUG lines carry URLs and whole payloads
        self._executor = ThreadPoolExecutor(max_workers=apprise_threads, thread_name_prefix="gatewatch-notify")
        self.sessions = SessionHolder()
        self.targets: dict[str, Target] = {}
        self.by_receiver: dict[str, list[Target]] = {}
        self.configure(config)

    def configure(self, config: NotifyConfig) -> None:
        timeout = float(config.outbox.send_timeout)
        targets: dict[str, Target] = {}
        by_receiver: dict[str, list[Target]] = {}
        for receiver in config.receivers:
            built = self.build_targets(receiver, timeout)
            by_receiver[receiver.name] = built
            for target in built:
                targets[target.id] = target
        self.targets, self.by_receiver = targets, by_receiver

    def build_targets(self, receiver: ReceiverConfig, timeout: float) -> list[Target]:
        built: list[Target] = [AppriseTarget(receiver.name, url, self._executor, timeout) for url in receiver.urls]
        if receiver.webhook.configured:
            built.append(WebhookTarget(receiver.name, receiver.webhook, self.sessions, timeout))
        return built

    async def close(self) -> None:
        await self.sessions.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

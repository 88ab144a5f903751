"""The `notify` config section, in Alertmanager's shape.

receivers (apprise URLs and/or an Alertmanager-compatible webhook), a route tree,
inhibit rules and mute time intervals read like an `alertmanager.yml`, so people who
run Alertmanager already know them. URLs and tokens are `Secret`s (come via ${ENV}) and
errors name the key path and the URL's scheme, never the URL.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent.alerts.timeintervals import MuteTimeIntervalConfig
from agent.configtypes import ConfigError, Duration, Secret, build
from agent.matchers import MatcherError, parse_matcher

TEAMS_RETIRED = (
    "Microsoft retired Office 365 connectors (msteams://, *.webhook.office.com); create a Teams Workflow "
    "('Post to a channel when a webhook request is received') and use its URL as workflows://HOST/WORKFLOW/SIGNATURE "
    "(or paste the https://...logic.azure.com/... URL it gives you)"
)


@contextlib.contextmanager
def quiet_apprise() -> Iterator[None]:
    """apprise logs rejected URLs (tokens included) while parsing: silence it around validation."""
    logger = logging.getLogger("apprise")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def url_scheme(url: str) -> str:
    match = re.match(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://", url or "")
    return match.group(1).lower() if match else ""


def mask_url(url: str) -> str:
    """What may be shown of a notification URL: `slack://***`, `https://host:port/***`."""
    scheme = url_scheme(url)
    if not scheme:
        return "***"
    if scheme in ("http", "https"):
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return f"{scheme}://***"
        return f"{scheme}://{host}{port}/***"
    return f"{scheme}://***"


def check_apprise_url(url: str, path: str) -> None:
    """Reject retired or unparseable URLs at config load, naming the scheme only."""
    scheme = url_scheme(url)
    lowered = (url or "").lower()
    if scheme in ("msteams", "msteam", "teams") or ".webhook.office.com" in lowered:
        raise ConfigError(path, TEAMS_RETIRED)
    if not scheme:
        raise ConfigError(path, "expected an apprise URL like slack://..., discord://..., workflows://... or "
                                "json://host:port/path")
    from apprise import Apprise
    from apprise.plugins import url_to_dict

    with quiet_apprise():
        parsed = url_to_dict(url)
        plugin = Apprise.instantiate(parsed) if parsed else None
    if plugin is None:
        raise ConfigError(path, f"not a valid {scheme}:// notification URL (unknown scheme or missing tokens; "
                                "see the apprise documentation for its format)")


@dataclass
class WebhookConfig:
    """POSTs Alertmanager's webhook v4 JSON, so any Alertmanager webhook consumer works."""

    url: Secret = Secret("")
    headers: dict[str, Secret] = field(default_factory=dict)
    hmac_secret: Secret | None = None  # X-Gatewatch-Signature: sha256=HMAC(secret, body)
    max_alerts: int = 0  # 0 = all; Alertmanager's truncatedAlerts beyond this
    timeout: Duration | None = None  # default: notify.outbox.send_timeout

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def validate(self, path: str) -> None:
        if not self.url:
            if self.headers or self.hmac_secret or self.max_alerts or self.timeout:
                raise ConfigError(f"{path}.url", "expected the webhook's http:// or https:// URL")
            return
        if url_scheme(self.url) not in ("http", "https"):
            raise ConfigError(f"{path}.url", "expected an http:// or https:// URL")
        if self.max_alerts < 0:
            raise ConfigError(f"{path}.max_alerts", "expected 0 (all) or a positive number")


@dataclass
class ReceiverConfig:
    name: str = ""
    urls: list[Secret] = field(default_factory=list)  # apprise: slack://, discord://, workflows://, json://, ...
    # not Optional: a failed Optional section would be reported as a whole, with its (secret) values
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    send_resolved: bool = True

    def validate(self, path: str) -> None:
        if not self.name:
            raise ConfigError(f"{path}.name", "expected a non-empty receiver name")
        if not self.urls and not self.webhook.configured:
            raise ConfigError(path, f"receiver {self.name!r} needs `urls` (apprise) and/or `webhook`")
        for i, url in enumerate(self.urls):
            check_apprise_url(url, f"{path}.urls[{i}]")


@dataclass
class RouteConfig:
    receiver: str | None = None  # inherited from the parent when unset
    matchers: list[str] = field(default_factory=list)
    group_by: list[str] | None = None  # ['...'] = every label (no grouping); inherited when unset
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = False  # YAML key `continue`
    mute_time_intervals: list[str] = field(default_factory=list)
    active_time_intervals: list[str] = field(default_factory=list)
    routes: list[RouteConfig] = field(default_factory=list)

    def validate(self, path: str) -> None:
        for i, text in enumerate(self.matchers):
            try:
                parse_matcher(text)
            except MatcherError as exc:
                raise ConfigError(f"{path}.matchers[{i}]", str(exc)) from None


@dataclass
class InhibitRuleConfig:
    source_matchers: list[str] = field(default_factory=list)
    target_matchers: list[str] = field(default_factory=list)
    equal: list[str] = field(default_factory=list)

    def validate(self, path: str) -> None:
        for key in ("source_matchers", "target_matchers"):
            items = getattr(self, key)
            if not items:
                raise ConfigError(f"{path}.{key}", "expected at least one matcher")
            for i, text in enumerate(items):
                try:
                    parse_matcher(text)
                except MatcherError as exc:
                    raise ConfigError(f"{path}.{key}[{i}]", str(exc)) from None


@dataclass
class OutboxConfig:
    max_age: Duration = Duration(6 * 3600)  # then the notification goes to the dead letters
    initial_backoff: Duration = Duration(1)
    max_backoff: Duration = Duration(300)
    send_timeout: Duration = Duration(10)
    max_pending: int = 10000  # new notifications beyond this are dropped (counted)
    dead_letter_retention: Duration = Duration(7 * 86400)

    def validate(self, path: str) -> None:
        if self.initial_backoff <= 0:
            raise ConfigError(f"{path}.initial_backoff", "expected a positive duration")
        if self.max_backoff < self.initial_backoff:
            raise ConfigError(f"{path}.max_backoff", "expected at least initial_backoff")
        if self.send_timeout <= 0:
            raise ConfigError(f"{path}.send_timeout", "expected a positive duration")
        if self.max_pending < 1:
            raise ConfigError(f"{path}.max_pending", "expected a positive integer")


@dataclass
class NotifyConfig:
    """Off (alerts go to the log) until at least one receiver is configured."""

    receivers: list[ReceiverConfig] = field(default_factory=list)
    route: Any = None  # RouteConfig after validation (built here because `continue` is a Python keyword)
    inhibit_rules: list[InhibitRuleConfig] = field(default_factory=list)
    mute_time_intervals: list[MuteTimeIntervalConfig] = field(default_factory=list)
    resolve_timeout: Duration = Duration(300)  # a firing alert not re-sent for this long counts as resolved
    external_url: str | None = None  # link shown in messages (e.g. the Grafana dashboard)
    # Grafana dashboard base URL: each message links it with the alert's locating labels as
    # `var-<label>=<value>` (model_group, deployment, aws_account, aws_region)
    dashboard_url: str | None = None
    task_id: str | None = None  # owner name for cross-task de-dup claims; default host-pid
    outbox: OutboxConfig = field(default_factory=OutboxConfig)

    @property
    def enabled(self) -> bool:
        return bool(self.receivers)

    def validate(self, path: str) -> None:
        names = [r.name for r in self.receivers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"{path}.receivers[{i}].name", f"duplicate receiver name {name!r}")
        route_path = f"{path}.route" if path else "route"
        if self.route is None:
            if len(self.receivers) > 1:
                raise ConfigError(route_path, "required when more than one receiver is configured")
            self.route = RouteConfig(receiver=names[0] if names else None)
        elif not isinstance(self.route, RouteConfig):
            self.route = build_route(self.route, route_path)
        if not self.receivers:
            return
        if not self.route.receiver:
            raise ConfigError(f"{route_path}.receiver", "the root route needs a receiver")
        if self.route.matchers:
            raise ConfigError(f"{route_path}.matchers", "the root route matches every alert; put matchers on "
                                                        "child routes")
        intervals = {t.name for t in self.mute_time_intervals}
        self._check_route(self.route, route_path, set(names), intervals)

    def _check_route(self, route: RouteConfig, path: str, receivers: set[str], intervals: set[str]) -> None:
        if route.receiver is not None and route.receiver not in receivers:
            raise ConfigError(f"{path}.receiver", f"unknown receiver {route.receiver!r}; expected one of: "
                                                  f"{', '.join(sorted(receivers))}")
        for key in ("mute_time_intervals", "active_time_intervals"):
            for i, name in enumerate(getattr(route, key)):
                if name not in intervals:
                    raise ConfigError(f"{path}.{key}[{i}]", f"unknown time interval {name!r} "
                                                            "(define it under notify.mute_time_intervals)")
        for i, child in enumerate(route.routes):
            self._check_route(child, f"{path}.routes[{i}]", receivers, intervals)


def build_route(data: Any, path: str) -> RouteConfig:
    """Build the route tree, mapping the YAML key `continue` to the field `continue_`."""
    try:
        return build(RouteConfig, _rename_continue(data, path), path)
    except ConfigError as exc:
        if "continue_" in exc.reason:
            exc.reason = exc.reason.replace("continue_", "continue")
            exc.args = (exc._render(),)
        raise


def _rename_continue(data: Any, path: str) -> Any:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
    if "continue_" in data:
        raise ConfigError(f"{path}.continue_", "unknown key; did you mean `continue`?")
    out = {("continue_" if k == "continue" else k): v for k, v in data.items()}
    routes = out.get("routes")
    if isinstance(routes, list):
        out["routes"] = [_rename_continue(r, f"{path}.routes[{i}]") for i, r in enumerate(routes)]
    return out

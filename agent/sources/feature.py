"""Wires the proxy watchers into the app from the `litellm` config section.

- `litellm.logs` (files, globs, "-" for stdin) -> the log tail (`agent.sources.tail`)
- `litellm.base_url` -> the health / model-info poller (`agent.sources.health`)

Both publish into the same pipeline as the callbacks, so rules see the `cooldowns`,
`retries`, `deployment_state` and `no_deployments` signals whichever source saw them.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent.sources.health import HealthPoller, PollSettings
from agent.sources.tail.source import TailSource

if TYPE_CHECKING:
    from agent.config import Config, LiteLLMConfig
    from agent.host import FeatureHost

log = logging.getLogger(__name__)


def poll_settings(cfg: LiteLLMConfig) -> PollSettings:
    return PollSettings(
        base_url=str(cfg.base_url),
        api_key=str(cfg.api_key) if cfg.api_key else None,
        health_interval=float(cfg.health_interval),
        deployment_health_interval=float(cfg.deployment_health_interval) if cfg.deployment_health_interval else None,
        model_info_interval=float(cfg.model_info_interval) if cfg.model_info_interval else None,
        request_timeout=float(cfg.request_timeout),
        deployment_health_timeout=float(cfg.deployment_health_timeout),
        start_grace=float(cfg.start_grace),
    )


def install(app: FeatureHost) -> None:
    cfg = app.config.litellm
    if cfg.logs:
        _install_tail(app)
    if cfg.base_url:
        _install_poller(app)
    if cfg.logs or cfg.base_url:
        app.add_config_check(lambda: check_lines(app.config))


def check_lines(config: Config) -> list[str]:
    """What `gatewatch check-config` says about the log tail and the poller (never the key)."""
    cfg = config.litellm
    lines = []
    for pattern in cfg.logs:
        if pattern == "-":
            lines.append("logs: standard input")
            continue
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [p for p in [pattern] if Path(p).exists()]
        lines.append(f"logs: {pattern} -> {len(found)} file(s)" + (f": {', '.join(found[:5])}" if found else
                                                                   " (read as soon as it appears)"))
    if cfg.base_url:
        lines.append(f"health poller: {cfg.base_url} every {cfg.health_interval:g}s, /health "
                     + (f"every {cfg.deployment_health_interval:g}s" if cfg.deployment_health_interval else "off")
                     + f", /model/info every {cfg.model_info_interval:g}s"
                     + ("" if cfg.api_key else " (no litellm.api_key: /health and /model/info will answer 401)"))
    return lines


def _install_tail(app: FeatureHost) -> None:
    cfg = app.config.litellm
    received = app.metrics.events_received.labels("log")
    source = TailSource(cfg.logs, cfg.tail, str(Path(app.config.state_dir)), app.pipeline.publish, app.registry,
                        on_received=received.inc, lookup=app.catalog.get)
    app.add_source(source)
    app.readiness_checks["logtail"] = source.healthy
    app.log_tail = source

    async def reload(new: Config) -> None:
        patterns = [p for p in new.litellm.logs if p != "-"]
        if source.tailer is not None and patterns != source.tailer.patterns:
            source.tailer.patterns = patterns  # taken at the next discovery round
            log.info("log tail now follows %s", ", ".join(patterns))
        if ("-" in new.litellm.logs) != source.use_stdin:
            log.warning("litellm.logs: adding or removing stdin (-) needs a restart")

    app.reload_hooks.append(reload)


def _install_poller(app: FeatureHost) -> None:
    received = app.metrics.events_received.labels("health")

    def publish(events: list) -> None:
        if events:
            app.pipeline.publish(events)
            received.inc(len(events))

    def on_catalog(outcome: str) -> None:
        app.metrics.catalog_reloads.labels("model_info", outcome).inc()
        app.metrics.catalog_deployments.set(len(app.catalog))

    poller = HealthPoller(poll_settings(app.config.litellm), publish, app.registry, catalog=app.catalog,
                          enricher=app.enricher, on_catalog=on_catalog)
    app.add_source(poller)
    app.health_poller = poller

    async def reload(new: Config) -> None:
        if new.litellm.base_url:
            await poller.reconfigure(poll_settings(new.litellm))
        else:
            log.warning("litellm.base_url removed: the health poller stops at the next restart")

    app.reload_hooks.append(reload)

"""Feature hooks of the optional sinks: CloudWatch and OpenTelemetry wired into the app
(agent/features.py calls each `install`). The sinks themselves never see the app."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from agent.otel.config import enabled_by_env, resolve
from agent.sinks.cloudwatch import CloudWatchSink, describe
from agent.sinks.config import CloudWatchConfig
from agent.sinks.otel import OtelSink

if TYPE_CHECKING:
    from agent.config import Config
    from agent.host import FeatureHost

log = logging.getLogger("agent.sinks.otel")  # the otel sink's own logger: its reload lines stay where they were


def install_cloudwatch(app: FeatureHost) -> None:
    config: CloudWatchConfig | None = getattr(app.config, "cloudwatch", None)
    if config is None or not config.enabled:
        return
    sink = CloudWatchSink(config, app.registry, app.metrics)
    app.add_sink(sink)
    app.readiness_checks["cloudwatch"] = sink.readiness
    app.reload_hooks.append(sink.reload)
    app.add_config_check(lambda: [describe(config)])
    app.cloudwatch = sink


def install_otel(app: FeatureHost) -> None:
    """Wire the OTel sink into the app when `otel` is enabled (explicitly or by env)."""
    config = getattr(app.config, "otel", None)
    if config is None or not enabled_by_env(config, os.environ):
        return
    settings = resolve(config, os.environ)
    if not settings.traces and not settings.metrics:
        log.info("otel: OTEL_TRACES_EXPORTER=none and no metrics: nothing to export")
        return
    sink = OtelSink(settings, app.registry)
    app.add_sink(sink)
    app.readiness_checks["otel"] = sink.readiness

    async def reload(new_config: Config) -> None:
        new = getattr(new_config, "otel", None)
        if new is None:
            return
        try:
            new_settings = resolve(new, os.environ)
        except ValueError as exc:
            log.error("otel: reload refused: %s", exc)
            return
        if (new_settings.traces_endpoint != sink.settings.traces_endpoint
                or new_settings.capture_content != sink.settings.capture_content
                or new_settings.metrics != sink.settings.metrics):
            log.warning("otel: endpoint, content capture or metrics changed: takes effect after a restart")
        sink.apply_sampling(new_settings)

    app.reload_hooks.append(reload)

"""Feature hook: `quotas.enabled` wires the usage recorder (a sink), the quota service (a
component) and its collector into the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.quotas.metrics import QuotaCollector
from agent.quotas.service import QuotaService
from agent.quotas.usage import UsageRecorder

if TYPE_CHECKING:
    from agent.config import Config
    from agent.host import FeatureHost


def litellm_config_text(config: Config) -> str | None:
    """The proxy's config.yaml (blocking: a file or s3:// read), for the credentials of each deployment."""
    from agent.config import read_text
    from agent.configtypes import ConfigError

    if not config.litellm.config:
        return None
    try:
        return read_text(config.litellm.config)
    except ConfigError:
        return None


def install(app: FeatureHost) -> None:
    config = app.config.quotas
    if not config.enabled:
        return
    from agent.state.redis import RedisState

    recorder = UsageRecorder(app.state if isinstance(app.state, RedisState) else None)
    app.add_sink(recorder)
    service = QuotaService(config, app.catalog, lambda: litellm_config_text(app.config),
                           app.pipeline.publish_attributed, recorder)
    sink = app.cloudwatch  # installed before this feature (agent/features.py)
    if sink is not None:
        service.cloudwatch = sink.add_gauges
        service.cloudwatch_interval = float(app.config.cloudwatch.interval)
    app.add_source(service)  # it publishes Kind.QUOTA events
    app.registry.register(QuotaCollector(service))
    app.add_config_check(lambda: [
        f"quotas: on, Service Quotas every {config.refresh_interval:g}s, AWS/Bedrock metrics every "
        f"{config.account_usage_interval:g}s, {len(config.roles)} configured roles, "
        f"{len(config.models)} model overrides (`gatewatch quotas show` lists the matches)"])
    app.quotas = service

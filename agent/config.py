"""The gatewatch config file: one YAML document, `${ENV}` interpolation, typed sections.

Each top-level section is a dataclass. Feature modules that own a section define its
dataclass next to their code and it is listed in `Config` below. Defaults are embedded so
`gatewatch run` with no file works on a fresh machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agent.alerts.config import NotifyConfig
from agent.configtypes import ByteSize, ConfigError, Duration, Secret, build, interpolate, scrub
from agent.console.config import ConsoleConfig
from agent.otel.config import OtelConfig
from agent.quotas.config import QuotasConfig
from agent.refresh.config import RefreshConfig
from agent.rules.config import RuleEngineConfig
from agent.sinks.config import CloudWatchConfig
from agent.sources.tail.config import TailConfig
from agent.state.config import StateConfig

OPTIONAL_LABELS = ("hashed_api_key", "user", "end_user", "user_email", "client_ip", "user_agent")


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 9464
    auth_token: Secret | None = None  # required as `Authorization: Bearer ...` on ingest routes when set
    max_body_bytes: ByteSize = ByteSize(32 * 1024 * 1024)  # a full 512-event batch is ~8 MB
    shutdown_grace: Duration = Duration(25)  # ECS gives 30 s between SIGTERM and SIGKILL
    body_read_timeout: Duration = Duration(30)  # a request body must arrive within this (408 after)
    max_inflight_bodies: int = 64  # request bodies read at once; past it 503 at once
    # without auth_token, API/console writes (silences, posted alerts, retries) are refused unless this is true
    allow_unauthenticated_writes: bool = False

    def validate(self, path: str) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port", f"expected a port number 0-65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"{path}.max_body_bytes", "expected at least 1KB")
        if self.max_inflight_bodies < 1:
            raise ConfigError(f"{path}.max_inflight_bodies", "expected a positive integer")


@dataclass
class LiteLLMConfig:
    config: str | None = None  # path or s3:// URL of the proxy's config.yaml (deployment catalog)
    config_refresh: Duration = Duration(300)  # re-read an s3:// or file catalog (by ETag / mtime)
    base_url: str | None = None  # the proxy, for /health and /model/info polling
    api_key: Secret | None = None
    logs: list[str] = field(default_factory=list)  # JSON log files / globs to tail; "-" for stdin
    health_interval: Duration = Duration(15)  # /health/readiness + /health/liveliness
    deployment_health_interval: Duration | None = None  # /health (calls every deployment): off by default
    model_info_interval: Duration = Duration(300)  # /model/info catalog refresh
    request_timeout: Duration = Duration(10)
    deployment_health_timeout: Duration = Duration(120)  # /health waits for every deployment's check
    # no ProxyDown before the proxy was seen up once or this long after the sidecar started
    start_grace: Duration = Duration(300)
    tail: TailConfig = field(default_factory=TailConfig)  # how litellm.logs are followed


@dataclass
class AttributionConfig:
    """Where account/region come from for deployments whose config names none."""

    aws_account: str | None = None
    aws_region: str | None = None
    ecs_metadata: bool = True  # ask ECS_CONTAINER_METADATA_URI_V4 for the task's own account/region


@dataclass
class LabelsConfig:
    optional: list[Literal["hashed_api_key", "user", "end_user", "user_email", "client_ip", "user_agent"]] = field(
        default_factory=list
    )
    series_limit: int = 10000  # per metric; overflow folds into one __overflow__ series
    max_value_length: int = 256  # longer label values are cut (ending in "…") and counted

    def validate(self, path: str) -> None:
        if self.series_limit < 1:
            raise ConfigError(f"{path}.series_limit", "expected a positive integer")
        if self.max_value_length < 16:
            raise ConfigError(f"{path}.max_value_length", "expected an integer of at least 16")


@dataclass
class PrometheusConfig:
    enabled: bool = True
    include_health_checks: bool = False  # LiteLLM's own /health traffic in the litellm_* series
    process_metrics: bool = True


@dataclass
class PipelineConfig:
    # A failed attempt is held this long before it counts as a failed *request*, because a
    # retry or fallback of the same litellm_call_id may still succeed.
    request_merge_window: Duration = Duration(60)
    max_pending_requests: int = 100000


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    state_dir: str = field(default_factory=lambda: os.environ.get("GATEWATCH_STATE_DIR") or ".gatewatch")
    litellm: LiteLLMConfig = field(default_factory=LiteLLMConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    rules: list[str] | None = None  # files, folders or s3:// prefixes; None = the default pack
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for awslogs / FireLens
    otel: OtelConfig = field(default_factory=OtelConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    cloudwatch: CloudWatchConfig = field(default_factory=CloudWatchConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    rule_engine: RuleEngineConfig = field(default_factory=RuleEngineConfig)
    state: StateConfig = field(default_factory=StateConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    quotas: QuotasConfig = field(default_factory=QuotasConfig)

    source_file: str | None = field(default=None, metadata={"config": False})  # where it came from; not a key


def parse_config(data: Any, file: str | None = None, env: dict[str, str] | None = None) -> Config:
    used: dict[str, str] = {}
    try:
        data = interpolate(data or {}, env, used=used)
        cfg = build(Config, data)
    except ConfigError as exc:
        raise scrub(exc, used).in_file(file or "<config>") from None
    cfg.source_file = file
    return cfg


def load_yaml_text(text: str, file: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError("", f"{where}invalid YAML: {getattr(exc, 'problem', exc)}", file) from None


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load from `path`, else $GATEWATCH_CONFIG, else the embedded defaults."""
    env_map = os.environ if env is None else env
    path = path or env_map.get("GATEWATCH_CONFIG") or None
    if path is None:
        return parse_config({}, None, env)
    text = read_text(str(path))
    return parse_config(load_yaml_text(text, str(path)), str(path), env)


def read_text(location: str) -> str:
    """Read a local file or an s3:// object (config, rules, catalog all come from either)."""
    if location.startswith("s3://"):
        from agent.s3 import read_s3_text

        return read_s3_text(location)
    try:
        return Path(location).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "file not found", location) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read: {exc.strerror}", location) from None


__all__ = ["Config", "load_config", "parse_config", "read_text"]

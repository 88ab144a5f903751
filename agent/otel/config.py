"""The `otel:` config section and how it combines with OpenTelemetry's own env vars.

Operators who already run OpenTelemetry set `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` ... and expect them to work, so
they do; a key in the config file wins over its env var. `resolve()` folds both into one
frozen `Settings`, and a bad env value is a `ConfigError` naming the variable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import unquote, urlparse

from agent.configtypes import ByteSize, ConfigError, Duration, Secret

log = logging.getLogger(__name__)

Protocol = Literal["grpc", "http/protobuf"]
SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
DEFAULT_SERVICE_NAME = "litellm-proxy"


@dataclass
class OtelSamplingConfig:
    """Tail-style sampling on the finished call: errors and slow calls are always kept.

    `sampler`/`ratio` (or OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG) decide for the
    plain successes; the ratio decision is taken on the trace id, so every attempt of one
    call gets the same answer on every task.
    """

    sampler: SamplerName | None = None  # default: $OTEL_TRACES_SAMPLER, else parentbased_always_on
    ratio: float | None = None  # default: $OTEL_TRACES_SAMPLER_ARG, else 1.0
    keep_errors: bool = True  # failures, and successes that needed a retry or fallback
    keep_slower_than: Duration | None = None  # e.g. 10s: every call at least this slow is kept

    def validate(self, path: str) -> None:
        if self.ratio is not None and not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"{path}.ratio", f"expected a number between 0 and 1, got {self.ratio}")


@dataclass
class OtelMetricsConfig:
    """OTel metrics (gen_ai.client.*) over OTLP, for users without Prometheus."""

    enabled: bool | None = None  # default: on only when $OTEL_METRICS_EXPORTER is "otlp"
    endpoint: str | None = None  # default: $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, else the traces endpoint's base
    interval: Duration | None = None  # default: $OTEL_METRIC_EXPORT_INTERVAL (ms), else 60s


@dataclass
class OtelConfig:
    enabled: bool | None = None  # default: on when $OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT is set
    endpoint: str | None = None  # base URL (http://collector:4318 or :4317 for grpc); ".../v1/traces" used as is
    protocol: Protocol | None = None  # default: $OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, else http/protobuf
    headers: dict[str, Secret] = field(default_factory=dict)  # merged over $OTEL_EXPORTER_OTLP_[TRACES_]HEADERS
    timeout: Duration | None = None  # per export request; default $OTEL_EXPORTER_OTLP_TIMEOUT (ms), else 10s
    compression: Literal["gzip", "none"] | None = None
    insecure: bool | None = None  # grpc only: plaintext; default from the endpoint scheme
    certificate: str | None = None  # CA bundle for TLS
    service_name: str | None = None  # default: $OTEL_SERVICE_NAME, else litellm-proxy
    resource_attributes: dict[str, str] = field(default_factory=dict)  # over $OTEL_RESOURCE_ATTRIBUTES
    proxy_container: str | None = None  # ECS container name of the proxy (default: the one named like litellm)
    capture_content: bool = False  # export prompts and completions (gen_ai.input/output.messages)
    max_content_bytes: ByteSize = ByteSize(16 * 1024)  # per content attribute, after JSON encoding
    record_error_message: bool = True  # the provider's error text as the span status message (capped)
    include_health_checks: bool = False  # spans for LiteLLM's own /health calls
    queue_size: int | None = None  # spans waiting for export; default $OTEL_BSP_MAX_QUEUE_SIZE, else 8192
    batch_size: int | None = None  # spans per export request; default $OTEL_BSP_MAX_EXPORT_BATCH_SIZE, else 512
    schedule_delay: Duration | None = None  # max wait before a partial batch goes; default $OTEL_BSP_SCHEDULE_DELAY
    max_request_bytes: ByteSize = ByteSize(3 * 1024 * 1024)  # split requests above this (gRPC's 4 MB default)
    shutdown_timeout: Duration = Duration(5)  # flush at shutdown for at most this long
    sampling: OtelSamplingConfig = field(default_factory=OtelSamplingConfig)
    metrics: OtelMetricsConfig = field(default_factory=OtelMetricsConfig)

    def validate(self, path: str) -> None:
        for name in ("queue_size", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{path}.{name}", f"expected a positive integer, got {value}")
        if self.max_content_bytes < 128:
            raise ConfigError(f"{path}.max_content_bytes", "expected at least 128 bytes")
        if self.max_request_bytes < 64 * 1024:
            raise ConfigError(f"{path}.max_request_bytes", "expected at least 64KB")
        if self.endpoint is not None:
            _check_url(self.endpoint, f"{path}.endpoint")
        if self.metrics.endpoint is not None:
            _check_url(self.metrics.endpoint, f"{path}.metrics.endpoint")


@dataclass(frozen=True)
class Endpoint:
    """Where one signal goes: an HTTP URL, or a gRPC target with its TLS choice."""

    protocol: Protocol
    url: str  # http: the full URL including /v1/<signal>; grpc: scheme://host:port as given
    target: str  # grpc: host:port; http: the URL again
    insecure: bool
    headers: tuple[tuple[str, Secret], ...]
    timeout: float
    compression: str  # gzip | none
    certificate: str | None


@dataclass(frozen=True)
class Settings:
    """Everything the sink needs, with config > env > defaults already applied."""

    traces: bool
    metrics: bool
    traces_endpoint: Endpoint
    metrics_endpoint: Endpoint
    metrics_interval: float
    service_name: str
    resource_attributes: tuple[tuple[str, str], ...]
    proxy_container: str | None
    sampler: str
    ratio: float
    keep_errors: bool
    keep_slower_than: float | None
    capture_content: bool
    max_content_bytes: int
    record_error_message: bool
    include_health_checks: bool
    queue_size: int
    batch_size: int
    schedule_delay: float
    max_request_bytes: int
    shutdown_timeout: float


def _check_url(value: str, path: str) -> None:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(path, f"expected an http:// or https:// URL, got {value!r}")


def _env(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """First set (non-empty) variable of `names`, as (name, value)."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _env_error(name: str, message: str) -> ConfigError:
    return ConfigError(name, message, "environment")


def _env_ms(env: Mapping[str, str], *names: str) -> float | None:
    found = _env(env, *names)
    if found is None:
        return None
    name, value = found
    try:
        number = float(value)
    except ValueError:
        raise _env_error(name, f"expected milliseconds, got {value!r}") from None
    if number < 0:
        raise _env_error(name, f"expected non-negative milliseconds, got {value!r}")
    return number / 1000.0


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    found = _env(env, name)
    if found is None:
        return None
    try:
        number = int(found[1])
    except ValueError:
        raise _env_error(name, f"expected a positive integer, got {found[1]!r}") from None
    if number < 1:
        raise _env_error(name, f"expected a positive integer, got {found[1]!r}")
    return number


def _env_bool(env: Mapping[str, str], *names: str) -> bool | None:
    found = _env(env, *names)
    if found is None:
        return None
    return found[1].lower() == "true"


def parse_key_values(text: str, source: str) -> list[tuple[str, str]]:
    """W3C-baggage-like `k=v,k2=v2` with percent-decoding (OTEL_*_HEADERS, OTEL_RESOURCE_ATTRIBUTES).

    A malformed entry is skipped with a warning that names the key but never the value
    (header values are credentials).
    """
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key.strip())
        if not sep or not key:
            log.warning("%s: skipped an entry without key=value", source)
            continue
        pairs.append((key, unquote(value.strip())))
    return pairs


def _signal_url(base: str, signal: str) -> str:
    """Base URL + /v1/<signal> (OTEL_EXPORTER_OTLP_ENDPOINT semantics); a full path stays."""
    suffix = f"/v1/{signal}"
    stripped = base.rstrip("/")
    return stripped if stripped.endswith(suffix) else stripped + suffix


def _endpoint(cfg: OtelConfig, env: Mapping[str, str], signal: str, explicit: str | None,
              headers: dict[str, Secret]) -> Endpoint:
    sig = signal.upper()
    proto_env = _env(env, f"OTEL_EXPORTER_OTLP_{sig}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = cfg.protocol or (proto_env[1] if proto_env else "http/protobuf")
    if protocol not in ("grpc", "http/protobuf"):
        name = proto_env[0] if proto_env else "otel.protocol"
        raise _env_error(name, f"expected grpc or http/protobuf (http/json is not supported), got {protocol!r}")

    default_base = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    signal_env = _env(env, f"OTEL_EXPORTER_OTLP_{sig}_ENDPOINT")
    base_env = _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if explicit:
        url = explicit if protocol == "grpc" else _signal_url(explicit, signal)
    elif signal_env:
        url = signal_env[1]  # the per-signal variable is used as is
    elif base_env:
        url = base_env[1] if protocol == "grpc" else _signal_url(base_env[1], signal)
    else:
        url = default_base if protocol == "grpc" else _signal_url(default_base, signal)
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise _env_error(f"OTEL_EXPORTER_OTLP_{sig}_ENDPOINT", f"expected a URL, got {url!r}")

    insecure = cfg.insecure
    if insecure is None:
        insecure = _env_bool(env, f"OTEL_EXPORTER_OTLP_{sig}_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")
    if insecure is None:
        insecure = parsed.scheme != "https"
    port = parsed.port or (443 if parsed.scheme == "https" else (4317 if protocol == "grpc" else 4318))
    target = f"{parsed.hostname}:{port}" if protocol == "grpc" else url

    timeout: float | None = cfg.timeout
    if timeout is None:
        timeout = _env_ms(env, f"OTEL_EXPORTER_OTLP_{sig}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    compression: str | None = cfg.compression
    if compression is None:
        comp_env = _env(env, f"OTEL_EXPORTER_OTLP_{sig}_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
        compression = comp_env[1].lower() if comp_env else "none"
        if compression not in ("gzip", "none"):
            raise _env_error(comp_env[0] if comp_env else "", f"expected gzip or none, got {compression!r}")
    cert_env = _env(env, f"OTEL_EXPORTER_OTLP_{sig}_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
    return Endpoint(
        protocol=protocol,  # type: ignore[arg-type]
        url=url,
        target=target,
        insecure=bool(insecure),
        headers=tuple(headers.items()),
        timeout=float(timeout) if timeout else 10.0,
        compression=compression,
        certificate=cfg.certificate or (cert_env[1] if cert_env else None),
    )


def _headers(cfg: OtelConfig, env: Mapping[str, str], signal: str) -> dict[str, Secret]:
    from agent.redact import register_secret

    headers: dict[str, Secret] = {}
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS"):
        found = _env(env, name)
        if found:
            for key, value in parse_key_values(found[1], name):
                headers[key.lower()] = Secret(value)
                register_secret(value)
    for key, value in cfg.headers.items():
        headers[key.lower()] = value
    return headers


def enabled_by_env(cfg: OtelConfig, env: Mapping[str, str]) -> bool:
    """`otel.enabled` if set, else on when an OTLP endpoint is in the environment."""
    if cfg.enabled is not None:
        return cfg.enabled
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    return bool(_env(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def resolve(cfg: OtelConfig, env: Mapping[str, str]) -> Settings:
    """Apply config > env > defaults; raise ConfigError on a bad env value."""
    traces_exporter = (env.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    traces = traces_exporter != "none"
    metrics = cfg.metrics.enabled
    if metrics is None:
        metrics = "otlp" in [p.strip() for p in (env.get("OTEL_METRICS_EXPORTER") or "").lower().split(",")]

    sampler: str | None = cfg.sampling.sampler
    if sampler is None:
        found = _env(env, "OTEL_TRACES_SAMPLER")
        sampler = found[1].lower() if found else "parentbased_always_on"
        if sampler not in SAMPLERS:
            assert found is not None  # the default is one
            raise _env_error("OTEL_TRACES_SAMPLER", f"expected one of {', '.join(SAMPLERS)}, got {found[1]!r}")
    ratio = cfg.sampling.ratio
    if ratio is None:
        found = _env(env, "OTEL_TRACES_SAMPLER_ARG")
        ratio = 1.0
        if found and sampler.endswith("traceidratio"):
            try:
                ratio = float(found[1])
            except ValueError:
                raise _env_error("OTEL_TRACES_SAMPLER_ARG", f"expected a number 0-1, got {found[1]!r}") from None
            if not 0.0 <= ratio <= 1.0:
                raise _env_error("OTEL_TRACES_SAMPLER_ARG", f"expected a number 0-1, got {found[1]!r}")

    resource: dict[str, str] = {}
    found = _env(env, "OTEL_RESOURCE_ATTRIBUTES")
    if found:
        resource.update(parse_key_values(found[1], "OTEL_RESOURCE_ATTRIBUTES"))
    resource.update(cfg.resource_attributes)
    service_env = _env(env, "OTEL_SERVICE_NAME")
    service_name = cfg.service_name or (service_env[1] if service_env else None) or resource.get("service.name") \
        or DEFAULT_SERVICE_NAME
    resource.pop("service.name", None)

    traces_endpoint = _endpoint(cfg, env, "traces", cfg.endpoint, _headers(cfg, env, "traces"))
    metrics_base = cfg.metrics.endpoint or cfg.endpoint
    metrics_endpoint = _endpoint(cfg, env, "metrics", metrics_base, _headers(cfg, env, "metrics"))
    interval: float | None = cfg.metrics.interval
    if interval is None:
        interval = _env_ms(env, "OTEL_METRIC_EXPORT_INTERVAL")
    delay: float | None = cfg.schedule_delay
    if delay is None:
        delay = _env_ms(env, "OTEL_BSP_SCHEDULE_DELAY")
    queue_size = cfg.queue_size or _env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE") or 8192
    batch_size = cfg.batch_size or _env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512
    return Settings(
        traces=traces,
        metrics=bool(metrics),
        traces_endpoint=traces_endpoint,
        metrics_endpoint=metrics_endpoint,
        metrics_interval=float(interval) if interval else 60.0,
        service_name=service_name,
        resource_attributes=tuple(resource.items()),
        proxy_container=cfg.proxy_container,
        sampler=sampler,
        ratio=float(ratio),
        keep_errors=cfg.sampling.keep_errors,
        keep_slower_than=float(cfg.sampling.keep_slower_than) if cfg.sampling.keep_slower_than else None,
        capture_content=cfg.capture_content,
        max_content_bytes=int(cfg.max_content_bytes),
        record_error_message=cfg.record_error_message,
        include_health_checks=cfg.include_health_checks,
        queue_size=queue_size,
        batch_size=min(batch_size, queue_size),
        schedule_delay=max(0.01, float(delay)) if delay is not None else 1.0,
        max_request_bytes=int(cfg.max_request_bytes),
        shutdown_timeout=float(cfg.shutdown_timeout),
    )

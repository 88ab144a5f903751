"""The `cloudwatch:` config section and the dimension vocabulary it names: a leaf, so the
composed Config, the sink and the rules' alarm export read one definition and import no sink."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import urlparse

from agent.configtypes import ConfigError, Duration, Secret

log = logging.getLogger(__name__)


# the rule/alert label each dimension carries (for alarms and dashboards)
DIMENSION_LABELS: dict[str, str] = {
    "ModelGroup": "model_group",
    "Deployment": "deployment",
    "AwsAccount": "aws_account",
    "AwsRegion": "aws_region",
    "Provider": "api_provider",
}



DEFAULT_DIMENSION_SETS: list[list[str]] = [
    ["ModelGroup"],
    ["ModelGroup", "Deployment"],
    ["ModelGroup", "AwsAccount", "AwsRegion"],
    ["Provider"],
]



MISSING = "unknown"  # CloudWatch dimension values must be non-empty


MAX_DIMENSIONS_PER_SET = 30



def parse_output(value: str, path: str = "cloudwatch.emf_output") -> tuple[str, str, int]:
    """`stdout`, `stderr`, a file path (or file://path), `tcp://host:port`, `udp://host:port`."""
    if value in ("stdout", "stderr", "-"):
        return ("stderr" if value == "stderr" else "stdout"), "", 0
    if value.startswith(("tcp://", "udp://")):
        parsed = urlparse(value)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or not port:
            raise ConfigError(path, f"expected tcp://host:port or udp://host:port, got {value!r}")
        return parsed.scheme, parsed.hostname, port
    if value.startswith("file://"):
        value = value[len("file://") :]
    if not value or "://" in value:
        raise ConfigError(path, f"expected stdout, stderr, a file path, tcp://host:port or udp://host:port, "
                                f"got {value!r}")
    return "file", value, 0


DimensionName = Literal["ModelGroup", "Deployment", "AwsAccount", "AwsRegion", "Provider"]



_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")



@dataclass
class CloudWatchConfig:
    enabled: bool = False
    mode: Literal["emf", "api"] = "emf"
    namespace: str = "LiteLLM"
    interval: Duration = Duration(60)
    dimensions: list[list[DimensionName]] = field(
        default_factory=lambda: [cast(list[DimensionName], list(d)) for d in DEFAULT_DIMENSION_SETS])
    storage_resolution: Literal[60, 1] = 60
    # emf mode
    emf_output: str = "stdout"  # stdout | stderr | /path/file | tcp://host:port | udp://host:port (CloudWatch agent)
    emf_distribution: Literal["histogram", "values"] = "histogram"
    # api mode
    region: str | None = None  # default: AWS_REGION / the task's region
    endpoint_url: str | None = None  # e.g. a VPC endpoint
    role_arn: str | None = None  # assume this role (central monitoring account) for PutMetricData
    role_session_name: str = "gatewatch"
    role_duration: Duration = Duration(3600)  # STS session length; renewed 15 minutes before it ends
    external_id: Secret | None = None
    sts_endpoint_url: str | None = None
    max_attempts: int = 5  # attempts per PutMetricData call (botocore standard retries: backoff on throttling)
    timeout: Duration = Duration(10)
    # bounds
    max_series: int = 5000  # distinct dimension-value combinations per interval; overflow is folded
    max_pending_batches: int = 100  # undelivered batches kept for retry; the oldest is dropped past this
    shutdown_timeout: Duration = Duration(10)

    def validate(self, path: str) -> None:
        ns = self.namespace
        if not 1 <= len(ns) <= 255 or not ns.isascii() or not ns.isprintable() or ns.startswith(":"):
            raise ConfigError(f"{path}.namespace", "expected 1-255 printable ASCII characters, not starting with ':'")
        if ns.startswith("AWS/"):
            raise ConfigError(f"{path}.namespace", "namespaces starting with AWS/ are reserved for AWS services")
        if not self.dimensions:
            raise ConfigError(f"{path}.dimensions", "expected at least one dimension set")
        seen: set[tuple[str, ...]] = set()
        for i, dims in enumerate(self.dimensions):
            where = f"{path}.dimensions[{i}]"
            if len(dims) > MAX_DIMENSIONS_PER_SET:
                raise ConfigError(where, f"expected at most {MAX_DIMENSIONS_PER_SET} dimensions")
            if len(set(dims)) != len(dims):
                raise ConfigError(where, "a dimension appears twice in this set")
            if tuple(dims) in seen:
                raise ConfigError(where, "this dimension set is listed twice")
            seen.add(tuple(dims))
        if self.interval < 1:
            raise ConfigError(f"{path}.interval", "expected at least 1s")
        if self.storage_resolution == 60 and self.interval < 60:
            log.debug("cloudwatch interval below 60s with standard resolution: CloudWatch merges them per minute")
        parse_output(self.emf_output, f"{path}.emf_output")
        if self.role_arn and not _ROLE_ARN_RE.match(self.role_arn):
            raise ConfigError(f"{path}.role_arn", f"expected an IAM role ARN like arn:aws:iam::123456789012:role/name, "
                                                  f"got {self.role_arn!r}")
        if not 900 <= self.role_duration <= 43200:
            raise ConfigError(f"{path}.role_duration", "expected 15m to 12h (STS AssumeRole limits)")
        for name, low, high in (("max_series", 1, 10_000_000), ("max_pending_batches", 1, 100_000),
                                ("max_attempts", 1, 20)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{path}.{name}", f"expected an integer from {low} to {high}, got {value}")

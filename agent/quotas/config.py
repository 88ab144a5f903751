"""The `quotas:` config section: Bedrock quota headroom per account, region and model.

Off by default: it calls AWS (Service Quotas, CloudWatch, STS) with the deployment's own
credentials, which a sidecar without IAM permissions for those calls must not do.
Endpoints are never configured here: boto3's own `AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_SERVICE_QUOTAS`, `AWS_ENDPOINT_URL_CLOUDWATCH`, `AWS_ENDPOINT_URL_STS` apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.configtypes import ConfigError, Duration

_ACCOUNT_RE = re.compile(r"^\d{12}$")
_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")


@dataclass
class ModelOverride:
    """One entry of `quotas.models`: how Service Quotas names a model the shipped table lacks."""

    quota_name: str = ""  # required: the `${model}` part of "On-demand InvokeModel tokens per minute for ${model}"
    max_output_tokens: int | None = None  # what Bedrock reserves for a request without max_tokens
    output_burndown: float | None = None  # quota tokens per output token (5 for Claude 3.7+ / 4.x)

    def validate(self, path: str) -> None:
        if not self.quota_name.strip():
            raise ConfigError(f"{path}.quota_name", "expected the model's name as Service Quotas shows it")
        if self.max_output_tokens is not None and self.max_output_tokens < 1:
            raise ConfigError(f"{path}.max_output_tokens", "expected a positive integer")
        if self.output_burndown is not None and self.output_burndown < 1:
            raise ConfigError(f"{path}.output_burndown", "expected a number >= 1")


@dataclass
class QuotasConfig:
    enabled: bool = False
    refresh_interval: Duration = Duration(3600)  # Service Quotas values change rarely
    account_usage_interval: Duration = Duration(60)  # one GetMetricData per account/region per interval; 0 = off
    evaluate_interval: Duration = Duration(15)  # utilization gauges and rule events
    # a CloudWatch datapoint older than this no longer counts as "fresh" for the utilization
    account_usage_freshness: Duration = Duration(300)
    max_attempts: int = 5  # per AWS call, botocore standard retries (throttling included)
    # account id -> role ARN to assume for that account's quota and CloudWatch reads
    # (otherwise the deployment's own aws_role_name, keys or profile; else the task role)
    roles: dict[str, str] = field(default_factory=dict)
    # model id prefix (no us./eu./apac./global. prefix) -> names, overriding the shipped table
    models: dict[str, ModelOverride] = field(default_factory=dict)

    def validate(self, path: str) -> None:
        def where(key: str) -> str:
            return f"{path}.{key}" if path else key

        if self.refresh_interval < 60:
            raise ConfigError(where("refresh_interval"), "expected at least 1m (Service Quotas is rate limited)")
        if self.account_usage_interval and self.account_usage_interval < 10:
            raise ConfigError(where("account_usage_interval"), "expected 0 (off) or at least 10s")
        if self.evaluate_interval < 1:
            raise ConfigError(where("evaluate_interval"), "expected at least 1s")
        if self.max_attempts < 1:
            raise ConfigError(where("max_attempts"), "expected a positive integer")
        for account, role in self.roles.items():
            if not _ACCOUNT_RE.match(account):
                raise ConfigError(where(f"roles.{account}"), "expected a 12-digit AWS account id as the key")
            if not _ROLE_RE.match(role):
                raise ConfigError(where(f"roles.{account}"), f"expected an IAM role ARN, got {role!r}")
            if role.split(":")[4] != account:
                raise ConfigError(where(f"roles.{account}"), "the role ARN is in another account")

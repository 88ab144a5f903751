"""Reads Bedrock's applied quotas for one account and region: list_service_quotas, paginated.

Blocking (boto3): the service calls it in an executor. Throttling and transient errors
are retried by botocore's standard retry mode (`quotas.max_attempts`); each throttled
attempt is counted through botocore's `needs-retry` event, and a call that still fails
raises, so the caller keeps the last values it had.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.quotas.credentials import CredentialSource, SessionCache
from agent.quotas.mapping import ListedQuota

THROTTLE_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded"})


def botocore_config(max_attempts: int) -> Any:
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": max_attempts}, connect_timeout=5, read_timeout=20)


def count_throttles(client: Any, on_throttle: Callable[[], None]) -> None:
    """Count every throttled attempt of `client` (botocore retries them before we see anything)."""

    def seen(response: Any = None, **_: Any) -> None:
        if response is not None:
            parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
            code = (parsed or {}).get("Error", {}).get("Code", "")
            if code in THROTTLE_CODES:
                on_throttle()

    client.meta.events.register_first(f"needs-retry.{client.meta.service_model.service_id.hyphenize()}", seen)


def list_bedrock_quotas(sessions: SessionCache, source: CredentialSource, region: str, max_attempts: int,
                        on_throttle: Callable[[], None] = lambda: None) -> list[ListedQuota]:
    """Every applied Bedrock quota of the account behind `source` in `region`."""
    config = botocore_config(max_attempts)
    client = sessions.session(source, region, config).client("service-quotas", config=config)
    count_throttles(client, on_throttle)
    out: list[ListedQuota] = []
    for page in client.get_paginator("list_service_quotas").paginate(ServiceCode="bedrock"):
        for row in page.get("Quotas", []):
            name, code, value = row.get("QuotaName"), row.get("QuotaCode"), row.get("Value")
            if isinstance(name, str) and isinstance(code, str) and isinstance(value, (int, float)):
                out.append(ListedQuota(name, code, float(value)))
    return out

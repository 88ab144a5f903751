"""PutMetricData: datums from an aggregated interval, batching, and the boto3 client.

Batches stay under CloudWatch's limits (1000 datums and 1 MB per call, 150 distinct
values per datum). Throttling is retried with backoff by botocore's `standard` retry
mode inside one call; a call that still fails is kept by the sink and retried at the
next interval. With `role_arn` the client signs with credentials from STS AssumeRole
(a central monitoring account), which botocore refreshes before they expire. All of it
is blocking and runs in the sink's own executor thread, never on the event loop.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.sinks.cloudwatch_agg import COUNTER_METRICS, Interval

log = logging.getLogger(__name__)

MAX_DATUMS_PER_CALL = 1000
MAX_BYTES_PER_CALL = 1_000_000  # CloudWatch: 1 MB per PutMetricData request; keep a margin
MAX_VALUES_PER_DATUM = 150
_CALL_OVERHEAD = 200  # namespace, JSON framing

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "RequestThrottled",
})
# credential / permission problems: fixable without losing data, so the batch is kept
AUTH_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
    "UnrecognizedClientException", "SignatureDoesNotMatch", "RequestExpired", "InvalidAccessKeyId",
})


@dataclass
class MetricBatch:
    """One unit of delivery: one PutMetricData call, or a group of EMF lines."""

    payload: list[Any]
    datapoints: int
    size: int = 0
    attempts: int = field(default=0)


def _datum_size(datum: dict[str, Any]) -> int:
    body = {k: v for k, v in datum.items() if k != "Timestamp"}
    return len(json.dumps(body, separators=(",", ":"))) + 40  # + timestamp and separators


def datums(interval: Interval, storage_resolution: int = 60,
           max_values: int = MAX_VALUES_PER_DATUM) -> Iterator[tuple[dict[str, Any], int]]:
    """(MetricDatum, datapoints) for every metric of every series in the interval."""
    timestamp = dt.datetime.fromtimestamp(interval.timestamp, dt.UTC)
    for point in interval.points:
        dimensions = [{"Name": name, "Value": value} for name, value in point.dimensions]
        for spec, value in zip(COUNTER_METRICS, point.series.counters, strict=True):
            yield {"MetricName": spec.name, "Dimensions": dimensions, "Timestamp": timestamp, "Unit": spec.unit,
                   "StorageResolution": storage_resolution, "Value": float(value)}, 1
        for spec, dist in point.series.distributions():
            for chunk in dist.chunks(max_values):
                yield {"MetricName": spec.name, "Dimensions": dimensions, "Timestamp": timestamp,
                       "Unit": spec.unit, "StorageResolution": storage_resolution,
                       "Values": chunk.values, "Counts": [float(c) for c in chunk.counts]}, len(chunk.values)


def batches(interval: Interval, storage_resolution: int = 60, max_datums: int = MAX_DATUMS_PER_CALL,
            max_bytes: int = MAX_BYTES_PER_CALL) -> list[MetricBatch]:
    out: list[MetricBatch] = []
    current: list[dict[str, Any]] = []
    size = _CALL_OVERHEAD
    points = 0
    for datum, n in datums(interval, storage_resolution):
        datum_size = _datum_size(datum)
        if current and (len(current) >= max_datums or size + datum_size > max_bytes):
            out.append(MetricBatch(current, points, size))
            current, size, points = [], _CALL_OVERHEAD, 0
        current.append(datum)
        size += datum_size
        points += n
    if current:
        out.append(MetricBatch(current, points, size))
    return out


def classify(exc: BaseException) -> str:
    """'retry' (keep the batch for the next interval), 'rejected' (CloudWatch refused this data
    and always will) or 'error' (an unexpected failure: not retried, so it cannot loop)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in THROTTLING_CODES or code in AUTH_CODES or status >= 500 or status in (429, 403):
            return "retry"
        return "rejected"
    if isinstance(exc, (BotoCoreError, OSError, TimeoutError)):
        return "retry"  # endpoint unreachable, no credentials yet, timeouts
    return "error"


def error_summary(exc: BaseException) -> str:
    """What failed, without request details (which could hold credentials or dimension values)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {str(error.get('Message', ''))[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class PutMetricDataClient:
    """A boto3 CloudWatch client (optionally through an assumed role); blocking methods."""

    def __init__(self, region: str | None = None, endpoint_url: str | None = None, role_arn: str | None = None,
                 role_session_name: str = "gatewatch", role_duration: int = 3600, external_id: str | None = None,
                 sts_endpoint_url: str | None = None, max_attempts: int = 5, timeout: float = 10.0) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.role_arn = role_arn
        self.role_session_name = role_session_name
        self.role_duration = role_duration
        self.external_id = external_id
        self.sts_endpoint_url = sts_endpoint_url
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.credentials: Any = None  # the refreshable assumed-role credentials, when role_arn is set
        self._client: Any = None

    def build(self) -> None:
        """Create the client (loads botocore models: blocking, call from an executor)."""
        import boto3
        import botocore.session
        from botocore.config import Config as BotoConfig

        botocore_session = botocore.session.get_session()
        if self.role_arn:
            self.credentials = self._assumed_role_credentials()
            resolver = botocore_session.get_component("credential_provider")
            resolver.insert_before("env", _FixedProvider(self.credentials))
        session = boto3.Session(botocore_session=botocore_session, region_name=self.region)
        config = BotoConfig(retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                            connect_timeout=self.timeout, read_timeout=self.timeout,
                            user_agent_extra="gatewatch")
        self._client = session.client("cloudwatch", endpoint_url=self.endpoint_url, config=config)

    def _assumed_role_credentials(self) -> Any:
        import boto3
        from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

        base = boto3.Session(region_name=self.region)
        source = base.get_credentials()
        if source is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        extra: dict[str, Any] = {"RoleSessionName": self.role_session_name, "DurationSeconds": self.role_duration}
        if self.external_id:
            extra["ExternalId"] = str(self.external_id)
        creator = functools.partial(base.client, region_name=base.region_name, endpoint_url=self.sts_endpoint_url)
        fetcher = AssumeRoleCredentialFetcher(creator, source, self.role_arn, extra_args=extra)
        # botocore refreshes these 15 minutes (advisory) / 10 minutes (mandatory) before expiry
        return DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method="assume-role")

    @property
    def client(self) -> Any:
        if self._client is None:
            self.build()
        return self._client

    def put(self, namespace: str, metric_data: list[dict[str, Any]]) -> None:
        self.client.put_metric_data(Namespace=namespace, MetricData=metric_data)


class _FixedProvider:
    """A botocore credential provider that hands out one (refreshable) credentials object."""

    METHOD = "gatewatch-assume-role"
    CANONICAL_NAME = "gatewatch-assume-role"

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def load(self) -> Any:
        return self._credentials

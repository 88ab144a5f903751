"""API mode against moto's server mode (a real HTTP endpoint): the fixture replay lands in
CloudWatch with the captures' own totals, through an assumed role too; throttling is
retried without loss; undeliverable data is bounded and counted."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.config import parse_config
from agent.events import Event, Kind
from agent.sinks.cloudwatch import CloudWatchSink
from agent.sinks.cloudwatch_agg import Aggregator
from agent.sinks.cloudwatch_api import MAX_BYTES_PER_CALL, batches
from agent.sinks.config import DEFAULT_DIMENSION_SETS
from agent.sources.callbacks import EVENTS_ROUTE
from tests.cloudwatch_support import fixture_bodies, gateway_config, grand_totals, raw_totals_by_model_group
from tests.conftest import free_port
from tests.test_cloudwatch_agg import replayed_events

pytestmark = pytest.mark.integration

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_url(moto_server: str) -> str:
    """A clean moto for each test (its GetMetricData ignores the namespace once dimensions
    are given, so leftovers of another test would add up)."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10).close()
    return moto_server


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGATEWATCHTEST000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gatewatch-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def cloudwatch(moto_url: str, **credentials: str) -> Any:
    return boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_url, **credentials)


def namespace() -> str:
    return f"LiteLLM-test-{uuid.uuid4().hex[:8]}"


def listed_dimension_sets(cw: Any, ns: str) -> dict[str, set[tuple[str, ...]]]:
    out: dict[str, set[tuple[str, ...]]] = {}
    for page in cw.get_paginator("list_metrics").paginate(Namespace=ns):
        for metric in page["Metrics"]:
            dims = tuple(sorted(d["Name"] for d in metric["Dimensions"]))
            out.setdefault(metric["MetricName"], set()).add(dims)
    return out


def stat_sum(cw: Any, ns: str, metric: str, dimensions: dict[str, str], stat: str = "Sum") -> float:
    now = dt.datetime.now(dt.UTC)
    result = cw.get_metric_data(
        MetricDataQueries=[{"Id": "q", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": ns, "MetricName": metric,
                       "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]},
            "Period": 3600, "Stat": stat}}],
        StartTime=now - dt.timedelta(hours=3), EndTime=now + dt.timedelta(hours=2))
    return sum(result["MetricDataResults"][0]["Values"])


def assert_model_groups_match_captures(cw: Any, ns: str) -> None:
    for group, totals in raw_totals_by_model_group().items():
        dims = {"ModelGroup": group}
        assert stat_sum(cw, ns, "Requests", dims) == totals.requests, group
        assert stat_sum(cw, ns, "Errors", dims) == totals.errors, group
        assert stat_sum(cw, ns, "InputTokens", dims) == totals.input_tokens, group
        assert stat_sum(cw, ns, "OutputTokens", dims) == totals.output_tokens, group
        assert stat_sum(cw, ns, "CostUSD", dims) == pytest.approx(totals.cost, rel=1e-9, abs=1e-12), group
        assert stat_sum(cw, ns, "Latency", dims, "SampleCount") == len(totals.latency_ms), group
        assert stat_sum(cw, ns, "Latency", dims) == pytest.approx(sum(totals.latency_ms), rel=1e-6), group


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


async def test_fixture_replay_through_the_server_lands_in_cloudwatch(moto_url, gatewatch_server, lab_environ,
                                                                     tmp_path):
    ns = namespace()
    gw, base = await gatewatch_server(gateway_config(tmp_path, {
        "mode": "api", "namespace": ns, "region": REGION, "endpoint_url": moto_url, "interval": "1h"}))
    async with aiohttp.ClientSession() as http:
        for body in fixture_bodies():
            async with http.post(base + EVENTS_ROUTE, data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status < 300, await r.text()
    await gw.stop()  # SIGTERM path: the interval in progress is flushed

    cw = cloudwatch(moto_url)
    listed = listed_dimension_sets(cw, ns)
    expected_sets = {tuple(sorted(s)) for s in DEFAULT_DIMENSION_SETS}
    for metric in ("Requests", "Errors", "RateLimited", "Retries", "Cooldowns", "InputTokens", "OutputTokens",
                   "CostUSD", "Latency", "TTFT"):
        assert listed[metric] == expected_sets, metric
    assert_model_groups_match_captures(cw, ns)
    grand = grand_totals()
    by_account = [m for m in cw.list_metrics(Namespace=ns, MetricName="Requests")["Metrics"]
                  if {d["Name"] for d in m["Dimensions"]} == {"ModelGroup", "AwsAccount", "AwsRegion"}]
    assert sum(stat_sum(cw, ns, "Requests", {d["Name"]: d["Value"] for d in m["Dimensions"]})
               for m in by_account) == grand.requests
    assert {"AwsAccount": "111111111111"} in [{d["Name"]: d["Value"]} for m in by_account for d in m["Dimensions"]
                                              if d["Name"] == "AwsAccount"]
    assert sample(gw.registry, "gatewatch_cloudwatch_datapoints_total", mode="api") > 0
    assert sample(gw.registry, "gatewatch_cloudwatch_put_failures_total") == 0
    assert sample(gw.registry, "gatewatch_cloudwatch_pending_batches") == 0


async def monitoring_account_client(moto_url: str, role: str) -> Any:
    sts = boto3.client("sts", region_name=REGION, endpoint_url=moto_url)
    creds = sts.assume_role(RoleArn=role, RoleSessionName="test-reader")["Credentials"]
    return cloudwatch(moto_url, aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                      aws_session_token=creds["SessionToken"])


@pytest.mark.parametrize(("duration", "assumes"), [("1h", 1), ("15m", 2)])
async def test_assume_role_puts_into_the_monitoring_account(moto_url, lab_environ, duration, assumes):
    ns = namespace()
    role = "arn:aws:iam::999999999999:role/gatewatch-monitoring"
    async with ThrottlingProxy(moto_url) as sts_proxy:  # counts AssumeRole calls, forwards them to moto's STS
        cfg = parse_config({"cloudwatch": {
            "enabled": True, "mode": "api", "namespace": ns, "region": REGION, "endpoint_url": moto_url,
            "sts_endpoint_url": sts_proxy.url, "role_arn": role, "external_id": "gatewatch-ext",
            "role_duration": duration, "interval": "1h"}})
        registry = CollectorRegistry()
        sink = CloudWatchSink(cfg.cloudwatch, registry)
        await sink.start()
        sink.handle(replayed_events())
        await sink.flush(time.monotonic() + 30)
        assert sts_proxy.assume_calls == 1
        sink.handle(replayed_events())
        await sink.stop(time.monotonic() + 30)
        # a 1h session is reused; a 15m one is inside botocore's refresh window, so it is renewed first
        assert sts_proxy.assume_calls == assumes
        assert b"ExternalId=gatewatch-ext" in sts_proxy.assume_bodies[0]
    monitoring = await monitoring_account_client(moto_url, role)
    for group, totals in raw_totals_by_model_group().items():  # both intervals, in the role's (monitoring) account
        assert stat_sum(monitoring, ns, "Requests", {"ModelGroup": group}) == 2 * totals.requests
        assert stat_sum(monitoring, ns, "InputTokens", {"ModelGroup": group}) == 2 * totals.input_tokens
    assert cloudwatch(moto_url).list_metrics(Namespace=ns)["Metrics"] == []  # not in the task's own account
    assert sample(registry, "gatewatch_cloudwatch_put_failures_total") == 0


class ThrottlingProxy:
    """A local endpoint in front of moto that answers the first N PutMetricData calls with
    CloudWatch's throttling error (awsJson1_0, query-compatible) and forwards everything else,
    counting the calls it sees."""

    def __init__(self, upstream: str, throttle: int = 0, reject: int = 0) -> None:
        self.upstream = upstream
        self.throttle = throttle
        self.reject = reject
        self.put_calls = 0
        self.throttled = 0
        self.assume_calls = 0
        self.assume_bodies: list[bytes] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if b"Action=AssumeRole" in body or target.endswith(".AssumeRole"):
            self.assume_calls += 1
            self.assume_bodies.append(body)
        if target.endswith(".PutMetricData"):
            self.put_calls += 1
            if self.throttled < self.throttle:
                self.throttled += 1
                return self.error(400, "Throttling", "Rate exceeded")
            if self.reject:
                self.reject -= 1
                return self.error(400, "InvalidParameterValue", "The value for parameter MetricData is invalid.")
        # aiohttp hands over the body decompressed: forward it without the gzip header
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "content-encoding")}
        async with aiohttp.ClientSession() as http, http.post(self.upstream + request.path_qs, data=body,
                                                              headers=headers) as response:
            payload = await response.read()
            keep = {k: v for k, v in response.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
            return web.Response(status=response.status, body=payload, headers=keep)

    @staticmethod
    def error(status: int, code: str, message: str) -> web.Response:
        return web.Response(status=status, body=json.dumps({"__type": f"com.amazonaws.cloudwatch#{code}",
                                                            "message": message}).encode(),
                            headers={"Content-Type": "application/x-amz-json-1.0",
                                     "x-amzn-query-error": f"{code};Sender",
                                     "x-amzn-RequestId": str(uuid.uuid4())})

    async def __aenter__(self) -> ThrottlingProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_throttling_is_retried_without_loss(moto_url, lab_environ):
    ns = namespace()
    async with ThrottlingProxy(moto_url, throttle=3) as proxy:
        cfg = parse_config({"cloudwatch": {"enabled": True, "mode": "api", "namespace": ns, "region": REGION,
                                           "endpoint_url": proxy.url, "interval": "1h", "max_attempts": 2}})
        registry = CollectorRegistry()
        sink = CloudWatchSink(cfg.cloudwatch, registry)
        await sink.start()
        sink.handle(replayed_events())
        await sink.flush(time.monotonic() + 30)  # 2 attempts, both throttled: the interval is kept
        assert proxy.throttled == 2
        assert sample(registry, "gatewatch_cloudwatch_put_failures_total") == 1
        assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 1
        await sink.flush(time.monotonic() + 30)  # throttled once more, then botocore's retry gets through
        assert proxy.throttled == 3
        assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 0
        await sink.stop(time.monotonic() + 30)
    assert_model_groups_match_captures(cloudwatch(moto_url), ns)  # nothing lost, nothing twice
    assert sample(registry, "gatewatch_cloudwatch_dropped_total", reason="pending_full") == 0


async def test_a_rejected_batch_is_dropped_and_counted_not_retried_forever(moto_url, lab_environ):
    ns = namespace()
    async with ThrottlingProxy(moto_url, reject=1) as proxy:
        cfg = parse_config({"cloudwatch": {"enabled": True, "mode": "api", "namespace": ns, "region": REGION,
                                           "endpoint_url": proxy.url, "interval": "1h", "max_attempts": 1}})
        registry = CollectorRegistry()
        sink = CloudWatchSink(cfg.cloudwatch, registry)
        await sink.start()
        sink.handle(replayed_events())
        await sink.flush(time.monotonic() + 30)
        dropped = sample(registry, "gatewatch_cloudwatch_dropped_total", reason="rejected")
        assert dropped > 0 and proxy.put_calls == 1
        assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 0
        sink.handle(replayed_events())  # the next interval goes through
        await sink.stop(time.monotonic() + 30)
    assert_model_groups_match_captures(cloudwatch(moto_url), ns)
    assert "InvalidParameterValue" in sink.last_error


async def test_unreachable_cloudwatch_keeps_a_bounded_backlog(lab_environ):
    cfg = parse_config({"cloudwatch": {"enabled": True, "mode": "api", "namespace": "LiteLLM", "region": REGION,
                                       "endpoint_url": f"http://127.0.0.1:{free_port()}", "interval": "1h",
                                       "max_attempts": 1, "timeout": "2s", "max_pending_batches": 2,
                                       "shutdown_timeout": "5s"}})
    registry = CollectorRegistry()
    sink = CloudWatchSink(cfg.cloudwatch, registry)
    await sink.start()
    sent = 0
    for _ in range(4):
        sink.handle(replayed_events()[:10])
        await sink.flush(time.monotonic() + 30)
        sent += 1
    assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 2
    assert sample(registry, "gatewatch_cloudwatch_put_failures_total") == sent
    assert sample(registry, "gatewatch_cloudwatch_dropped_total", reason="pending_full") > 0
    assert "EndpointConnectionError" in sink.last_error or "Connect" in sink.last_error
    await sink.stop(time.monotonic() + 30)
    assert sample(registry, "gatewatch_cloudwatch_dropped_total", reason="shutdown") > 0
    assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 0


async def test_large_intervals_are_split_under_the_call_limits(moto_url):
    ns = namespace()
    agg = Aggregator([["ModelGroup", "Deployment"]])
    for d in range(150):  # 150 series x 8 counters + distributions of 200 distinct values each
        for i in range(200 if d < 3 else 1):
            agg.add(Event(kind=Kind.REQUEST, time=1.0, model_group="g", deployment=f"dep-{d:03d}",
                          latency=0.01 * 1.05**i, input_tokens=1))
    interval = agg.drain(dt.datetime.now(dt.UTC).timestamp() // 60 * 60)
    calls = batches(interval)
    assert len(calls) >= 2
    for call in calls:
        assert len(call.payload) <= 1000 and call.size <= MAX_BYTES_PER_CALL
        assert len(json.dumps(call.payload, default=str)) <= MAX_BYTES_PER_CALL
        for datum in call.payload:
            assert len(datum.get("Values", [])) <= 150
    cfg = parse_config({"cloudwatch": {"enabled": True, "mode": "api", "namespace": ns, "region": REGION,
                                       "endpoint_url": moto_url, "interval": "1h",
                                       "dimensions": [["ModelGroup", "Deployment"]]}})
    registry = CollectorRegistry()
    sink = CloudWatchSink(cfg.cloudwatch, registry)
    await sink.start()
    for d in range(150):
        for i in range(200 if d < 3 else 1):
            sink.handle([Event(kind=Kind.REQUEST, time=1.0, model_group="g", deployment=f"dep-{d:03d}",
                               latency=0.01 * 1.05**i, input_tokens=1)])
    await sink.stop(time.monotonic() + 30)
    cw = cloudwatch(moto_url)
    total = sum(stat_sum(cw, ns, "Requests", {"ModelGroup": "g", "Deployment": f"dep-{d:03d}"}) for d in range(150))
    assert total == 3 * 200 + 147
    assert stat_sum(cw, ns, "Latency", {"ModelGroup": "g", "Deployment": "dep-000"}, "SampleCount") == 200

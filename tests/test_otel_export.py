"""OTLP export end to end: the real fixtures in over HTTP, spans out to real OTLP receivers
(HTTP and gRPC, decoded with the official opentelemetry-proto messages), checked
against the payloads they came from."""

from __future__ import annotations

import gc
import json
from urllib.parse import urlparse

import aiohttp
import pytest
from aiohttp import web

from agent.events import Event
from agent.otel.metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from tests.conftest import FIXTURES, batch_files, capture_items, free_port, load_capture
from tests.otlp_receivers import GrpcReceiver, HangingCollector, HttpReceiver, attr_value, attributes, wait_until
from tests.promtext import samples, total
from tests.test_enrich import expected_attribution

pytestmark = pytest.mark.integration

HEALTH = "litellm-internal-health-check"
CLIENT = 3  # SpanKind.SPAN_KIND_CLIENT
ERROR, UNSET = 2, 0


def items() -> list[dict]:
    return [item for path in batch_files() for item in capture_items(path.name)]


def user_items() -> list[dict]:
    """Model calls made for clients: not LiteLLM's own health checks, not refused proxy routes
    (an unauthenticated GET /health is logged with call_type "/health")."""
    return [i for i in items() if (i["metadata"] or {}).get("user_api_key_alias") != HEALTH
            and not i["call_type"].startswith("/")]


def health_items() -> list[dict]:
    return [i for i in items() if i not in user_items()]


def ns(seconds: float) -> int:
    return round(seconds * 1_000_000) * 1000


def expected_model(item: dict) -> str:
    model, provider = item["model"] or item["model_group"], item["custom_llm_provider"]
    if provider and model.startswith(provider + "/"):
        model = model[len(provider) + 1:]
    return model.removeprefix("converse/")


def prompt_texts(item: dict) -> list[str]:
    """Message and completion texts long enough not to match by chance in binary data."""
    texts = [m["content"] for m in item.get("messages") or [] if isinstance(m, dict)
             and isinstance(m.get("content"), str)]
    for choice in (item.get("response") or {}).get("choices") or []:
        content = (choice.get("message") or {}).get("content")
        if isinstance(content, str):
            texts.append(content)
    return [t for t in texts if len(t) >= 8]


async def post_fixtures(url: str, rounds: int = 1) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        for _ in range(rounds):
            for path in batch_files():
                body = json.dumps(load_capture(path.name)["body_json"])
                async with session.post(f"{url}/v1/litellm/events", data=body,
                                        headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 200, await response.text()


async def get_metrics(url: str) -> list:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session, \
            session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return samples(await response.text())


def otel_config(endpoint: str, **extra) -> dict:
    return {"litellm": {"config": str(FIXTURES / "config.yaml")},
            "otel": {"enabled": True, "endpoint": endpoint, "schedule_delay": "50ms", **extra}}


@pytest.fixture
async def http_receiver():
    receiver = await HttpReceiver().start()
    yield receiver
    await receiver.close()


@pytest.fixture
def grpc_receiver():
    receiver = GrpcReceiver().start()
    yield receiver
    receiver.close()


def by_call(spans) -> dict[tuple[str, bool], object]:
    out = {}
    for span in spans:
        key = (attributes(span)["litellm.call_id"], span.status.code == ERROR)
        assert key not in out, f"two spans for one attempt {key}"
        out[key] = span
    return out


def check_span(span, item: dict, attribution: dict[str, tuple[str, str]]) -> None:
    attrs = attributes(span)
    model = expected_model(item)
    failed = item["status"] == "failure"
    assert span.name == f"chat {model}"
    assert span.kind == CLIENT
    assert span.start_time_unix_nano == ns(item["startTime"])
    assert span.end_time_unix_nano == ns(item["endTime"])
    assert span.trace_id == bytes.fromhex(item["trace_id"].replace("-", ""))
    assert len(span.span_id) == 8 and span.parent_span_id == b""
    assert attrs["gen_ai.operation.name"] == "chat"
    provider = item["custom_llm_provider"]
    assert attrs["gen_ai.provider.name"] == {"openai": "openai", "bedrock": "aws.bedrock", None: "_OTHER"}[provider]
    assert attrs["gen_ai.request.model"] == model
    if item["api_base"]:
        parsed = urlparse(item["api_base"])
        assert (attrs["server.address"], attrs["server.port"]) == (parsed.hostname, parsed.port)
    else:
        assert "server.address" not in attrs
    if item["model_group"]:
        assert attrs["litellm.model_group"] == item["model_group"]
    if item["model_id"]:
        assert attrs["litellm.deployment_id"] == item["model_id"]
        account, region = attribution[item["model_id"]]
        assert attrs.get("cloud.region") == (region or None)
        assert attrs.get("cloud.account.id") == (account or None)
        assert attrs.get("cloud.provider") == ("aws" if account or region else None)
    if failed:
        assert span.status.code == ERROR
        assert attrs["error.type"] == item["error_information"]["error_class"]
        assert span.status.message == item["error_information"]["error_message"][:256]
        assert "gen_ai.response.id" not in attrs
    else:
        assert span.status.code == UNSET
        assert "error.type" not in attrs
        assert attrs["gen_ai.usage.input_tokens"] == item["prompt_tokens"]
        assert attrs["gen_ai.usage.output_tokens"] == item["completion_tokens"]
        assert attrs["gen_ai.response.id"] == item["response"]["id"]
        assert attrs["gen_ai.response.finish_reasons"] == tuple(c["finish_reason"] for c in item["response"]["choices"])
        assert attrs["gen_ai.response.model"] in (model, item["response"]["model"])
        assert attrs["litellm.cost_usd"] == pytest.approx(item["response_cost"])
    if item["stream"] and not failed:
        (first,) = span.events
        assert first.name == "gen_ai.first_token"
        assert abs(first.time_unix_nano - ns(item["completionStartTime"])) <= 1000
        ttft = attr_value(first.attributes[0].value)
        assert ttft == pytest.approx(item["completionStartTime"] - item["startTime"])
    else:
        assert list(span.events) == []


async def test_http_export_matches_the_payloads(http_receiver, gatewatch_server, lab_environ):
    _gw, url = await gatewatch_server(otel_config(http_receiver.url))
    await post_fixtures(url)
    expected = user_items()
    await wait_until(lambda: len(http_receiver.received.spans()) >= len(expected), what="all spans")
    spans = by_call(http_receiver.received.spans())
    assert len(spans) == len(expected)
    attribution = expected_attribution()
    for item in expected:
        check_span(spans[(item["litellm_call_id"], item["status"] == "failure")], item, attribution)
    health_ids = {i["litellm_call_id"] for i in health_items()}
    assert not health_ids & {call_id for call_id, _ in spans}

    # a failed attempt and the retry / fallback that recovered it: one trace, two spans
    for name in ("generic_api_retry_then_success.json", "generic_api_fallback.json"):
        first = capture_items(name)[0]
        assert first["status"] == "failure"
        failed = spans[(first["litellm_call_id"], True)]
        recovered = spans[(first["litellm_call_id"], False)]
        assert failed.trace_id == recovered.trace_id and failed.span_id != recovered.span_id
    fallback_success = capture_items("generic_api_fallback_2.json")[0]
    recovered = attributes(spans[(fallback_success["litellm_call_id"], False)])
    assert recovered["litellm.attempted_fallbacks"] == int(
        fallback_success["hidden_params"]["additional_headers"]["x-litellm-attempted-fallbacks"])
    assert recovered["litellm.requested_model"] == "error-model"

    # resource and scope
    (resource,) = {json.dumps(r, sort_keys=True) for r in http_receiver.received.resources()}
    resource = json.loads(resource)
    assert resource["service.name"] == "litellm-proxy" and resource["service.instance.id"]
    # no prompt or completion text left without opt-in
    leaked = [t for item in items() for t in prompt_texts(item)
              if any(t.encode() in body for body in http_receiver.received.raw)]
    assert leaked == []
    assert all("gen_ai.input.messages" not in attributes(s) for s in spans.values())

    rows = await get_metrics(url)
    assert total(rows, "gatewatch_otel_spans_exported_total") == len(expected)
    assert total(rows, "gatewatch_otel_spans_dropped_total") == 0
    assert total(rows, "gatewatch_otel_queue_size") == 0


async def test_grpc_export_with_headers_from_the_environment(grpc_receiver, gatewatch_server, lab_environ,
                                                             monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr3t-t0ken%3D%3D,x-team=platform")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "litellm-prod")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,team=ml")
    _gw, url = await gatewatch_server(otel_config(grpc_receiver.url, protocol="grpc"))
    await post_fixtures(url)
    expected = user_items()
    await wait_until(lambda: len(grpc_receiver.received.spans()) >= len(expected), what="all spans over gRPC")
    spans = by_call(grpc_receiver.received.spans())
    attribution = expected_attribution()
    for item in expected:
        check_span(spans[(item["litellm_call_id"], item["status"] == "failure")], item, attribution)
    headers = grpc_receiver.received.headers[0]
    assert headers["x-api-key"] == "s3cr3t-t0ken==" and headers["x-team"] == "platform"
    resource = grpc_receiver.received.resources()[0]
    assert resource["service.name"] == "litellm-prod"
    assert resource["deployment.environment.name"] == "prod" and resource["team"] == "ml"
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        ready = await response.text()
    assert "s3cr3t" not in ready and "s3cr3t" not in caplog.text


def assert_texts(got: list[str], want: list[str], truncated: bool) -> None:
    """Equal, or (when the span says it was truncated) a prefix marked as cut."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if g != w:
            assert truncated and g.endswith("…[truncated]") and w.startswith(g.removesuffix("…[truncated]"))


async def test_content_is_exported_only_when_opted_in(http_receiver, gatewatch_server, lab_environ, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    _gw, url = await gatewatch_server(otel_config(http_receiver.url, capture_content=True, max_content_bytes=128))
    await post_fixtures(url)
    expected = user_items()
    await wait_until(lambda: len(http_receiver.received.spans()) >= len(expected), what="all spans")
    assert http_receiver.received.headers[0].get("Content-Encoding") == "gzip"
    spans = by_call(http_receiver.received.spans())
    for item in expected:
        attrs = attributes(spans[(item["litellm_call_id"], item["status"] == "failure")])
        truncated = attrs.get("gatewatch.content_truncated", False)
        sent = json.loads(attrs["gen_ai.input.messages"])
        assert len(attrs["gen_ai.input.messages"].encode()) <= 128
        assert [m["role"] for m in sent] == [m["role"] for m in item["messages"]]
        assert_texts([p["content"] for m in sent for p in m["parts"]], [m["content"] for m in item["messages"]],
                     truncated)
        if item["status"] == "success":
            out = json.loads(attrs["gen_ai.output.messages"])
            assert len(attrs["gen_ai.output.messages"].encode()) <= 128
            assert_texts([p["content"] for m in out for p in m["parts"]],
                         [c["message"]["content"] for c in item["response"]["choices"]], truncated)
            assert [m["finish_reason"] for m in out] == [c["finish_reason"] for c in item["response"]["choices"]]
    long_prompt = next(i for i in expected if len(json.dumps(i["messages"])) > 128)
    attrs = attributes(spans[(long_prompt["litellm_call_id"], long_prompt["status"] == "failure")])
    assert attrs["gatewatch.content_truncated"] is True


async def test_tail_sampling_keeps_errors_slow_calls_and_recoveries(http_receiver, gatewatch_server, lab_environ,
                                                                    monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")  # no plain success is kept
    _gw, url = await gatewatch_server(otel_config(http_receiver.url, sampling={"keep_slower_than": "1s"}))
    await post_fixtures(url)

    def wanted(item: dict) -> bool:
        headers = (item.get("hidden_params") or {}).get("additional_headers") or {}
        recovered = int(headers.get("x-litellm-attempted-retries") or 0) + int(
            headers.get("x-litellm-attempted-fallbacks") or 0)
        return item["status"] == "failure" or recovered > 0 or item["endTime"] - item["startTime"] >= 1.0

    expected = {(i["litellm_call_id"], i["status"] == "failure") for i in user_items() if wanted(i)}
    await wait_until(lambda: len(http_receiver.received.spans()) >= len(expected), what="sampled spans")
    rows = await get_metrics(url)
    assert set(by_call(http_receiver.received.spans())) == expected
    assert any(not failed for _, failed in expected)  # recovered successes and the slow call are in
    assert total(rows, "gatewatch_otel_spans_sampled_out_total") == len(user_items()) - len(expected)


async def test_traceparent_joins_the_callers_trace(http_receiver, gatewatch_server, lab_environ):
    _gw, url = await gatewatch_server(otel_config(http_receiver.url))
    item = capture_items("generic_api_success.json")[0]
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    item["metadata"]["traceparent"] = f"00-{trace_id}-{parent_id}-01"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", json=[item]) as response:
            assert response.status == 200
    await wait_until(lambda: len(http_receiver.received.spans()) == 1, what="the span")
    (span,) = http_receiver.received.spans()
    assert span.trace_id.hex() == trace_id and span.parent_span_id.hex() == parent_id
    assert span.flags & 0x300 == 0x300  # parent is remote


async def test_otel_metrics_with_semantic_convention_buckets(http_receiver, gatewatch_server, lab_environ):
    gw, url = await gatewatch_server(otel_config(http_receiver.url, metrics={"enabled": True, "interval": "200ms"}))
    await post_fixtures(url)
    expected = user_items()
    await wait_until(lambda: len(http_receiver.received.spans()) >= len(expected), what="spans")
    await gw.stop()  # flushes the metrics
    request = http_receiver.received.metrics[-1]
    metrics = {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    points = list(duration.histogram.data_points)
    assert all(tuple(p.explicit_bounds) == DURATION_BUCKETS for p in points)
    assert sum(p.count for p in points) == len(expected)
    assert sum(p.sum for p in points) == pytest.approx(sum(i["endTime"] - i["startTime"] for i in expected))
    errors = sum(p.count for p in points if any(kv.key == "error.type" for kv in p.attributes))
    assert errors == sum(1 for i in expected if i["status"] == "failure")
    tokens = metrics["gen_ai.client.token.usage"]
    by_type = {"input": 0, "output": 0}
    for point in tokens.histogram.data_points:
        assert tuple(point.explicit_bounds) == TOKEN_BUCKETS
        kind = next(attr_value(kv.value) for kv in point.attributes if kv.key == "gen_ai.token.type")
        by_type[kind] += point.sum
    assert by_type["input"] == sum(i["prompt_tokens"] or 0 for i in expected)
    assert by_type["output"] == sum(i["completion_tokens"] or 0 for i in expected)


async def test_collector_down_counts_every_drop(gatewatch_server, lab_environ):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gw, url = await gatewatch_server(otel_config(down, queue_size=40, batch_size=20, shutdown_timeout="1s"))
    await post_fixtures(url, rounds=3)
    rows = await get_metrics(url)  # /metrics keeps answering
    assert total(rows, "gatewatch_otel_spans_dropped_total", reason="queue_full") > 0
    await wait_until(lambda: gw.registry.get_sample_value("gatewatch_otel_export_failures_total") > 0,
                     what="a failed export")
    ok, detail = gw.readiness_checks["otel"]()
    assert ok and "export failing (connection_refused" in detail  # the sidecar stays ready
    await gw.stop()
    dropped = sum(gw.registry.get_sample_value("gatewatch_otel_spans_dropped_total", {"reason": reason}) or 0
                  for reason in ("queue_full", "export_failed", "shutdown", "rejected", "encode_error"))
    assert gw.registry.get_sample_value("gatewatch_otel_spans_exported_total") == 0
    assert dropped == 3 * len(user_items())  # every span accounted for


async def test_hanging_collector_does_not_stall_ingest_and_memory_stays_bounded(gatewatch_server, lab_environ):
    collector = await HangingCollector().start()
    try:
        _gw, url = await gatewatch_server(otel_config(collector.url, timeout="60s", queue_size=100, batch_size=50,
                                                     shutdown_timeout="1s"))
        rounds = 8  # each POST would wait a minute if export ran on the event loop
        await post_fixtures(url, rounds=rounds)
        await wait_until(lambda: collector.connections > 0, what="the exporter to connect")
        rows = await get_metrics(url)
        queued = total(rows, "gatewatch_otel_queue_size")
        assert queued <= 100
        assert total(rows, "gatewatch_otel_spans_dropped_total", reason="queue_full") >= \
            rounds * len(user_items()) - 100 - 50  # all but the queue and the batch in flight
        live_events = sum(1 for obj in gc.get_objects() if type(obj) is Event)
        assert live_events < 100 + 50 + len(items()) * 2  # bounded, not rounds * events
        assert total(rows, "gatewatch_events_received_total", source="callback") == rounds * len(items())
    finally:
        await collector.close()


async def test_partial_success_and_errors_are_counted(http_receiver, gatewatch_server, lab_environ):
    http_receiver.partial_reject = 2
    gw, url = await gatewatch_server(otel_config(http_receiver.url, batch_size=1000))
    item = capture_items("generic_api_success.json")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", json=item) as response:
            assert response.status == 200
    await wait_until(lambda: len(http_receiver.received.spans()) == len(item), what="spans")
    await wait_until(lambda: (gw.registry.get_sample_value("gatewatch_otel_spans_dropped_total",
                                                           {"reason": "rejected"}) or 0) == 2, what="rejections")
    assert gw.registry.get_sample_value("gatewatch_otel_spans_exported_total") == len(item) - 2

    http_receiver.partial_reject = 0
    http_receiver.fail_next = 2  # 503 twice, then accepted: retried, nothing lost
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", json=item) as response:
            assert response.status == 200
    await wait_until(lambda: len(http_receiver.received.spans()) == 2 * len(item), what="the retried batch")
    await wait_until(lambda: gw.registry.get_sample_value("gatewatch_otel_spans_exported_total") == 2 * len(item) - 2,
                     what="the retried batch counted")
    assert gw.registry.get_sample_value("gatewatch_otel_export_failures_total") == 2

    http_receiver.status = 400  # permanent: not retried, the batch is dropped
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", json=item) as response:
            assert response.status == 200
    await wait_until(lambda: (gw.registry.get_sample_value("gatewatch_otel_spans_dropped_total",
                                                           {"reason": "export_failed"}) or 0) == len(item),
                     what="the failed batch")
    assert gw.registry.get_sample_value("gatewatch_otel_export_failures_total") == 3


async def test_ecs_task_metadata_fills_the_resource(http_receiver, gatewatch_server, lab_environ, monkeypatch):
    task_arn = "arn:aws:ecs:eu-west-1:123456789012:task/litellm-prod/0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    task = {  # the documented shape of ECS task metadata v4 (GET ${ECS_CONTAINER_METADATA_URI_V4}/task)
        "Cluster": "litellm-prod", "TaskARN": task_arn, "Family": "litellm", "Revision": "42",
        "LaunchType": "FARGATE", "AvailabilityZone": "eu-west-1b",
        "Containers": [
            {"DockerId": "aaa111", "Name": "gatewatch", "Image": "gatewatch:0.1.0"},
            {"DockerId": "bbb222", "Name": "litellm", "Image": "ghcr.io/berriai/litellm:main-v1.108.7",
             "ContainerARN": "arn:aws:ecs:eu-west-1:123456789012:container/litellm-prod/0f1e/bbb"},
        ],
    }
    async def task_metadata(request: web.Request) -> web.Response:
        return web.json_response(task)

    app = web.Application()
    app.router.add_get("/v4/abc/task", task_metadata)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"http://127.0.0.1:{port}/v4/abc")
    try:
        _gw, url = await gatewatch_server(otel_config(http_receiver.url))
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/litellm/events",
                                    json=capture_items("generic_api_success.json")) as response:
                assert response.status == 200
        await wait_until(lambda: http_receiver.received.traces, what="spans")
        resource = http_receiver.received.resources()[0]
    finally:
        await runner.cleanup()
    assert resource["aws.ecs.task.arn"] == task_arn
    assert resource["service.instance.id"] == task_arn
    assert resource["aws.ecs.cluster.arn"] == "arn:aws:ecs:eu-west-1:123456789012:cluster/litellm-prod"
    assert (resource["cloud.region"], resource["cloud.account.id"]) == ("eu-west-1", "123456789012")
    assert resource["aws.ecs.launchtype"] == "fargate" and resource["cloud.availability_zone"] == "eu-west-1b"
    assert (resource["container.name"], resource["container.id"]) == ("litellm", "bbb222")
    assert resource["aws.ecs.task.family"] == "litellm" and resource["aws.ecs.task.revision"] == "42"


async def test_enabled_by_the_standard_endpoint_variable(http_receiver, gatewatch_server, lab_environ, monkeypatch):
    gw, _ = await gatewatch_server({})
    assert "otel" not in [s.name for s in gw.pipeline.sinks]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    gw, url = await gatewatch_server({})
    assert "otel" in [s.name for s in gw.pipeline.sinks]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", json=capture_items("generic_api_success.json")) as r:
            assert r.status == 200
    await wait_until(lambda: len(http_receiver.received.spans()) == 3, what="spans via OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    gw, _ = await gatewatch_server({})
    assert "otel" not in [s.name for s in gw.pipeline.sinks]

"""The OTel sink's parts on their own: config + OTEL_* env, ids, sampling, content capping,
attribute mapping, encoding (checked by decoding with the official protobuf messages)."""

from __future__ import annotations

import json
import uuid

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.events import Event, Kind
from agent.otel.config import enabled_by_env, parse_key_values, resolve
from agent.otel.content import capped_json, content_attributes, input_messages, output_messages
from agent.otel.encode import SpanEncoder, to_ns
from agent.otel.ids import parse_traceparent, ratio_position, span_id_for, trace_id_for
from agent.otel.mapping import dimension_attributes, provider_name, request_model, response_model
from agent.otel.resource import ecs_attributes
from agent.otel.sampler import TailSampler
from agent.parse.litellm import decode_body
from agent.sinks.otel import OtelSink
from tests.conftest import capture_items


def otel(data: dict | None = None):
    return parse_config({"otel": data or {}}).otel


def event(**kw) -> Event:
    base = {"kind": Kind.REQUEST, "time": 1795640500.5, "start_time": 1795640500.0, "call_id": str(uuid.uuid4()),
            "trace_id": str(uuid.uuid4()), "model": "fake-ok", "model_group": "gpt-lab", "api_provider": "openai",
            "call_type": "acompletion", "latency": 0.5}
    base.update(kw)
    return Event(**base)


def fixture_events(name: str, capture_content: bool = False) -> list[Event]:
    return decode_body(json.dumps(capture_items(name)).encode(), capture_content).events


# -- config -----------------------------------------------------------------------------
def test_env_configures_the_exporter_and_config_wins():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%2C123, x-tenant = acme ,broken",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_SERVICE_NAME": "proxy-a",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,service.name=ignored",
        "OTEL_BSP_MAX_QUEUE_SIZE": "1000",
    }
    s = resolve(otel(), env)
    assert s.traces_endpoint.url == "https://collector.example:4318/v1/traces"
    assert s.metrics_endpoint.url == "https://collector.example:4318/v1/metrics"
    assert s.traces_endpoint.protocol == "http/protobuf" and s.traces_endpoint.compression == "gzip"
    assert dict(s.traces_endpoint.headers) == {"api-key": "abc,123", "x-tenant": "acme"}
    assert repr(dict(s.traces_endpoint.headers)["api-key"]) == "Secret('***')"
    assert s.traces_endpoint.timeout == 2.5
    assert (s.sampler, s.ratio) == ("parentbased_traceidratio", 0.25)
    assert s.service_name == "proxy-a" and dict(s.resource_attributes) == {"deployment.environment.name": "prod"}
    assert s.queue_size == 1000 and s.batch_size == 512

    s = resolve(otel({"endpoint": "http://local:4318", "protocol": "http/protobuf", "timeout": "1s",
                      "service_name": "mine", "sampling": {"sampler": "always_on"}, "queue_size": 10}), env)
    assert s.traces_endpoint.url == "http://local:4318/v1/traces" and s.traces_endpoint.timeout == 1.0
    assert (s.service_name, s.sampler, s.ratio, s.queue_size, s.batch_size) == ("mine", "always_on", 1.0, 10, 10)


def test_grpc_endpoint_and_per_signal_variables():
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-agent:4317",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces-only:14317"}
    s = resolve(otel(), env)
    assert (s.traces_endpoint.target, s.traces_endpoint.insecure) == ("traces-only:14317", True)
    assert s.metrics_endpoint.target == "otel-agent:4317"
    s = resolve(otel(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom/path"})
    assert s.traces_endpoint.url == "http://c:4318/custom/path"  # the per-signal variable is used as is
    s = resolve(otel({"protocol": "grpc", "endpoint": "https://collector:443"}), {})
    assert (s.traces_endpoint.target, s.traces_endpoint.insecure) == ("collector:443", False)


@pytest.mark.parametrize(("env", "name"), [
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
])
def test_bad_env_values_name_the_variable(env, name):
    with pytest.raises(ConfigError) as err:
        resolve(otel(), env)
    assert err.value.key_path == name and err.value.file == "environment"


@pytest.mark.parametrize(("data", "path"), [
    ({"sampling": {"ratio": 1.5}}, "otel.sampling.ratio"),
    ({"endpoint": "collector:4318"}, "otel.endpoint"),
    ({"protocol": "http/json"}, "otel.protocol"),
    ({"queue_size": 0}, "otel.queue_size"),
    ({"capture_contents": True}, "otel.capture_contents"),
])
def test_bad_config_names_the_key(data, path):
    with pytest.raises(ConfigError) as err:
        parse_config({"otel": data}, "gatewatch.yaml")
    assert err.value.key_path == path and err.value.file == "gatewatch.yaml"


def test_enabled_by_default_only_with_an_endpoint():
    assert not enabled_by_env(otel(), {})
    assert enabled_by_env(otel(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert enabled_by_env(otel(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not enabled_by_env(otel(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "true"})
    assert not enabled_by_env(otel({"enabled": False}), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert enabled_by_env(otel({"enabled": True}), {})
    assert not resolve(otel(), {"OTEL_TRACES_EXPORTER": "none"}).traces
    assert resolve(otel(), {"OTEL_METRICS_EXPORTER": "otlp"}).metrics and not resolve(otel(), {}).metrics


def test_key_value_lists_are_percent_decoded():
    assert parse_key_values("a=1,%20b%20=x%3Dy,,=z,c", "T") == [("a", "1"), (" b ", "x=y")]


# -- ids and sampling -----------------------------------------------------------------------
def test_trace_ids_come_from_litellm_and_traceparent():
    e = event(trace_id="919e1c89-e697-4c71-bcbc-9940b37b8a70")
    assert trace_id_for(e) == uuid.UUID("919e1c89-e697-4c71-bcbc-9940b37b8a70").bytes
    assert trace_id_for(event(trace_id="not-a-uuid", call_id="x")) == trace_id_for(event(trace_id="not-a-uuid"))
    parent = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    assert parent is not None and not parent.sampled
    assert trace_id_for(e, parent).hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    for bad in ("", "00-0000000000000000000000000000000-00f067aa0ba902b7-01", "ff-" + "1" * 32 + "-" + "2" * 16 + "-01",
                "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage"):
        assert parse_traceparent(bad) is None


def test_attempts_of_one_call_share_the_trace_with_distinct_stable_span_ids():
    failed, recovered = fixture_events("generic_api_retry_then_success.json")[:2]
    assert failed.call_id == recovered.call_id and failed.status != recovered.status
    assert trace_id_for(failed) == trace_id_for(recovered)
    assert span_id_for(failed) != span_id_for(recovered)
    assert span_id_for(failed) == span_id_for(failed.copy())  # a re-sent batch gives the same span


def test_ratio_sampling_is_deterministic_per_trace_and_keeps_errors():
    sampler = TailSampler("traceidratio", 0.25)
    events = [event() for _ in range(4000)]
    kept = [e for e in events if sampler.keep(e)]
    assert 0.2 < len(kept) / len(events) < 0.3
    assert all(sampler.keep(e) == (ratio_position(trace_id_for(e)) < 0.25) for e in events)
    assert all(sampler.keep(e.copy(status="failure")) for e in events[:100])  # errors always
    assert TailSampler("always_off").keep(event(status="failure", status_code="500"))
    assert not TailSampler("always_off", keep_errors=False).keep(event(status="failure"))
    assert TailSampler("always_off").keep(event(retries=1))  # recovered: the other half of an error trace
    assert TailSampler("always_off", keep_slower_than=2.0).keep(event(latency=2.5))
    assert not TailSampler("always_off", keep_slower_than=2.0).keep(event(latency=1.5))


def test_parent_based_sampling_follows_the_callers_flag():
    sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    unsampled = sampled[:-2] + "00"
    assert TailSampler("parentbased_always_off").keep(event(traceparent=sampled))
    assert not TailSampler("parentbased_always_on").keep(event(traceparent=unsampled))
    assert TailSampler("parentbased_always_on").keep(event(traceparent=unsampled, status="failure"))
    assert TailSampler("always_off").keep(event(traceparent=sampled)) is False  # not parent based


# -- mapping ----------------------------------------------------------------------------------
def test_provider_model_and_response_model_mapping():
    assert provider_name(event(api_provider="bedrock")) == "aws.bedrock"
    assert provider_name(event(api_provider="azure")) == "azure.ai.openai"
    assert provider_name(event(api_provider="vertex_ai")) == "gcp.vertex_ai"
    assert provider_name(event(api_provider="ollama")) == "ollama"
    assert provider_name(event(api_provider="")) == "_OTHER"
    bedrock = fixture_events("generic_api_bedrock_success.json")[0]
    assert request_model(bedrock) == "anthropic.claude-3-haiku-20240307-v1:0"
    assert bedrock.response_model == "bedrock-lab"  # LiteLLM restamps the answer with the model group
    assert response_model(bedrock) == "anthropic.claude-3-haiku-20240307-v1:0"
    fallback = fixture_events("generic_api_fallback_2.json")[0]
    assert response_model(fallback) == fallback.response_model == "fake-ok"
    name, attrs = dimension_attributes(fixture_events("generic_api_upstream_429.json")[0])
    attrs = dict(attrs)
    assert name == "chat fake-429"
    assert attrs["error.type"] == "RateLimitError" and attrs["litellm.status_code"] == "429"
    assert "gen_ai.response.model" not in attrs


# -- content ----------------------------------------------------------------------------------
def test_chat_messages_follow_the_conventions_shape():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    converted = input_messages(messages)
    assert converted == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "what is this"}, {"type": "blob", "modality": "image"}]},
        {"role": "assistant",
         "parts": [{"type": "tool_call", "name": "lookup", "id": "call_1", "arguments": {"q": "x"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "response": "42", "id": "call_1"}]},
    ]
    assert "AAAA" not in json.dumps(converted)
    assert input_messages("complete this") == [
        {"role": "user", "parts": [{"type": "text", "content": "complete this"}]}]
    assert output_messages({"choices": [{"text": "done", "finish_reason": "length"}]}) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "done"}], "finish_reason": "length"}]


def test_content_is_capped_as_valid_json():
    messages = [{"role": "user", "parts": [{"type": "text", "content": "é" * 5000}]},
                {"role": "assistant", "parts": [{"type": "text", "content": "short"}]}]
    text, cut = capped_json(messages, 1000)
    assert cut and len(text.encode()) <= 1000
    parsed = json.loads(text)
    assert parsed[1]["parts"][0]["content"] == "short" and parsed[0]["parts"][0]["content"].endswith("…[truncated]")
    attrs = dict(content_attributes([{"role": "user", "content": "x" * 100}], None, 10_000))
    assert json.loads(attrs["gen_ai.input.messages"])[0]["parts"][0]["content"] == "x" * 100
    assert "gatewatch.content_truncated" not in attrs


# -- encoding -------------------------------------------------------------------------------------
def decode(body: bytes) -> list:
    request = ExportTraceServiceRequest.FromString(body)
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_encoder_splits_large_requests_and_survives_bad_events():
    events = fixture_events("generic_api_success.json", capture_content=True)
    for e in events:
        e.input_messages = [{"role": "user", "content": "y" * 30_000}]
    bad = events[0].copy(time=float("nan"), call_id="bad")
    encoder = SpanEncoder({"service.name": "t"}, capture_content=True, max_content_bytes=40_000,
                          max_request_bytes=64 * 1024)
    requests = encoder.encode(events * 4 + [bad])
    assert encoder.encode_errors == 1
    assert len(requests) > 1 and all(len(body) <= 64 * 1024 for body, _ in requests)
    assert sum(n for _, n in requests) == len(events) * 4
    spans = [s for body, _ in requests for s in decode(body)]
    assert len(spans) == len(events) * 4
    assert {s.start_time_unix_nano for s in spans} == {to_ns(e.start_time) for e in events}


def test_to_ns_matches_the_payload_to_the_microsecond():
    for item in capture_items("generic_api_cooldown.json"):
        assert abs(to_ns(item["startTime"]) - item["startTime"] * 1e9) <= 1000


# -- resource ----------------------------------------------------------------------------------
def test_ecs_attributes_pick_the_proxy_container():
    task = {"TaskARN": "arn:aws-cn:ecs:cn-north-1:123456789012:task/c/abc", "Cluster": "c",
            "Containers": [{"Name": "sidecar", "Image": "gatewatch"}, {"Name": "proxy", "Image": "litellm:1"}]}
    attrs = ecs_attributes(task)
    assert attrs["aws.ecs.cluster.arn"] == "arn:aws-cn:ecs:cn-north-1:123456789012:cluster/c"
    assert attrs["container.name"] == "proxy" and attrs["aws.ecs.task.id"] == "abc"
    assert ecs_attributes(task, proxy_container="sidecar")["container.name"] == "sidecar"
    assert ecs_attributes(None) == {}


# -- the sink's ingest path ----------------------------------------------------------------------
async def test_handle_only_enqueues_and_counts_drops_before_start():
    registry = CollectorRegistry()
    settings = resolve(otel({"queue_size": 5, "sampling": {"sampler": "always_off"}}), {})
    sink = OtelSink(settings, registry, resource_attributes={"service.name": "t"})
    events = fixture_events("generic_api_cooldown.json") + fixture_events("generic_api_health.json")
    outcomes = [e.copy(kind=Kind.OUTCOME) for e in events]
    sink.handle(events + outcomes)
    kept = [e for e in events if not e.health_check and (e.is_failure or e.retries or e.fallbacks)]
    sampled_out = [e for e in events if not e.health_check and e not in kept]
    assert len(sink._spans) == min(5, len(kept))
    assert registry.get_sample_value("gatewatch_otel_spans_dropped_total", {"reason": "queue_full"}) == max(
        0, len(kept) - 5)
    assert registry.get_sample_value("gatewatch_otel_spans_sampled_out_total") == len(sampled_out)
    assert registry.get_sample_value("gatewatch_otel_queue_size") == len(sink._spans)


def test_endpoint_credentials_never_reach_the_log():
    from agent.sinks.otel import _safe_url

    assert _safe_url("https://user:pa55@collector:4318/v1/traces?token=abc") == "https://collector:4318/v1/traces"


async def test_reload_applies_the_new_sampling_rule(tmp_path):
    from agent.app import GatewatchApp

    base = {"state_dir": str(tmp_path), "otel": {"enabled": True, "endpoint": "http://127.0.0.1:9"}}
    gw = GatewatchApp(parse_config(base))
    (sink,) = [s for s in gw.pipeline.sinks if s.name == "otel"]
    successes = fixture_events("generic_api_success.json")
    sink.handle(successes)
    assert len(sink._spans) == len(successes)
    await gw.reload(parse_config({**base, "otel": {**base["otel"], "sampling": {"sampler": "always_off"}}}))
    sink.handle(successes)
    assert len(sink._spans) == len(successes)
    assert gw.registry.get_sample_value("gatewatch_otel_spans_sampled_out_total") == len(successes)

"""EMF mode: lines checked against the specification's rules, parsed back to the captures' totals,
and delivered to stdout, a file, and real TCP/UDP listeners (the CloudWatch agent's ports)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.events import Event, Kind
from agent.sinks.cloudwatch import CloudWatchSink
from agent.sinks.cloudwatch_agg import Aggregator
from agent.sinks.cloudwatch_emf import emf_lines
from agent.sinks.config import DEFAULT_DIMENSION_SETS
from tests.cloudwatch_support import check_emf_line, emf_totals, grand_totals, raw_totals_by_model_group
from tests.conftest import free_port
from tests.test_cloudwatch_agg import replayed_events


def sample(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


def sink_with_registry(**section) -> tuple[CloudWatchSink, CollectorRegistry]:
    cfg = parse_config({"cloudwatch": {"enabled": True, "mode": "emf", **section}})
    registry = CollectorRegistry()
    return CloudWatchSink(cfg.cloudwatch, registry), registry


def assert_matches_captures(lines: list[str]) -> None:
    totals = emf_totals(lines)
    expected = raw_totals_by_model_group()
    for group, t in expected.items():
        got = totals[(("ModelGroup", group),)]
        assert got["Requests"] == t.requests
        assert got["Errors"] == t.errors
        assert got["InputTokens"] == t.input_tokens
        assert got["OutputTokens"] == t.output_tokens
        assert got["CostUSD"] == pytest.approx(t.cost, rel=1e-9, abs=1e-12)
        assert got["Latency.count"] == len(t.latency_ms)
        assert got["Latency.sum"] == pytest.approx(sum(t.latency_ms), rel=1e-6)
    grand = grand_totals()
    for dims in DEFAULT_DIMENSION_SETS:
        series = [v for k, v in totals.items() if tuple(d for d, _ in k) == tuple(dims)]
        assert sum(s["Requests"] for s in series) == grand.requests
        assert sum(s["Latency.count"] for s in series) == len(grand.latency_ms)


@pytest.mark.parametrize("distribution", ["histogram", "values"])
async def test_fixture_replay_to_a_file_is_valid_emf_with_the_captures_totals(lab_environ, tmp_path, distribution):
    out = tmp_path / "emf" / "metrics.log"
    sink, registry = sink_with_registry(emf_output=str(out), emf_distribution=distribution)
    await sink.start()
    sink.handle(replayed_events())
    await sink.stop(time.monotonic() + 30)
    lines = read_lines(out)
    assert lines
    for line in lines:
        check_emf_line(line)
    assert_matches_captures(lines)
    assert sample(registry, "gatewatch_cloudwatch_datapoints_total", mode="emf") == sum(
        _count_values(json.loads(line)) for line in lines)
    assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 0


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _count_values(doc: dict) -> int:
    n = 0
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for metric in directive["Metrics"]:
            v = doc[metric["Name"]]
            n += len(v["Values"]) if isinstance(v, dict) else len(v) if isinstance(v, list) else 1
    return n


def latency_events(n: int, deployment: str = "gpt-lab-acct111-use1") -> list[Event]:
    return [Event(kind=Kind.REQUEST, time=1.0, model_group="gpt-lab", deployment=deployment, api_provider="openai",
                  aws_account="111111111111", aws_region="us-east-1", latency=0.001 * 1.05**i, ttft=0.0005 * 1.05**i,
                  input_tokens=3, output_tokens=2) for i in range(n)]


@pytest.mark.parametrize("distribution", ["histogram", "values"])
def test_distributions_over_100_values_are_split_across_lines(distribution):
    agg = Aggregator([["ModelGroup"]])
    for event in latency_events(250):
        agg.add(event)
    interval = agg.drain(1_700_000_000.0)
    lines = [line.text for line in emf_lines(interval, "LiteLLM", distribution=distribution)]
    docs = [check_emf_line(line) for line in lines]
    assert len(docs) == 3  # counters + first 100 values; then 100; then 50
    for doc in docs:
        for name in ("Latency", "TTFT"):
            if name in doc:
                v = doc[name]
                assert len(v["Values"] if isinstance(v, dict) else v) <= 100
    totals = emf_totals(lines)[(("ModelGroup", "gpt-lab"),)]
    assert totals["Latency.count"] == 250 and totals["TTFT.count"] == 250
    assert totals["Requests"] == 250 and totals["InputTokens"] == 750
    exact = sum(0.001 * 1.05**i * 1000 for i in range(250))
    assert totals["Latency.sum"] == pytest.approx(exact, rel=1e-9 if distribution == "histogram" else 0.02)


def test_more_than_100_metrics_split_into_directives_and_byte_limits_split_lines(lab_environ):
    agg = Aggregator(DEFAULT_DIMENSION_SETS)
    for event in replayed_events():
        agg.add(event)
    interval = agg.drain(1_700_000_000.0)
    reference = emf_totals([line.text for line in emf_lines(interval, "LiteLLM")])
    small = [line.text for line in emf_lines(interval, "LiteLLM", max_metrics=3)]
    for line in small:
        assert len(check_emf_line(line)["_aws"]["CloudWatchMetrics"][0]["Metrics"]) <= 3
    assert emf_totals(small) == reference
    tight = [line.text for line in emf_lines(interval, "LiteLLM", max_bytes=700)]
    assert max(len(line) for line in tight) <= 700
    assert emf_totals(tight) == reference


def test_high_resolution_metrics_say_so():
    agg = Aggregator([["ModelGroup"]])
    agg.add(latency_events(1)[0])
    (line,) = [line.text for line in emf_lines(agg.drain(1_700_000_000.5), "LiteLLM", storage_resolution=1)]
    doc = check_emf_line(line)
    assert doc["_aws"]["Timestamp"] == 1_700_000_000_500
    assert all(m["StorageResolution"] == 1 for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"])
    assert {m["Name"]: m["Unit"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {
        "Requests": "Count", "Errors": "Count", "RateLimited": "Count", "Retries": "Count", "Cooldowns": "Count",
        "InputTokens": "Count", "OutputTokens": "Count", "CostUSD": "None", "Latency": "Milliseconds",
        "TTFT": "Milliseconds"}


async def test_stdout_output(lab_environ, capfd):
    sink, _ = sink_with_registry(emf_output="stdout")
    await sink.start()
    sink.handle(replayed_events())
    await sink.flush(time.monotonic() + 30)
    await sink.stop(time.monotonic() + 30)
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert lines
    assert_matches_captures(lines)


class LineCollector(asyncio.Protocol):
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        self.sink.extend(line.decode() for line in complete)


async def wait_for(predicate, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_tcp_agent_outage_keeps_the_batch_and_delivers_it_later(lab_environ):
    port = free_port()
    sink, registry = sink_with_registry(emf_output=f"tcp://127.0.0.1:{port}", timeout="2s")
    await sink.start()
    sink.handle(replayed_events())
    await sink.flush(time.monotonic() + 30)  # nobody listening yet
    assert sample(registry, "gatewatch_cloudwatch_put_failures_total") == 1
    assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 1
    received: list[str] = []
    server = await asyncio.get_running_loop().create_server(lambda: LineCollector(received), "127.0.0.1", port)
    try:
        await sink.flush(time.monotonic() + 30)  # the agent is back: the kept interval goes out
        assert sample(registry, "gatewatch_cloudwatch_pending_batches") == 0
        await wait_for(lambda: len(received) >= 1 and sum(_count_values(json.loads(x)) for x in received)
                       == sample(registry, "gatewatch_cloudwatch_datapoints_total", mode="emf"))
        await sink.stop(time.monotonic() + 30)
    finally:
        server.close()
        await server.wait_closed()
    assert_matches_captures(received)  # nothing lost, nothing twice
    assert sample(registry, "gatewatch_cloudwatch_dropped_total", reason="pending_full") == 0


class DatagramCollector(asyncio.DatagramProtocol):
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr) -> None:
        self.sink.extend(line for line in data.decode().splitlines() if line)


async def test_udp_output_sends_one_datagram_per_line(lab_environ):
    port = free_port()
    received: list[str] = []
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DatagramCollector(received), local_addr=("127.0.0.1", port))
    try:
        sink, registry = sink_with_registry(emf_output=f"udp://127.0.0.1:{port}")
        await sink.start()
        sink.handle(replayed_events())
        await sink.stop(time.monotonic() + 30)
        expected = sample(registry, "gatewatch_cloudwatch_datapoints_total", mode="emf")
        await wait_for(lambda: sum(_count_values(json.loads(x)) for x in received) == expected)
    finally:
        transport.close()
    assert_matches_captures(received)


async def test_interval_timer_exports_without_being_asked(lab_environ, tmp_path):
    out = tmp_path / "metrics.log"
    sink, _ = sink_with_registry(emf_output=str(out), interval="1s")
    await sink.start()
    try:
        sink.handle(replayed_events())
        await wait_for(lambda: bool(read_lines(out)))
        assert sink.intervals >= 1
    finally:
        await sink.stop(time.monotonic() + 30)
    assert_matches_captures(read_lines(out))


async def test_malformed_events_are_counted_and_skipped(tmp_path):
    sink, registry = sink_with_registry(emf_output=str(tmp_path / "m.log"))
    broken = Event(kind=Kind.REQUEST, time=1.0, model_group="g", latency="slow")  # type: ignore[arg-type]
    infinite = Event(kind=Kind.REQUEST, time=1.0, model_group="g", cost_usd=float("inf"))
    sink.handle([broken, infinite, *latency_events(2)])
    assert sample(registry, "gatewatch_cloudwatch_dropped_total", reason="invalid_event") == 2
    await sink.start()
    await sink.stop(time.monotonic() + 30)
    totals = emf_totals(read_lines(tmp_path / "m.log"))
    assert (("ModelGroup", "g"),) not in totals  # skipped whole, not half counted
    assert totals[(("ModelGroup", "gpt-lab"),)]["Requests"] == 2


async def test_disabled_by_default_and_installed_when_enabled(gatewatch_server, tmp_path):
    gw, _ = await gatewatch_server({})
    assert not any(s.name == "cloudwatch" for s in gw.pipeline.sinks)
    gw2, _ = await gatewatch_server({"cloudwatch": {"enabled": True, "emf_output": str(tmp_path / "m.log")}})
    assert any(s.name == "cloudwatch" for s in gw2.pipeline.sinks)
    assert "cloudwatch" in gw2.readiness_checks
    assert gw2.cloudwatch.reload in gw2.reload_hooks


async def test_reload_applies_new_settings_after_closing_the_interval(lab_environ, tmp_path, monkeypatch):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    sink, _ = sink_with_registry(emf_output=str(first))
    await sink.start()
    sink.handle(replayed_events())
    await sink.reload(parse_config({"cloudwatch": {"enabled": True, "emf_output": str(second), "namespace": "Other",
                                                   "dimensions": [["Provider"]]}}))
    assert_matches_captures(read_lines(first))  # the interval in progress went out under the old settings
    sink.handle(latency_events(4))
    # a change that cannot start is refused as a whole: no region for the API mode
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as err:
        await sink.reload(parse_config({"cloudwatch": {"enabled": True, "mode": "api", "namespace": "Third"}}))
    assert err.value.key_path == "cloudwatch.region"
    await sink.stop(time.monotonic() + 30)
    docs = [check_emf_line(line) for line in read_lines(second)]
    assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in docs} == {"Other"}
    assert set(emf_totals(read_lines(second))) == {(("Provider", "openai"),)}
    assert emf_totals(read_lines(second))[(("Provider", "openai"),)]["Requests"] == 4

"""Optional OTel metrics with the GenAI conventions, for users who run no Prometheus.

`gen_ai.client.operation.duration`, `gen_ai.client.token.usage` and (for streams)
`gen_ai.client.operation.time_to_first_chunk`, with the conventions' explicit bucket
boundaries, exported over OTLP by the SDK's own periodic reader and exporter (here the
volume is one request per interval, so the SDK's per-item cost does not matter). Values
are recorded on the exporter thread, never on the ingest path, and every call is
recorded: span sampling does not apply to metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from agent import __version__
from agent.events import Event
from agent.otel.config import Endpoint
from agent.otel.mapping import AttrValue, dimension_key, metric_attributes

log = logging.getLogger(__name__)

# Bucket boundaries the GenAI semantic conventions specify for these histograms.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _exporter(endpoint: Endpoint, on_failure: Callable[[], None]):
    """The SDK's OTLP metric exporter for the protocol, counting failed exports."""
    from opentelemetry.sdk.metrics.export import MetricExportResult

    headers = {key: str(value) for key, value in endpoint.headers}
    if endpoint.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        base: type = GrpcExporter
        kwargs: dict = {"endpoint": endpoint.target, "insecure": endpoint.insecure, "headers": headers,
                        "timeout": endpoint.timeout,
                        "compression": grpc.Compression.Gzip if endpoint.compression == "gzip" else None}
        if not endpoint.insecure and endpoint.certificate:
            with open(endpoint.certificate, "rb") as fh:
                kwargs["credentials"] = grpc.ssl_channel_credentials(root_certificates=fh.read())
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

        base = HttpExporter
        kwargs = {"endpoint": endpoint.url, "headers": headers, "timeout": endpoint.timeout,
                  "compression": Compression.Gzip if endpoint.compression == "gzip" else Compression.NoCompression}
        if endpoint.certificate:
            kwargs["certificate_file"] = endpoint.certificate

    class CountingExporter(base):  # type: ignore[misc, valid-type]
        def export(self, metrics_data, timeout_millis: float | None = 10_000, **kw):  # type: ignore[no-untyped-def]
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kw)
            if result is not MetricExportResult.SUCCESS:
                on_failure()
            return result

    return CountingExporter(**kwargs)


class GenAiMetrics:
    def __init__(self, endpoint: Endpoint, interval: float, resource_attributes: Mapping[str, str],
                 on_failure: Callable[[], None] = lambda: None) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        reader = PeriodicExportingMetricReader(
            _exporter(endpoint, on_failure),
            export_interval_millis=interval * 1000.0,
            export_timeout_millis=endpoint.timeout * 1000.0,
        )
        # a private provider: never the process-global one, so tests and apps stay apart
        self.provider = MeterProvider(resource=Resource(dict(resource_attributes)), metric_readers=[reader])
        meter = self.provider.get_meter("gatewatch", __version__)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=FIRST_CHUNK_BUCKETS)
        self._attrs: dict[tuple, tuple[dict[str, AttrValue], dict[str, AttrValue], dict[str, AttrValue]]] = {}

    def _attributes(self, event: Event) -> tuple[dict[str, AttrValue], dict[str, AttrValue], dict[str, AttrValue]]:
        key = dimension_key(event)
        cached = self._attrs.get(key)
        if cached is None:
            base = metric_attributes(event)
            cached = (base, {**base, "gen_ai.token.type": "input"}, {**base, "gen_ai.token.type": "output"})
            if len(self._attrs) >= 4096:
                self._attrs.clear()
            self._attrs[key] = cached
        return cached

    def record(self, event: Event) -> None:
        base, input_attrs, output_attrs = self._attributes(event)
        if event.latency is not None:
            self.duration.record(event.latency, base)
        if event.input_tokens:
            self.tokens.record(event.input_tokens, input_attrs)
        if event.output_tokens:
            self.tokens.record(event.output_tokens, output_attrs)
        if event.ttft is not None:
            self.first_chunk.record(event.ttft, base)

    def stop(self, deadline: float) -> None:
        """Export what was recorded by `deadline` (time.monotonic()), then stop (blocking:
        call it from a thread)."""
        timeout_millis = int(max(0.0, deadline - time.monotonic()) * 1000)
        try:
            self.provider.force_flush(timeout_millis=timeout_millis)
        except Exception:
            log.warning("OTel metrics flush failed", exc_info=True)
        self.provider.shutdown(timeout_millis=timeout_millis)

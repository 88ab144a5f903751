"""Real OTLP receivers for tests: HTTP (aiohttp) and gRPC (grpcio), decoding with the
official opentelemetry-proto messages, plus a collector that accepts and never answers."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import free_port


@dataclass
class Received:
    """What a receiver got, shared between the receiver's thread and the test."""

    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # decompressed request bodies, to grep for leaks
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[Any]:
        with self.lock:
            return [span for request in self.traces for rs in request.resource_spans
                    for ss in rs.scope_spans for span in ss.spans]

    def resources(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{kv.key: attr_value(kv.value) for kv in rs.resource.attributes}
                    for request in self.traces for rs in request.resource_spans]


def attr_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(attr_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes(span: Any) -> dict[str, Any]:
    return {kv.key: attr_value(kv.value) for kv in span.attributes}


class HttpReceiver:
    """OTLP/HTTP (http/protobuf) on 127.0.0.1; `status` makes it answer with an error."""

    def __init__(self) -> None:
        self.received = Received()
        self.status = 200
        self.fail_next = 0  # answer this many requests with 503 + Retry-After: 0 first
        self.partial_reject = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp already undoes Content-Encoding: gzip
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        if self.status != 200:
            return web.Response(status=self.status)
        with self.received.lock:
            self.received.raw.append(body)
            self.received.headers.append(dict(request.headers))
            if request.path == "/v1/traces":
                self.received.traces.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                answer = trace_service_pb2.ExportTraceServiceResponse()
                if self.partial_reject:
                    answer.partial_success.rejected_spans = self.partial_reject
                    answer.partial_success.error_message = "test rejects some"
            else:
                self.received.metrics.append(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
                answer = metrics_service_pb2.ExportMetricsServiceResponse()
        return web.Response(body=answer.SerializeToString(), content_type="application/x-protobuf")

    async def start(self) -> HttpReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._handle)
        app.router.add_post("/v1/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request, context):
        with self.received.lock:
            self.received.traces.append(request)
            self.received.raw.append(request.SerializeToString())
            self.received.headers.append({k: v for k, v in context.invocation_metadata()})
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request, context):
        with self.received.lock:
            self.received.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver:
    """OTLP/gRPC TraceService + MetricsService, insecure, on 127.0.0.1."""

    def __init__(self) -> None:
        self.received = Received()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self.received), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self.received), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.stop(grace=None)


class HangingCollector:
    """Accepts TCP connections, reads, never answers: a collector that hangs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass

    async def start(self) -> HangingCollector:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def wait_until(condition: Callable[[], bool], within: float = 30.0, what: str = "condition") -> None:
    """Poll (never a fixed sleep): the machine is shared and slow."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)

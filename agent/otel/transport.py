"""Send serialized OTLP requests: HTTP (http/protobuf, urllib3) or gRPC (grpcio).

Both run only on the exporter thread, never on the event loop, and every call is bounded
by a timeout, so a collector that is down or hangs costs queue space (counted drops),
not ingest latency. The answer is classified the way the OTLP spec asks: success (with
the collector's partial-success rejections), retryable (HTTP 429/502/503/504, gRPC
UNAVAILABLE, RESOURCE_EXHAUSTED, ...) or permanent. Header values are credentials: they
are sent, never logged.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

from agent import __version__
from agent.otel.config import Endpoint

log = logging.getLogger(__name__)

USER_AGENT = f"gatewatch/{__version__}"
_RETRYABLE_HTTP = {429, 502, 503, 504}
_GRPC_SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


@dataclass
class ExportResult:
    ok: bool
    retryable: bool = False
    reason: str = ""  # short and safe to log/label: "http_503", "grpc_unavailable", "timeout", ...
    retry_after: float | None = None
    rejected: int = 0  # partial success: items the collector refused


class Sender(Protocol):
    def send(self, body: bytes, timeout: float) -> ExportResult: ...

    def close(self) -> None: ...


def _rejected(response_bytes: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    if not response_bytes:
        return 0
    try:
        response = ExportTraceServiceResponse.FromString(response_bytes)
    except Exception:  # a collector answering 200 with something else: not our problem
        return 0
    return int(response.partial_success.rejected_spans) if response.HasField("partial_success") else 0


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HttpSender:
    """POST application/x-protobuf to the signal URL with a kept-alive connection."""

    def __init__(self, endpoint: Endpoint) -> None:
        import urllib3

        self.url = endpoint.url
        self.compression = endpoint.compression
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT}
        for key, value in endpoint.headers:
            self.headers[key] = str(value)
        if self.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=2, retries=False, ca_certs=endpoint.certificate)
        self._urllib3 = urllib3

    def send(self, body: bytes, timeout: float) -> ExportResult:
        urllib3 = self._urllib3
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=5)
        try:
            response = self._pool.request(
                "POST", self.url, body=body, headers=self.headers,
                timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout), preload_content=True,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # (a subclass of ConnectTimeoutError)
            reason = "connection_refused" if "refused" in str(exc).lower() else "connection_error"
            return ExportResult(False, retryable=True, reason=reason)
        except urllib3.exceptions.TimeoutError:
            return ExportResult(False, retryable=True, reason="timeout")
        except urllib3.exceptions.HTTPError:
            return ExportResult(False, retryable=True, reason="connection_error")
        status = response.status
        if 200 <= status < 300:
            return ExportResult(True, rejected=_rejected(response.data))
        return ExportResult(False, retryable=status in _RETRYABLE_HTTP, reason=f"http_{status}",
                          retry_after=_retry_after(response.headers.get("Retry-After")))

    def close(self) -> None:
        self._pool.clear()


class GrpcSender:
    """Unary Export call with the request already serialized (no re-encoding)."""

    _RETRYABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED", "DEADLINE_EXCEEDED", "ABORTED",
                  "OUT_OF_RANGE", "DATA_LOSS"}

    def __init__(self, endpoint: Endpoint, signal: str = "traces") -> None:
        import grpc

        self._grpc = grpc
        options = [("grpc.primary_user_agent", USER_AGENT),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if endpoint.insecure:
            self._channel = grpc.insecure_channel(endpoint.target, options=options)
        else:
            roots = None
            if endpoint.certificate:
                with open(endpoint.certificate, "rb") as fh:
                    roots = fh.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(endpoint.target, credentials, options=options)
        self._export = self._channel.unary_unary(f"/{_GRPC_SERVICES[signal]}/Export")  # bytes in, bytes out
        self._metadata = tuple((key, str(value)) for key, value in endpoint.headers)
        self._compression = grpc.Compression.Gzip if endpoint.compression == "gzip" else None

    def send(self, body: bytes, timeout: float) -> ExportResult:
        grpc = self._grpc
        try:
            answer = self._export(body, timeout=timeout, metadata=self._metadata or None,
                                  compression=self._compression)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            return ExportResult(False, retryable=name in self._RETRYABLE, reason=f"grpc_{name.lower()}")
        return ExportResult(True, rejected=_rejected(answer))

    def close(self) -> None:
        self._channel.close()


def make_sender(endpoint: Endpoint) -> Sender:
    return GrpcSender(endpoint) if endpoint.protocol == "grpc" else HttpSender(endpoint)

"""EMF (CloudWatch embedded metric format) lines, and where they are written.

One JSON object per line; the awslogs driver (stdout) or the CloudWatch agent (file,
TCP or UDP port 25888) turns each line into metrics, so this mode needs no AWS API calls
and no credentials. Each line carries one dimension set and its values; limits of the
specification are honoured by splitting: at most 100 metrics per directive, 30 keys per
dimension set (checked in config), 100 values per metric.

Distributions are written as `{"Values", "Counts", "Min", "Max", "Count", "Sum"}`
objects by default: the shape AWS's own EMF libraries emit for histograms, which keeps
Sum/Count exact and a line short. `distribution: values` writes plain value arrays
instead (each value repeated by its count), the only shape the published specification
text names; it costs one line per 100 observations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent.sinks.cloudwatch_agg import COUNTER_METRICS, Interval, MetricSpec, SeriesPoint
from agent.sinks.config import parse_output

log = logging.getLogger(__name__)

MAX_METRICS_PER_DIRECTIVE = 100
MAX_VALUES_PER_METRIC = 100
MAX_UDP_LINE = 60_000  # under the 64 KiB datagram limit


@dataclass
class EmfLine:
    text: str
    datapoints: int  # metric values in this line (for gatewatch_cloudwatch_datapoints_total)


def _definition(spec: MetricSpec, storage_resolution: int) -> dict[str, Any]:
    definition: dict[str, Any] = {"Name": spec.name, "Unit": spec.unit}
    if storage_resolution == 1:
        definition["StorageResolution"] = 1
    return definition


def _document(namespace: str, timestamp_ms: int, point: SeriesPoint, members: list[tuple[MetricSpec, Any]],
              storage_resolution: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[name for name, _ in point.dimensions]],
                "Metrics": [_definition(spec, storage_resolution) for spec, _ in members],
            }],
        },
    }
    for name, value in point.dimensions:
        doc[name] = value
    for spec, value in members:
        doc[spec.name] = value
    return doc


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def emf_lines(interval: Interval, namespace: str, storage_resolution: int = 60, distribution: str = "histogram",
              max_metrics: int = MAX_METRICS_PER_DIRECTIVE, max_values: int = MAX_VALUES_PER_METRIC,
              max_bytes: int | None = None) -> Iterator[EmfLine]:
    """Serialize one interval as EMF lines: per series one line with every metric that fits,
    then one more line per extra chunk of a distribution with more than `max_values` values."""
    timestamp_ms = int(interval.timestamp * 1000)
    for point in interval.points:
        first: list[tuple[MetricSpec, Any]] = [(spec, _number(value))
                                              for spec, value in zip(COUNTER_METRICS, point.series.counters,
                                                                     strict=True)]
        extra: list[list[tuple[MetricSpec, Any]]] = []  # extra[k]: the (k+2)-th piece of each distribution
        for spec, dist in point.series.distributions():
            pieces = list(_distribution_pieces(dist, distribution, max_values))
            first.append((spec, pieces[0]))
            for k, piece in enumerate(pieces[1:]):
                if k == len(extra):
                    extra.append([])
                extra[k].append((spec, piece))
        groups = [part[i : i + max_metrics] for part in (first, *extra) for i in range(0, len(part), max_metrics)]
        for members in groups:
            yield from _encode(namespace, timestamp_ms, point, members, storage_resolution, max_bytes)


def _encode(namespace: str, timestamp_ms: int, point: SeriesPoint, members: list[tuple[MetricSpec, Any]],
            storage_resolution: int, max_bytes: int | None) -> Iterator[EmfLine]:
    text = json.dumps(_document(namespace, timestamp_ms, point, members, storage_resolution), separators=(",", ":"))
    if max_bytes is not None and len(text) > max_bytes and len(members) > 1:
        half = len(members) // 2  # a transport limit (UDP): split the metrics over more lines
        yield from _encode(namespace, timestamp_ms, point, members[:half], storage_resolution, max_bytes)
        yield from _encode(namespace, timestamp_ms, point, members[half:], storage_resolution, max_bytes)
        return
    yield EmfLine(text, sum(_datapoints(value) for _, value in members))


def _datapoints(value: Any) -> int:
    if isinstance(value, dict):
        return len(value["Values"])
    if isinstance(value, list):
        return len(value)
    return 1


def _distribution_pieces(dist: Any, mode: str, max_values: int) -> Iterator[Any]:
    if mode == "values":
        expanded: list[float] = []
        for chunk in dist.chunks(max_values):
            for value, count in zip(chunk.values, chunk.counts, strict=True):
                expanded.extend([_number(value)] * count)
        for start in range(0, len(expanded), max_values):
            yield expanded[start : start + max_values]
        return
    for chunk in dist.chunks(max_values):
        yield {"Values": [_number(v) for v in chunk.values], "Counts": chunk.counts, "Max": _number(chunk.max),
               "Min": _number(chunk.min), "Count": chunk.count, "Sum": _number(chunk.sum)}


# -- outputs -----------------------------------------------------------------------


class EmfWriter:
    """Writes lines to the configured output without blocking the event loop.

    stdout/stderr/file writes go through one dedicated thread (ordered, and a full pipe to
    the log driver cannot stall the loop); TCP and UDP use asyncio transports. `write`
    raises OSError when the output is unavailable, so the sink keeps the batch and retries.
    """

    def __init__(self, output: str, connect_timeout: float = 5.0) -> None:
        self.kind, self.target, self.port = parse_output(output)
        self.connect_timeout = connect_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._file: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None

    @property
    def max_line_bytes(self) -> int | None:
        return MAX_UDP_LINE if self.kind == "udp" else None

    def describe(self) -> str:
        return f"{self.kind}://{self.target}:{self.port}" if self.port else (self.target or self.kind)

    async def write(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.kind in ("stdout", "stderr", "file"):
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatewatch-emf")
            data = ("\n".join(lines) + "\n").encode("utf-8")
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write_blocking, data)
        elif self.kind == "tcp":
            await self._write_tcp(lines)
        else:
            await self._write_udp(lines)

    def _write_blocking(self, data: bytes) -> None:
        if self.kind == "file":
            if self._file is None:
                directory = os.path.dirname(self.target)
                if directory:
                    os.makedirs(directory, exist_ok=True)
                self._file = open(self.target, "ab")  # kept open across intervals
            self._file.write(data)
            self._file.flush()
            return
        stream = sys.stdout if self.kind == "stdout" else sys.stderr
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()
            buffer.write(data)
            buffer.flush()
        else:  # a replaced stream (tests, embedding): text only
            stream.write(data.decode("utf-8"))
            stream.flush()

    async def _write_tcp(self, lines: list[str]) -> None:
        if self._writer is None or self._writer.is_closing():
            _, self._writer = await asyncio.wait_for(asyncio.open_connection(self.target, self.port),
                                                     self.connect_timeout)
        writer = self._writer
        assert writer is not None  # just opened
        try:
            writer.write(("\n".join(lines) + "\n").encode("utf-8"))
            await asyncio.wait_for(writer.drain(), self.connect_timeout)
        except (OSError, TimeoutError):
            self._writer = None
            writer.close()
            raise

    async def _write_udp(self, lines: list[str]) -> None:
        if self._udp is None or self._udp.is_closing():
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                               remote_addr=(self.target, self.port))
        for line in lines:  # one datagram per line: the agent parses each datagram on its own
            self._udp.sendto((line + "\n").encode("utf-8"))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
            self._writer = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._executor is not None:
            if self._file is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._file.close)
                self._file = None
            self._executor.shutdown(wait=True)
            self._executor = None

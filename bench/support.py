"""What the benchmarks share: real fixture bodies, a pinned gatewatch server, loopback peers.

Every benchmark runs gatewatch as a real `gatewatch run` process pinned to one CPU
(`os.sched_setaffinity`), and measures its CPU seconds from the kernel (psutil) next to
wall time; load generators and peers (OTLP receiver, webhook receiver, Prometheus) run on
the other CPU. The machine is shared and noisy, so each figure also has a reference
measured in the same run (a bare `orjson.loads` of the same bytes, LiteLLM's own logger)
and the report quotes the ratio.

Peers are started as `python -m bench.support otlp|webhook PORT`, in their own process so
their decoding does not share gatewatch's or the load generator's interpreter.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import FIXTURES, lab_env  # one definition of the captures, shared with the tests

ROOT = Path(__file__).resolve().parent.parent

LAB_ENV = lab_env()  # the env of the lab that produced the captures (config.yaml reads it)


def lab_environ() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in LAB_ENV.items():
        env.setdefault(key, value)
    env["GATEWATCH_FIXTURES"] = str(FIXTURES)
    return env


# -- CPUs ------------------------------------------------------------------------------------
def cpus() -> tuple[int, int]:
    """(gatewatch's CPU, the load generator's CPU): two different ones when there are two."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[-1]


def pin(cpu: int) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


# -- input -----------------------------------------------------------------------------------
def capture_items() -> list[dict[str, Any]]:
    """Every StandardLoggingPayload of the batching generic_api captures, in file order."""
    items: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.glob("generic_api_*.json")):
        if path.name.startswith("generic_api_single_"):
            continue
        body = json.loads(path.read_text())["body_json"]
        items.extend(body if isinstance(body, list) else [body])
    return items


def mix(kind: str) -> list[dict[str, Any]]:
    """The captures as captured ("capture": most scenarios are failure scenarios), only the
    successful calls ("success"), or re-mixed to 95% successes ("production")."""
    items = [i for i in capture_items() if "litellm-internal-health-check" not in (i.get("request_tags") or [])]
    ok = [i for i in items if i["status"] == "success"]
    failed = [i for i in items if i["status"] != "success"]
    if kind == "capture":
        return items
    if kind == "success":
        return ok
    if kind == "production":
        n_failed = max(1, round(len(ok) * 5 / 95))
        out = ok + [failed[(i * 7) % len(failed)] for i in range(n_failed)]
        return [out[(i * 7919) % len(out)] for i in range(len(out))]  # spread the failures out
    raise ValueError(kind)


def events(items: Sequence[dict[str, Any]], n: int, seed: int = 1,
           mutate: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """`n` payloads cycling through `items`, each with fresh call/trace ids (one call per id, as
    in production, so the request merge holds nothing back longer than it would), moved in
    time to end now (durations kept): rule windows only count recent events."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        item = dict(items[i % len(items)])
        call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        item["litellm_call_id"] = item["id"] = call_id
        item["trace_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if mutate is not None:
            item["metadata"] = copy.copy(item.get("metadata") or {})
            mutate(i, item)
        out.append(item)
    return retime(out)


def retime(items: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """Move every payload (in place) to end at `now`, keeping its durations."""
    now = time.time() if now is None else now
    for item in items:
        shift = now - float(item["endTime"])
        for key in ("startTime", "endTime", "completionStartTime"):
            if isinstance(item.get(key), (int, float)):
                item[key] = item[key] + shift
    return items


def bodies(items: Sequence[dict[str, Any]], per_post: int) -> list[bytes]:
    """POST bodies as LiteLLM's generic_api sends them: JSON arrays (json_array) or, for
    per_post == 1, one object each (log_format: single)."""
    if per_post == 1:
        return [json.dumps(item).encode() for item in items]
    return [json.dumps(list(items[i:i + per_post])).encode() for i in range(0, len(items), per_post)]


def expected_spans(items: Iterable[dict[str, Any]]) -> int:
    """Spans the OTel sink exports for these payloads with every span kept: one per LLM call
    attempt, none for health checks or refused proxy routes (agent/sinks/otel.py)."""
    return sum(1 for i in items if not str(i.get("call_type") or "").startswith("/")
               and "litellm-internal-health-check" not in (i.get("request_tags") or [])
               and (i.get("metadata") or {}).get("user_api_key_alias") != "litellm-internal-health-check")


# -- small helpers ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def http_json(url: str, method: str = "GET", timeout: float = 30.0) -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def series_count(text: str) -> int:
    """Time series in an exposition, as Prometheus counts them: one per sample line."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def total(text: str, name: str) -> float:
    return sum(v for (n, _), v in samples(text).items() if n == name)


# -- processes -------------------------------------------------------------------------------
class Process:
    """A child process pinned to one CPU, its output in a log file, stopped by its own pid."""

    def __init__(self, argv: Sequence[str], cpu: int | None, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # closed in stop()
        self.proc = subprocess.Popen(list(argv), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env or lab_environ(),
                                     preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


class Peer:
    """A loopback peer of this module (`otlp` span counter or `webhook` recorder)."""

    def __init__(self, role: str, workdir: Path, cpu: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process([sys.executable, "-m", "bench.support", role, str(self.port)], cpu,
                               workdir / f"{role}-{self.port}.log")
        wait_until(lambda: http_json(f"{self.url}/stats", timeout=2), 30, f"{role} peer")

    def stats(self) -> dict[str, Any]:
        return http_json(f"{self.url}/stats")

    def reset(self) -> None:
        http_json(f"{self.url}/reset", method="POST")

    def close(self) -> None:
        self.process.stop(10)


class GatewatchServer:
    """`gatewatch run` on 127.0.0.1 with a config dict, pinned to one CPU."""

    def __init__(self, config: dict[str, Any], workdir: Path, cpu: int | None, name: str = "gatewatch") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = copy.deepcopy(config)
        data.setdefault("server", {}).update(host="127.0.0.1", port=self.port)
        data.setdefault("state_dir", str(workdir / f"{name}-state"))
        data.setdefault("log_level", "warning")
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(data))
        gatewatch = Path(sys.executable).with_name("gatewatch")
        argv = [str(gatewatch)] if gatewatch.exists() else [sys.executable, "-m", "agent.cli"]
        self.process = Process([*argv, "run", "--config", str(self.config_path)], cpu, workdir / f"{name}.log")
        try:
            wait_until(self._ready, 60, "gatewatch /readyz")
        except TimeoutError:
            self.process.stop(5)
            raise RuntimeError(f"gatewatch did not start:\n{self.process.tail()}") from None
        import psutil

        self.ps = psutil.Process(self.process.pid)

    def _ready(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"gatewatch exited:\n{self.process.tail()}")
        try:
            return json.loads(http_get(f"{self.url}/readyz", timeout=2)).get("ready") is True
        except urllib.error.HTTPError:
            return False

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (every thread: exporters, executors)."""
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def metrics(self) -> str:
        return http_get(f"{self.url}/metrics", timeout=120).decode()

    def stop(self) -> None:
        code = self.process.stop(60)
        if code not in (0, None, -signal.SIGTERM):
            print(f"warning: gatewatch exited with {code}:\n{self.process.tail()}", file=sys.stderr)


def workdir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"gatewatch-{prefix}-")


def catalog_config() -> dict[str, Any]:
    """The fixture proxy's config.yaml as the deployment catalog (accounts, regions)."""
    return {"litellm": {"config": str(FIXTURES / "config.yaml")}, "attribution": {"ecs_metadata": False}}


def otel_config(endpoint: str) -> dict[str, Any]:
    # a queue that holds a whole run: the figure is throughput with every span delivered,
    # so nothing may be dropped (a drop would be counted and reported, not hidden)
    return {"otel": {"enabled": True, "endpoint": endpoint, "protocol": "http/protobuf",
                     "queue_size": 1_000_000, "schedule_delay": "100ms", "service_name": "litellm-proxy",
                     "resource_attributes": {"cloud.provider": "aws"}}}


# -- load generation -------------------------------------------------------------------------
async def post_all(url: str, payloads: Sequence[bytes], concurrency: int,
                   rate: float | None = None, headers: dict[str, str] | None = None) -> list[float]:
    """POST every body (concurrency connections; `rate` bodies/s if given) and return each
    request's latency in seconds. Every answer must be 200."""
    import aiohttp

    latencies: list[float] = []
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, body in enumerate(payloads):
        queue.put_nowait((i, body))
    start = time.perf_counter()
    send_headers = {"Content-Type": "application/json", **(headers or {})}

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                i, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.perf_counter()
            async with session.post(url, data=body, headers=send_headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"POST {url} answered {response.status}")
            latencies.append(time.perf_counter() - sent)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies


def bare_orjson_cpu(payloads: Sequence[bytes], rounds: int = 3) -> float:
    """CPU seconds per body of `orjson.loads` alone (best of rounds): the floor any consumer
    that builds Python objects from these bytes pays."""
    import orjson

    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for body in payloads:
            orjson.loads(body)
        best = min(best, time.process_time() - started)
    return best / len(payloads)


# -- profiles --------------------------------------------------------------------------------
class PySpy:
    """py-spy sampling a running process (all threads) into collapsed stacks."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        self.out = out
        exe = Path(sys.executable).with_name("py-spy")
        self.proc = None
        if exe.exists():
            self.proc = subprocess.Popen([str(exe), "record", "-p", str(pid), "-r", str(rate), "-f", "raw",
                                          "-o", str(out), "--gil"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)

    def stop(self) -> bool:
        if self.proc is None:
            return False
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.out.exists() and self.out.stat().st_size > 0


AREAS = (  # first match wins, on the innermost gatewatch frame of a stack
    ("parse (msgspec decode -> Event)", ("agent/parse/",)),
    ("prometheus sink", ("agent/sinks/prometheus.py",)),
    ("rules sink + evaluation", ("agent/rules/",)),
    ("otel sink + exporter thread", ("agent/otel/", "agent/sinks/otel.py")),
    ("pipeline (enrich, request merge)", ("agent/pipeline.py", "agent/enrich.py", "agent/events.py")),
    ("ingest route", ("agent/sources/callbacks.py",)),
    ("/metrics render", ("prometheus_client/exposition.py", "prometheus_client/registry.py")),
)


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Collapsed stacks -> where the time goes: by area, and the top functions by own time."""
    own: dict[str, int] = {}
    area: dict[str, int] = {}
    total_samples = 0
    idle = ("select (selectors.py", "epoll", "_worker (concurrent/futures/thread.py", "wait (threading.py",
            "_run_once (asyncio/base_events.py")
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(leaf.startswith(marker) for marker in idle):
            continue  # an idle thread waiting (py-spy samples it unless --idle is off)
        total_samples += count
        own[leaf] = own.get(leaf, 0) + count
        where = "other (aiohttp, asyncio, interpreter)"
        for frame in reversed(frames):
            hit = next((name for name, paths in AREAS if any(p in frame for p in paths)), None)
            if hit:
                where = hit
                break
        area[where] = area.get(where, 0) + count
    if not total_samples:
        return "no samples"
    lines = [f"{total_samples} busy samples", "", "by area (innermost gatewatch frame):"]
    for name, count in sorted(area.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {100 * count / total_samples:5.1f}%  {name}")
    lines += ["", f"top {top} functions by own time:"]
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total_samples:5.1f}%  {name}")
    return "\n".join(lines)


# -- peers (run as `python -m bench.support ROLE PORT`) -----------------------------------
def _serve_otlp(port: int) -> None:
    """OTLP/HTTP trace receiver that decodes every request and counts spans."""
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    stats = {"spans": 0, "requests": 0, "bytes": 0}
    answer = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            import gzip

            raw = gzip.decompress(raw)
        body = ExportTraceServiceRequest.FromString(raw)
        stats["spans"] += sum(len(ss.spans) for rs in body.resource_spans for ss in rs.scope_spans)
        stats["requests"] += 1
        stats["bytes"] += len(raw)
        return web.Response(body=answer, content_type="application/x-protobuf")

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(request: web.Request) -> web.Response:
        stats.update(spans=0, requests=0, bytes=0)
        return web.json_response(stats)

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _serve_webhook(port: int) -> None:
    """Webhook receiver: records the arrival time and body of every POST."""
    from aiohttp import web

    records: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        at = time.time()
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        records.append({"at": at, "path": request.path, "body": body})
        return web.json_response({"ok": True})

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response({"count": len(records)})

    async def get_records(request: web.Request) -> web.Response:
        return web.json_response(records)

    async def reset(request: web.Request) -> web.Response:
        records.clear()
        return web.json_response({"count": 0})

    app = web.Application()
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/records", get_records)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    role, port_text = sys.argv[1], sys.argv[2]
    {"otlp": _serve_otlp, "webhook": _serve_webhook}[role](int(port_text))

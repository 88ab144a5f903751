"""Log tail throughput: lines/s tailed and parsed on one core, from a file being written
and rotated, next to a bare `json.loads` of the same lines in the same run.

The lines are the captured LiteLLM 1.108.7 proxy logs (logs_*.jsonl, ~550 bytes a line,
a quarter of them the router's ~1.2 KB "Selected deployment" lines), repeated. A writer
process on another core appends them in 1 MiB writes and rotates the file (rename, then
copytruncate); the tailer runs pinned to one core. Also measured, to show where the time
goes: reading + splitting alone, the parser alone on lines in memory, and the whole path
through the app (reader thread, bounded queue, pipeline, Prometheus sink).

    .venv/bin/python -m bench.tail_bench
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from agent.parse.logs import LogParser
from agent.sources.tail.config import TailConfig
from agent.sources.tail.watcher import TailBatch, Tailer
from bench.results import record

COMMAND = ".venv/bin/python -m bench.tail_bench"
TARGET = ">= 200,000 lines/s"
LINES = 300_000
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "litellm"


def fixture_lines() -> list[bytes]:
    directory = Path(os.environ.get("GATEWATCH_FIXTURES") or FIXTURES)
    lines: list[bytes] = []
    for path in sorted(directory.glob("logs_*.jsonl")):
        lines.extend(line for line in path.read_bytes().splitlines() if line.strip())
    return lines


def workload(n: int) -> list[bytes]:
    base = fixture_lines()
    return [base[i % len(base)] for i in range(n)]


def pin(cpu: int) -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})
    except (AttributeError, OSError):
        pass


def writer(path: str, blob: bytes, rotate_at: list[int], cpu: int) -> None:
    """Append `blob` in 1 MiB writes; at each offset in `rotate_at` (line starts), rotate the file:
    rename and copytruncate in turn."""
    pin(cpu)
    fh = open(path, "ab", buffering=0)
    written, n, step = 0, 0, 1 << 20
    marks = list(rotate_at)
    while written < len(blob):
        end = min(len(blob), written + step, marks[0] if marks else len(blob))
        fh.write(blob[written:end])
        written = end
        if marks and written == marks[0]:
            marks.pop(0)
            n += 1
            if n % 2:
                fh.close()
                os.rename(path, f"{path}.{n}")
                fh = open(path, "ab", buffering=0)
            else:
                shutil.copyfile(path, f"{path}.{n}")  # the copy matches the tail's glob too
                os.truncate(path, 0)
    fh.close()


def line_starts(blob: bytes, parts: int) -> list[int]:
    """Offsets just after a newline, splitting `blob` in `parts` about equal pieces."""
    return [blob.index(b"\n", len(blob) * k // parts) + 1 for k in range(1, parts)]


def tail_file(lines: list[bytes], parser: LogParser | None, rotate: bool) -> tuple[float, int, int]:
    """(wall seconds, lines seen, events) for tailing `lines` while a writer process writes them."""
    blob = b"\n".join(lines) + b"\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "proxy.log")
        open(path, "wb").close()
        settings = TailConfig(read_from="beginning", poll_interval=0.005, glob_interval=0.05, rotate_wait=0.2,
                              batch_lines=4096)
        seen = {"lines": 0, "events": 0}
        done = threading.Event()

        def emit(batch: TailBatch) -> None:
            seen["lines"] += batch.lines
            seen["events"] += len(batch.events)
            if seen["lines"] >= len(lines):
                done.set()

        class NoParse(LogParser):
            def parse_many(self, batch_lines):
                return []

        tailer = Tailer([path + "*"], settings, None, emit, parser or NoParse())
        thread = threading.Thread(target=tailer.run, daemon=True)
        marks = line_starts(blob, 5) if rotate else []
        proc = multiprocessing.get_context("fork").Process(target=writer, args=(path, blob, marks, 1))
        started = time.perf_counter()
        thread.start()
        proc.start()
        done.wait(timeout=float(os.environ.get("TAIL_BENCH_TIMEOUT", "300")))
        wall = time.perf_counter() - started
        tailer.stop()
        thread.join()
        proc.join()
        return wall, seen["lines"], seen["events"]


def bare_json(lines: list[bytes]) -> float:
    loads = json.loads
    started = time.perf_counter()
    for line in lines:
        loads(line)
    return len(lines) / (time.perf_counter() - started)


def parser_alone(lines: list[bytes]) -> float:
    parser = LogParser()
    started = time.perf_counter()
    for i in range(0, len(lines), 4096):
        parser.parse_many(lines[i : i + 4096])
    return len(lines) / (time.perf_counter() - started)


def through_app(lines: list[bytes]) -> float:
    """Lines/s through the whole app: TailSource thread -> queue -> Pipeline -> Prometheus sink."""
    from agent.app import GatewatchApp
    from agent.config import parse_config

    async def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "proxy.log"
            log.write_bytes(b"\n".join(lines) + b"\n")
            config = parse_config({"state_dir": tmp, "litellm": {"logs": [str(log)], "tail": {
                "read_from": "beginning", "poll_interval": "5ms"}}})
            config.prometheus.process_metrics = False
            app = GatewatchApp(config)
            source = app.log_tail  # type: ignore[attr-defined]
            started = time.perf_counter()
            await app.start()
            while source.published_lines < len(lines):  # noqa: ASYNC110 - polling a counter, on purpose
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            await app.stop()
            return len(lines) / elapsed

    return asyncio.run(run())


def best_of(runs: int, measure):
    """Highest of `runs` measurements: the machine is shared, the best run is the least disturbed."""
    results = [measure() for _ in range(runs)]
    return max(results, key=lambda r: r if isinstance(r, float) else r[0])


def main() -> None:
    pin(0)
    lines = workload(LINES)
    mb = sum(len(line) + 1 for line in lines) / 1e6
    load = os.getloadavg()[0]
    json_rate = best_of(3, lambda: bare_json(lines))
    parse_rate = best_of(3, lambda: parser_alone(lines))

    def tailed(parser_factory):
        wall, seen, events = tail_file(lines, parser_factory(), rotate=True)
        assert seen == len(lines), f"tailed {seen} of {len(lines)} lines"
        return seen / wall, events

    tail_rate, events = best_of(3, lambda: tailed(LogParser))
    read_rate, _ = best_of(3, lambda: tailed(lambda: None))
    app_rate = best_of(2, lambda: through_app(lines))
    record("log tail: lines/s tailed + parsed, 1 core, file written and rotated (rename, copytruncate)",
           f"{tail_rate:,.0f} lines/s ({mb * tail_rate / len(lines):,.0f} MB/s; {events:,} events from "
           f"{len(lines):,} lines; load avg {load:.1f})", COMMAND, TARGET)
    record("log tail: bare json.loads of the same lines (same run)", f"{json_rate:,.0f} lines/s", COMMAND)
    record("log tail: LogParser alone on the same lines in memory", f"{parse_rate:,.0f} lines/s", COMMAND)
    record("log tail: read + split + rotation handling alone (no parse)", f"{read_rate:,.0f} lines/s", COMMAND)
    record("log tail: whole app path (thread, bounded queue, pipeline, Prometheus sink)", f"{app_rate:,.0f} lines/s",
           COMMAND)


if __name__ == "__main__":
    main()

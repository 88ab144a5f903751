"""Under load: fixture lines written at tens of thousands per second while the file is
rotated by rename, by copytruncate and truncated, and the tailer is restarted in the
middle. Every line must reach the pipeline exactly once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from agent.events import Kind
from agent.sources.tail.config import TailConfig
from agent.sources.tail.source import TailSource
from tests.promtext import total
from tests.tail_support import SEQ_RE, RecordingParser, async_wait_until, fixture_lines

TOTAL_LINES = 120_000
LINES_PER_SECOND = 40_000
BLOCK = 400  # lines per write()
ROTATE_EVERY = 9_000  # lines between rotations


def numbered_lines(count: int) -> list[bytes]:
    """The fixture lines, each made unique with a top-level "seq" (LiteLLM lines carry extra keys
    too); every 97th line is a plain-text banner line instead, also numbered."""
    base = fixture_lines()
    out = []
    for n in range(count):
        if n % 97 == 0:
            out.append(f"   \u2588\u2588 LiteLLM banner #seq={n}".encode())
        else:
            line = base[n % len(base)]
            out.append(b'{"seq": %d, ' % n + line[1:])
    return out


class Writer(threading.Thread):
    """Appends numbered lines at a steady rate and rotates the file three ways."""

    def __init__(self, log: Path, lines: list[bytes], caught_up) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.lines = lines
        self.caught_up = caught_up  # () -> bool | None: None while no tailer runs
        self.ops: list[str] = []
        self.ops_while_stopped: list[str] = []
        self.error: BaseException | None = None
        self._rotated = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _run(self) -> None:
        fh = open(self.log, "ab", buffering=0)
        started = time.monotonic()
        kinds = ["rename", "copytruncate", "truncate"]
        for i in range(0, len(self.lines), BLOCK):
            fh.write(b"\n".join(self.lines[i:i + BLOCK]) + b"\n")
            written = i + BLOCK
            if written % ROTATE_EVERY < BLOCK and written < len(self.lines):
                kind = kinds[len(self.ops) % len(kinds)]
                fh = self._rotate(kind, fh)
            ahead = written / LINES_PER_SECOND - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        fh.close()

    def _rotate(self, kind: str, fh):
        self._rotated += 1
        stopped = self.caught_up() is None
        target = self.log.with_name(f"{self.log.name}.{self._rotated}")
        if kind == "truncate":
            # a plain truncation loses what was not read yet, by nature: do it once the tailer has
            # read everything (the writer holds the lines meanwhile), or rename while none runs
            deadline = time.monotonic() + 20
            while True:
                state = self.caught_up()
                if state is None:
                    kind = "rename"
                    break
                if state:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("tailer did not catch up before truncation")
                time.sleep(0.005)
        if kind == "rename":
            fh.close()
            os.rename(self.log, target)
            fh = open(self.log, "ab", buffering=0)
        elif kind == "copytruncate":
            shutil.copyfile(self.log, target)
            os.truncate(self.log, 0)
        else:
            os.truncate(self.log, 0)
        self.ops.append(kind)
        if stopped:
            self.ops_while_stopped.append(kind)
        return fh


@pytest.mark.slow
async def test_no_line_lost_or_read_twice_under_load_rotation_and_restart(tmp_path):
    log = tmp_path / "proxy.log"
    log.touch()
    lines = numbered_lines(TOTAL_LINES)
    published: list = []
    registries: list[CollectorRegistry] = []
    current: dict[str, TailSource | None] = {"source": None}

    def make() -> TailSource:
        registry = CollectorRegistry()
        registries.append(registry)
        cfg = TailConfig(read_from="beginning", poll_interval=0.01, glob_interval=0.05, rotate_wait=0.5,
                         checkpoint_interval=0.2)
        return TailSource([str(tmp_path / "proxy.log*")], cfg, str(tmp_path / "state"), published.extend, registry,
                          parser_factory=RecordingParser)

    def caught_up() -> bool | None:
        source = current["source"]
        if source is None or source.tailer is None:
            return None
        try:
            st = os.stat(log)
        except FileNotFoundError:
            return False
        tracked = source.tailer.files.get((st.st_dev, st.st_ino))
        return tracked is not None and tracked.line_start == st.st_size

    def count() -> int:
        return sum(1 for e in published if e.kind == Kind.SELF)

    first = make()
    await first.start()
    current["source"] = first
    writer = Writer(log, lines, caught_up)
    writer.start()
    await async_wait_until(lambda: count() >= TOTAL_LINES * 0.4, within=60)
    current["source"] = None
    await first.stop(time.monotonic() + 30)  # restart in the middle, while the writer keeps writing and rotating
    await asyncio.sleep(0.8)  # ~3 rotations happen while no tailer runs
    second = make()
    await second.start()
    current["source"] = second
    await async_wait_until(lambda: not writer.is_alive(), within=60)
    assert writer.error is None, writer.error
    await async_wait_until(lambda: count() >= TOTAL_LINES, within=60)
    await asyncio.sleep(0.3)  # anything read twice would show up now
    await second.stop(time.monotonic() + 30)

    seen = sorted(int(e.value) for e in published if e.kind == Kind.SELF)
    missing = sorted(set(range(TOTAL_LINES)) - set(seen))
    assert not missing, f"{len(missing)} lines lost, first {missing[:5]}"
    assert seen == list(range(TOTAL_LINES)), "some lines were read twice"
    assert {"rename", "copytruncate", "truncate"} <= set(writer.ops)
    assert {"rename", "copytruncate"} <= set(writer.ops_while_stopped)
    texts = [generate_latest(r).decode() for r in registries]
    assert sum(total(t, "gatewatch_tail_lines_read_total") for t in texts) == TOTAL_LINES
    assert sum(total(t, "gatewatch_tail_lines_unparsed_total") for t in texts) == len(range(0, TOTAL_LINES, 97))
    for kind in ("rename", "truncate", "copytruncate"):
        assert sum(total(t, "gatewatch_tail_rotations_total", kind=kind) for t in texts) >= 1, kind
    # the real parser ran on the same lines: the cooldowns of the captures came through once each
    cooldowns = {(e.deployment, e.start_time) for e in published if e.kind == Kind.COOLDOWN}
    assert {d for d, _ in cooldowns} == {"gpt-lab-acct111-use1", "gpt-lab-acct222-euw1", "gpt-lab-acct333-usw2"}


@pytest.mark.slow
@pytest.mark.parametrize("run", range(2))
def test_full_speed_writer_rotating_both_ways(tmp_path, run):
    """A writer far faster than the tail (1 MiB writes): the copy of a copytruncate and its
    original are then often found in the same discovery round, in any order."""
    import multiprocessing

    from agent.sources.tail.watcher import Tailer
    from bench.tail_bench import line_starts, writer
    from tests.tail_support import wait_until

    lines = numbered_lines(100_000)
    blob = b"\n".join(lines) + b"\n"
    path = str(tmp_path / "proxy.log")
    open(path, "wb").close()
    parser = RecordingParser()
    count = {"lines": 0}

    def emit(batch):
        count["lines"] += batch.lines

    tailer = Tailer([path + "*"], TailConfig(read_from="beginning", poll_interval=0.005, glob_interval=0.02,
                                             rotate_wait=0.2), None, emit, parser)
    thread = threading.Thread(target=tailer.run, daemon=True)
    thread.start()
    proc = multiprocessing.get_context("fork").Process(target=writer, args=(path, blob, line_starts(blob, 7), 1))
    proc.start()
    proc.join(60)
    try:
        wait_until(lambda: count["lines"] >= len(lines), timeout=60)
        time.sleep(0.2)
    finally:
        tailer.stop()
        thread.join(10)
    seen = sorted(int(m.group(1) or m.group(2)) for line in parser.seen if (m := SEQ_RE.search(line)))
    assert seen == list(range(len(lines)))

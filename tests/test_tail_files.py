"""The file tail: identity, partial and long lines, rotation both ways, truncation, restart.

Most tests step the `Tailer` by hand (discover + poll) so the order of writes and reads is
exact; the source tests run the real reader thread, queue and checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from agent.events import Kind
from agent.sources.tail.checkpoint import Checkpoints
from agent.sources.tail.config import TailConfig
from agent.sources.tail.fingerprint import file_key, first_line_hash
from agent.sources.tail.source import TailSource
from agent.sources.tail.watcher import TailBatch, Tailer
from tests.conftest import FIXTURES
from tests.promtext import total
from tests.tail_support import RecordingParser, async_wait_until, fixture_lines

LINES = fixture_lines()


def settings(**kw) -> TailConfig:
    base = {"read_from": "beginning", "poll_interval": 0.02, "glob_interval": 0.05, "rotate_wait": 0.2,
            "checkpoint_interval": 0.05}
    base.update(kw)
    return TailConfig(**base)


def append(path: Path, lines: list[bytes], end: bytes = b"\n") -> None:
    with open(path, "ab") as fh:
        fh.write(b"\n".join(lines) + end)


class Stepper:
    """A Tailer driven by hand."""

    def __init__(self, pattern: str, checkpoint=None, **kw) -> None:
        self.parser = RecordingParser()
        self.batches: list[TailBatch] = []
        self.tailer = Tailer([pattern], settings(**kw), checkpoint, self.batches.append, self.parser)

    def step(self, times: int = 2) -> list[bytes]:
        for _ in range(times):
            self.tailer.discover()
            self.tailer.poll()
            self.tailer.flush_batch()
        return self.parser.seen


def test_follows_appends_and_holds_partial_lines(tmp_path):
    log = tmp_path / "app.log"
    append(log, LINES[:3], end=b"\n" + LINES[3][:40])
    s = Stepper(str(log))
    assert s.step() == LINES[:3]
    append(log, [LINES[3][40:]])
    assert s.step() == LINES[:4]
    offsets = {k: v for b in s.batches for k, v in b.offsets.items()}
    assert list(offsets.values()) == [(str(log), log.stat().st_size)]


def test_long_lines_are_cut_and_counted(tmp_path):
    log = tmp_path / "app.log"
    long_line = b"x" * 5000
    s = Stepper(str(log), max_line_bytes=1024)
    log.write_bytes(b"")
    append(log, [LINES[0], long_line[:3000]], end=b"")  # the long line arrives over several reads
    s.step()
    append(log, [long_line[3000:], LINES[1], b"y" * 2048, LINES[2]])
    assert s.step() == [LINES[0], long_line[:1024], LINES[1], b"y" * 1024, LINES[2]]
    assert s.tailer.stats.truncated_lines == 2
    assert s.batches[-1].offsets[s.tailer.files[next(iter(s.tailer.files))].key][1] == log.stat().st_size


def test_first_start_reads_from_the_end_but_later_files_from_the_start(tmp_path):
    old = tmp_path / "a.log"
    append(old, LINES[:5], end=b"\n" + b'{"message": "half a li')  # present before we start, cut mid-line
    s = Stepper(str(tmp_path / "*.log"), read_from="end")
    assert s.step() == []
    append(old, [b'ne"}', LINES[5]])  # the line we started in the middle of is skipped, not mangled
    assert s.step() == [LINES[5]]
    later = tmp_path / "b.log"
    append(later, LINES[6:9])
    assert s.step() == [LINES[5], *LINES[6:9]]


def test_rename_rotation_drains_the_old_file(tmp_path):
    log = tmp_path / "app.log"
    writer = open(log, "ab")
    writer.write(b"\n".join(LINES[:10]) + b"\n")
    writer.flush()
    s = Stepper(str(log))  # the exact path only: the rotated name is not matched
    assert s.step() == LINES[:10]
    os.rename(log, tmp_path / "app.log.1")
    writer.write(b"\n".join(LINES[10:20]) + b"\n")  # still writing to the renamed file
    writer.flush()
    writer.close()
    append(log, LINES[20:30])  # the new file at the old path
    s.step(3)
    assert sorted(s.parser.seen) == sorted(LINES[:30]) and len(s.parser.seen) == 30
    assert s.tailer.stats.rotations["rename"] == 1


def test_rotated_name_matched_by_the_glob_is_not_read_twice(tmp_path):
    log = tmp_path / "app.log"
    append(log, LINES[:10])
    s = Stepper(str(tmp_path / "app.log*"))
    s.step()
    for n in range(1, 4):  # logrotate style: shift .1 -> .2 -> .3, then app.log -> .1
        for k in range(n, 1, -1):
            if (tmp_path / f"app.log.{k - 1}").exists():
                os.rename(tmp_path / f"app.log.{k - 1}", tmp_path / f"app.log.{k}")
        os.rename(log, tmp_path / "app.log.1")
        append(log, LINES[10 * n:10 * n + 10])
        s.step()
    assert s.parser.seen == LINES[:40]
    assert s.tailer.stats.rotations["rename"] == 3


def test_copytruncate_resumes_from_the_copy(tmp_path):
    log = tmp_path / "app.log"
    append(log, LINES[:10])
    s = Stepper(str(tmp_path / "app.log*"))
    assert s.step() == LINES[:10]
    append(log, LINES[10:20])  # written, not read yet ...
    shutil.copyfile(log, tmp_path / "app.log.1")  # ... when logrotate copies
    os.truncate(log, 0)  # and truncates
    append(log, LINES[20:25])
    s.step(3)
    assert sorted(s.parser.seen) == sorted(LINES[:25]) and len(s.parser.seen) == 25
    assert s.tailer.stats.rotations["copytruncate"] == 1
    assert s.tailer.stats.rotations["truncate"] == 1


def test_copy_seen_before_the_truncation_waits_for_it(tmp_path):
    log = tmp_path / "app.log"
    append(log, LINES[:10])
    s = Stepper(str(tmp_path / "app.log*"))
    s.step()
    append(log, LINES[10:20])
    shutil.copyfile(log, tmp_path / "app.log.1")
    s.tailer.discover()  # the copy is found while the original still has its content
    copy = next(f for f in s.tailer.files.values() if f.path.endswith(".1"))
    assert copy.shadow_of is not None
    os.truncate(log, 0)
    append(log, LINES[20:25])
    s.step(3)
    assert sorted(s.parser.seen) == sorted(LINES[:25]) and len(s.parser.seen) == 25


def test_copy_and_original_found_together_in_any_order(tmp_path, monkeypatch):
    """Both new in one discovery round, the copy listed first: whichever is read, the
    content is read once and the original's new content after the truncation too."""
    import glob as globmod

    from agent.sources.tail import watcher

    log = tmp_path / "app.log"
    s = Stepper(str(tmp_path / "app.log*"))
    s.step()
    append(log, LINES[:10])
    shutil.copyfile(log, tmp_path / "app.log.1")
    monkeypatch.setattr(watcher.glob, "glob", lambda pattern: sorted(globmod.iglob(pattern), reverse=True))
    s.step()  # reads the copy, the original waits as its twin
    append(log, LINES[10:15])  # the original grows past the copy: it takes over where we are
    s.step()
    os.truncate(log, 0)
    append(log, LINES[15:20])
    s.step(3)
    assert s.parser.seen == LINES[:20]


def test_a_plain_copy_is_not_read_again(tmp_path):
    log = tmp_path / "app.log"
    append(log, LINES[:10])
    s = Stepper(str(tmp_path / "app.log*"), rotate_wait=0.0)
    s.step()
    shutil.copyfile(log, tmp_path / "app.log.bak")
    s.step()
    copy = next(f for f in s.tailer.files.values() if f.path.endswith(".bak"))
    copy.shadow_since -= 10  # the original was never truncated within the wait
    append(log, LINES[10:12])
    s.step()
    assert s.parser.seen == LINES[:12]


def test_truncation_is_detected_by_size_and_by_content(tmp_path):
    log = tmp_path / "app.log"
    append(log, LINES[:10])
    s = Stepper(str(log))
    s.step()
    os.truncate(log, 0)  # smaller than what we read
    append(log, LINES[10:12])
    s.step()
    assert s.parser.seen == LINES[:12]
    with open(log, "r+b") as fh:  # replaced by more content than we had read, same inode
        fh.truncate(0)
        fh.write(b"\n".join(LINES[12:40]) + b"\n")
    s.step()
    assert s.parser.seen == LINES[:40]
    assert s.tailer.stats.rotations["truncate"] == 2


def test_restart_uses_the_checkpoint_and_knows_replaced_content(tmp_path):
    log = tmp_path / "app.log"
    append(log, LINES[:10])
    fd = os.open(log, os.O_RDONLY)
    st = os.fstat(fd)
    fingerprint = first_line_hash(fd)
    os.close(fd)
    size_after_5 = len(b"\n".join(LINES[:5]) + b"\n")
    saved = {file_key(st.st_dev, st.st_ino, fingerprint): {"path": "x", "offset": size_after_5}}
    s = Stepper(str(log), checkpoint=saved)
    assert s.step() == LINES[5:10]
    # same device and inode, other first line: the inode was reused, the file is new
    s2 = Stepper(str(log), checkpoint={file_key(st.st_dev, st.st_ino, "0" * 16): {"path": "x", "offset": 100}},
                 read_from="end")
    assert s2.step() == LINES[:10]


def make_source(tmp_path: Path, patterns: list[str], published: list, registry=None, **kw) -> TailSource:
    def publish(events):
        published.extend(events)

    return TailSource(patterns, settings(**kw), str(tmp_path / "state"), publish, registry or CollectorRegistry(),
                      parser_factory=RecordingParser)


def seqs(events) -> list[int]:
    return [int(e.value) for e in events if e.kind == Kind.SELF]


def numbered(start: int, stop: int) -> list[bytes]:
    return [json.dumps({"message": f"line #seq={n}", "level": "INFO"}).encode() for n in range(start, stop)]


async def test_source_restart_resumes_exactly_and_writes_the_checkpoint(tmp_path):
    log = tmp_path / "app.log"
    append(log, numbered(0, 500))
    published: list = []
    registry = CollectorRegistry()
    source = make_source(tmp_path, [str(tmp_path / "app.log*")], published, registry)
    await source.start()
    await async_wait_until(lambda: len(seqs(published)) == 500)
    append(log, numbered(500, 700))
    await async_wait_until(lambda: len(seqs(published)) == 700)
    await source.stop(time.monotonic() + 30)
    saved = Checkpoints(tmp_path / "state").load()
    assert list(saved.values()) == [{"path": str(log), "offset": log.stat().st_size}]
    text = generate_latest(registry).decode()
    assert total(text, "gatewatch_tail_lines_read_total") == 700
    assert total(text, "gatewatch_tail_checkpoint_age_seconds") < 5
    # while stopped: more lines, a rename rotation and more lines in the new file
    append(log, numbered(700, 800))
    os.rename(log, tmp_path / "app.log.1")
    append(log, numbered(800, 900))
    second = make_source(tmp_path, [str(tmp_path / "app.log*")], published)
    await second.start()
    await async_wait_until(lambda: len(seqs(published)) >= 900)
    await asyncio.sleep(0.2)
    await second.stop(time.monotonic() + 30)
    assert sorted(seqs(published)) == list(range(900))


async def test_files_born_while_stopped_are_read_from_their_start(tmp_path):
    """read_from: end is for the very first start only; a file that appeared while gatewatch
    was down (the proxy restarted) is read whole."""
    published: list = []
    first = make_source(tmp_path, [str(tmp_path / "*.log")], published, read_from="end")
    await first.start()
    await first.stop(time.monotonic() + 30)
    append(tmp_path / "proxy.log", numbered(0, 40))
    second = make_source(tmp_path, [str(tmp_path / "*.log")], published, read_from="end")
    await second.start()
    await async_wait_until(lambda: len(seqs(published)) == 40)
    await second.stop(time.monotonic() + 30)
    assert seqs(published) == list(range(40))


async def test_copytruncate_while_stopped_resumes_in_the_copy(tmp_path):
    log = tmp_path / "app.log"
    append(log, numbered(0, 100))
    published: list = []
    source = make_source(tmp_path, [str(tmp_path / "app.log*")], published)
    await source.start()
    await async_wait_until(lambda: len(seqs(published)) == 100)
    await source.stop(time.monotonic() + 30)
    append(log, numbered(100, 150))
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    append(log, numbered(150, 170))
    second = make_source(tmp_path, [str(tmp_path / "app.log*")], published)
    await second.start()
    await async_wait_until(lambda: len(seqs(published)) >= 170)
    await asyncio.sleep(0.2)
    await second.stop(time.monotonic() + 30)
    assert sorted(seqs(published)) == list(range(170))


async def test_back_pressure_pauses_reading_and_drops_nothing(tmp_path):
    log = tmp_path / "app.log"
    append(log, numbered(0, 3000))
    published: list = []
    registry = CollectorRegistry()

    def slow_publish(events):
        published.extend(events)
        import time

        time.sleep(0.002)  # a pipeline slower than the reader

    # a checkpoint write after every batch keeps the consumer away from the queue for a while
    source = TailSource([str(log)], settings(queue_batches=1, batch_lines=50, read_chunk_bytes=4096,
                                                 checkpoint_interval=0.001),
                        str(tmp_path / "state"),
                        slow_publish, registry, parser_factory=RecordingParser)
    real_save = source.checkpoints.save

    def slow_disk_save(entries):
        import time

        time.sleep(0.02)  # the consumer waits on a slow disk: the reader fills the queue meanwhile
        real_save(entries)

    source.checkpoints.save = slow_disk_save
    await source.start()
    lags = []
    for _ in range(400):
        lags.append(source.lag_bytes())
        if len(seqs(published)) == 3000:
            break
        await asyncio.sleep(0.01)
    await source.stop(time.monotonic() + 30)
    assert sorted(seqs(published)) == list(range(3000))
    text = generate_latest(registry).decode()
    assert total(text, "gatewatch_tail_paused_total") > 0
    assert total(text, "gatewatch_tail_wait_seconds_total") > 0
    assert max(lags) > 0 and source.lag_bytes() == 0


async def test_unparsed_and_cut_lines_are_counted(tmp_path):
    log = tmp_path / "proxy.stdout"
    banner = (FIXTURES / "logs_startup.txt").read_bytes()
    log.write_bytes(banner + b"z" * 4096 + b"\n")
    published: list = []
    registry = CollectorRegistry()
    source = make_source(tmp_path, [str(log)], published, registry, max_line_bytes=1024)
    await source.start()
    expected_lines = len(banner.splitlines()) + 1
    await async_wait_until(lambda: total(generate_latest(registry).decode(),
                                         "gatewatch_tail_lines_read_total") == expected_lines)
    await source.stop(time.monotonic() + 30)
    text = generate_latest(registry).decode()
    non_json = [line for line in banner.splitlines() if line.strip() and not line.startswith(b"{")]
    assert total(text, "gatewatch_tail_lines_unparsed_total") == len(non_json) + 1  # + the cut z line
    assert total(text, "gatewatch_tail_lines_truncated_total") == 1
    assert total(text, "gatewatch_tail_files") == 1


async def test_stdin_source(tmp_path):
    read_fd, write_fd = os.pipe()
    published: list = []
    source = TailSource(["-"], settings(), str(tmp_path / "state"), published.extend, CollectorRegistry(),
                        stdin_fd=read_fd, parser_factory=RecordingParser)
    await source.start()
    lines = numbered(0, 50) + [b"not json at all"] + (FIXTURES / "logs_no_deployments.jsonl").read_bytes().splitlines()
    os.write(write_fd, b"\n".join(lines) + b"\n")
    await async_wait_until(lambda: len(seqs(published)) == 50 and any(e.kind == Kind.NO_DEPLOYMENTS
                                                                      for e in published))
    os.close(write_fd)
    await async_wait_until(lambda: source.stdin is not None and source.stdin.eof)
    _, detail = source.healthy()
    assert "stdin closed" in detail
    await source.stop(time.monotonic() + 30)
    os.close(read_fd)
    assert source.stdin.parser.unparsed == 1


async def test_app_tails_the_proxy_log_into_metrics(tmp_path, gatewatch_server):
    import aiohttp

    log = tmp_path / "proxy.log"
    log.write_bytes(b"\n".join(LINES[:20]) + b"\n")  # before gatewatch ever ran: skipped (read_from: end)
    _gw, base = await gatewatch_server({"litellm": {"logs": [str(tmp_path / "proxy.*")],
                                                   "tail": {"poll_interval": "20ms", "glob_interval": "50ms"}}})
    capture = (FIXTURES / "logs_no_deployments.jsonl").read_bytes().splitlines()
    models = ("gpt-lab-acct111-use1", "gpt-lab-acct222-euw1", "gpt-lab-acct333-usw2")
    async with aiohttp.ClientSession() as session:

        async def metrics() -> str:
            async with session.get(base + "/metrics") as resp:
                return await resp.text()

        # the tailer must hold the file (at its end) before the capture is appended, or the
        # capture counts as "before gatewatch ran"; then wait until the lines went through the
        # pipeline into the sink (lines read are counted before the sink sees their events)
        deadline = time.monotonic() + 60
        while total(await metrics(), "gatewatch_tail_files") < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        append(log, capture)
        text = ""
        while time.monotonic() < deadline:
            text = await metrics()
            if total(text, "gatewatch_tail_lines_read_total") >= len(capture) and all(
                    total(text, "litellm_deployment_cooled_down_total", model_id=m, exception_status="429") >= 1
                    for m in models):
                break
            await asyncio.sleep(0.05)
        async with session.get(base + "/readyz") as resp:
            ready = await resp.json()
    assert total(text, "gatewatch_tail_lines_read_total") == len(capture)
    for model_id in models:
        assert total(text, "litellm_deployment_cooled_down_total", model_id=model_id, exception_status="429") == 1
    # a refusal is counted from its callback, never from the log line alone (no double count)
    assert total(text, "gatewatch_no_deployments_available_total") == 0
    assert total(text, "gatewatch_deployment_retries_total", source="log", model_group="gpt-lab") >= 1
    assert total(text, "gatewatch_events_received_total", source="log") > 0
    assert ready["checks"]["logtail"]["ok"] is True

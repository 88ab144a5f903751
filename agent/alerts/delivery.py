"""Drains the outbox: one worker per target, one send in flight, retries with backoff and jitter.

Order matters within an alert group (its "resolved" must not overtake its "firing"), so
a target sends the oldest due row that is first in its group. A failed row backs off on
its own (exponential, with jitter), so one message a channel keeps refusing does not
hold back the other groups; a 429/503 with `Retry-After` holds the whole target for
that long, since the channel asked everyone to wait. A permanent 4xx, or a row older than
`max_age`, goes to the dead letters. Targets are independent: one dead channel delays
no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from agent.alerts.config import OutboxConfig
from agent.alerts.metrics import NotifyMetrics
from agent.alerts.notification import Notification
from agent.alerts.notify import Notifier, SendResult, Target
from agent.alerts.outbox import Outbox, Row

log = logging.getLogger(__name__)


def backoff(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped at `maximum`."""
    uniform = (rng or random).uniform
    ceiling = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + uniform(0, ceiling / 2)


class Delivery:
    def __init__(self, outbox: Outbox, notifier: Notifier, config: OutboxConfig, metrics: NotifyMetrics,
                 clock: Callable[[], float] = time.time, poll: float = 1.0) -> None:
        self.outbox = outbox
        self.notifier = notifier
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.poll = poll  # upper bound of any wait, so a fake clock in tests is noticed
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._stopping = False
        self._inflight: set[str] = set()
        self._blocked_until: dict[str, float] = {}  # target -> time, from Retry-After
        # told when a row leaves the outbox (delivered: True, dead letter: False): the service then
        # marks its cross-task claim done, so no other sidecar takes the notification over
        self.on_done: Callable[[Row, bool], Awaitable[None]] | None = None

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        await self.sync_targets()

    async def sync_targets(self) -> None:
        """Start workers for configured targets; dead-letter rows whose target is gone."""
        for target_id in self.notifier.targets:
            if target_id not in self._workers or self._workers[target_id].done():
                self._wake[target_id] = asyncio.Event()
                self._workers[target_id] = asyncio.create_task(self._run(target_id),
                                                               name=f"gatewatch-deliver-{target_id}")
        for target_id in list(self._workers):
            if target_id not in self.notifier.targets:
                self._wake[target_id].set()  # the worker sees its target gone and exits
        orphans = self.outbox.pending_targets() - set(self.notifier.targets)
        for target_id in orphans:
            for row in await self.outbox.of_target(target_id):
                await self._bury(row, "receiver or URL no longer configured")

    def kick(self, target_id: str | None = None) -> None:
        """New rows (or a test's clock moved): wake the target's worker, or all."""
        events = [self._wake.get(target_id)] if target_id else list(self._wake.values())
        for event in events:
            if event is not None:
                event.set()

    async def stop(self, deadline: float) -> None:
        """Send what is due now until `deadline` (time.monotonic()), then stop; rows in backoff, and
        rows not sent by then, stay in the outbox for the next start."""
        self.kick()
        while time.monotonic() < deadline and not self._stopping:
            due = False
            for target_id, task in self._workers.items():
                if not task.done() and await self.outbox.next_due(target_id, self.clock()) is not None:
                    due = True
                    break
            if not due and not self._inflight:
                break
            await asyncio.sleep(0.02)
        self._stopping = True
        self.kick()
        tasks = [t for t in self._workers.values() if not t.done()]
        if tasks:
            _done, still = await asyncio.wait(tasks, timeout=max(0.1, deadline - time.monotonic()))
            for task in still:
                task.cancel()
            for task in still:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._workers.clear()

    # -- worker -----------------------------------------------------------------------
    async def _wait(self, target_id: str, seconds: float) -> None:
        event = self._wake[target_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, min(seconds, self.poll)))
        event.clear()

    async def _run(self, target_id: str) -> None:
        while not self._stopping:
            target = self.notifier.targets.get(target_id)
            if target is None:
                return
            try:
                if self.outbox.count(target_id) == 0:
                    await self._wait(target_id, self.poll)
                    continue
                now = self.clock()
                for old in await self.outbox.older_than(target_id, now - self.config.max_age):
                    await self._bury(old, self._gave_up(old))
                blocked = self._blocked_until.get(target_id, 0.0)
                if blocked > now:
                    await self._wait(target_id, blocked - now)
                    continue
                row = await self.outbox.next_due(target_id, now)
                if row is None:
                    due = await self.outbox.next_time(target_id)
                    await self._wait(target_id, self.poll if due is None else due - now)
                    continue
                await self._attempt(target, row)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery worker for %s failed; retrying", target_id)
                await asyncio.sleep(self.poll)

    async def _attempt(self, target: Target, row: Row) -> None:
        try:
            note = Notification.from_dict(row.body)
        except (TypeError, KeyError, ValueError):
            await self._bury(row, "unreadable notification record")
            return
        self._inflight.add(row.id)
        started = time.monotonic()
        try:
            result = await target.send(note)
        except Exception as exc:  # a target bug is a failed attempt, not a dead worker
            result = SendResult(False, error=f"{target.kind}: {type(exc).__name__}")
        finally:
            self._inflight.discard(row.id)
        self.metrics.send_seconds.labels(target.receiver).observe(time.monotonic() - started)
        if result.ok:
            await self.outbox.complete(row)
            self.metrics.notifications.labels(row.receiver, "sent").inc()
            log.info("notification %s sent to %s (%s) after %d attempt(s)", row.id, row.receiver, target.masked,
                     row.attempts + 1)
            await self._done(row, True)
            return
        if result.permanent:
            row.attempts += 1
            row.last_error, row.last_status = result.error, result.status
            await self._bury(row, f"permanent failure: {result.error}")
            return
        delay = self._delay(row.attempts + 1, result)
        now = self.clock()
        if now + delay - row.created > self.config.max_age:
            row.attempts += 1
            row.last_error, row.last_status = result.error, result.status
            await self._bury(row, self._gave_up(row))
            return
        await self.outbox.reschedule(row, now + delay, result.error, result.status)
        if result.retry_after is not None and result.status in (429, 503):
            self._blocked_until[row.target] = now + delay  # the channel asked everyone to wait
        outcome = "rate_limited" if result.status == 429 else "retry"
        self.metrics.notifications.labels(row.receiver, outcome).inc()
        # the first failure and every 10th are warnings; the retries in between would flood the log
        level = logging.WARNING if row.attempts == 1 or row.attempts % 10 == 0 else logging.DEBUG
        log.log(level, "notification %s to %s (%s) failed (%s); attempt %d, next in %.1fs", row.id, row.receiver,
                target.masked, result.error, row.attempts, delay)

    def _delay(self, attempt: int, result: SendResult) -> float:
        if result.retry_after is not None and result.status in (429, 503):
            # honour the server: never earlier than Retry-After, a little jitter after it
            return result.retry_after + random.uniform(0, min(1.0, 0.1 * result.retry_after))
        return backoff(attempt, self.config.initial_backoff, self.config.max_backoff)

    def _gave_up(self, row: Row) -> str:
        return (f"gave up after {row.attempts} attempt(s) over {self.clock() - row.created:.0f}s "
                f"(max_age {self.config.max_age:.0f}s); last error: {row.last_error or 'none'}")

    async def _bury(self, row: Row, reason: str) -> None:
        await self.outbox.bury(row, reason)
        self.metrics.notifications.labels(row.receiver, "dead").inc()
        self.metrics.dead_letters_total += 1
        log.error("notification %s to receiver %s moved to the dead letters: %s", row.id, row.receiver, reason,
                  extra={"receiver": row.receiver, "notification": row.id})
        await self._done(row, False)

    async def _done(self, row: Row, delivered: bool) -> None:
        if self.on_done is None:
            return
        try:
            await self.on_done(row, delivered)
        except Exception:  # bookkeeping must never stop a delivery worker
            log.warning("notification %s: done hook failed", row.id, exc_info=True)

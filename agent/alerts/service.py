"""The notify feature: router -> claim -> outbox -> delivery, wired into the app when configured.

`NotifyService` is the app's `alert_receiver` (the rule engine hands it alerts) and a
component (start/stop). Its loop flushes due alert groups: each notification is claimed
in the state backend (one sender across all tasks), written to the outbox, recorded in
the notification log, then delivered by the per-target workers.

Claims are leases (`state.claim_ttl`): the sender renews its claim while the notification
waits in its outbox, and when it is delivered marks it done and keeps the claim for the
rest of the de-dup period. The sidecars that lost the claim watch it; if the sender dies
before delivering, its lease runs out, one of them takes the claim and sends instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from agent.alert import Alert
from agent.alerts.config import NotifyConfig
from agent.alerts.delivery import Delivery
from agent.alerts.metrics import NotifyMetrics
from agent.alerts.notification import AlertItem, Notification
from agent.alerts.notify import Notifier, SendResult
from agent.alerts.outbox import Outbox, OutboxFull, Row
from agent.alerts.router import NflogEntry, Planned, Router
from agent.alerts.silences import SilenceStore
from agent.state.base import StateBackend, StateUnavailable

if TYPE_CHECKING:
    from agent.config import Config

log = logging.getLogger(__name__)

NFLOG_PREFIX = "notify/nflog/"
CLAIM_PREFIX = "notify/claim/"
DONE_PREFIX = "notify/done/"  # a claimed notification was delivered (or dead-lettered): nothing to take over
DEFAULT_LEASE = 30.0
NFLOG_RETENTION = 5 * 86400.0
SILENCE_REFRESH = 15.0  # re-read silences (other sidecars may have added some)
PRUNE_EVERY = 3600.0


def default_task_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Held:
    """A claim this sidecar won and must renew until the notification leaves its outbox."""

    note_id: str
    keep: float  # the de-dup period: how long the claim is kept once done
    left: int  # targets still to deliver
    renew_at: float


@dataclass
class _Watch:
    """A claim another sidecar won: taken over if it expires before that sidecar marks it done."""

    plan: Planned
    check_at: float
    until: float


class NotifyService:
    name = "notify"

    def __init__(self, config: NotifyConfig, state: StateBackend, registry: CollectorRegistry,
                 state_dir: str | os.PathLike[str], clock: Callable[[], float] = time.time,
                 poll: float = 1.0, claim_lease: float = DEFAULT_LEASE) -> None:
        self.config = config
        self.state = state
        self.clock = clock
        self.poll = poll
        self.lease = float(claim_lease)
        self._held: dict[str, _Held] = {}  # claim key -> what we owe
        self._held_by_note: dict[str, str] = {}  # notification id -> claim key
        self._watch: dict[str, _Watch] = {}  # nflog key (receiver + group) -> the claim we lost
        self.task_id = config.task_id or default_task_id()
        self.metrics = NotifyMetrics(registry)
        self.silences = SilenceStore(state, clock)
        self.router = Router(config, silenced_by=self.silences.silenced_by, clock=clock)
        self.notifier = Notifier(config)
        self.outbox = Outbox(Path(state_dir) / "outbox.db", max_pending=config.outbox.max_pending, clock=clock,
                             dead_retention=float(config.outbox.dead_letter_retention))
        self.delivery = Delivery(self.outbox, self.notifier, config.outbox, self.metrics, clock, poll=poll)
        self.delivery.on_done = self._delivery_done
        self.metrics.depth = lambda: self.outbox.depth
        self.metrics.oldest_age = lambda: self.outbox.oldest_age()
        self.metrics.dead_now = lambda: self.outbox.dead_count
        self.metrics.silences = lambda: self.silences.active_count()
        self.metrics.groups = lambda: len(self.router.groups)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._queue_lock = asyncio.Lock()

    # -- AlertReceiver ------------------------------------------------------------------
    def receive(self, alerts: Sequence[Alert]) -> None:
        self.router.receive(alerts)

    def _wake_soon(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.router.on_change = self._wake_soon
        await self.outbox.start()
        await self._load_state()
        await self.delivery.start()
        self._task = asyncio.create_task(self._run(), name="gatewatch-notify-router")
        self._started = True
        log.info("notify: %d receiver(s), %d target(s), outbox %d pending / %d dead", len(self.config.receivers),
                 len(self.notifier.targets), self.outbox.depth, self.outbox.dead_count)

    async def _load_state(self) -> None:
        try:
            await self.silences.load()
            records = await self.state.list_json(NFLOG_PREFIX)
        except Exception:
            log.exception("notify: could not read silences / notification log from the state backend")
            return
        entries = {}
        for key, record in records.items():
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                entries[key[len(NFLOG_PREFIX):]] = NflogEntry.from_json(record)
        self.router.load_nflog(entries)

    async def stop(self, deadline: float) -> None:
        """Queue what the groups still owe (so a resolve is not lost), send what is due until
        `deadline` (rows not sent by then stay in the outbox for the next start), close."""
        if not self._started:
            return
        self._started = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.queue_due(everything=True)
        except Exception:
            log.exception("notify: queueing what the groups still owe failed")
        await self.delivery.stop(deadline)
        await self.notifier.close()
        await self.outbox.stop(deadline)

    async def reload(self, new_config: Config) -> None:
        cfg: NotifyConfig | None = getattr(new_config, "notify", None)
        if cfg is None or not cfg.enabled:
            log.warning("notify: receivers removed in the new config; keeping the running ones until restart")
            return
        self.config = cfg
        self.router.configure(cfg)
        self.notifier.configure(cfg)
        self.delivery.config = cfg.outbox
        self.outbox.max_pending = cfg.outbox.max_pending
        await self.delivery.sync_targets()
        self._wake_soon()

    def readiness(self) -> tuple[bool, str]:
        ok = self._started
        return ok, f"outbox {self.outbox.depth} pending, {self.outbox.dead_count} dead"

    # -- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        last_refresh = last_prune = self.clock()
        while True:
            try:
                await self.queue_due()
                await self.tend_claims()
                now = self.clock()
                if now - last_refresh >= SILENCE_REFRESH:
                    last_refresh = now
                    await self.silences.load()
                    self.silences.prune(now)
                if now - last_prune >= PRUNE_EVERY:
                    last_prune = now
                    await self.outbox.prune()
                    self.router.prune_nflog(now - NFLOG_RETENTION)
            except asyncio.CancelledError:
                raise
            except StateUnavailable as exc:  # shared state down: counted and shown by the backend; keep going
                log.warning("notify: %s; silences not refreshed, the router goes on with what it has", exc)
            except Exception:
                log.exception("notify: flush loop failed; continuing")
            due = self.router.next_due()
            wait = self.poll if due is None else max(0.0, min(due - self.clock(), self.poll))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()

    async def queue_due(self, everything: bool = False) -> int:
        """Decide due groups and queue their notifications; returns how many were queued."""
        async with self._queue_lock:
            plans = self.router.flush_due(self.clock(), everything=everything)
            queued = 0
            for plan in plans:
                queued += await self._dispatch(plan)
            return queued

    async def _dispatch(self, plan: Planned) -> int:
        note = plan.notification
        if note is None:
            await self._commit(plan)
            return 0
        if not await self._claim(plan):
            self.metrics.notifications.labels(plan.receiver, "deduplicated").inc()
            await self._commit(plan)
            now = self.clock()
            self._watch[plan.nflog_key] = _Watch(plan, now + self.lease, now + plan.claim_ttl)
            return 0
        self._watch.pop(plan.nflog_key, None)
        if not await self._enqueue(plan, note):
            return 0
        await self._commit(plan)
        return 1

    async def _enqueue(self, plan: Planned, note: Notification) -> bool:
        targets = self.notifier.by_receiver.get(plan.receiver, [])
        try:
            added = await self.outbox.enqueue(note.to_dict(), [(t.id, t.receiver) for t in targets])
        except OutboxFull as exc:
            self.metrics.notifications.labels(plan.receiver, "dropped").inc()
            log.error("notify: %s; notification for %s not queued (retried at the next group interval)", exc,
                      plan.receiver)
            return False
        if added:
            self._held[plan.claim_key] = _Held(note.id, plan.claim_ttl, added, self.clock() + self.lease / 3)
            self._held_by_note[note.id] = plan.claim_key
        for target in targets:
            self.delivery.kick(target.id)
        return True

    async def _claim(self, plan: Planned) -> bool:
        try:
            return await self.state.claim(CLAIM_PREFIX + plan.claim_key, owner=self.task_id,
                                          ttl=min(self.lease, plan.claim_ttl))
        except Exception:
            log.warning("notify: de-dup claim failed (state backend); sending anyway", exc_info=True)
            return True

    # -- claim leases ---------------------------------------------------------------------
    async def _delivery_done(self, row: Row, delivered: bool) -> None:
        key = self._held_by_note.get(row.id)
        held = self._held.get(key) if key is not None else None
        if held is None or key is None:
            return
        held.left -= 1
        if held.left <= 0:
            await self._finish(key, held)

    async def _finish(self, key: str, held: _Held) -> None:
        """Delivered: keep the claim for the de-dup period and say so, so nobody takes it over."""
        try:
            await self.state.put_json(DONE_PREFIX + key, {"by": self.task_id, "at": self.clock()}, ttl=held.keep)
            await self.state.claim(CLAIM_PREFIX + key, owner=self.task_id, ttl=held.keep)
        except Exception:
            held.renew_at = self.clock() + min(5.0, self.lease / 3)  # retried by tend_claims
            return
        self._held.pop(key, None)
        self._held_by_note.pop(held.note_id, None)

    async def tend_claims(self) -> int:
        """Renew the leases we hold; take over lost claims whose holder died. Returns takeovers."""
        now = self.clock()
        for key, held in list(self._held.items()):
            if held.renew_at > now:
                continue
            if held.left <= 0:
                await self._finish(key, held)
                continue
            held.renew_at = now + self.lease / 3
            try:
                if not await self.state.claim(CLAIM_PREFIX + key, owner=self.task_id, ttl=self.lease):
                    log.warning("notify: claim %s was taken over by another sidecar while ours was pending", key)
            except Exception:
                log.debug("notify: renewing claim %s failed", key, exc_info=True)
        taken = 0
        for nkey, watch in list(self._watch.items()):
            if watch.check_at > now:
                continue
            if now >= watch.until:
                del self._watch[nkey]
                continue
            watch.check_at = now + self.lease / 2
            key = watch.plan.claim_key
            try:
                if await self.state.get_json(DONE_PREFIX + key) is not None:
                    del self._watch[nkey]
                    continue
                won = await self.state.claim(CLAIM_PREFIX + key, owner=self.task_id, ttl=self.lease)
            except Exception:
                continue
            if not won:
                continue
            del self._watch[nkey]
            note = watch.plan.notification
            if note is None:
                continue
            log.warning("notify: the sidecar that claimed a notification for %s went away before delivering "
                        "it; taking over", watch.plan.receiver)
            if await self._enqueue(watch.plan, note):
                self.metrics.notifications.labels(watch.plan.receiver, "taken_over").inc()
                taken += 1
        return taken

    async def _commit(self, plan: Planned) -> None:
        entry = self.router.commit(plan)
        try:
            await self.state.put_json(NFLOG_PREFIX + plan.nflog_key, entry.to_json(), ttl=NFLOG_RETENTION)
        except Exception:
            log.warning("notify: could not persist the notification log", exc_info=True)

    # -- test message ---------------------------------------------------------------------
    async def send_test(self, receiver: str) -> list[tuple[str, SendResult]]:
        return await send_test(self.notifier, receiver, self.clock())


def sample_notification(receiver: str, now: float) -> Notification:
    labels = {"alertname": "GatewatchTest", "severity": "info", "receiver": receiver}
    return Notification(
        id=f"test-{int(now)}", receiver=receiver, group_key="test", status="firing",
        group_labels={"alertname": "GatewatchTest"}, common_labels=labels,
        common_annotations={"summary": f"Test notification from gatewatch to receiver {receiver}"},
        alerts=[AlertItem("firing", labels, {"summary": f"Test notification from gatewatch to receiver {receiver}"},
                          starts_at=now, value=1.0, fingerprint="test")],
        created_at=now)


async def send_test(notifier: Notifier, receiver: str, now: float) -> list[tuple[str, SendResult]]:
    """Send a test message to every target of a receiver, now (not through the outbox)."""
    targets = notifier.by_receiver.get(receiver)
    if targets is None:
        raise KeyError(receiver)
    note = sample_notification(receiver, now)
    results = await asyncio.gather(*(t.send(note) for t in targets))
    return [(t.masked, r) for t, r in zip(targets, results, strict=True)]



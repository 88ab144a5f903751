"""`gatewatch_tail_*` self-metrics (names fixed: dashboards use them).

The reader threads only bump plain integers (`TailStats`); the event loop mirrors them into
Prometheus counters after each batch, so the hot path takes no locks.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.sources.tail.watcher import TailStats


class TailMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag_bytes = Gauge("gatewatch_tail_lag_bytes",
                               "Bytes written to the tailed log files and not yet through the pipeline.",
                               registry=registry)
        self.lines_read = Counter("gatewatch_tail_lines_read", "Log lines read by the tail.", registry=registry)
        self.lines_unparsed = Counter("gatewatch_tail_lines_unparsed",
                                      "Log lines that are neither JSON log records nor a known plain-text line "
                                      "(banners, stack-trace continuations); counted and skipped.",
                                      registry=registry)
        self.lines_truncated = Counter("gatewatch_tail_lines_truncated",
                                       "Log lines longer than litellm.tail.max_line_bytes, cut to that length.",
                                       registry=registry)
        self.rotations = Counter("gatewatch_tail_rotations",
                                 "Log rotations seen: rename (file moved or deleted), truncate (size shrank or "
                                 "content replaced), copytruncate (a copy resumed where its original stopped).",
                                 ["kind"], registry=registry)
        self.checkpoint_age = Gauge("gatewatch_tail_checkpoint_age_seconds",
                                    "Seconds since the read offsets were last written to the state directory.",
                                    registry=registry)
        self.files = Gauge("gatewatch_tail_files", "Log files being followed.", registry=registry)
        self.paused = Counter("gatewatch_tail_paused",
                              "Times reading waited because the pipeline queue was full (back-pressure).",
                              registry=registry)
        self.wait_seconds = Counter("gatewatch_tail_wait_seconds",
                                    "Seconds the log readers spent waiting to hand lines to the pipeline.",
                                    registry=registry)
        self._seen: dict[str, int] = {}
        for kind in ("rename", "truncate", "copytruncate"):
            self.rotations.labels(kind)

    def bind(self, lag: Callable[[], float], checkpoint_age: Callable[[], float]) -> None:
        self.lag_bytes.set_function(lag)
        self.checkpoint_age.set_function(checkpoint_age)

    def sync(self, name: str, stats: TailStats, unparsed: int) -> None:
        """Add what changed since the last call for the reader `name`."""
        self._add(name, "lines", stats.lines, self.lines_read)
        self._add(name, "unparsed", unparsed, self.lines_unparsed)
        self._add(name, "truncated", stats.truncated_lines, self.lines_truncated)
        for kind, value in list(stats.rotations.items()):
            self._add(name, "rot_" + kind, value, self.rotations.labels(kind))

    def _add(self, name: str, what: str, value: int, counter: object) -> None:
        key = f"{name}:{what}"
        delta = value - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)  # type: ignore[attr-defined]
            self._seen[key] = value

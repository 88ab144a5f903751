"""One batch of events as every rule reads it: filtered, extracted and keyed once per batch.

The ingest path used to run each event through each rule: 24 rules of the default pack
meant 24 method calls per event, each re-reading the same attributes, re-running the same
signal function and re-building the same label tuple. A `BatchMemo` is built once per
`RuleEngine.handle` call and computes each of those things once per batch, in one pass
(C-level `map`/`attrgetter`/`zip` where it can), memoised for every rule that asks:

- the events of a set of kinds (in arrival order),
- a signal's values, and which of them count (`not None`, or truthy for budgets),
- a `where` matcher's verdicts,
- the label tuples of a `by` list, and which of them have an empty label.

Rules then combine these per-event lists (`both`) and pick what they keep with
`itertools.compress`, so every rule sees exactly the values, in exactly the order, that
the per-event path gave it: the windows and budgets end up bit-for-bit the same.
Everything here is pure (no side effects), so a rule whose inputs raise can fall back to
the per-event path with nothing applied twice.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from itertools import compress
from typing import Any

from agent.events import LABEL_GETTERS, Event, Kind
from agent.matchers import Matcher
from agent.rules.signals import BATCH_EXTRACT

Key = tuple[str, ...]
Getter = Callable[[Event], Any]


def _plain_labels() -> frozenset[str]:
    """Label names whose getter returns the Event attribute of the same name unchanged, so an
    `operator.attrgetter` (one C call per event for the whole tuple) gives the same value.
    Checked against the getters themselves, not assumed: a getter that transforms its value
    (`stream` -> "true"/"false") is not plain and keeps its own function."""
    probe = Event(Kind.REQUEST, 0.0)
    fields = {f.name for f in dataclasses.fields(Event)}
    plain = set()
    for name, getter in LABEL_GETTERS.items():
        if name not in fields:
            continue
        sentinel = object()
        original = getattr(probe, name)
        setattr(probe, name, sentinel)
        try:
            if getter(probe) is sentinel:
                plain.add(name)
        except Exception:  # a getter that computes something from the value
            pass
        finally:
            setattr(probe, name, original)
    return frozenset(plain)


PLAIN_LABELS = _plain_labels()


class _All(list):  # type: ignore[type-arg]
    """The mask that keeps every event (most masks are: skipping them skips a pass)."""


ALL: list[bool] = _All()
Mask = list[bool]


def _mask(flags: list[bool]) -> Mask:
    return ALL if all(flags) else flags


def both(a: Mask, b: Mask) -> Mask:
    """Element-wise `and` of two masks (C-level)."""
    if a is ALL:
        return b
    if b is ALL:
        return a
    return list(map(operator.and_, a, b))


def key_function(by: Sequence[str], getters: Sequence[Getter]) -> Callable[[Sequence[Event]], list[Key]]:
    """events -> their label tuples for `by`, the same tuples `tuple(g(e) for g in getters)` builds."""
    if not by:
        return lambda events: [() for _ in events]
    if all(name in PLAIN_LABELS for name in by):
        if len(by) == 1:
            get_one = operator.attrgetter(by[0])
            return lambda events: [(v,) for v in map(get_one, events)]
        get_all = operator.attrgetter(*by)
        return lambda events: list(map(get_all, events))
    if len(getters) == 1:
        only = getters[0]
        return lambda events: [(v,) for v in map(only, events)]
    return lambda events: list(zip(*[list(map(g, events)) for g in getters], strict=True))


def matcher_mask(matcher: Matcher, values: list[Any]) -> list[bool]:
    """`[matcher.matches_value(v) for v in values]` without a method call per value (same
    comparisons)."""
    members = matcher.any_of
    if members is not None:
        return [v in members for v in values]
    pattern = matcher.pattern
    if pattern is None:
        value = matcher.value
        if matcher.is_equal:
            return [v == value for v in values]
        return [v != value for v in values]
    fullmatch = pattern.fullmatch
    if matcher.is_equal:
        return [fullmatch(v) is not None for v in values]
    return [fullmatch(v) is None for v in values]


class BatchMemo:
    """Per-batch memo of what rules read; see the module docstring. `events` must already
    exclude LiteLLM's health-check traffic (the engine drops it before any rule)."""

    __slots__ = ("_by_kinds", "_filled", "_keys", "_kinds", "_present", "_times", "_truthy", "_values", "_where",
                 "events")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self._kinds: set[str] | None = None
        self._by_kinds: dict[frozenset[str], list[Event]] = {}
        self._times: dict[frozenset[str], list[float]] = {}
        self._values: dict[tuple[frozenset[str], Any], list[Any]] = {}
        self._present: dict[tuple[frozenset[str], Any], list[bool]] = {}
        self._truthy: dict[tuple[frozenset[str], Any], list[bool]] = {}
        self._where: dict[tuple[frozenset[str], str, Matcher], list[bool]] = {}
        self._keys: dict[tuple[frozenset[str], tuple[str, ...]], list[Key]] = {}
        self._filled: dict[tuple[frozenset[str], tuple[str, ...]], list[bool]] = {}

    def of(self, kinds: frozenset[str]) -> list[Event]:
        """The events of these kinds, in arrival order."""
        found = self._by_kinds.get(kinds)
        if found is not None:
            return found
        present = self._kinds
        if present is None:
            present = self._kinds = {e.kind for e in self.events}
        wanted = kinds & present
        if not wanted:
            found = []
        elif len(present) == 1:  # the usual batch: every event is a REQUEST
            found = self.events if isinstance(self.events, list) else list(self.events)
        elif len(wanted) == 1:
            (kind,) = wanted
            found = [e for e in self.events if e.kind == kind]
        else:
            found = [e for e in self.events if e.kind in wanted]
        self._by_kinds[kinds] = found
        return found

    def times(self, kinds: frozenset[str]) -> list[float]:
        found = self._times.get(kinds)
        if found is None:
            found = self._times[kinds] = [e.time for e in self.of(kinds)]
        return found

    def values(self, kinds: frozenset[str], extract: Callable[[Event], Any]) -> list[Any]:
        """`extract(e)` of every event of `kinds` (a signal's extract or outcome function)."""
        memo = (kinds, extract)
        found = self._values.get(memo)
        if found is None:
            many = BATCH_EXTRACT.get(extract)
            events = self.of(kinds)
            found = self._values[memo] = many(events) if many is not None else list(map(extract, events))
        return found

    def present(self, kinds: frozenset[str], extract: Callable[[Event], Any]) -> list[bool]:
        """Which values are not None (what a window keeps)."""
        memo = (kinds, extract)
        found = self._present.get(memo)
        if found is None:
            found = self._present[memo] = _mask([v is not None for v in self.values(kinds, extract)])
        return found

    def truthy(self, kinds: frozenset[str], extract: Callable[[Event], Any]) -> list[bool]:
        """Which values are neither None nor zero (what a budget adds)."""
        memo = (kinds, extract)
        found = self._truthy.get(memo)
        if found is None:
            found = self._truthy[memo] = _mask(list(map(bool, self.values(kinds, extract))))
        return found

    def where(self, kinds: frozenset[str], get: Getter, matcher: Matcher) -> list[bool]:
        memo = (kinds, matcher.name, matcher)
        found = self._where.get(memo)
        if found is None:
            if matcher.name in PLAIN_LABELS:
                get = operator.attrgetter(matcher.name)
            found = self._where[memo] = _mask(matcher_mask(matcher, list(map(get, self.of(kinds)))))
        return found

    def keys(self, kinds: frozenset[str], by: tuple[str, ...], make: Callable[[Sequence[Event]], list[Key]]
             ) -> list[Key]:
        memo = (kinds, by)
        found = self._keys.get(memo)
        if found is None:
            found = self._keys[memo] = make(self.of(kinds))
        return found

    def filled(self, kinds: frozenset[str], by: tuple[str, ...], make: Callable[[Sequence[Event]], list[Key]]
               ) -> list[bool]:
        """Which label tuples have no empty label (rules drop the others unless keep_empty_labels)."""
        memo = (kinds, by)
        found = self._filled.get(memo)
        if found is None:
            found = self._filled[memo] = _mask(["" not in k for k in self.keys(kinds, by, make)])
        return found

    def select(self, kinds: frozenset[str], by: tuple[str, ...], make: Callable[[Sequence[Event]], list[Key]],
               extract: Callable[[Event], Any], where: Sequence[tuple[Getter, Matcher]], keep_empty: bool,
               truthy: bool = False) -> tuple[list[Key], list[float], list[Any]]:
        """(keys, times, values) of the events a rule keeps, in arrival order."""
        mask = self.truthy(kinds, extract) if truthy else self.present(kinds, extract)
        for get, matcher in where:
            mask = both(mask, self.where(kinds, get, matcher))
        if not keep_empty and by:
            mask = both(mask, self.filled(kinds, by, make))
        keys = self.keys(kinds, by, make)
        values = self.values(kinds, extract)
        times = self.times(kinds)
        if mask is ALL:
            return keys, times, values
        return list(compress(keys, mask)), list(compress(times, mask)), list(compress(values, mask))

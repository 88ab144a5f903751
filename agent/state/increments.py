"""Local pre-aggregates waiting for Redis: a bounded queue of per-field operations.

Events never talk to Redis. Budget deltas and rule-window buckets add up here, merged per
(key, field), and the flusher sends the whole queue in one pipelined round trip per
`flush_interval`. While Redis is down the queue keeps merging: its size is the number of
distinct (key, field) pairs, not of events, and it is bounded (`max_queued_increments`);
what does not fit is dropped and counted. An entry may carry a deadline after which it is
worthless (a rule-window bucket that left every window): those are pruned, not sent.

Batches: what leaves the queue is cut into batches, each with the sequence number of the
process that made it. The Lua script applies a batch only if its sequence number is newer
than the last one applied for that process, so a batch retried after a timeout (applied
or not: we cannot know) is applied exactly once.

Operations per field:
  `+` add (HINCRBYFLOAT)   `=` set   `<` keep the smaller   `>` keep the larger
  `L` (time, value) pair, the later time wins (stored as "time:value")
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

ADD, SET, MIN, MAX, LATEST = "+", "=", "<", ">", "L"
OPS = (ADD, SET, MIN, MAX, LATEST)


@dataclass
class KeyOps:
    """Pending operations on one Redis hash."""

    fields: dict[str, list] = field(default_factory=dict)  # field -> [op, value]; value float or (t, v)
    ttl: float | None = None  # seconds; PEXPIRE after applying (refreshes the key's lifetime)
    deadline: float | None = None  # epoch seconds after which these operations are worthless


@dataclass(eq=False)  # identity: a batch is acknowledged (removed) as itself
class IncrementBatch:
    """A slice of the queue on its way to Redis; retried as is (same instance + seq) until acknowledged."""

    instance: str
    seq: int
    keys: dict[str, KeyOps]
    attempts: int = 0
    unconfirmed: int = 0  # round trips that applied it but could not confirm a replica has it (WAIT)

    def __len__(self) -> int:
        return sum(len(k.fields) for k in self.keys.values())


def merge(slot: list, op: str, value: float | tuple[float, float]) -> None:
    """Fold operation `op value` into an existing [op, value] slot of the same field."""
    old_op, old = slot
    if op == ADD:
        if old_op in (ADD, SET):
            slot[1] = old + value
        else:  # a field never mixes kinds; if it does, the newest kind wins
            slot[0], slot[1] = op, value
    elif op == SET:
        slot[0], slot[1] = op, value
    elif op == MIN:
        slot[1] = min(old, value) if old_op == MIN else value
        slot[0] = MIN
    elif op == MAX:
        slot[1] = max(old, value) if old_op == MAX else value
        slot[0] = MAX
    else:  # LATEST
        if old_op != LATEST or value[0] >= old[0]:  # type: ignore[index]
            slot[0], slot[1] = op, value


def _finite(value: float | tuple[float, float]) -> bool:
    if isinstance(value, tuple):
        return all(math.isfinite(v) for v in value)
    return math.isfinite(value)


class IncrementQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.keys: dict[str, KeyOps] = {}
        self.size = 0  # distinct (key, field) entries
        self.dropped_full = 0  # entries refused because the queue was full
        self.dropped_expired = 0  # entries pruned after their deadline
        self.dropped_invalid = 0  # NaN / infinite values (Redis refuses them)

    def __len__(self) -> int:
        return self.size

    def add(self, key: str, field_name: str, op: str, value: float | tuple[float, float], ttl: float | None = None,
            deadline: float | None = None) -> bool:
        """Queue one operation; False if dropped (full or not a finite number)."""
        if not _finite(value):
            self.dropped_invalid += 1
            return False
        ops = self.keys.get(key)
        if ops is None:
            if self.size >= self.limit:
                self.dropped_full += 1
                return False
            ops = self.keys[key] = KeyOps(ttl=ttl, deadline=deadline)
        else:
            if ttl is not None:
                ops.ttl = ttl if ops.ttl is None else max(ops.ttl, ttl)
            if deadline is not None and ops.deadline is not None:
                ops.deadline = max(ops.deadline, deadline)
        slot = ops.fields.get(field_name)
        if slot is None:
            if self.size >= self.limit:
                self.dropped_full += 1
                if not ops.fields:
                    del self.keys[key]
                return False
            ops.fields[field_name] = [op, value]
            self.size += 1
        else:
            merge(slot, op, value)
        return True

    def add_many(self, key: str, amounts: dict[str, float], ttl: float | None = None) -> int:
        """Queue `+` operations; returns how many were dropped."""
        dropped = 0
        for name, amount in amounts.items():
            if not self.add(key, name, ADD, float(amount), ttl):
                dropped += 1
        return dropped

    def prune(self, now: float) -> int:
        """Drop keys whose deadline passed; returns the number of entries dropped."""
        gone = 0
        for key in [k for k, ops in self.keys.items() if ops.deadline is not None and ops.deadline < now]:
            gone += len(self.keys.pop(key).fields)
        self.size -= gone
        self.dropped_expired += gone
        return gone

    def amounts(self, key: str) -> dict[str, float]:
        """The queued `+` amounts of one key (the read path adds them to what Redis said)."""
        ops = self.keys.get(key)
        if ops is None:
            return {}
        return {name: value for name, (op, value) in ops.fields.items() if op == ADD}

    def take(self, instance: str, next_seq: Iterator[int], max_fields: int) -> list[IncrementBatch]:
        """Empty the queue into batches of at most `max_fields` entries each."""
        batches: list[IncrementBatch] = []
        current: dict[str, KeyOps] = {}
        count = 0
        for key, ops in self.keys.items():
            items = list(ops.fields.items())
            start = 0
            while start < len(items):
                if count >= max_fields:
                    batches.append(IncrementBatch(instance, next(next_seq), current))
                    current, count = {}, 0
                chunk = items[start:start + max_fields - count]
                target = current.get(key)
                if target is None:
                    target = current[key] = KeyOps({}, ops.ttl, ops.deadline)
                target.fields.update(chunk)
                count += len(chunk)
                start += len(chunk)
        if current:
            batches.append(IncrementBatch(instance, next(next_seq), current))
        self.keys = {}
        self.size = 0
        return batches


def batch_args(batch: IncrementBatch, seq_ttl_ms: int, only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """KEYS (data keys; the caller puts the sequence key first) and ARGV of the apply script.

    `only`: the batch's keys that share one Redis Cluster slot (one script call per slot).
    """
    keys: list[str] = []
    argv: list[str] = [str(batch.seq), str(seq_ttl_ms)]
    for key in (only if only is not None else batch.keys):
        ops = batch.keys[key]
        keys.append(key)
        argv.append(str(len(ops.fields)))
        argv.append(str(int(ops.ttl * 1000)) if ops.ttl else "0")
        for name, (op, value) in ops.fields.items():
            argv.append(name)
            argv.append(op)
            argv.append(f"{value[0]!r}:{value[1]!r}" if op == LATEST else repr(float(value)))
    return keys, argv


def added(batches: Iterable[IncrementBatch], key: str) -> dict[str, float]:
    """`+` amounts for `key` in some batches (not yet acknowledged: the read path counts them)."""
    out: dict[str, float] = {}
    for batch in batches:
        ops = batch.keys.get(key)
        if ops is None:
            continue
        for name, (op, value) in ops.fields.items():
            if op == ADD:
                out[name] = out.get(name, 0.0) + value
    return out


# KEYS[1] = the sequence key of the batch's process (for these keys' slot), KEYS[2..] = data keys
# ARGV = seq, seq ttl ms, then per data key: nfields, ttl ms (0 = none), nfields x (field, op, value)
# A batch applied already still writes (PEXPIRE on its sequence key): a WAIT after it then covers the
# first application too, whichever connection made it.
APPLY_SCRIPT = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq <= last then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local a = 3
for i = 2, #KEYS do
  local key = KEYS[i]
  local n = tonumber(ARGV[a])
  local ttl = tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    local f, op, v = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    a = a + 3
    if op == '+' then
      redis.call('HINCRBYFLOAT', key, f, v)
    elseif op == '=' then
      redis.call('HSET', key, f, v)
    elseif op == '<' or op == '>' then
      local cur = redis.call('HGET', key, f)
      if (not cur) or (op == '<' and tonumber(v) < tonumber(cur)) or (op == '>' and tonumber(v) > tonumber(cur)) then
        redis.call('HSET', key, f, v)
      end
    elseif op == 'L' then
      local cur = redis.call('HGET', key, f)
      if (not cur) or tonumber(string.match(v, '^[^:]+')) >= tonumber(string.match(cur, '^[^:]+')) then
        redis.call('HSET', key, f, v)
      end
    end
  end
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
"""

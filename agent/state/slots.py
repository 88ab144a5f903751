"""Key layout that works on one Redis node and on Redis Cluster alike (hash tags).

Redis Cluster runs a script or a MULTI only when every key it touches hashes to the same
slot, and a key's slot comes from its hash tag (the text between the first `{` and the
next `}`) when it has one. So every key gatewatch writes carries the tag of the thing it
belongs to, and keys that one script or transaction touches share it:

  {prefix}ctr:{<budget key>}               one budget hash; its own tag
  {prefix}win:{<rule|identity>}:<bucket>   every bucket (and :l, :k) of one global window
  {prefix}doc:{doc}:<key> + {prefix}docs:{doc}   documents and their index (one MULTI)
  {prefix}seq:{<tag>}:<instance>           a process's last batch applied to that tag's keys
  {prefix}claim:<key>                      single-key scripts need no tag

The same layout is used with one node, so nothing changes when a deployment moves from
a single ElastiCache node to a cluster (except the data, which does not move by itself).

A batch of increments is therefore applied as one script call per tag, each guarded by
that tag's own sequence key: a retry after a lost answer or a failover re-applies exactly
the tags that did not land.
"""

from __future__ import annotations

from collections.abc import Iterable

DOC_TAG = "doc"


def escape(name: str) -> str:
    """`name` made safe to sit inside a hash tag (no braces), one-to-one."""
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") or "%"


def tagged(prefix: str, kind: str, name: str) -> str:
    """`{prefix}{kind}:{<name>}`: a key whose slot is decided by `name` alone."""
    return f"{prefix}{kind}:{{{escape(name)}}}"


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes for `key`: its tag if it has a non-empty one, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def seq_key(prefix: str, tag: str, instance: str) -> str:
    """The sequence key of one process for the keys hashed by `tag` (so it shares their slot)."""
    return f"{prefix}seq:{{{tag}}}:{instance}"


def group_by_tag(keys: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Keys grouped by hash tag, in first-seen order (deterministic for one batch: retries regroup alike)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(hash_tag(key), []).append(key)
    return list(groups.items())

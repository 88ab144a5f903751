"""Where rule files come from: files, folders, globs, s3:// objects and prefixes, the default pack.

`rules:` in the config lists locations; `None` (the key left out) means the default pack,
and the word `default` inside the list adds it next to your own files. The default pack
is `$GATEWATCH_RULES_DIR`, else the package data `agent/default_rules/` (the top-level
`rules/` that setup.py maps into every wheel, so `pip install .` and the image carry it),
else `rules/` of a source checkout (an editable install or `PYTHONPATH=.`). Only the top
level of a folder is read, so `rules/tests/` (unit tests of the rules) is never loaded.
Everything here blocks: call it from an executor.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from importlib.resources import files
from pathlib import Path

from agent.configtypes import ConfigError
from agent.rules.model import RuleError, RuleSet, RuleSetError
from agent.rules.schema import build_rule_set
from agent.rules.values import Values, parse_values

SUFFIXES = (".yml", ".yaml")
DEFAULT = "default"


def default_rules_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("GATEWATCH_RULES_DIR"):
        return Path(env["GATEWATCH_RULES_DIR"])
    packaged = files("agent") / "default_rules"
    if isinstance(packaged, Path) and packaged.is_dir():  # wheels install unzipped: a real folder
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "rules"
    if checkout.is_dir():
        return checkout
    return Path(str(packaged))  # missing: the error names where the pack should have been


def expand(entries: Iterable[str] | None, env: Mapping[str, str] | None = None) -> list[str]:
    """Locations -> rule file names (local paths or s3:// URLs), in a stable order."""
    out: list[str] = []
    for entry in [DEFAULT] if entries is None else entries:
        if entry == DEFAULT:
            entry = str(default_rules_dir(env))
        if entry.startswith("s3://"):
            if entry.endswith(SUFFIXES):
                out.append(entry)
            else:
                from agent.s3 import list_s3_keys

                out.extend(list_s3_keys(entry if entry.endswith("/") else entry + "/", SUFFIXES))
            continue
        if any(ch in entry for ch in "*?["):
            out.extend(sorted(p for p in glob.glob(entry) if p.endswith(SUFFIXES) and os.path.isfile(p)))
            continue
        path = Path(entry)
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.iterdir()) if p.is_file() and p.suffix in SUFFIXES)
        else:
            out.append(entry)
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]


def read_sources(files: Iterable[str]) -> list[tuple[str, str]]:
    from agent.config import read_text

    sources, errors = [], []
    for name in files:
        try:
            sources.append((name, read_text(name)))
        except ConfigError as exc:
            errors.append(RuleError(name, 0, "", exc.reason))
    if errors:
        raise RuleSetError(errors)
    return sources


def load_values(files: Iterable[str], env: Mapping[str, str] | None = None) -> Values | None:
    values: Values | None = None
    for name, text in read_sources(files):
        parsed = parse_values(text, name, env)
        if values is None:
            values = parsed
        else:
            values.merge(parsed)
    return values


def load_rule_set(entries: Iterable[str] | None, values_files: Iterable[str] = (), default_interval: float = 15.0,
                  env: Mapping[str, str] | None = None) -> RuleSet:
    """Read and validate everything; raises RuleSetError listing every problem found."""
    files = expand(entries, env)
    values = load_values(values_files, env)
    return build_rule_set(read_sources(files), values, env, default_interval)

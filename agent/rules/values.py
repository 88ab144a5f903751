"""Values files: partial rules keyed by alert name, merged over the shipped rule files, so
a threshold changes without copying the file (schema.py applies them while it reads)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.configtypes import ConfigError, interpolate
from agent.rules.model import RULE_KEYS, RuleError, RuleSetError
from agent.rules.yamlines import Path, YamlError
from agent.rules.yamlines import load as load_yaml


@dataclass
class Values:
    """Partial rules keyed by alert name (or `group/alert`), merged over loaded rules."""

    rules: dict[str, tuple[dict[str, Any], dict[Path, int], str]] = field(default_factory=dict)
    groups: dict[str, tuple[dict[str, Any], dict[Path, int], str]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    def merge(self, other: Values) -> None:
        for name, entry in other.rules.items():
            if name in self.rules:
                merged = deep_merge(self.rules[name][0], entry[0])
                self.rules[name] = (merged, entry[1], entry[2])
            else:
                self.rules[name] = entry
        self.groups.update(other.groups)

    def unused(self) -> list[RuleError]:
        errors = []
        for name, (_, lines, file) in {**self.rules, **self.groups}.items():
            if name not in self.used:
                kind = "group" if name in self.groups else "rule"
                errors.append(RuleError(file, lines.get((name,), 0), name,
                                        f"values for unknown {kind} {name!r} (no loaded rule file has it)"))
        return errors



def parse_values(text: str, file: str, env: Mapping[str, str] | None = None) -> Values:
    try:
        data, lines = load_yaml(text)
    except YamlError as exc:
        raise RuleSetError([RuleError(file, exc.line, "", exc.message)]) from None
    data = data or {}
    errors: list[RuleError] = []
    values = Values()
    if not isinstance(data, dict):
        raise RuleSetError([RuleError(file, 1, "", "a values file is a mapping with `rules:` and/or `groups:`")])
    for key in data:
        if key not in ("rules", "groups"):
            errors.append(RuleError(file, lines.get((key,), 1), str(key), "unknown key; expected rules, groups"))
    try:
        data = interpolate(data, env)
    except ConfigError as exc:
        raise RuleSetError([RuleError(file, 1, exc.key_path, exc.reason)]) from None
    for section in ("rules", "groups"):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            errors.append(RuleError(file, lines.get((section,), 1), section, "expected a mapping of name -> values"))
            continue
        for name, body in entries.items():
            if not isinstance(body, dict):
                errors.append(RuleError(file, lines.get((section, name), 1), f"{section}.{name}",
                                        "expected a mapping of rule keys"))
                continue
            sub_lines = {p[2:]: ln for p, ln in lines.items() if p[:2] == (section, name)}
            sub_lines[(str(name),)] = lines.get((section, name), 1)
            allowed = RULE_KEYS if section == "rules" else ("interval", "labels")
            for key in body:
                if key not in allowed or key == "alert":
                    errors.append(RuleError(file, lines.get((section, name, key), 1), f"{section}.{name}.{key}",
                                            f"cannot be set from a values file; expected one of: "
                                            f"{', '.join(k for k in allowed if k != 'alert')}"))
            target = values.rules if section == "rules" else values.groups
            target[str(name)] = (body, sub_lines, file)
    if errors:
        raise RuleSetError(errors)
    return values



def deep_merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            out[key] = deep_merge(base.get(key), value) if key in base else value
        return out
    return top

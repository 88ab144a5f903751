"""The `rule_engine:` config section (the rule files themselves are listed in `rules:`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.configtypes import ConfigError, Duration


@dataclass
class RuleEngineConfig:
    enabled: bool = True
    # values files (local or s3://): per-alert overrides of thresholds, for, labels... merged
    # over the loaded rules, so the default pack is tuned without copying it
    values: list[str] = field(default_factory=list)
    default_interval: Duration = Duration(15)  # for groups that set no `interval`
    max_series_per_rule: int = 10000  # label sets one rule tracks; more are dropped and counted
    persist_alerts: bool = True  # keep pending/firing alerts across a restart (state backend)
    # the longest a provider rate-limit reading (x-ratelimit-remaining-*) counts as true; it
    # expires sooner at its own x-ratelimit-reset-* (agent/rules/freshness.py)
    header_max_age: Duration = Duration(60)

    def validate(self, path: str) -> None:
        if self.max_series_per_rule < 1:
            raise ConfigError(f"{path}.max_series_per_rule", "expected a positive integer")
        if self.header_max_age <= 0:
            raise ConfigError(f"{path}.header_max_age", "expected a positive duration")
        if self.default_interval < 0.05:
            raise ConfigError(f"{path}.default_interval", "expected at least 50ms")

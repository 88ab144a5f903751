"""A rule an export leaves out, and why: one record for every export (Prometheus, CloudWatch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Skipped:
    group: str
    alert: str  # with #n when a group repeats the name (as in the rule's id)
    reason: str

    @property
    def rule(self) -> str:
        """`group/alert`: the rule's id."""
        return f"{self.group}/{self.alert}"

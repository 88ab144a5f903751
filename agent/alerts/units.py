"""A value with its unit, as a person reads it in a page: "4%", "2m 15s", "$12.50", "3 requests".

Rules know what their value measures (the signal's unit, `agent/rules/signals.py`); the
alert carries it (`Alert.unit`) so every channel shows `value 4%` rather than `value 0.04`.
"""

from __future__ import annotations

import math

PLURAL_OK = ("requests", "errors", "retries", "fallbacks", "cooldowns", "tokens", "alerts", "events")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "?"
    if math.isinf(seconds):
        return "∞"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs and not days and not hours else ""]
    if total < 10 and seconds > 0 and seconds != total:
        return f"{seconds:.2g}s" if seconds < 1 else f"{seconds:.1f}s"
    return " ".join(p for p in parts if p) or "0s"


def fmt_number(value: float) -> str:
    if not math.isfinite(value):  # a non-finite value still reads as text, never breaks a body
        return "NaN" if math.isnan(value) else ("∞" if value > 0 else "-∞")
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def with_unit(value: float | None, unit: str) -> str:
    """`value` as text with its unit; "no data" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if not math.isfinite(value):  # ±inf: no unit arithmetic (round/int) can take it
        counted = unit and unit not in ("ratio", "seconds", "USD", "up", "state")
        return fmt_number(value) + (f" {unit}" if counted else "")
    if unit == "ratio":
        percent = value * 100
        return f"{percent:.0f}%" if abs(percent) >= 10 or percent == 0 else f"{percent:.2g}%"
    if unit == "seconds":
        return fmt_duration(value)
    if unit == "USD":
        return f"${value:,.2f}"
    if unit == "up":
        return "up" if value >= 1 else "down"
    if unit == "state":
        return {0: "healthy (0)", 1: "partial outage (1)", 2: "complete outage (2)"}.get(int(value), fmt_number(value))
    if not unit:
        return fmt_number(value)
    if unit in PLURAL_OK and value == 1:
        return f"1 {unit[:-1]}"
    return f"{fmt_number(value)} {unit}"

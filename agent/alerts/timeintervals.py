"""Alertmanager time intervals (`mute_time_intervals` / `active_time_intervals` of a route).

Same fields and range syntax as Alertmanager (`times`, `weekdays`, `days_of_month`,
`months`, `years`, `location`), so an interval copied from an Alertmanager config keeps
its meaning: e.g. mute warnings at night and at weekends in the on-call team's timezone.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.configtypes import ConfigError

WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}  # monday=0
MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}  # january=1
_TIME_RE = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
_RANGE_RE = re.compile(r"^(-?\w+)(?::(-?\w+))?$")  # 1:5, -3:-1, monday:friday, 2025


@dataclass
class TimeRangeConfig:
    start_time: str = ""
    end_time: str = ""


@dataclass
class TimeIntervalConfig:
    times: list[TimeRangeConfig] = field(default_factory=list)
    weekdays: list[str] = field(default_factory=list)
    days_of_month: list[str] = field(default_factory=list)
    months: list[str] = field(default_factory=list)
    years: list[str] = field(default_factory=list)
    location: str = "UTC"

    def validate(self, path: str) -> None:
        compile_interval(self, path)


@dataclass
class MuteTimeIntervalConfig:
    name: str = ""
    time_intervals: list[TimeIntervalConfig] = field(default_factory=list)

    def validate(self, path: str) -> None:
        if not self.name:
            raise ConfigError(f"{path}.name", "expected a non-empty name")


@dataclass(frozen=True)
class CompiledInterval:
    minutes: tuple[tuple[int, int], ...]  # [start, end) minutes of the day
    weekdays: tuple[tuple[int, int], ...]
    days_of_month: tuple[tuple[int, int], ...]
    months: tuple[tuple[int, int], ...]
    years: tuple[tuple[int, int], ...]
    zone: ZoneInfo

    def contains(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, self.zone)
        if self.minutes and not any(s <= local.hour * 60 + local.minute < e for s, e in self.minutes):
            return False
        if self.weekdays and not _in(local.weekday(), self.weekdays):
            return False
        if self.days_of_month:
            days_in_month = calendar.monthrange(local.year, local.month)[1]
            if not any(_day(s, days_in_month) <= local.day <= _day(e, days_in_month) for s, e in self.days_of_month):
                return False
        if self.months and not _in(local.month, self.months):
            return False
        return not (self.years and not _in(local.year, self.years))


def _in(value: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(s <= value <= e for s, e in ranges)


def _day(value: int, days_in_month: int) -> int:
    return value if value > 0 else days_in_month + 1 + value  # -1 = last day


def _ranges(items: list[str], path: str, parse_one, what: str) -> tuple[tuple[int, int], ...]:
    out = []
    for i, item in enumerate(items):
        match = _RANGE_RE.match(str(item).strip().lower())
        try:
            if not match:
                raise ValueError(item)
            start = parse_one(match.group(1))
            end = parse_one(match.group(2)) if match.group(2) else start
        except (ValueError, KeyError):
            raise ConfigError(f"{path}[{i}]", f"expected {what}, got {item!r}") from None
        out.append((start, end))
    return tuple(out)


def compile_interval(cfg: TimeIntervalConfig, path: str) -> CompiledInterval:
    minutes = []
    for i, rng in enumerate(cfg.times):
        where = f"{path}.times[{i}]"
        start, end = _minute(rng.start_time, f"{where}.start_time"), _minute(rng.end_time, f"{where}.end_time")
        if end <= start:
            raise ConfigError(where, "end_time must be after start_time")
        minutes.append((start, end))
    weekdays = _ranges(cfg.weekdays, f"{path}.weekdays", lambda s: WEEKDAYS[s],
                       "a weekday like monday or monday:friday")
    days = _ranges(cfg.days_of_month, f"{path}.days_of_month", _day_of_month, "a day like 1, -1 or 1:5")
    months = _ranges(cfg.months, f"{path}.months", _month, "a month like january, 1 or january:march")
    years = _ranges(cfg.years, f"{path}.years", _year, "a year like 2025 or 2025:2026")
    try:
        zone = ZoneInfo(cfg.location or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{path}.location", f"unknown time zone {cfg.location!r} (e.g. Europe/Berlin)") from None
    return CompiledInterval(tuple(minutes), weekdays, days, months, years, zone)


def _minute(text: str, path: str) -> int:
    match = _TIME_RE.match(str(text or "").strip())
    if not match or (int(match.group(1)) == 24 and match.group(2) != "00"):
        raise ConfigError(path, f"expected a time like 08:00 (00:00-24:00), got {text!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


def _day_of_month(text: str) -> int:
    value = int(text)
    if value == 0 or not -31 <= value <= 31:
        raise ValueError(text)
    return value


def _month(text: str) -> int:
    if text.isdigit():
        value = int(text)
        if not 1 <= value <= 12:
            raise ValueError(text)
        return value
    return MONTHS[text]


def _year(text: str) -> int:
    value = int(text)
    if value < 1970:
        raise ValueError(text)
    return value


class TimeIntervals:
    """Named intervals from the config; `active(names, ts)` = now inside any of them."""

    def __init__(self, configs: list[MuteTimeIntervalConfig]) -> None:
        self._by_name: dict[str, list[CompiledInterval]] = {}
        for i, cfg in enumerate(configs):
            compiled = [compile_interval(t, f"mute_time_intervals[{i}].time_intervals[{j}]")
                        for j, t in enumerate(cfg.time_intervals)]
            self._by_name[cfg.name] = compiled

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def active(self, names: list[str] | tuple[str, ...], ts: float) -> bool:
        for name in names:
            for interval in self._by_name.get(name, ()):
                if interval.contains(ts):
                    return True
        return False

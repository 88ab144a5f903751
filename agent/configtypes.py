"""Typed config loading: YAML dicts -> dataclasses, with errors that name the key path.

Every section of the config is a plain dataclass; `build(cls, data, path)` walks its type
hints, so adding a section is adding a dataclass, not writing a parser. Errors carry the
file, the dotted key path and what was expected, because a bad config must fail at start
with a message an operator can act on.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A config value is wrong. `str()` is `file: key.path: what was expected`."""

    def __init__(self, path: str, message: str, file: str | None = None) -> None:
        self.file = file
        self.key_path = path
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.key_path}: " if self.key_path else ""
        return f"{where}{key}{self.reason}"

    def in_file(self, file: str) -> ConfigError:
        if self.file is None:
            self.file = file
            self.args = (self._render(),)
        return self


class Secret(str):
    """A string that never shows itself in repr, logs or error messages."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def masked(self) -> str:
        return "***" if self else ""


class Duration(float):
    """Seconds; accepts 500ms, 15s, 5m, 1h, 1d, or a bare number of seconds."""


class ByteSize(int):
    """Bytes; accepts 512, 64KB, 32MB, 1GiB."""


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 1000**2,
               "mb": 1000**2, "mib": 1024**2, "mi": 1024**2, "g": 1000**3, "gb": 1000**3,
               "gib": 1024**3, "gi": 1024**3}


def parse_duration(value: Any, path: str = "") -> Duration:
    if isinstance(value, bool):
        raise ConfigError(path, f"expected a duration like 15s or 5m, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(path, f"expected a non-negative duration, got {value!r}")
        return Duration(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return Duration(float(match.group(1)) * _DURATION_UNITS[match.group(2)])
    raise ConfigError(path, f"expected a duration like 500ms, 15s, 5m, 1h or 1d, got {value!r}")


def parse_size(value: Any, path: str = "") -> ByteSize:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return ByteSize(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = (match.group(2) or "").lower()
            return ByteSize(int(float(match.group(1)) * _SIZE_UNITS[unit]))
    raise ConfigError(path, f"expected a size like 32MB or 1048576, got {value!r}")


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(value: Any, env: typing.Mapping[str, str] | None = None, path: str = "",
                used: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a parsed YAML tree.

    Done after parsing (not on the raw text) so a secret full of YAML metacharacters
    stays one string, and errors can name the key that referenced a missing variable.
    `used` collects value -> variable name of what was substituted, so an error about the
    key can say `${VAR}` instead of echoing the value (`scrub`).
    """
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: interpolate(v, env, _join(path, str(k)), used) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]", used) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            if used is not None and env[name]:
                used[env[name]] = name
            return env[name]
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")

    whole = _ENV_RE.fullmatch(value)
    if whole and whole.group(1) not in env and whole.group(2) is None:
        replace(whole)  # raises with a clear message
    return _ENV_RE.sub(replace, value)


def scrub(exc: ConfigError, used: dict[str, str]) -> ConfigError:
    """`exc` with every value that came from the environment shown as `${VAR}`: a secret put
    in a key that is not a Secret (or a typo'd key) must not be echoed by the error."""
    reason = exc.reason
    for value, name in sorted(used.items(), key=lambda item: -len(item[0])):
        if len(value) >= 4:
            reason = reason.replace(value, f"${{{name}}}")
        else:
            reason = reason.replace(repr(value), f"'${{{name}}}'")
    if reason != exc.reason:
        exc.reason = reason
        exc.args = (exc._render(),)
    return exc


def _contains_secret(tp: Any) -> bool:
    if tp is Secret or dataclasses.is_dataclass(tp):
        return True  # a section may hold secrets anywhere inside it
    return any(_contains_secret(arg) for arg in get_args(tp))


def _shown(value: Any, tp: Any) -> str:
    """How a bad value appears in an error: never the value itself where a secret may be."""
    if _contains_secret(tp) or isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    if tp is Duration:
        return "a duration (e.g. 15s)"
    if tp is ByteSize:
        return "a size (e.g. 32MB)"
    if tp is Secret:
        return "a string"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def convert(tp: Any, value: Any, path: str) -> Any:
    """Convert one YAML value to the annotated type, or raise ConfigError at `path`."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc.reason)
        expected = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise ConfigError(path, f"expected {expected}, got {_shown(value, tp)}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(path, f"expected {_type_name(tp)}, got {_shown(value, tp)}")
    if tp is Duration:
        return parse_duration(value, path)
    if tp is ByteSize:
        return parse_size(value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin in (list, tuple):
        if value is None:
            return [] if origin is list else ()
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        items = [convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        _key_tp, val_tp = get_args(tp) or (str, Any)
        return {str(k): convert(val_tp, v, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(path, f"expected a number, got {value!r}")
    if tp is Secret:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return Secret(str(value))
        raise ConfigError(path, "expected a string")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(path, f"expected a string, got {type(value).__name__}")
    raise ConfigError(path, f"unsupported config type {tp!r}")  # a bug in a section, not user error


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS_CACHE[cls] = hints
    return hints


def build(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are errors (typos must not pass)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    # a field with metadata {"config": False} is set by code (e.g. Config.source_file): never a key
    names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("config", True)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(_join(path, str(unknown[0])), f"unknown key; expected one of: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data and f.name in names:
            kwargs[f.name] = convert(hints[f.name], data[f.name], _join(path, f.name))
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path)
    return obj

"""Annotation templates: `{{ value }}`, `{{ labels.deployment }}` in a sandboxed Jinja.

Templates are compiled and test-rendered when the rule file is loaded, with every label
the alert can carry, so a typo (`labels.deploymnet`) is a validation error naming the
file and line, not a crash at 3 a.m. At run time a render error never raises: the raw
template is kept, with the error appended, and it is counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

MAX_TEMPLATE = 4000


class Value(float):
    """A float that prints short (`23.46`, not `23.456789123`), but still does arithmetic."""

    def __str__(self) -> str:
        return format_number(float(self))

    __repr__ = __str__


def format_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{value:.4f}".rstrip("0").rstrip(".")


def humanize(value: Any) -> str:
    """1234567 -> 1.235M (SI prefixes, like Prometheus' humanize)."""
    number = float(value)
    if number == 0 or math.isnan(number) or math.isinf(number):
        return format_number(number)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= factor:
            return f"{format_number(round(number / factor, 3))}{suffix}"
    for factor, suffix in ((1e-3, "m"), (1e-6, "u"), (1e-9, "n")):
        if abs(number) < factor * 1000 and abs(number) < 1:
            return f"{format_number(round(number / factor, 3))}{suffix}"
    return format_number(round(number, 4))


def humanize_percentage(value: Any) -> str:
    """0.953 -> 95.3%."""
    return f"{format_number(round(float(value) * 100, 2))}%"


def humanize_duration(value: Any) -> str:
    """3725 -> 1h 2m 5s; 0.25 -> 250ms."""
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        return format_number(seconds)
    if abs(seconds) < 1:
        return f"{format_number(round(seconds * 1000, 1))}ms"
    parts = []
    rest = round(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest or not parts:
        parts.append(f"{rest}s")
    return " ".join(parts)


def _money(value: Any) -> str:
    return f"{float(value):,.2f}"


_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_env.filters.update({
    "humanize": humanize,
    "humanize_percentage": humanize_percentage,
    "humanize_duration": humanize_duration,
    "money": _money,
})

# names a template may use besides labels/value; budget rules add theirs
BASE_CONTEXT = ("value", "labels", "threshold", "count", "rule", "over")
BUDGET_CONTEXT = ("limit", "spend", "usage", "projected", "period")


_EXPR_RE = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.S)
_NAME_RE = re.compile(r"^(?:labels\.([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))$")
_FILTER_RE = re.compile(r"^([a-z_]+)(?:\((\d+)\))?$")
_FAST_FILTERS: dict[str, Callable[..., Any]] = {"humanize": humanize, "humanize_percentage": humanize_percentage,
                                                "humanize_duration": humanize_duration, "money": _money,
                                                "round": lambda v, n=0: round(float(v), n)}


def _fast_path(source: str) -> list[Any] | None:
    """`text {{ value | round(1) }} {{ labels.x }}` as segments rendered without Jinja.

    Alert annotations are re-rendered for every active alert at every evaluation; Jinja's
    per-render context setup costs ~10 us, the segments a fraction of that. Anything beyond
    names, `labels.x` and the filters above takes the Jinja path, and so does any error, so
    the output and the error messages are Jinja's either way.
    """
    if "{%" in source or "{#" in source:
        return None
    parts: list[Any] = []
    pos = 0
    for match in _EXPR_RE.finditer(source):
        parts.append(source[pos:match.start()])
        pieces = [p.strip() for p in match.group(1).split("|")]
        name = _NAME_RE.match(pieces[0])
        if name is None:
            return None
        filters = []
        for piece in pieces[1:]:
            f = _FILTER_RE.match(piece)
            if f is None or f.group(1) not in _FAST_FILTERS:
                return None
            filters.append((_FAST_FILTERS[f.group(1)], (int(f.group(2)),) if f.group(2) else ()))
        parts.append((name.group(1), name.group(2), tuple(filters)))
        pos = match.end()
    parts.append(source[pos:])
    return parts


class Template:
    """A compiled annotation; plain strings skip Jinja entirely, simple ones take a fast path."""

    __slots__ = ("_compiled", "_fast", "source")

    def __init__(self, source: str) -> None:
        if len(source) > MAX_TEMPLATE:
            raise TemplateError(f"template longer than {MAX_TEMPLATE} characters")
        self.source = source
        dynamic = "{{" in source or "{%" in source
        self._compiled = _env.from_string(source) if dynamic else None
        self._fast = _fast_path(source) if dynamic else None

    def render(self, context: Mapping[str, Any]) -> str:
        if self._compiled is None:
            return self.source
        if self._fast is not None:
            try:
                return self._render_fast(context)
            except Exception:  # Jinja renders it again and raises its own error
                pass
        return self._compiled.render(context)

    def _render_fast(self, context: Mapping[str, Any]) -> str:
        out = []
        for part in self._fast or ():
            if isinstance(part, str):
                out.append(part)
                continue
            label, name, filters = part
            value = context["labels"][label] if label is not None else context[name]
            for fn, args in filters:
                value = fn(value, *args)
            out.append(str(value))
        return "".join(out)


def sample_context(label_names: Iterable[str], budget: bool = False) -> dict[str, Any]:
    """What validation renders a template with: every label the alert can have."""
    labels = {name: f"<{name}>" for name in label_names}
    ctx: dict[str, Any] = {"value": Value(1.5), "labels": labels, "threshold": Value(1.0), "count": 10,
                           "rule": labels.get("alertname", "rule"), "over": "5m"}
    if budget:
        ctx.update(limit=Value(100.0), spend=Value(50.0), usage=Value(0.5), projected=Value(120.0), period="month")
    return ctx


def check(source: str, label_names: Iterable[str], budget: bool = False) -> str | None:
    """None if the template compiles and renders with the alert's labels, else the reason."""
    try:
        Template(source).render(sample_context(label_names, budget))
    except TemplateError as exc:
        return f"template error: {exc.message or exc}"
    except Exception as exc:  # arithmetic on strings etc.: still the user's template
        return f"template error: {type(exc).__name__}: {exc}"
    return None

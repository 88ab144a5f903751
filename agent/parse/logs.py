"""LiteLLM proxy log lines -> events: what callbacks never show.

LiteLLM calls its logging callbacks for the first failed attempt of a request only. Later
failed retries, deployment cooldowns, "No deployments available", fallbacks and the
proxy's own crashes appear only in its logs. This module turns the few lines that matter
into `Event`s; every other line is ignored cheaply (most lines are access logs).

Input: one line of the proxy's stdout or stderr. JSON lines (`JSON_LOGS=True`, LiteLLM's
`JsonFormatter`) are the supported format; Docker `json-file` and CRI wrappers are
unwrapped, and LiteLLM's / uvicorn's plain-text formats are matched by pattern. Anything
else (the ASCII banner, stack-trace continuation lines) is counted as unparsed, never an
error.

Every message we recognise is one row of `PATTERNS` (logpatterns.py), with the LiteLLM
version it was captured from, so a new LiteLLM wording is a one-line change there. Sub-fields pulled out
of a message (deployment id, retry count, cooldown entries, ...) are in `FIELDS`.

Mapping (see the report of issue 3 for why):
- each failed attempt -> DEPLOYMENT_STATE value 1 (LiteLLM's "partial outage") for the
  deployment the router had selected, status failure + status_code. Not REQUEST: the
  callback already reported the first failed attempt, and a log line does not say which
  attempt it was; not RETRY: the first failure is not a retry.
- "LiteLLM Retried: N times" (once per request that failed after retries) -> RETRY value N.
  Retries of requests that recovered come from the callback's x-litellm-attempted-retries,
  so the two never overlap.
- cooldown debug information -> COOLDOWN, once per (deployment, cooldown start): LiteLLM
  repeats the list of active cooldowns on every refused request.
- "No deployments available ... cooldown_list=[...]" -> NO_DEPLOYMENTS, once per refused
  request; "crossed budget" -> BUDGET for the deployment.
- "Falling back to model_group" then a final failure -> FALLBACK status failure (a fallback
  that succeeded is reported by the callback's x-litellm-attempted-fallbacks, not again here).
- "Exception in ASGI application", "This looks like a bug in LiteLLM" -> PROXY_ERROR.
"""

from __future__ import annotations

import ast
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from agent.events import Event, Kind
from agent.parse.logpatterns import COOLDOWN_DEBUG, DISPATCH_CHARS, EXCEPTION_STATUS, FIELDS, PATTERNS, LogPattern

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ANSI_BYTES_RE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_NO_DEPLOYMENTS = "No deployments available for selected model"
_CROSSED_BUDGET = "crossed budget"
_PENDING_TTL = 300.0  # forget a selection / fallback with no outcome after 5 min (timeouts log no outcome)


class _Line(msgspec.Struct):
    """The fields we read from a JSON log line; everything else is skipped by the decoder."""

    message: Any = None
    log: msgspec.Raw = msgspec.Raw(b"")  # Docker json-file wrapper; decoded only when there is no message
    stacktrace: msgspec.Raw = msgspec.Raw(b"")  # decoded only for the lines that need it


_decode_line = msgspec.json.Decoder(_Line).decode


class _Pending:
    """Selections of one provider model without an outcome yet, with O(1) "how many deployments"."""

    __slots__ = ("counts", "maxlen", "queue")

    def __init__(self, maxlen: int) -> None:
        self.queue: deque[_Selection] = deque()
        self.counts: dict[str, int] = {}
        self.maxlen = maxlen

    def append(self, selection: _Selection) -> None:
        if len(self.queue) >= self.maxlen:
            self.popleft()
        self.queue.append(selection)
        self.counts[selection.deployment] = self.counts.get(selection.deployment, 0) + 1

    def popleft(self) -> _Selection:
        selection = self.queue.popleft()
        left = self.counts[selection.deployment] - 1
        if left:
            self.counts[selection.deployment] = left
        else:
            del self.counts[selection.deployment]
        return selection


@dataclass(slots=True)
class _Selection:
    deployment: str
    model_group: str
    model: str  # without the provider prefix, as in callback events
    provider: str
    api_base: str
    at: float


DeploymentLookup = Callable[[str], Any]  # id -> object with model_group/api_base/provider/model, or None


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text) if "\x1b" in text else text


def split_provider(model: str, provider: str = "") -> tuple[str, str]:
    """'openai/fake-ok' -> ('fake-ok', 'openai'); callback events carry the model without it."""
    if provider:
        prefix = provider + "/"
        return (model[len(prefix):] if model.startswith(prefix) else model), provider
    if "/" in model:
        head, rest = model.split("/", 1)
        return rest, head
    return model, ""


def error_class_of(text: str) -> str:
    head = text[:300]
    match = FIELDS["litellm_error_class"].search(head) or FIELDS["error_class"].search(head)
    return match.group(1) if match else ""


def status_of(error_class: str, default: str = "500") -> str:
    return EXCEPTION_STATUS.get(error_class, default)


def _float(text: str | None) -> float | None:
    """A number from a log line; None unless finite and of a sane size (a 1e300 or NaN in a log
    line must not become an event time or value that breaks every sink downstream)."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and -1e11 < value < 1e11 else None


_EPOCH_BOUNDS = (946684800.0, 4102444800.0)  # 2000-01-01 .. 2100-01-01, as the callback edge


class LogParser:
    """Stateful parser for one proxy's log stream (stdout and stderr may share one).

    State is small and bounded: the deployments the router selected but whose attempt has
    not logged an outcome yet (to attribute a failed attempt to its deployment), the
    cooldowns already reported, and fallbacks in flight. `parse` never raises on input.
    """

    def __init__(self, clock: Callable[[], float] = time.time, lookup: DeploymentLookup | None = None,
                 max_pending: int = 256, max_known: int = 10000) -> None:
        self.clock = clock
        self.lookup = lookup
        self.max_pending = max_pending
        self.max_known = max_known
        self._buckets: dict[str, list[tuple[LogPattern, Callable[[re.Match[str], Any], list[Event]]]]] = {}
        for pattern in PATTERNS:
            handler = getattr(self, "_on_" + pattern.name)
            self._buckets.setdefault(pattern.prefix[:DISPATCH_CHARS], []).append((pattern, handler))
        self._pending: dict[str, _Pending] = {}  # litellm model string -> selections without outcome
        self._uncertain: set[str] = set()  # models whose pending queue no longer matches the calls in flight
        self._known: OrderedDict[str, _Selection] = OrderedDict()  # deployment id -> last selection
        self._cooldowns_seen: OrderedDict[tuple[str, float], None] = OrderedDict()
        self._lists_seen: OrderedDict[str, None] = OrderedDict()
        self._fallbacks: deque[tuple[str, str, float]] = deque(maxlen=max_pending)  # (target, origin, at)
        self._last_failed_group = ""
        # counters, read by the tail source for its metrics (and by tests)
        self.lines = 0
        self.unparsed = 0
        self.matched: dict[str, int] = {}
        self.unattributed_attempts = 0
        self.fallbacks_recovered = 0

    # -- entry points ------------------------------------------------------------------
    def parse(self, line: str | bytes) -> list[Event]:
        """Events from one log line (without its newline). Bad input is counted, never raised."""
        self.lines += 1
        try:
            return self._parse(line, 0)
        except Exception:  # a parser bug must cost one line, not the stream
            self.unparsed += 1
            return []

    def parse_many(self, lines: list[bytes]) -> list[Event]:
        """`parse` for a batch, with the common case (a JSON line nobody cares about) inlined:
        one msgspec decode and one dict lookup per line."""
        out: list[Event] = []
        decode = _decode_line
        buckets = self._buckets
        decode_errors = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)
        for line in lines:
            if line[:1] == b"{":
                try:
                    record = decode(line)
                except decode_errors:
                    record = None
                if record is not None:
                    message = record.message
                    if type(message) is str:
                        if message[:DISPATCH_CHARS] in buckets:
                            try:
                                events = self._dispatch(message, record)
                            except Exception:
                                self.unparsed += 1
                                continue
                            if events:
                                out.extend(events)
                        continue
            events = self.parse(line)
            self.lines -= 1  # counted once, below
            if events:
                out.extend(events)
        self.lines += len(lines)
        return out

    # -- formats -----------------------------------------------------------------------
    def _parse(self, line: str | bytes, depth: int) -> list[Event]:
        head = line[:1]
        if head in (b"{", "{"):
            try:
                record = _decode_line(line)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                return self._plain(line)
            message = record.message
            if isinstance(message, str):
                return self._dispatch(message, record)
            log = bytes(record.log)
            if depth == 0 and log[:1] == b'"':  # Docker json-file: {"log": "<line>\n", ...}
                return self._parse(msgspec.json.decode(log).rstrip("\r\n"), 1)
            return []  # JSON, but not a log record we know: parsed, nothing to report
        return self._plain(line)

    def _plain(self, line: str | bytes) -> list[Event]:
        if isinstance(line, bytes):
            cri = FIELDS["cri"].match(line)
            if cri is not None:
                return self._parse(line[cri.end():], 1)
            if b"\x1b" in line:
                line = _ANSI_BYTES_RE.sub(b"", line)
            text = line.decode("utf-8", "replace")
        else:
            text = strip_ansi(line)
        text = text.strip()
        if not text:
            return []
        for name in ("plain_litellm", "plain_uvicorn"):
            match = FIELDS[name].match(text)
            if match is not None:
                return self._dispatch(match.group(1), None, plain=True)
        self.unparsed += 1
        return []

    def _dispatch(self, message: str, record: Any, plain: bool = False) -> list[Event]:
        bucket = self._buckets.get(message[:DISPATCH_CHARS])
        if bucket is None:
            return []
        message = strip_ansi(message)
        for pattern, handler in bucket:
            if not message.startswith(pattern.prefix):
                continue
            match = pattern.regex.match(message)
            if match is None:
                continue
            self.matched[pattern.name] = self.matched.get(pattern.name, 0) + 1
            return handler(match, record)
        return []

    # -- helpers -------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> Event:
        when = fields.pop("time", None)
        if not (when and _EPOCH_BOUNDS[0] <= when <= _EPOCH_BOUNDS[1]):
            when = self.clock()
        return Event(kind=kind, time=when, source="log", **fields)

    def _describe(self, deployment: str) -> _Selection | None:
        """What we know of a deployment id: from the router's own lines, else the catalog."""
        known = self._known.get(deployment)
        if known is not None:
            return known
        if self.lookup is not None:
            dep = self.lookup(deployment)
            if dep is not None:
                return _Selection(deployment, dep.model_group, dep.model, dep.provider, dep.api_base, 0.0)
        return None

    def _remember(self, selection: _Selection) -> None:
        self._known[selection.deployment] = selection
        self._known.move_to_end(selection.deployment)
        while len(self._known) > self.max_known:
            self._known.popitem(last=False)

    def _take_selection(self, model: str, now: float) -> tuple[_Selection | None, list[str]]:
        """The deployment a finished attempt of `model` ran on, when it is unambiguous.

        Attempt lines carry the provider model, not the deployment. The router logged
        "Selected deployment" before the call, so the selections without an outcome yet are
        the candidates; if they all name one deployment the attribution is certain,
        otherwise (concurrent calls of one model on several deployments) it is not made.
        The oldest selection is consumed either way, so the queue tracks calls in flight.
        """
        queue = self._pending.get(model)
        if queue is None or not queue.queue:
            return None, []
        while len(queue.queue) > 1 and now - queue.queue[0].at > _PENDING_TTL:
            queue.popleft()  # a call that never logged its outcome (timeouts log none)
            self._uncertain.add(model)
        several = len(queue.counts) > 1
        candidates = sorted(queue.counts) if several else []
        first = queue.popleft()
        certain = not several and model not in self._uncertain
        if several:
            # we consumed one selection without knowing which call ended: the ones left are
            # no longer known to be the calls in flight until the queue runs empty
            self._uncertain.add(model)
        if not queue.queue:
            self._uncertain.discard(model)
        return (first, []) if certain else (None, candidates or [first.deployment])

    def _cooldown_events(self, text: str | None) -> list[Event]:
        """COOLDOWN events for the entries of a cooldown debug list not reported yet."""
        if not text:
            return []
        text = text.strip()
        if text in ("", "[]", "None"):
            return []
        if text in self._lists_seen:  # LiteLLM repeats the same list on every refused request
            return []
        self._lists_seen[text] = None
        if len(self._lists_seen) > 256:
            self._lists_seen.popitem(last=False)
        entries: list[tuple[str, dict[str, Any]]] = []
        try:
            value = ast.literal_eval(text) if len(text) < 200_000 else None
            if isinstance(value, list):
                entries = [(str(e[0]), e[1]) for e in value
                           if isinstance(e, tuple) and len(e) == 2 and isinstance(e[1], dict)]
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            entries = self._cooldown_entries_by_regex(text)
        out = []
        for deployment, info in entries:
            started = _float(str(info.get("timestamp"))) if info.get("timestamp") is not None else None
            key = (deployment, round(started, 6) if started is not None else -1.0)
            if key in self._cooldowns_seen:
                continue
            self._cooldowns_seen[key] = None
            while len(self._cooldowns_seen) > 4096:
                self._cooldowns_seen.popitem(last=False)
            status = str(info.get("status_code") or "")
            exception = str(info.get("exception_received") or "")
            error_class = error_class_of(exception)
            event = self._event(Kind.COOLDOWN, time=started, start_time=started, deployment=deployment,
                                status="failure", status_code=status or status_of(error_class),
                                error_class=error_class, value=_float(str(info.get("cooldown_time"))),
                                rate_limited=status == "429")
            self._fill_deployment(event, deployment)
            event.attrs = {"cooldown_started": started}
            out.append(event)
        return out

    @staticmethod
    def _cooldown_entries_by_regex(text: str) -> list[tuple[str, dict[str, Any]]]:
        starts = list(FIELDS["cooldown_entry"].finditer(text))
        entries = []
        for i, start in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            segment = text[start.end():end]
            info: dict[str, Any] = {}
            for key, field_name in (("status_code", "cooldown_status"), ("timestamp", "cooldown_timestamp"),
                                    ("cooldown_time", "cooldown_time")):
                found = FIELDS[field_name].search(segment)
                if found:
                    info[key] = found.group(1)
            info["exception_received"] = segment[:200]
            entries.append((start.group(1), info))
        return entries

    def _fill_deployment(self, event: Event, deployment: str) -> None:
        known = self._describe(deployment)
        if known is not None:
            event.model_group = event.model_group or known.model_group
            event.requested_model = event.requested_model or known.model_group
            event.model = event.model or known.model
            event.api_provider = event.api_provider or known.provider
            event.api_base = event.api_base or known.api_base

    # -- handlers (one per PATTERNS row) -------------------------------------------------------
    def _on_selected(self, match: re.Match[str], record: Any) -> list[Event]:
        body = match.group("body")
        dep_id = FIELDS["deployment_id"].search(body)
        full_model = FIELDS["deployment_model"].search(body)
        if dep_id is None or full_model is None:
            return []
        api_base = FIELDS["deployment_api_base"].search(body)
        model, provider = split_provider(full_model.group(1))
        now = self.clock()
        selection = _Selection(dep_id.group(1), match.group("model_group"), model, provider,
                               api_base.group(1) if api_base else "", now)
        queue = self._pending.get(full_model.group(1))
        if queue is None:
            if len(self._pending) >= self.max_known:
                self._pending.clear()
            queue = self._pending[full_model.group(1)] = _Pending(self.max_pending)
        queue.append(selection)
        self._remember(selection)
        return []

    def _on_attempt(self, match: re.Match[str], record: Any) -> list[Event]:
        model = match.group("model")
        if model == "None":
            return []  # refused before a deployment was chosen: reported by the final failure line
        now = self.clock()
        selection, candidates = self._take_selection(model, now)
        if match.group("ok") is not None:
            return []  # successes reach us through the callbacks
        error = match.group("error") or ""
        error_class = error_class_of(error)
        if selection is None:
            self.unattributed_attempts += 1
            if candidates:
                groups = {self._known[c].model_group for c in candidates if c in self._known}
                if len(groups) == 1:
                    self._last_failed_group = groups.pop()
            return []
        self._last_failed_group = selection.model_group
        status_code = status_of(error_class)
        event = self._event(Kind.DEPLOYMENT_STATE, deployment=selection.deployment,
                            model_group=selection.model_group, requested_model=selection.model_group,
                            model=selection.model, api_provider=selection.provider, api_base=selection.api_base,
                            status="failure", status_code=status_code, error_class=error_class,
                            rate_limited=status_code == "429", value=1.0)
        event.error_message = error[:500]
        event.attrs = {"attempt": "failed", "call": match.group("call")}
        return [event]

    def _on_no_deployment(self, match: re.Match[str], record: Any) -> list[Event]:
        return self._cooldown_events(match.group("cooldowns"))

    def _on_final_failure(self, match: re.Match[str], record: Any) -> list[Event]:
        error, _, cooldowns = (match.group("error") or "").partition(COOLDOWN_DEBUG)
        events = self._cooldown_events(cooldowns)
        error_class = "RouterRateLimitError" if error.startswith("No deployments available") else error_class_of(error)
        status_code = status_of(error_class)
        group_match = (FIELDS["model_group"].search(error) or FIELDS["passed_model"].search(error))
        model_group = group_match.group(1) if group_match else ""
        if _NO_DEPLOYMENTS in error:
            ids = FIELDS["cooldown_list"].search(error)
            wait = FIELDS["try_again"].search(error)
            event = self._event(Kind.NO_DEPLOYMENTS, model_group=model_group, requested_model=model_group,
                                status="failure", status_code="429", error_class=error_class, rate_limited=True,
                                value=_float(wait.group(1)) if wait else None)
            event.attrs = {"cooldown_list": [s.strip().strip("'\"") for s in ids.group(1).split(",") if s.strip()]
                           if ids else []}
            events.append(event)
        elif _CROSSED_BUDGET in error:
            budget = FIELDS["budget"].search(error)
            event = self._event(Kind.BUDGET, status="failure", status_code="429", error_class=error_class)
            event.attrs = {"alert_type": "deployment_budget_exceeded"}
            if budget is not None:
                event.model_group = event.requested_model = budget.group("model_group")
                event.deployment = budget.group("deployment")
                event.model, event.api_provider = split_provider(budget.group("model"))
                event.value = _float(budget.group("spend"))
                event.attrs["budget_period"] = budget.group("period")
                self._fill_deployment(event, event.deployment)
            else:
                event.model_group = event.requested_model = model_group
            events.append(event)
        retried = FIELDS["retried"].search(error)
        if retried is not None and int(retried.group(1)) > 0:
            event = self._event(Kind.RETRY, model_group=model_group, requested_model=model_group, status="failure",
                                status_code=status_code, error_class=error_class, value=float(retried.group(1)),
                                rate_limited=status_code == "429")
            max_retries = FIELDS["max_retries"].search(error)
            if max_retries is not None:
                event.attrs = {"max_retries": int(max_retries.group(1))}
            events.append(event)
        pending = self._take_fallback()
        if pending is not None:
            target, origin = pending
            event = self._event(Kind.FALLBACK, model_group=target, requested_model=origin or model_group,
                                status="failure", status_code=status_code, error_class=error_class)
            event.attrs = {"fallback_model": target}
            events.append(event)
        return events

    def _take_fallback(self) -> tuple[str, str] | None:
        now = self.clock()
        while self._fallbacks:
            target, origin, at = self._fallbacks.popleft()
            if now - at <= _PENDING_TTL:
                return target, origin
        return None

    def _on_fallback_start(self, match: re.Match[str], record: Any) -> list[Event]:
        self._fallbacks.append((match.group("fallback_model"), self._last_failed_group, self.clock()))
        return []

    def _on_fallback_success(self, match: re.Match[str], record: Any) -> list[Event]:
        # The recovered request reaches us through the callback (x-litellm-attempted-fallbacks),
        # so a success here would count twice; it only closes the pending fallback.
        self._take_fallback()
        self.fallbacks_recovered += 1
        return []

    def _on_asgi_exception(self, match: re.Match[str], record: Any) -> list[Event]:
        raw = bytes(record.stacktrace) if record is not None else b""
        stack = msgspec.json.decode(raw) if raw[:1] == b'"' else ""
        classes = FIELDS["traceback_class"].findall(stack)
        event = self._event(Kind.PROXY_ERROR, status="failure", status_code="500",
                            error_class=classes[-1].rsplit(".", 1)[-1] if classes else "ASGIException")
        event.attrs = {"error": "asgi_exception"}
        return [event]

    def _on_litellm_bug(self, match: re.Match[str], record: Any) -> list[Event]:
        found = FIELDS["bug_exception"].search(match.string)
        event = self._event(Kind.PROXY_ERROR, status="failure", status_code="500",
                            error_class=found.group(1) if found else "LiteLLMInternalError")
        event.attrs = {"error": "litellm_bug"}
        return [event]

    def _on_startup_failed(self, match: re.Match[str], record: Any) -> list[Event]:
        event = self._event(Kind.PROXY_ERROR, status="failure", status_code="500", error_class="StartupFailed")
        event.attrs = {"error": "startup_failed"}
        return [event]

"""LiteLLM StandardLoggingPayload -> Event.

Decoding is typed with msgspec and names only the fields we read, so the ~14 KB of
`model_map_information` and message bodies in every real payload are skipped by the C
decoder instead of being built into Python objects. Each item of a batch is decoded on
its own: one malformed item is rejected with a reason, the rest of the batch goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from agent.events import Event, Kind
from agent.parse.ratelimit import reset_seconds
from agent.parse.safejson import TOO_DEEP, NotJson, split_array

HEALTH_CHECK_MARKER = "litellm-internal-health-check"
# LiteLLM's status label of an exception without an HTTP status (`str(getattr(e, "status_code", None))`)
NO_STATUS = "None"

# Numbers are checked at the edge, where one bad item can still be refused on its own:
# past this point a negative cost would make a Prometheus counter raise, and a NaN would
# poison spend counters and budget state for good. msgspec refuses inf (1e400) and the
# bounds below in C; strict decoding refuses numbers sent as strings ("NaN", "12").
Cost = Annotated[float, msgspec.Meta(ge=0, le=1e9)]  # USD per call
Tokens = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
EpochSeconds = Annotated[float, msgspec.Meta(ge=946684800, le=4102444800)]  # 2000-01-01 .. 2100-01-01
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e7)]  # a duration: not negative, under ~4 months
Millis = Annotated[float, msgspec.Meta(ge=0, le=1e10)]


class _ErrorInformation(msgspec.Struct, omit_defaults=True):
    error_code: str | int | None = None
    error_class: str | None = None
    llm_provider: str | None = None
    error_message: str | None = None
    normalized_error: str | None = None
    error_rate_limit_category: str | None = None


class _HiddenParams(msgspec.Struct):
    additional_headers: dict[str, Any] | None = None
    litellm_overhead_time_ms: Millis | None = None
    model_id: str | None = None
    api_base: str | None = None


class _Metadata(msgspec.Struct):
    user_api_key_hash: str | None = None
    user_api_key_alias: str | None = None
    user_api_key_team_id: str | None = None
    user_api_key_team_alias: str | None = None
    user_api_key_user_id: str | None = None
    user_api_key_user_email: str | None = None
    user_api_key_end_user_id: str | None = None
    user_api_key_org_id: str | None = None
    user_api_key_org_alias: str | None = None
    user_api_key_request_route: str | None = None
    requester_ip_address: str | None = None
    user_agent: str | None = None
    team_id: str | None = None
    team_alias: str | None = None
    queue_time_seconds: Seconds | None = None
    traceparent: str | None = None


class _ModelParameters(msgspec.Struct):
    # Any, not int: a client's odd value must not reject the whole payload
    max_tokens: Any = None
    max_completion_tokens: Any = None


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Response(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None


class Payload(msgspec.Struct):
    """The subset of LiteLLM's StandardLoggingPayload that gatewatch reads."""

    status: str
    startTime: EpochSeconds
    endTime: EpochSeconds
    id: str | None = None
    litellm_call_id: str | None = None
    trace_id: str | None = None
    call_type: str | None = None
    stream: bool | None = None
    cache_hit: bool | None = None
    custom_llm_provider: str | None = None
    completionStartTime: EpochSeconds | None = None
    model: str | None = None
    model_group: str | None = None
    model_id: str | None = None
    api_base: str | None = None
    metadata: _Metadata | None = None
    response_cost: Cost | None = None
    total_tokens: Tokens | None = None
    prompt_tokens: Tokens | None = None
    completion_tokens: Tokens | None = None
    request_tags: list[str] | None = None
    end_user: str | None = None
    requester_ip_address: str | None = None
    user_agent: str | None = None
    hidden_params: _HiddenParams | None = None
    model_parameters: _ModelParameters | None = None
    error_str: str | None = None
    error_information: _ErrorInformation | None = None
    messages: msgspec.Raw = msgspec.Raw(b"null")
    response: msgspec.Raw = msgspec.Raw(b"null")


_payload_decoder = msgspec.json.Decoder(Payload)
# the whole JSON array in one typed pass: no intermediate Raw items, each byte scanned once
_payload_list_decoder = msgspec.json.Decoder(list[Payload])
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_response_decoder = msgspec.json.Decoder(_Response, strict=False)
_any_decoder = msgspec.json.Decoder()


_NULL = msgspec.Raw(b"null")
_EMPTY = msgspec.Raw(b"{}")


class BodyError(ValueError):
    """The whole body is unusable (not JSON at all); answered with 400."""


@dataclass
class DecodedBatch:
    events: list[Event] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    items: int = 0

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n


def split_items(body: bytes) -> list[msgspec.Raw | bytes]:
    """Split a generic_api body into raw items: JSON array, single object, or NDJSON."""
    stripped = body.lstrip()
    if not stripped:
        raise BodyError("empty body: expected a JSON array, a JSON object or NDJSON")
    first = stripped[:1]
    if first == b"[":
        try:
            return list(_raw_list_decoder.decode(body))
        except RecursionError:  # one item nested too deep: find the items without recursing
            try:
                return list(split_array(body))
            except NotJson as exc:
                raise BodyError(str(exc)) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # a truncated or broken array: the framing itself is gone, nothing to salvage
            raise BodyError(f"body is not valid JSON: {exc}") from None
    if first == b"{":
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > 1 and all(line.lstrip()[:1] == b"{" for line in lines):
            try:
                _any_decoder.decode(body)
                return [body]  # one pretty-printed object
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                return list(lines)  # NDJSON: each line its own item
        return [body]
    raise BodyError("body is not JSON: expected a JSON array, a JSON object or NDJSON")


def decode_body(body: bytes, capture_content: bool = False) -> DecodedBatch:
    """Decode a generic_api POST body; never raises for a bad item, only for a bad body.

    The common case, a JSON array of good payloads, is decoded in one typed pass over the
    body. Only when that fails (one bad item) is the array split into raw items and each
    decoded on its own, so one bad item costs the batch a second pass, not its events.
    """
    if body[:1] == b"[":  # LiteLLM's own json_array format; anything else takes the general path
        try:
            payloads = _payload_list_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass
        else:
            batch = DecodedBatch(items=len(payloads))
            for payload in payloads:
                _convert(batch, payload, capture_content)
            return batch
    items = split_items(body)
    batch = DecodedBatch(items=len(items))
    not_json = 0
    for raw in items:
        try:
            payload = _payload_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            batch.reject(_validation_reason(exc))
            continue
        except RecursionError:
            batch.reject(TOO_DEEP)
            continue
        except (msgspec.DecodeError, UnicodeDecodeError):  # JSON text is UTF-8: a bad byte is bad JSON
            batch.reject("invalid_json")
            not_json += 1
            continue
        _convert(batch, payload, capture_content)
    if not_json and not_json == len(items) and body.lstrip()[:1] != b"[":
        # not one object or NDJSON line parses: the body is not JSON (README: 400)
        raise BodyError("body is not valid JSON: expected a JSON array, a JSON object or NDJSON")
    return batch


def _convert(batch: DecodedBatch, payload: Payload, capture_content: bool) -> None:
    try:
        batch.events.append(payload_to_event(payload, capture_content))
    except RecursionError:
        batch.reject(TOO_DEEP)
    except (ValueError, TypeError, ArithmeticError):  # a value no field can hold: that item only
        batch.reject("invalid_values")


def _validation_reason(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Expected `object`"):
        return "not_an_object"
    if "missing required field" in text:
        return "missing_field"
    if "` >= " in text or "` <= " in text or "out of range" in text:
        return "out_of_range"
    return "invalid_field"


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _status_code(info: _ErrorInformation | None, failed: bool) -> str:
    if not failed:
        return "200"
    if info is None:
        return "500"
    code = _s(info.error_code)
    if code.isdigit():
        return code
    if code == "internal_error":
        return "500"
    if code:  # a provider's string code ("rate_limit_exceeded"): the HTTP status is in normalized_error
        prefix = (info.normalized_error or "").split("_", 1)[0]
        if prefix.isdigit():
            return prefix
    # older LiteLLM (<= 1.100) leaves error_code empty on router errors: use the class
    # Otherwise the exception had no HTTP status at all (a budget's ValueError, a bare
    # Exception): LiteLLM labels those `str(None)`, and so do we (see NO_STATUS).
    return _STATUS_BY_CLASS.get(info.error_class or "", NO_STATUS)


_STATUS_BY_CLASS = {
    "RateLimitError": "429",
    "RouterRateLimitError": "429",
    "Timeout": "408",
    "BadRequestError": "400",
    "ContextWindowExceededError": "400",
    "AuthenticationError": "401",
    "PermissionDeniedError": "403",
    "NotFoundError": "404",
    "ServiceUnavailableError": "503",
}


def _is_rate_limited(status_code: str, info: _ErrorInformation | None, headers: dict[str, Any]) -> bool:
    if info is not None:
        if info.error_rate_limit_category:
            return True
        normalized = info.normalized_error or ""
        if normalized == "429_BUDGET_EXCEEDED":
            return False  # a LiteLLM budget, not provider throttling: its own signal
        if "RateLimit" in (info.error_class or ""):
            return True
    if status_code == "429":
        return True
    error_type = headers.get("x-amzn-errortype")
    return isinstance(error_type, str) and error_type.startswith("ThrottlingException")


def _num(value: Any) -> float | None:
    """A header number (LiteLLM passes them as str or int); None unless finite and >= 0."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _int(value: Any) -> int:
    number = _num(value)
    return int(number) if number is not None and number < 1e9 else 0


def payload_to_event(p: Payload, capture_content: bool = False) -> Event:
    failed = p.status != "success"
    if p.status not in ("success", "failure"):
        raise ValueError(f"unknown status {p.status!r}")
    md = p.metadata or _Metadata()
    hidden = p.hidden_params or _HiddenParams()
    headers = hidden.additional_headers or {}
    info = p.error_information
    tags = tuple(p.request_tags or ())
    health_check = md.user_api_key_alias == HEALTH_CHECK_MARKER or HEALTH_CHECK_MARKER in tags
    status_code = _status_code(info, failed)

    model = p.model or ""
    if "/" in model and p.custom_llm_provider and model.startswith(p.custom_llm_provider + "/"):
        model = model[len(p.custom_llm_provider) + 1 :]
    latency = p.endTime - p.startTime
    ttft = None
    if p.stream and p.completionStartTime and not failed:
        value = p.completionStartTime - p.startTime
        if 0 <= value <= latency:
            ttft = value

    event = Event(
        kind=Kind.REQUEST,
        time=p.endTime,
        start_time=p.startTime,
        model=model,
        model_group=p.model_group or "",
        # refused before routing (bad key, unknown model, budget): no model_group, and the
        # payload's `model` is what the client asked for, which LiteLLM labels requested_model
        requested_model=p.model_group or ((p.model or "") if failed and not p.model_id else ""),
        deployment=p.model_id or hidden.model_id or "",
        api_provider=p.custom_llm_provider or (info.llm_provider if info else "") or "",
        api_base=p.api_base or hidden.api_base or "",
        call_type=p.call_type or "",
        stream=bool(p.stream),
        cache_hit=bool(p.cache_hit),
        status="failure" if failed else "success",
        status_code=status_code,
        health_check=health_check,
        latency=latency if latency >= 0 else None,
        total_latency=latency if latency >= 0 else None,
        ttft=ttft,
        input_tokens=p.prompt_tokens or 0,  # typed int: msgspec already checked it
        output_tokens=p.completion_tokens or 0,
        total_tokens=p.total_tokens or 0,
        cost_usd=p.response_cost or 0.0,
        key_hash=md.user_api_key_hash or "",
        key_alias=md.user_api_key_alias or "",
        team=md.user_api_key_team_id or md.team_id or "",
        team_alias=md.user_api_key_team_alias or md.team_alias or "",
        user=md.user_api_key_user_id or "",
        end_user=p.end_user or md.user_api_key_end_user_id or "",
        user_email=md.user_api_key_user_email or "",
        org_id=md.user_api_key_org_id or "",
        org_alias=md.user_api_key_org_alias or "",
        client_ip=p.requester_ip_address or md.requester_ip_address or "",
        user_agent=p.user_agent or md.user_agent or "",
        route=md.user_api_key_request_route or "",
        tags=tags,
        call_id=p.litellm_call_id or p.trace_id or "",  # LiteLLM < 1.100 has only trace_id
        trace_id=p.trace_id or "",
        response_id=(p.id or "") if not failed else "",
        traceparent=md.traceparent or "",
        queue_time=md.queue_time_seconds,
    )
    params = p.model_parameters
    if params is not None:
        limit = _num(params.max_tokens if params.max_tokens is not None else params.max_completion_tokens)
        if limit is not None and 0 < limit < 1e9:
            event.max_tokens = int(limit)
    if hidden.litellm_overhead_time_ms is not None:
        event.overhead = hidden.litellm_overhead_time_ms / 1000.0
    if failed and info is not None:
        event.error_class = info.error_class or ""
        event.error_provider = info.llm_provider or ""
        event.error_code = _s(info.error_code)
        event.normalized_error = info.normalized_error or ""
        event.error_message = (info.error_message or p.error_str or "")[:1000]
    event.rate_limited = failed and _is_rate_limited(status_code, info, headers)
    if headers:
        event.retries = _int(headers.get("x-litellm-attempted-retries"))
        event.fallbacks = _int(headers.get("x-litellm-attempted-fallbacks"))
        event.remaining_requests = _num(headers.get("x_ratelimit_remaining_requests"))
        event.remaining_tokens = _num(headers.get("x_ratelimit_remaining_tokens"))
        event.limit_requests = _num(headers.get("x_ratelimit_limit_requests"))
        event.limit_tokens = _num(headers.get("x_ratelimit_limit_tokens"))
        event.reset_requests = reset_seconds(headers.get("x_ratelimit_reset_requests"), event.time)
        event.reset_tokens = reset_seconds(headers.get("x_ratelimit_reset_tokens"), event.time)
    if not failed and p.response != _NULL and p.response != _EMPTY:  # Raw == Raw: no copy of the body
        _read_response(event, p.response)
    if capture_content:
        event.input_messages = _any_decoder.decode(p.messages)
        event.output_messages = _any_decoder.decode(p.response)
    return event


def _read_response(event: Event, raw: msgspec.Raw) -> None:
    try:
        response = _response_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return  # embeddings, images...: a different shape, nothing we need from it
    event.response_model = response.model or ""
    if response.id:
        event.response_id = response.id
    if response.choices:
        event.finish_reasons = tuple(c.finish_reason for c in response.choices if c.finish_reason)

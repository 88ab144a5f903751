"""LiteLLM StandardLoggingPayload -> Event.

Decoding is typed with msgspec and names only the fields we read, so the ~14 KB of
`model_map_information` and message bodies in every real payload are skipped by the C
decoder instead of being built into Python objects. Each item of a batch is decoded on
its own: one malformed item is rejected with a reason, the rest of the batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from agent.events import Event, Kind

HEALTH_CHECK_MARKER = "litellm-internal-health-check"


class _ErrorInformation(msgspec.Struct, omit_defaults=True):
    error_code: str | int | None = None
    error_class: str | None = None
    llm_provider: str | None = None
    error_message: str | None = None
    normalized_error: str | None = None
    error_rate_limit_category: str | None = None


class _HiddenParams(msgspec.Struct):
    additional_headers: dict[str, Any] | None = None
    litellm_overhead_time_ms: float | None = None
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
    queue_time_seconds: float | None = None
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
    startTime: float
    endTime: float
    id: str | None = None
    litellm_call_id: str | None = None
    trace_id: str | None = None
    call_type: str | None = None
    stream: bool | None = None
    cache_hit: bool | None = None
    custom_llm_provider: str | None = None
    completionStartTime: float | None = None
    model: str | None = None
    model_group: str | None = None
    model_id: str | None = None
    api_base: str | None = None
    metadata: _Metadata | None = None
    response_cost: float | None = None
    total_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
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


_payload_decoder = msgspec.json.Decoder(Payload, strict=False)
# the whole JSON array in one typed pass: no intermediate Raw items, each byte scanned once
_payload_list_decoder = msgspec.json.Decoder(list[Payload], strict=False)
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
        except msgspec.DecodeError as exc:
            # a truncated or broken array: fall back to NDJSON-style salvage is not
            # possible, the framing itself is gone.
            raise BodyError(f"body is not valid JSON: {exc}") from None
    if first == b"{":
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > 1 and all(line.lstrip()[:1] == b"{" for line in lines):
            try:
                _any_decoder.decode(body)
                return [body]  # one pretty-printed object
            except msgspec.DecodeError:
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
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        else:
            batch = DecodedBatch(items=len(payloads))
            events = batch.events
            for payload in payloads:
                try:
                    events.append(payload_to_event(payload, capture_content))
                except (ValueError, TypeError):
                    batch.reject("invalid_values")
            return batch
    items = split_items(body)
    batch = DecodedBatch(items=len(items))
    for raw in items:
        try:
            payload = _payload_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            batch.reject(_validation_reason(exc))
            continue
        except msgspec.DecodeError:
            batch.reject("invalid_json")
            continue
        try:
            batch.events.append(payload_to_event(payload, capture_content))
        except (ValueError, TypeError):
            batch.reject("invalid_values")
    return batch


def _validation_reason(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Expected `object`"):
        return "not_an_object"
    if "missing required field" in text:
        return "missing_field"
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
    normalized = info.normalized_error or ""
    prefix = normalized.split("_", 1)[0]
    if prefix.isdigit():
        return prefix
    # older LiteLLM (<= 1.100) leaves error_code empty on router errors: use the class
    return _STATUS_BY_CLASS.get(info.error_class or "", "500")


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
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int:
    number = _num(value)
    return int(number) if number is not None else 0


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
        requested_model=p.model_group or "",
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
    if not failed and p.response != _NULL and p.response != _EMPTY:  # Raw == Raw: no copy of the body
        _read_response(event, p.response)
    if capture_content:
        event.input_messages = _any_decoder.decode(p.messages)
        event.output_messages = _any_decoder.decode(p.response)
    return event


def _read_response(event: Event, raw: msgspec.Raw) -> None:
    try:
        response = _response_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return  # embeddings, images...: a different shape, nothing we need from it
    event.response_model = response.model or ""
    if response.id:
        event.response_id = response.id
    if response.choices:
        event.finish_reasons = tuple(c.finish_reason for c in response.choices if c.finish_reason)

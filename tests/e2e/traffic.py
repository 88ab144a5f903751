"""Traffic through the openai SDK, and what the client saw for each call.

The client is the third witness next to LiteLLM's /metrics and gatewatch's: every call is
recorded with the model asked for, the HTTP status, and for answers LiteLLM's own response
headers (deployment, cost, retries, fallbacks) and the usage the SDK parsed.
SDK retries are off (`max_retries=0`) so one call is exactly one proxy request.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

CALL_TAG = "e2e call #"


@dataclass
class Call:
    seq: int  # tags the prompt ("e2e call <seq>"), so the upstream's log names the call of each attempt
    scenario: str
    model: str
    stream: bool
    status: int
    elapsed: float
    deployment: str = ""  # x-litellm-model-id (answers only)
    model_group: str = ""  # x-litellm-model-group: differs from `model` after a fallback
    cost: float = 0.0  # x-litellm-response-cost
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    retries: int = 0  # x-litellm-attempted-retries
    fallbacks: int = 0  # x-litellm-attempted-fallbacks
    error_type: str = ""
    error_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "None") else 0.0
    except ValueError:
        return 0.0


def _int(value: str | None) -> int:
    return int(_float(value))


class Driver:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
        self.calls: list[Call] = []
        self._seq = 0
        self._lock = threading.Lock()

    def chat(self, scenario: str, model: str, stream: bool = False, api_key: str | None = None) -> Call:
        """One call; `api_key` replaces the driver's key for it (a refused key)."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        messages = [{"role": "user", "content": f"hello from the e2e suite, {CALL_TAG}{seq}."}]
        started = time.monotonic()
        client = self.client if api_key is None else self.client.with_options(api_key=api_key)
        try:
            if stream:
                call = self._stream(seq, scenario, model, messages, started)
            else:
                raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
                completion = raw.parse()
                call = self._answer(seq, scenario, model, False, raw.headers, started)
                if completion.usage is not None:
                    call.input_tokens = completion.usage.prompt_tokens or 0
                    call.output_tokens = completion.usage.completion_tokens or 0
                    call.total_tokens = completion.usage.total_tokens or 0
        except openai.APIStatusError as exc:
            call = Call(seq, scenario, model, stream, exc.status_code, time.monotonic() - started,
                        error_type=type(exc).__name__, error_message=str(exc)[:500],
                        headers=dict(exc.response.headers))
        with self._lock:
            self.calls.append(call)
        return call

    def _stream(self, seq: int, scenario: str, model: str, messages: list[dict[str, Any]], started: float) -> Call:
        raw = self.client.chat.completions.with_raw_response.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True})
        usage = None
        for chunk in raw.parse():
            if chunk.usage is not None:
                usage = chunk.usage
        call = self._answer(seq, scenario, model, True, raw.headers, started)
        if usage is not None:
            call.input_tokens = usage.prompt_tokens or 0
            call.output_tokens = usage.completion_tokens or 0
            call.total_tokens = usage.total_tokens or 0
        return call

    @staticmethod
    def _answer(seq: int, scenario: str, model: str, stream: bool, headers: Any, started: float) -> Call:
        return Call(
            seq, scenario, model, stream, 200, time.monotonic() - started,
            deployment=headers.get("x-litellm-model-id", ""),
            model_group=headers.get("x-litellm-model-group", ""),
            cost=_float(headers.get("x-litellm-response-cost")),
            retries=_int(headers.get("x-litellm-attempted-retries")),
            fallbacks=_int(headers.get("x-litellm-attempted-fallbacks")),
            headers={k: v for k, v in headers.items() if k.startswith("x-litellm-")},
        )

    # -- what the client saw, summed ----------------------------------------------------
    def requests_by(self, *keys: str) -> Counter[tuple]:
        return Counter(tuple(str(getattr(c, k)) for k in keys) for c in self.calls)

    def sum_by(self, attr: str, *keys: str) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for call in self.calls:
            if call.ok:
                key = tuple(str(getattr(call, k)) for k in keys)
                out[key] = out.get(key, 0.0) + float(getattr(call, attr))
        return out


def upstream_attempts(log_path: Path) -> Counter[int]:
    """Attempts the fake upstream served per call (its request log names the call in the prompt)."""
    pattern = re.compile(re.escape(CALL_TAG) + r"(\d+)")
    attempts: Counter[int] = Counter()
    with open(log_path, encoding="utf-8") as log:
        for line in log:
            match = pattern.search(line)
            if match:
                attempts[int(match.group(1))] += 1
    return attempts

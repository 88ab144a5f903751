"""Opt-in prompt/completion capture in the GenAI conventions' message shape.

Only used when `otel.capture_content: true` (the parser does not even decode messages
otherwise). OpenAI-style chat messages from the LiteLLM payload become
`gen_ai.input.messages` / `gen_ai.output.messages` JSON strings:
`[{"role": ..., "parts": [{"type": "text", "content": ...}, ...]}, ...]`, with tool calls
and tool results as `tool_call` / `tool_call_response` parts and the output's
`finish_reason`. Each attribute is capped in bytes: the longest text is shortened first,
so the JSON stays valid and the message structure survives.
"""

from __future__ import annotations

import json
from typing import Any

TRUNCATED = "…[truncated]"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_part(content)] if content else []
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for item in content:
            if isinstance(item, str):
                parts.append(_text_part(item))
            elif isinstance(item, dict):
                kind = item.get("type")
                if kind in ("text", "input_text", "output_text") and isinstance(item.get("text"), str):
                    parts.append(_text_part(item["text"]))
                elif kind == "image_url":
                    url = item.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if isinstance(url, str) and not url.startswith("data:"):
                        parts.append({"type": "uri", "modality": "image", "uri": url})
                    else:  # inline data: record that it was there, never the bytes
                        parts.append({"type": "blob", "modality": "image"})
                elif kind:
                    parts.append({"type": str(kind)})
        return parts
    return [_text_part(json.dumps(content, default=str))]


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if not isinstance(calls, list):
        return parts
    for call in calls:
        if not isinstance(call, dict):
            continue
        function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        arguments: Any = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        part: dict[str, Any] = {"type": "tool_call", "name": function.get("name") or ""}
        if call.get("id"):
            part["id"] = call["id"]
        if arguments is not None:
            part["arguments"] = arguments
        parts.append(part)
    return parts


def _message(message: Any) -> dict[str, Any] | None:
    if isinstance(message, str):
        return {"role": "user", "parts": [_text_part(message)]}
    if not isinstance(message, dict):
        return None
    role = str(message.get("role") or "user")
    if role == "tool":
        response = message.get("content")
        part: dict[str, Any] = {"type": "tool_call_response", "response": response}
        if message.get("tool_call_id"):
            part["id"] = message["tool_call_id"]
        return {"role": "tool", "parts": [part]}
    parts = _parts(message.get("content")) + _tool_calls(message.get("tool_calls"))
    return {"role": role, "parts": parts}


def input_messages(messages: Any) -> list[dict[str, Any]]:
    """LiteLLM's `messages` (a chat list, or a prompt string for text completion)."""
    if messages is None:
        return []
    if isinstance(messages, (str, dict)):
        messages = [messages]
    if not isinstance(messages, list):
        return []
    return [m for m in (_message(item) for item in messages) if m is not None]


def output_messages(response: Any) -> list[dict[str, Any]]:
    """LiteLLM's `response`: chat choices (message) or text-completion choices (text)."""
    if not isinstance(response, dict):
        return []
    choices = response.get("choices")
    if not isinstance(choices, list):
        return []
    out: list[dict[str, Any]] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            converted = _message({**message, "role": message.get("role") or "assistant"}) or {"parts": []}
        elif isinstance(choice.get("text"), str):
            converted = {"role": "assistant", "parts": [_text_part(choice["text"])]}
        else:
            continue
        converted["finish_reason"] = choice.get("finish_reason") or ""
        out.append(converted)
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _longest_text(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    best_len = 0
    for message in messages:
        for part in message.get("parts", ()):
            text = part.get("content")
            if isinstance(text, str) and len(text) > best_len:
                best, best_len = part, len(text)
    return best


def capped_json(messages: list[dict[str, Any]], max_bytes: int) -> tuple[str, bool]:
    """JSON of `messages` within `max_bytes` (UTF-8), and whether anything was cut."""
    text = _dumps(messages)
    if len(text.encode("utf-8")) <= max_bytes:
        return text, False
    for _ in range(64):  # halve the longest text until it fits
        part = _longest_text(messages)
        if part is None or len(part["content"]) <= len(TRUNCATED):
            break
        content = part["content"]
        excess = len(text.encode("utf-8")) - max_bytes
        keep = max(0, min(len(content) // 2, len(content) - excess - len(TRUNCATED)))
        part["content"] = content[:keep] + TRUNCATED
        text = _dumps(messages)
        if len(text.encode("utf-8")) <= max_bytes:
            return text, True
    while messages and len(text.encode("utf-8")) > max_bytes:  # still too big: drop the oldest messages
        messages = messages[1:]
        text = _dumps(messages)
    return text, True


def content_attributes(input_value: Any, output_value: Any, max_bytes: int) -> list[tuple[str, str | bool]]:
    attrs: list[tuple[str, str | bool]] = []
    truncated = False
    inputs = input_messages(input_value)
    if inputs:
        text, cut = capped_json(inputs, max_bytes)
        attrs.append(("gen_ai.input.messages", text))
        truncated = truncated or cut
    outputs = output_messages(output_value)
    if outputs:
        text, cut = capped_json(outputs, max_bytes)
        attrs.append(("gen_ai.output.messages", text))
        truncated = truncated or cut
    if truncated:
        attrs.append(("gatewatch.content_truncated", True))
    return attrs

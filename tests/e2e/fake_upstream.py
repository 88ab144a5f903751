#!/usr/bin/env python3
"""Fake OpenAI-compatible (and minimal Bedrock Converse) upstream for the e2e suite.

Adapted from the lab that produced tests/fixtures/litellm (same behaviour, so the e2e
run and the captures agree); changes: ports always come from the harness, GET /_control
also reports per-mode counts, and the server stops cleanly on SIGTERM.

Listens on one or more loopback ports. Each port is an independent "deployment"
(think: one AWS account / region). Behaviour of a request is chosen, first match wins:

  1. request content: a message containing  "#mode=<mode>"  (e.g. "#mode=429")
  2. per-port override set at runtime:  POST /_control {"mode": "500"}  (or {"mode": null} to clear)
  3. the upstream model name: "fake-ok", "fake-slow", "fake-500", "fake-429", "fake-400",
     "fake-hang"  (anything else -> ok). For bedrock the modelId is matched by substring.

Modes:
  ok       200 with usage tokens (+ x-ratelimit-* headers)
  slow     like ok but sleeps SLOW_SECONDS first (default 2.0; "#mode=slow:3.5" overrides)
           (the ":<number>" suffix works for content and for /_control, e.g. {"mode": "429:30"})
  500      HTTP 500 OpenAI-style error body
  429      HTTP 429 + retry-after (1 s, or "429:<s>"), x-ratelimit-remaining-requests/tokens = 0
  400      HTTP 400 context_length_exceeded style error
  hang     sleeps 60 s (to trigger LiteLLM timeouts)

Streaming (stream=true) is supported for OpenAI chat completions (SSE), including a final
usage chunk when stream_options.include_usage is true.

Every request is appended as one JSON line to --log (default: stdout) so you can see what
LiteLLM actually sent upstream (headers, body, port).

Usage:
  python fake_upstream.py --ports 18001,18002,18003 [--log upstream_requests.jsonl]
Only binds 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
import uuid

from aiohttp import web

SLOW_SECONDS = 2.0
MODE_RE = re.compile(r"#mode=([a-z0-9]+)(?::([0-9.]+))?")
MODEL_MODES = {
    "fake-slow": "slow",
    "fake-500": "500",
    "fake-429": "429",
    "fake-400": "400",
    "fake-hang": "hang",
    "fake-ok": "ok",
}

PORT_OVERRIDES: dict[int, str | None] = {}
COUNTERS: dict[int, int] = {}
MODE_COUNTS: dict[int, dict[str, int]] = {}
LOG_FH = None


def _log(entry: dict) -> None:
    line = json.dumps(entry, default=str)
    if LOG_FH is None:
        print(line, flush=True)
    else:
        LOG_FH.write(line + "\n")
        LOG_FH.flush()


def _count_mode(port: int, mode: str) -> None:
    per_port = MODE_COUNTS.setdefault(port, {})
    per_port[mode] = per_port.get(mode, 0) + 1


def _text_of(body: dict) -> str:
    parts: list[str] = []
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict):
                    parts.append(str(p.get("text", "")))
    if isinstance(body.get("prompt"), str):
        parts.append(body["prompt"])
    return "\n".join(parts)


def choose_mode(port: int, model: str, text: str) -> tuple[str, float]:
    m = MODE_RE.search(text or "")
    if m:
        return m.group(1), float(m.group(2)) if m.group(2) else SLOW_SECONDS
    if PORT_OVERRIDES.get(port):
        mode, _, arg = str(PORT_OVERRIDES[port]).partition(":")
        return mode, float(arg) if arg else SLOW_SECONDS
    for key, mode in MODEL_MODES.items():
        if key in (model or ""):
            return mode, SLOW_SECONDS
    return "ok", SLOW_SECONDS


def _rl_headers(remaining_req: int, remaining_tok: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-limit-tokens": "100000",
        "x-ratelimit-remaining-requests": str(remaining_req),
        "x-ratelimit-remaining-tokens": str(remaining_tok),
        "x-ratelimit-reset-requests": "1s" if remaining_req else "20s",
        "x-ratelimit-reset-tokens": "6ms" if remaining_tok else "20s",
    }


def _openai_error(status: int, message: str, etype: str, code: str | None,
                  retry_after: float = 1.0) -> web.Response:
    headers = {"x-request-id": f"req_{uuid.uuid4().hex[:16]}"}
    if status == 429:
        headers.update(_rl_headers(0, 0))
        headers["retry-after"] = str(int(retry_after))
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    return web.json_response(
        {"error": {"message": message, "type": etype, "param": None, "code": code}},
        status=status,
        headers=headers,
    )


async def _apply_failure_mode(mode: str, delay: float) -> web.Response | None:
    if mode == "slow":
        await asyncio.sleep(delay)
        return None
    if mode == "hang":
        await asyncio.sleep(60)
        return None
    if mode == "500":
        return _openai_error(500, "The server had an error while processing your request. (fake upstream)",
                             "server_error", "internal_error")
    if mode == "429":
        ra = delay if delay != SLOW_SECONDS else 1.0
        return _openai_error(429, f"Rate limit reached for requests (fake upstream). Please try again in {ra:g}s.",
                             "requests", "rate_limit_exceeded", retry_after=ra)
    if mode == "400":
        return _openai_error(400, "This model's maximum context length is 8192 tokens. (fake upstream)",
                             "invalid_request_error", "context_length_exceeded")
    return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    port = request.transport.get_extra_info("sockname")[1]
    COUNTERS[port] = COUNTERS.get(port, 0) + 1
    raw = await request.read()
    try:
        body = json.loads(raw or b"{}")
    except Exception:
        body = {"_raw": raw.decode("utf-8", "replace")}
    model = body.get("model", "")
    text = _text_of(body)
    mode, delay = choose_mode(port, model, text)
    _count_mode(port, mode)
    _log({"ts": time.time(), "port": port, "path": request.path, "mode": mode,
          "headers": {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
          "has_authorization": "Authorization" in request.headers, "body": body})

    err = await _apply_failure_mode(mode, delay)
    if err is not None:
        return err

    prompt_tokens = max(1, len(text.split())) + 7
    completion_tokens = 12
    content = f"Hello from fake upstream on port {port} (mode={mode}, model={model})."
    cid = f"chatcmpl-fake{uuid.uuid4().hex[:20]}"
    created = int(time.time())
    headers = {"x-request-id": f"req_{uuid.uuid4().hex[:16]}", **_rl_headers(999 - COUNTERS[port] % 999, 99000)}

    if body.get("stream"):
        resp = web.StreamResponse(status=200, headers={**headers, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = content.split(" ")
        first = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        await resp.write(f"data: {json.dumps(first)}\n\n".encode())
        for i, w in enumerate(words):
            await asyncio.sleep(0.02)
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": {"content": (w if i == 0 else " " + w)},
                                  "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(last)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                              "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}
            await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return web.json_response(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        },
        headers=headers,
    )


def _amzn_error(name: str) -> str:
    return f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"


async def bedrock_converse(request: web.Request) -> web.StreamResponse:
    """Minimal Bedrock Converse API: POST /model/{modelId}/converse"""
    port = request.transport.get_extra_info("sockname")[1]
    model_id = request.match_info["model_id"]
    raw = await request.read()
    try:
        body = json.loads(raw or b"{}")
    except Exception:
        body = {"_raw": raw.decode("utf-8", "replace")}
    text = "\n".join(
        str(c.get("text", "")) for m in body.get("messages", []) for c in (m.get("content") or [])
        if isinstance(c, dict)
    )
    mode, delay = choose_mode(port, model_id, text)
    _count_mode(port, mode)
    _log({"ts": time.time(), "port": port, "path": request.path, "mode": mode,
          "headers": {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
          "has_authorization": "Authorization" in request.headers, "body": body})
    rid = str(uuid.uuid4())
    if mode in ("slow", "hang"):
        await asyncio.sleep(delay if mode == "slow" else 60)
    elif mode == "429":
        return web.json_response({"message": "Too many requests, please wait before trying again."},
                                 status=429, headers={"x-amzn-errortype": _amzn_error("ThrottlingException"),
                                                      "x-amzn-requestid": rid})
    elif mode == "500":
        return web.json_response({"message": "The server encountered an error processing your request."},
                                 status=500, headers={"x-amzn-errortype": _amzn_error("InternalServerException"),
                                                      "x-amzn-requestid": rid})
    elif mode == "400":
        return web.json_response({"message": "Input is too long for requested model."},
                                 status=400, headers={"x-amzn-errortype": _amzn_error("ValidationException"),
                                                      "x-amzn-requestid": rid})
    in_tok = max(1, len(text.split())) + 9
    return web.json_response(
        {
            "output": {"message": {"role": "assistant",
                                   "content": [{"text": f"Hello from fake bedrock on port {port} ({model_id})."}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": in_tok, "outputTokens": 11, "totalTokens": in_tok + 11},
            "metrics": {"latencyMs": 42},
        },
        headers={"x-amzn-requestid": rid},
    )


async def fake_sts(request: web.Request) -> web.Response:
    """Very small fake of STS AssumeRole / AssumeRoleWithWebIdentity (query or form encoded)."""
    port = request.transport.get_extra_info("sockname")[1]
    form = dict(await request.post()) if request.can_read_body else {}
    form.update(dict(request.query))
    _log({"ts": time.time(), "port": port, "path": request.path, "mode": "sts", "body": form})
    action = form.get("Action", "AssumeRole")
    exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    xml = f"""<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    <Credentials>
      <AccessKeyId>ASIAFAKEFAKEFAKEFAKE</AccessKeyId>
      <SecretAccessKey>fakeSecretAccessKeyfakeSecretAccessKey00</SecretAccessKey>
      <SessionToken>FakeSessionToken</SessionToken>
      <Expiration>{exp}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROAFAKE:{form.get('RoleSessionName', 'lab')}</AssumedRoleId>
      <Arn>{form.get('RoleArn', 'arn:aws:iam::000000000000:role/fake')}</Arn>
    </AssumedRoleUser>
  </{action}Result>
  <ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>
</{action}Response>"""
    return web.Response(text=xml, content_type="text/xml")


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [
        {"id": k, "object": "model", "created": 0, "owned_by": "fake"} for k in MODEL_MODES]})


async def control(request: web.Request) -> web.Response:
    port = request.transport.get_extra_info("sockname")[1]
    if request.method == "POST":
        data = await request.json()
        PORT_OVERRIDES[port] = data.get("mode")
    return web.json_response({"port": port, "mode": PORT_OVERRIDES.get(port), "requests": COUNTERS.get(port, 0),
                              "modes": MODE_COUNTS.get(port, {})})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/model/{model_id}/converse", bedrock_converse)
    app.router.add_route("*", "/sts", fake_sts)
    app.router.add_route("*", "/sts/", fake_sts)
    app.router.add_route("*", "/_control", control)
    app.router.add_get("/_health", lambda r: web.json_response({"ok": True}))
    return app


async def serve(ports: list[int]) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    for p in ports:
        await web.TCPSite(runner, "127.0.0.1", p).start()
        print(f"fake upstream listening on 127.0.0.1:{p}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    global LOG_FH, SLOW_SECONDS
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True, help="comma-separated loopback ports, one per fake deployment")
    ap.add_argument("--log", default=None)
    ap.add_argument("--slow-seconds", type=float, default=2.0)
    args = ap.parse_args()
    SLOW_SECONDS = args.slow_seconds
    if args.log:
        LOG_FH = open(args.log, "a", encoding="utf-8")  # kept open for the life of the process
    asyncio.run(serve([int(x) for x in args.ports.split(",") if x]))


if __name__ == "__main__":
    main()

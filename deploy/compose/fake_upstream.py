#!/usr/bin/env python3
"""A tiny OpenAI-compatible upstream for the local stack: stdlib only, so it runs in a
plain python image. Each listening port plays one "deployment" (account/region).

A request's behaviour comes from its last message: "#mode=500", "#mode=429", "#mode=slow"
(2 s), else a normal answer with token usage. GET /health answers 200.

    python fake_upstream.py --host 0.0.0.0 --ports 18001,18002
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-upstream/1"

    def log_message(self, fmt: str, *args: object) -> None:  # quiet: LiteLLM's logs are the interesting ones
        return

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"status": "ok"}) if self.path.rstrip("/").endswith("health") else self._send(404, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        messages = request.get("messages") or [{}]
        text = str(messages[-1].get("content", ""))
        if "#mode=500" in text:
            self._send(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
            return
        if "#mode=429" in text:
            self._send(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
                       {"retry-after": "1", "x-ratelimit-remaining-requests": "0"})
            return
        if "#mode=slow" in text:
            time.sleep(2.0)
        prompt_tokens = max(1, sum(len(str(m.get("content", "")).split()) for m in messages))
        completion_tokens = 7
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok from the fake upstream"}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, {"x-ratelimit-remaining-requests": "999", "x-ratelimit-remaining-tokens": "99999"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", default="18001")
    args = parser.parse_args()
    servers = [ThreadingHTTPServer((args.host, int(port)), Handler) for port in args.ports.split(",")]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"fake upstream on {args.host}:{args.ports}", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()

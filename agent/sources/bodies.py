"""Reading a request body without letting a slow or broken client hold the sidecar.

Without a deadline, 150 clients sending a body a byte at a time held 150 connections
(and their buffers) for minutes. Each body read here has `server.body_read_timeout` to
finish (408 after), and at most `server.max_inflight_bodies` are read at once (503 past
it, answered at once so LiteLLM's own POST does not wait behind them). A
`Content-Encoding` the body does not match (gzip on a plain body) is the sender's fault:
400, not 500. Too large stays aiohttp's 413 (`server.max_body_bytes`).
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError


def _json_error(cls: type[web.HTTPException], message: str,
                headers: dict[str, str] | None = None) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


class BodyReader:
    """Shared by the ingest routes: one deadline per body and a cap on bodies being read."""

    def __init__(self, timeout: float, max_inflight: int) -> None:
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.inflight = 0
        self.refused: dict[str, int] = {"timeout": 0, "busy": 0, "bad_encoding": 0}

    async def read(self, request: web.Request) -> bytes:
        """The body, or an HTTPException with a JSON error (408, 503, 400, 413)."""
        if self.inflight >= self.max_inflight:
            self.refused["busy"] += 1
            raise _json_error(web.HTTPServiceUnavailable,
                              f"too many request bodies in flight (server.max_inflight_bodies="
                              f"{self.max_inflight}); retry later", headers={"Retry-After": "1"})
        self.inflight += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await request.read()
        except TimeoutError:
            self.refused["timeout"] += 1
            raise _json_error(web.HTTPRequestTimeout,
                              f"request body not received within {self.timeout:g}s "
                              "(server.body_read_timeout)") from None
        except (HttpProcessingError, RequestPayloadError):  # gzip on a body that is not gzip
            self.refused["bad_encoding"] += 1
            raise _json_error(web.HTTPBadRequest,
                              "cannot decode the body as its Content-Encoding "
                              f"({request.headers.get('Content-Encoding', 'identity')}) says") from None
        finally:
            self.inflight -= 1

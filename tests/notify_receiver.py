"""A webhook receiver as a separate process, for the notification fault tests.

python -m tests.notify_receiver PORT

Records every POST (path, the gatewatch headers, JSON body, the status it answered) and
misbehaves on request:

  POST /_control {"mode": "ok" | "status" | "hang", "status": 500, "count": 2, "retry_after": "3"}
      `count` requests get the fault, then it answers 200 again (count -1 = until told otherwise);
      optional "paths": [...] limits the fault to those paths
  GET  /_received -> every recorded request, in order
  POST /_reset    -> forget recordings, mode ok

Prints "READY" once listening.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web

HEADERS = ("X-Gatewatch-Notification-Id", "X-Gatewatch-Signature", "Idempotency-Key", "Content-Type", "User-Agent",
           "Authorization", "X-Team")


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.mode: dict[str, Any] = {"mode": "ok"}
        self.left = 0

    async def control(self, request: web.Request) -> web.Response:
        self.mode = await request.json()
        self.left = int(self.mode.get("count", -1))
        return web.json_response({"ok": True})

    async def reset(self, request: web.Request) -> web.Response:
        self.received.clear()
        self.mode, self.left = {"mode": "ok"}, 0
        return web.json_response({"ok": True})

    async def get_received(self, request: web.Request) -> web.Response:
        return web.json_response(self.received)

    def _fault(self, path: str) -> dict[str, Any] | None:
        if self.mode.get("mode", "ok") == "ok" or self.left == 0:
            return None
        if self.mode.get("paths") and path not in self.mode["paths"]:
            return None
        if self.left > 0:
            self.left -= 1
        return self.mode

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        record = {"path": request.path, "query": dict(request.query), "at": time.time(),
                  "headers": {h: request.headers[h] for h in HEADERS if h in request.headers},
                  "body": body, "raw": raw.decode(errors="replace")}
        fault = self._fault(request.path)
        if fault is not None and fault["mode"] == "hang":
            record["answered"] = "hang"
            self.received.append(record)
            await asyncio.sleep(float(fault.get("hang_seconds", 3600)))
            return web.Response(status=504)
        if fault is not None and fault["mode"] == "status":
            status = int(fault.get("status", 500))
            record["answered"] = status
            self.received.append(record)
            headers = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") is not None else {}
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        record["answered"] = 200
        self.received.append(record)
        return web.json_response({"ok": True})


async def serve(port: int) -> None:
    receiver = Receiver()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/_control", receiver.control)
    app.router.add_post("/_reset", receiver.reset)
    app.router.add_get("/_received", receiver.get_received)
    app.router.add_route("*", "/{tail:.*}", receiver.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))

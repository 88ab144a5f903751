"""Issue 19 H: slow clients cannot hold the sidecar, and /metrics is gzip-encoded on request."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import aiohttp

from tests.promtext import samples, total
from tests.test_bad_input_ingest import good_items, metrics, post


async def slow_post(port: int, declared: int = 100_000) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST that sends its headers and a few bytes of a body it never finishes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST /v1/litellm/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {declared}\r\n\r\n[").encode())
    await writer.drain()
    return reader, writer


async def until(condition, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def status_of(reader: asyncio.StreamReader, within: float) -> int:
    line = await asyncio.wait_for(reader.readline(), within)
    return int(line.split()[1])


async def test_slow_bodies_time_out_and_are_capped(gatewatch_server):
    gw, url = await gatewatch_server({"rules": [], "server": {"body_read_timeout": "1500ms",
                                                               "max_inflight_bodies": 2}})
    port = int(url.rsplit(":", 1)[1])
    slow = [await slow_post(port) for _ in range(2)]
    await until(lambda: gw.bodies.inflight == 2, 30)  # both bodies are being read
    status, answer = await post(url, json.dumps(good_items(1)))
    assert status == 503 and "max_inflight_bodies" in answer["error"]
    started = time.monotonic()
    for reader, writer in slow:
        assert await status_of(reader, 30) == 408
        writer.close()
    assert time.monotonic() - started < 25
    status, answer = await post(url, json.dumps(good_items(2)))
    assert status == 200 and answer["accepted"] == 2
    rows = await metrics(url)
    assert total(rows, "gatewatch_ingest_requests_total", code="408") == 2
    assert total(rows, "gatewatch_ingest_requests_total", code="503") == 1


async def test_metrics_gzip_when_accepted(gatewatch_server):
    _gw, url = await gatewatch_server({"rules": []})
    await post(url, json.dumps(good_items(3)))
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url + "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            raw = await response.read()
        async with session.get(url + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
            assert "Content-Encoding" not in response.headers
            plain = await response.read()
    text = gzip.decompress(raw).decode()
    assert len(raw) < len(plain) / 3
    assert total(samples(text), "litellm_deployment_total_requests_total") == 3

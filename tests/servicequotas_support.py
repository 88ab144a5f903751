"""A local endpoint speaking the Service Quotas JSON protocol (awsJson1.1), for the quota tests.

botocore reaches it through AWS_ENDPOINT_URL_SERVICE_QUOTAS. It answers
`ServiceQuotasV20190624.ListServiceQuotas` from a table per region (the region is read
from the SigV4 credential scope, as AWS routes it), in pages of `page_size`, and can
throttle the next N calls with a real ThrottlingException body. Every call is recorded
(target, region, access key id) so tests can check which credentials were used.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SCOPE = re.compile(r"Credential=([^/]+)/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
TARGET_PREFIX = "ServiceQuotasV20190624."


@dataclass
class Call:
    target: str
    region: str
    access_key: str
    service: str
    body: dict[str, Any]


@dataclass
class FakeServiceQuotas:
    quotas: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)  # region -> (name, code, value)
    page_size: int = 2
    throttle_next: int = 0
    fail_next: int = 0  # AccessDeniedException, not retried
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                status, body = fake.answer(self.headers.get("X-Amz-Target", ""),
                                           self.headers.get("Authorization", ""), json.loads(raw or b"{}"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-service-quotas").start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, target: str, authorization: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        scope = _SCOPE.search(authorization)
        access_key, region, service = scope.groups() if scope else ("", "", "")
        with self._lock:
            self.calls.append(Call(target, region, access_key, service, body))
            if self.throttle_next > 0:
                self.throttle_next -= 1
                return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
            if self.fail_next > 0:
                self.fail_next -= 1
                return 400, {"__type": "AccessDeniedException", "message": "not authorized"}
        if target != TARGET_PREFIX + "ListServiceQuotas":
            return 400, {"__type": "InvalidParameterValueException", "message": f"unsupported {target}"}
        if body.get("ServiceCode") != "bedrock":
            return 400, {"__type": "NoSuchResourceException", "message": "unknown service"}
        rows = self.quotas.get(region, [])
        start = int(body.get("NextToken") or 0)
        page = rows[start:start + self.page_size]
        out: dict[str, Any] = {"Quotas": [
            {"ServiceCode": "bedrock", "ServiceName": "Amazon Bedrock", "QuotaName": name, "QuotaCode": code,
             "QuotaArn": f"arn:aws:servicequotas:{region}:000000000000:bedrock/{code}", "Value": value,
             "Unit": "None", "Adjustable": True, "GlobalQuota": False}
            for name, code, value in page]}
        if start + self.page_size < len(rows):
            out["NextToken"] = str(start + self.page_size)
        return 200, out

    def list_calls(self) -> list[Call]:
        return [c for c in self.calls if c.target.endswith("ListServiceQuotas")]

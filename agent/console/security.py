"""Console sessions, CSRF and the refusal of anonymous writes.

With `server.auth_token` set, the console asks for the token once (a POST body, never a
URL) and gets a session cookie: `expiry.nonce.signature`, signed with a key derived from
the token, so every sidecar with the same token accepts it and changing the token ends
every session. The cookie is HttpOnly, SameSite=Strict, and Secure when the request came
over TLS (directly or per `X-Forwarded-Proto`). A request that carries the cookie and no
`Authorization` header is handed on with the bearer header added, so the API's own auth
check applies unchanged; if it changes state it must also carry `X-CSRF-Token`, an HMAC
of the session nonce that the page reads from `/console/session`.

Independently of sessions, a state-changing request under /api/ or /console/ is refused
when the browser says it is cross-site (Origin / Sec-Fetch-Site), and, without a token,
unless `server.allow_unauthenticated_writes` is true.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger(__name__)

COOKIE = "gatewatch_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN = "/console/login"
LOGOUT = "/console/logout"
MAX_FAILURES = 20  # wrong-token logins per FAILURE_WINDOW, from any client, before logins answer 429
FAILURE_WINDOW = 60.0
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WRITE_PREFIXES = ("/api/", "/console/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ConsoleAuth:
    """Issues and checks session cookies; `middleware` goes before the bearer check."""

    def __init__(self, token: Callable[[], str | None], ttl: Callable[[], float],
                 allow_unauthenticated_writes: Callable[[], bool], clock: Callable[[], float] = time.time) -> None:
        self.token = token
        self.ttl = ttl
        self.allow_unauthenticated_writes = allow_unauthenticated_writes
        self.clock = clock
        self._failures: deque[float] = deque()  # times of wrong-token logins (all clients: slows guessing)

    def _key(self, token: str) -> bytes:
        return hmac.new(token.encode(), b"gatewatch console session v1", hashlib.sha256).digest()

    def _sign(self, token: str, text: str) -> str:
        return _b64(hmac.new(self._key(token), text.encode(), hashlib.sha256).digest())

    def new_session(self) -> str:
        token = self.token()
        if not token:
            raise RuntimeError("no auth token configured: sessions are not needed")
        body = f"{int(self.clock() + self.ttl())}.{secrets.token_urlsafe(18)}"
        return f"{body}.{self._sign(token, body)}"

    def session_nonce(self, cookie: str | None) -> str | None:
        """The nonce of a valid, unexpired session cookie, else None."""
        token = self.token()
        if not token or not cookie or cookie.count(".") != 2:
            return None
        expiry, nonce, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(token, f"{expiry}.{nonce}")):
            return None
        try:
            if float(expiry) <= self.clock():
                return None
        except ValueError:
            return None
        return nonce

    def csrf_token(self, nonce: str) -> str:
        token = self.token() or ""
        return self._sign(token, f"csrf.{nonce}")

    def token_matches(self, given: str) -> bool:
        token = self.token()
        return bool(token) and hmac.compare_digest(given.encode(), (token or "").encode())

    def bearer_ok(self, request: web.Request) -> bool:
        token = self.token()
        return bool(token) and hmac.compare_digest(request.headers.get("Authorization", "").encode(),
                                                   f"Bearer {token}".encode())

    def writes_allowed(self) -> bool:
        return bool(self.token()) or self.allow_unauthenticated_writes()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        unsafe = request.method in UNSAFE
        console_path = request.path.startswith(WRITE_PREFIXES)
        if unsafe and console_path:
            if cross_site(request):
                return web.json_response({"error": "cross-site request refused"}, status=403)
            if not self.writes_allowed():
                return web.json_response(
                    {"error": "write actions are disabled: set server.auth_token (recommended) or "
                              "server.allow_unauthenticated_writes: true"}, status=403)
        token = self.token()
        if token and console_path and "Authorization" not in request.headers:
            nonce = self.session_nonce(request.cookies.get(COOKIE))
            if nonce is not None:
                if unsafe and request.path not in (LOGIN, LOGOUT) and not hmac.compare_digest(
                        request.headers.get(CSRF_HEADER, "").encode(), self.csrf_token(nonce).encode()):
                    return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
                headers = request.headers.copy()  # a mutable CIMultiDict (aiohttp's own type)
                headers["Authorization"] = f"Bearer {token}"
                request = request.clone(headers=headers)
        return await handler(request)

    # -- routes ---------------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.StreamResponse:
        """POST {token} as JSON (the page) or a form (no script): set the session cookie."""
        if not self.token():
            return web.json_response({"error": "no server.auth_token configured: no login needed"}, status=400)
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": "body is not valid JSON"}, status=400)
            given = body.get("token") if isinstance(body, dict) else None
            form = False
        else:
            data = await request.post()
            given = data.get("token")
            form = True
        now = self.clock()
        while self._failures and self._failures[0] < now - FAILURE_WINDOW:
            self._failures.popleft()
        if len(self._failures) >= MAX_FAILURES:
            log.warning("console login from %s refused: %d wrong tokens in the last minute", request.remote,
                        len(self._failures))
            return web.json_response({"error": "too many failed logins; try again in a minute"}, status=429)
        if not isinstance(given, str) or not self.token_matches(given):
            self._failures.append(now)
            log.warning("console login refused from %s: wrong token", request.remote)
            if form:
                raise web.HTTPSeeOther("/?login=failed")
            return web.json_response({"error": "wrong token"}, status=401)
        cookie = self.new_session()
        nonce = cookie.split(".")[1]
        response: web.StreamResponse
        if form:
            response = web.HTTPSeeOther("/")
        else:
            response = web.json_response({"authenticated": True, "csrf": self.csrf_token(nonce)})
        response.set_cookie(COOKIE, cookie, max_age=int(self.ttl()), path="/", httponly=True, samesite="Strict",
                            secure=is_tls(request))
        log.info("console login from %s", request.remote)
        if form:
            raise response  # type: ignore[misc]
        return response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.json_response({"authenticated": False})
        response.del_cookie(COOKIE, path="/")
        return response

    async def session(self, request: web.Request) -> web.Response:
        """What the page needs to know: must it log in, and the CSRF token of its session."""
        token = self.token()
        nonce = self.session_nonce(request.cookies.get(COOKIE)) if token else None
        authenticated = not token or nonce is not None or self.bearer_ok(request)
        return web.json_response({
            "auth_required": bool(token),
            "authenticated": authenticated,
            "csrf": self.csrf_token(nonce) if nonce is not None else None,
            "writes_allowed": self.writes_allowed(),
        }, headers={"Cache-Control": "no-store"})


def is_tls(request: web.Request) -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.secure or forwarded.split(",")[0].strip().lower() == "https"


def cross_site(request: web.Request) -> bool:
    """True when the browser says this request comes from another site or origin."""
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser (amtool, Prometheus, curl) or an old one: the token decides
    if origin == "null":
        return True
    hosts = {request.host, request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()}
    return urlsplit(origin).netloc not in hosts

"""Who may use the dashboard, and what a request that changes something must carry.

- **Host check** while bound to this machine only: a request must name a local host
  (127.0.0.1, localhost, [::1]; Starlette's `TrustedHostMiddleware`, answering 400). A web
  page elsewhere cannot then reach the dashboard by pointing a DNS name of its own at
  127.0.0.1 (DNS rebinding).
- **Token**: asked of every request when `dashboard.token` is set, and always when the
  dashboard is reachable from the network. A first visit with `?token=...` gets it as a
  cookie (HttpOnly, SameSite=Lax) and is redirected to the same page without it, so the
  token leaves the address bar and the history; programs (Prometheus) may send
  `Authorization: Bearer <token>`. Compared in constant time. Never logged (uvicorn's
  access log, which would print `?token=`, is off) and never put in a page.
- **CSRF**: every POST carries the page's CSRF value (`X-CSRF-Token` header or `csrf`
  form field), which only a page served by the dashboard knows, and an `Origin`, when
  the browser sends one, that is the dashboard's own. State changes are POST only.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "cutout_token"
TOKEN_PARAM = "token"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
COOKIE_DAYS = 30
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
"""The Host names a dashboard bound to this machine answers to (IPv6 in brackets, as in a Host header)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
"""On every answer: nothing from elsewhere runs or loads, no framing, no address leaks in a Referer."""


def is_local(bind: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    return bind in ("localhost", "::1") or bind.startswith("127.")


@dataclass(frozen=True)
class Access:
    """The rules one server applies."""

    token: str | None
    exposed: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def __repr__(self) -> str:  # never the secrets, whatever prints this
        return f"Access(token={'set' if self.token else None}, exposed={self.exposed})"


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def csrf_ok(request: Request, access: Access, *, form_value: str | None) -> bool:
    return same_secret(request.headers.get(CSRF_HEADER) or form_value, access.csrf)


class Guard:
    """ASGI middleware: the host, token and origin rules before any route runs."""

    def __init__(self, app: ASGIApp, *, access: Access) -> None:
        self.app, self.access = app, access
        # Starlette's TrustedHostMiddleware is the same rule as ours was (the Host header's name,
        # without its port, one of LOCAL_HOSTS; a malformed header refused), maintained upstream.
        self.checked: ASGIApp = self._check_origin_and_token
        if not access.exposed:
            self.checked = TrustedHostMiddleware(self.checked, allowed_hosts=LOCAL_HOSTS, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.checked(scope, receive, send_with_headers)

    async def _check_origin_and_token(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.refusal(Request(scope))
        await (refusal or self.app)(scope, receive, send)

    def refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        # `Origin: null` (a sandboxed frame, a data: page) is a page we did not serve: refused.
        if request.method not in SAFE_METHODS and origin is not None and urlsplit(origin).netloc != host:
            return PlainTextResponse("cross-site request refused", status_code=403)
        token = self.access.token
        if token is None:
            return None
        given = request.query_params.get(TOKEN_PARAM)
        if given is not None:
            if same_secret(given, token) and request.method in SAFE_METHODS:
                return _enter(request, token)
            return _unauthorized()
        bearer = request.headers.get("authorization", "")
        if same_secret(request.cookies.get(TOKEN_COOKIE), token) or (
            bearer.startswith("Bearer ") and same_secret(bearer[7:], token)
        ):
            return None
        return _unauthorized()


def _enter(request: Request, token: str) -> Response:
    """The token from the link becomes a cookie; the same page again, without it in the URL."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != TOKEN_PARAM]
    target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(TOKEN_COOKIE, token, max_age=COOKIE_DAYS * 86400, httponly=True, samesite="lax", path="/")
    return response


def _unauthorized() -> Response:
    body = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<title>cutout: token needed</title><body>"
        "<h1>This dashboard needs its token</h1><p>Open the link <code>cutout dashboard</code> printed when it "
        "started (it ends in <code>?token=…</code>), or ask whoever runs it. The token is kept in the file "
        "<code>dashboard-token</code> of the daemon's state folder.</p>"
    )
    return HTMLResponse(body, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="cutout"'})

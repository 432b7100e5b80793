"""The token check: with a token configured, every request must carry it (ASGI middleware)."""
from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "voxsam_token"


class TokenGate:
    """Answer 401 unless the request has `Authorization: Bearer T`, `?token=T` or the cookie; a valid
    `?token=` also sets the cookie, so the page's scripts and requests pass without the query."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        bearer = headers.get("authorization", "")
        bearer = bearer[7:] if bearer.lower().startswith("bearer ") else ""
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header counts as none
            cookie = SimpleCookie()
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else ""
        if not any(self._ok(v) for v in (bearer, query, from_cookie)):
            await _refuse(send)
            return
        if self._ok(query):
            await self.app(scope, receive, _with_cookie(send, query))
            return
        await self.app(scope, receive, send)

    def _ok(self, value: str) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token)


def _with_cookie(send: Any, token: str) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
        await send(message)
    return wrapped


async def _refuse(send: Any) -> None:
    payload = json.dumps({"error": "unauthorized", "message": "this server needs its token (Authorization: Bearer T, or ?token=T)"}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})

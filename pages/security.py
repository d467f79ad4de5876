"""--auth on every route the app serves, not only the ones Gradio guards itself.

Gradio's own login guards the UI's config and its main API routes, but answers some others without
a login (`/openapi.json`, `/gradio_api/runs`, `/gradio_api/cancel`, `/gradio_api/stream/...`,
`/gradio_api/heartbeat/...`), and a route added later (an API for scripts) would start unguarded.
This middleware turns the rule around: with --auth, a request is served only with Gradio's login
cookie or HTTP Basic credentials for the same USER:PASS, except the few paths the login page itself
needs. (Gradio's own routes still want its cookie, which `gradio_client.Client(url, auth=...)` gets
by logging in; Basic credentials are for routes PET or a script adds, e.g. `curl -u USER:PASS`.)
tests/test_security.py walks every route the app has and checks each one.
"""

from __future__ import annotations

import base64
import hmac

# What the login page loads before anyone has logged in: static files, and /config and login_check,
# which Gradio answers with its own 401 that makes the page show the login form. startup-events is
# Gradio's own launch check (it runs the app's load-time hooks once and returns no data).
PUBLIC_PATHS = frozenset({"/", "/login", "/login/", "/logout", "/favicon.ico", "/robots.txt", "/manifest.json",
                          "/theme.css", "/gradio_api/theme.css", "/config", "/config/", "/gradio_api/login_check",
                          "/gradio_api/login_check/", "/gradio_api/startup-events", "/pwa_icon"})
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class LoginRequired:
    """Pure ASGI middleware (it sees streamed responses through untouched)."""

    def __init__(self, app, auth: tuple[str, str]):
        self.app = app
        self.user, self.password = auth

    def _basic_ok(self, headers: dict[bytes, bytes]) -> bool:
        value = headers.get(b"authorization", b"")
        if not value[:6].lower() == b"basic ":
            return False
        try:
            user, _, pw = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # constant-time comparisons: no timing hint about how much of a guess was right
        return hmac.compare_digest(user.encode(), self.user.encode()) & \
            hmac.compare_digest(pw.encode(), self.password.encode())

    @staticmethod
    def _cookie_ok(app, headers: dict[bytes, bytes]) -> bool:
        from http.cookies import CookieError, SimpleCookie

        tokens = getattr(app, "tokens", None) or {}
        cookie_id = getattr(app, "cookie_id", None)
        if not tokens or not cookie_id:
            return False
        jar = SimpleCookie()
        try:
            jar.load(headers.get(b"cookie", b"").decode("latin-1"))
        except CookieError:
            return False
        for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
            if name in jar and tokens.get(jar[name].value) is not None:
                return True
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or is_public(scope.get("path", "")):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self._basic_ok(headers) or self._cookie_ok(scope.get("app"), headers):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 4401})
        body = b'{"error": "Not authenticated: log in (or send HTTP Basic credentials for --auth USER:PASS)"}'
        await send({"type": "http.response.start", "status": 401,
                    # no WWW-Authenticate header: it would make browsers pop up their own login dialog
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

"""Who may connect: the same rule for the HTTP API, the OpenAI endpoint and MCP over HTTP as
for the chat. Loopback needs nothing; any other address needs a bearer token (``--token`` or
``QA_TOKEN``), or ``--read-only`` to share without one. With a token, every request must
carry ``Authorization: Bearer TOKEN``."""

from __future__ import annotations

import hmac
import ipaddress
import os

from ..errors import QAError

TOKEN_ENV = "QA_TOKEN"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost."""
    name = str(host).strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # 0.0.0.0, "", ::, a LAN address, any other host name


def token_from(flag: str | None) -> str | None:
    """The token to require: --token, else $QA_TOKEN (empty counts as unset), else None."""
    value = flag if flag is not None else os.environ.get(TOKEN_ENV, "")
    if flag is not None and not flag.strip():
        raise QAError("--token is empty")
    value = value.strip()
    if value and any(ch.isspace() or not ch.isprintable() for ch in value):
        raise QAError("the token may not contain spaces or control characters")
    return value or None


def exposure_error(host: str, token: str | None, read_only: bool | None,
                   what: str = "the API") -> str | None:
    """Why ``what`` must not listen on ``host`` as configured, or None when it may.
    ``read_only``: None where ``what`` has no read-only mode (it writes nothing)."""
    if is_loopback(host) or token or read_only:
        return None
    shown = host if host else '""'
    remedy = f"add --token TOKEN (or set {TOKEN_ENV})"
    if read_only is not None:
        remedy += ", or --read-only to share it without one"
    return f"listening on {shown} lets other machines reach {what}; {remedy}"


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header value grants access (always, when no token is set).
    The comparison takes the same time wherever the values differ."""
    if not token:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class BearerAuth:
    """ASGI middleware: every HTTP request needs the bearer token (when one is set), or gets
    401 with a one-line JSON error."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if authorized(header, self.token):
            return await self.app(scope, receive, send)
        from .limits import send_json_error

        await send_json_error(send, 401, "missing or wrong bearer token (send the header "
                              "Authorization: Bearer TOKEN)",
                              headers=[(b"www-authenticate", b"Bearer")])

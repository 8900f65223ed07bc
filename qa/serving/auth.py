"""Who may use a server, in one place for every front end (the chat, the HTTP API, the OpenAI
endpoint, MCP over HTTP).

- Who may connect: loopback needs nothing; any other address needs a bearer token
  (``--token`` or ``QA_TOKEN``), or ``--read-only`` to share without one. With a token, every
  request must carry ``Authorization: Bearer TOKEN``.
- The chat's logins: the password policy, and the limit on failed logins per client (pure
  functions plus one small thread-safe ``LoginLimiter``; nothing here knows about Gradio).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


# -- the chat's logins ----------------------------------------------------------------

MIN_PASSWORD_CHARS = 8
LOGIN_FAILURES_ALLOWED = 5  # failed logins per client ...
LOGIN_WINDOW_SECONDS = 60.0  # ... in any window this long; then refused until one ages out
MAX_CLIENTS_TRACKED = 10_000  # beyond this many, the clients with the oldest failures go


def password_problem(password: str) -> str | None:
    """Why a password may not guard a shared server (one line), or None when it may: at least
    MIN_PASSWORD_CHARS characters, not only spaces."""
    if not isinstance(password, str) or not password.strip():
        return "the password is empty or only spaces"
    if len(password) < MIN_PASSWORD_CHARS:
        return (f"the password has {len(password)} characters; at least "
                f"{MIN_PASSWORD_CHARS} are needed")
    return None


def check_password(password: str, where: str = "the password") -> None:
    """Raise QAError (one line, never echoing the password) when the policy refuses it."""
    problem = password_problem(password)
    if problem:
        raise QAError(f"{where}: {problem}")


def seconds_refused(failures: Iterable[float], now: float,
                    allowed: int = LOGIN_FAILURES_ALLOWED,
                    window: float = LOGIN_WINDOW_SECONDS) -> float:
    """How long a client whose failed logins happened at ``failures`` (times, oldest first)
    must wait before trying again at ``now``: 0 while fewer than ``allowed`` fall within the
    last ``window`` seconds, else until the oldest of the last ``allowed`` ages out."""
    recent = [t for t in failures if now - t < window]
    if len(recent) < allowed:
        return 0.0
    return max(0.0, recent[-allowed] + window - now)


def refusal_message(seconds: float) -> str:
    """What a client refused for too many failed logins is told."""
    return (f"Too many failed logins from your address; try again in {max(1, round(seconds))} s "
            f"(at most {LOGIN_FAILURES_ALLOWED} failures a minute).")


@dataclass
class LoginLimiter:
    """Failed logins per client (an address), in memory: ``retry_after(client)`` says how
    long one must wait, ``failed`` and ``succeeded`` record each attempt's outcome."""

    allowed: int = LOGIN_FAILURES_ALLOWED
    window: float = LOGIN_WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    max_clients: int = MAX_CLIENTS_TRACKED
    _failures: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, client: str) -> float:
        with self._lock:
            failures = self._failures.get(client)
            return seconds_refused(failures or (), self.clock(), self.allowed, self.window)

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            failures = self._failures.setdefault(client, deque(maxlen=self.allowed))
            failures.append(now)
            if len(self._failures) > self.max_clients:
                self._forget(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _forget(self, now: float) -> None:
        """Drop clients with no failure in the window, then the stalest, to stay bounded."""
        for client in [c for c, f in self._failures.items() if now - f[-1] >= self.window]:
            del self._failures[client]
        while len(self._failures) > self.max_clients:
            stalest = min(self._failures, key=lambda c: self._failures[c][-1])
            del self._failures[stalest]

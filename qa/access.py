"""Who may use a shared server, for every front end that serves one (the chat today): the
password policy, and the limit on failed logins per client.

Pure functions over plain values, plus one small thread-safe ``LoginLimiter`` that keeps the
recent failures of each client; nothing here knows about Gradio or HTTP.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import QAError

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

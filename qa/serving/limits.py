"""How much a request may carry. Questions are limited by the engine
(``config.MAX_QUESTION_CHARS``), uploads by ``qa.uploads`` (``config.MAX_UPLOAD_BYTES`` per
file, the folder quota); this bounds the request bodies around them and the work in flight."""

from __future__ import annotations

import json
import threading

from .. import config

# A JSON request: a question and a conversation's history fit many times over.
MAX_JSON_BODY_BYTES = 1024 * 1024
# An upload's body: the file plus room for the multipart headers around it.
MAX_UPLOAD_BODY_BYTES = config.MAX_UPLOAD_BYTES + 64 * 1024
# The earlier messages a follow-up question is read with (as in the chat).
MAX_HISTORY_MESSAGES = 12
MAX_TOP_K = 20
MAX_SEARCH_K = 50
# Questions answered at once, and questions waiting for them; past both: 429.
MAX_CONCURRENT_ANSWERS = 4
MAX_WAITING_ANSWERS = 32


class Busy(Exception):
    """Too many questions are waiting already."""


class AnswerSlots:
    """At most MAX_CONCURRENT_ANSWERS answers at once; up to MAX_WAITING_ANSWERS more wait,
    any beyond that are refused with ``Busy`` (HTTP 429) instead of queueing without end."""

    def __init__(self, running: int | None = None, waiting: int | None = None):
        running = MAX_CONCURRENT_ANSWERS if running is None else running
        waiting = MAX_WAITING_ANSWERS if waiting is None else waiting
        self._run = threading.BoundedSemaphore(running)
        self._admit = threading.BoundedSemaphore(running + waiting)

    def __enter__(self):
        if not self._admit.acquire(blocking=False):
            raise Busy("too many questions are being answered; try again in a moment")
        self._run.acquire()
        return self

    def __exit__(self, *exc):
        self._run.release()
        self._admit.release()


def body_limit(path: str, method: str) -> int:
    """The most bytes a request to ``path`` may send."""
    if method == "POST" and path.rstrip("/") == "/v1/documents":
        return MAX_UPLOAD_BODY_BYTES
    return MAX_JSON_BODY_BYTES


async def send_json_error(send, status: int, message: str, headers=()) -> None:
    """Send ``{"error": message}`` with ``status`` from raw ASGI."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit:,} bytes for this route"


class BodyLimit:
    """ASGI middleware: refuses a request whose body is over ``body_limit`` with 413, by its
    Content-Length before reading anything, or while reading when it sends no length."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope["path"], scope["method"])
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                return await send_json_error(send, 400, "Content-Length is not a number")
            if too_big:
                return await send_json_error(send, 413, _too_large(limit))
        seen, over, answered = 0, False, False

        async def counting_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            # Past the limit, whatever the app makes of the broken read becomes the 413.
            nonlocal answered
            if not over:
                answered = answered or message["type"] == "http.response.start"
                return await send(message)
            if message["type"] == "http.response.start" and not answered:
                answered = True
                await send_json_error(send, 413, _too_large(limit))

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not answered:
                await send_json_error(send, 413, _too_large(limit))


class _BodyTooLarge(Exception):
    pass

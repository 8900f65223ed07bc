"""An OpenAI-compatible chat endpoint: ``POST /v1/chat/completions`` (plain, or streamed as
server-sent events ending with ``data: [DONE]``) and ``GET /v1/models``, so a chat front-end
or the ``openai`` client can use qa with no plugin. The last user message is the question,
the messages before it the conversation; the reply is the answer with its citations as text
(``answer_as_text``) and the structured answer in the extra field ``qa``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import config
from ..errors import QAError
from ..pipeline import QA
from . import limits
from .answers import answer_as_text, answer_to_json, reply_answer
from .engine import answer

MODEL = "qa"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...: ignored
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """OpenAI's request; parameters that steer generation (temperature, max_tokens, ...)
    mean nothing to an extractive reader and are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = MODEL
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False


def _text(content) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) for p in content
                    if isinstance(p, dict) and p.get("type") == "text")


def question_and_history(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """The question (the last message, which must be the user's) and the conversation before
    it as the engine reads it: user questions, and for each assistant reply its first line
    (the answer). System and tool messages are left out."""
    last = messages[-1]
    if last.role != "user":
        raise QAError(f"the last message must be the user's question (it is {last.role!r})")
    history = []
    for m in messages[:-1]:
        if m.role == "user":
            history.append({"role": "user", "content": _text(m.content)})
        elif m.role == "assistant":
            history.append({"role": "assistant", "content": reply_answer(_text(m.content))})
    return _text(last.content), history[-limits.MAX_HISTORY_MESSAGES:]


def _chunk(ident: str, created: int, model: str, delta: dict, finish: str | None,
           extra: dict | None = None) -> str:
    data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **(extra or {})}
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream_events(ident: str, created: int, model: str, text: str, qa: dict) -> Iterator[str]:
    """The reply as OpenAI's chunks: the role, the text a line at a time, the finish with the
    structured answer, then ``[DONE]``."""
    yield _chunk(ident, created, model, {"role": "assistant", "content": ""}, None)
    for line in text.splitlines(keepends=True):
        yield _chunk(ident, created, model, {"content": line}, None)
    yield _chunk(ident, created, model, {}, "stop", {"qa": qa})
    yield "data: [DONE]\n\n"


def add_openai_routes(app: FastAPI, engine: QA, slots: limits.AnswerSlots) -> None:
    @app.get("/v1/models", summary="The model this endpoint serves (OpenAI format)")
    def list_models() -> dict:
        return {"object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "qa"}]}

    @app.post("/v1/chat/completions", summary="Answer the last user message (OpenAI format)")
    def chat_completions(body: ChatRequest):
        """The reply's content is the answer, its confidence and its numbered quotes (file,
        paragraph, characters, location) as text; ``qa`` holds the answer as ``/v1/ask``
        returns it. Earlier messages are the conversation (follow-ups are resolved)."""
        question, history = question_and_history(body.messages)
        result = answer(engine, question, history, config.TOP_K, slots)
        text, qa = answer_as_text(result), answer_to_json(result)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        model = body.model or MODEL
        if body.stream:
            return StreamingResponse(stream_events(ident, created, model, text, qa),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return {
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "qa": qa,
        }

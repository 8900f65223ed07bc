"""``qa serve``: the JSON HTTP API under /v1, the OpenAI-compatible chat endpoint beside it,
FastAPI's OpenAPI schema (/openapi.json) and docs page (/docs). Every error is
``{"error": "one line"}`` with its status code."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from .. import __version__, config
from ..errors import QAError
from ..pipeline import QA
from ..uploads import TooLarge, UploadError, save_upload
from . import limits
from .answers import answer_to_json
from .auth import BearerAuth
from .engine import DocumentNotFound, answer, document_text, documents

log = logging.getLogger("qa.serve")


class Message(BaseModel):
    """One earlier message of the conversation."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=20_000)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(description=f"at most {config.MAX_QUESTION_CHARS:,} characters")
    history: list[Message] | None = Field(
        default=None,
        description="the conversation so far, oldest first: user questions and assistant "
        "answers (their short answer text); a follow-up such as 'How many?' is answered as "
        f"the standalone question it stands for. The last {limits.MAX_HISTORY_MESSAGES} count.")
    top_k: int = Field(default=config.TOP_K, ge=1, le=limits.MAX_TOP_K,
                       description="how many quotes to return")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The one shape of every error: ``{"error": "one line"}``."""
    line = " ".join(str(message).split()) or "error"
    return JSONResponse({"error": line}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """The first validation problem in one line: where, and what."""
    problems = exc.errors()
    if not problems:
        return "the request is not valid"
    first = problems[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = str(first.get("msg", "not valid"))
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def create_app(engine: QA, token: str | None = None, read_only: bool = False) -> FastAPI:
    """The API over ``engine``. ``token``: every request needs ``Authorization: Bearer
    TOKEN``; ``read_only``: no upload route."""
    app = FastAPI(
        title="qa",
        version=__version__,
        description="Extractive question answering over a folder of documents: answers quoted "
        "word for word, with file offsets into each document's extracted text.",
    )
    slots = limits.AnswerSlots()
    app.state.engine, app.state.slots, app.state.read_only = engine, slots, read_only

    @app.exception_handler(QAError)
    async def _qa_error(request: Request, exc: QAError):
        if isinstance(exc, DocumentNotFound):
            return error(404, str(exc))
        if isinstance(exc, UploadError):
            return error(413 if isinstance(exc, TooLarge) else 400, str(exc))
        return error(400, str(exc))

    @app.exception_handler(limits.Busy)
    async def _busy(request: Request, exc: limits.Busy):
        return error(429, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error(422, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no such route: {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        else:
            message = str(exc.detail)
        return error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); it was logged")

    @app.post("/v1/ask", summary="Answer a question from the documents")
    def post_ask(body: AskRequest) -> dict:
        """The answer exactly as ``qa ask --json`` gives it: ``text`` (None when the
        documents hold no answer), ``score``, ``message``, ``quotes`` with file offsets,
        ``sources``, ``standalone``, ``guess``."""
        return answer_to_json(answer(engine, body.question, body.history, body.top_k, slots))

    @app.get("/v1/status", summary="What is indexed, and whether it is up to date")
    def get_status() -> dict:
        return {**engine.status(), "read_only": read_only}

    @app.get("/v1/documents", summary="The indexed documents")
    def get_documents() -> dict:
        return documents(engine)

    @app.get("/v1/documents/{name:path}/text", summary="A document's extracted text")
    def get_text(name: str) -> dict:
        """The text quote offsets index: ``text[quote.start:quote.end] == quote.text``.
        ``name`` as the documents list gives it (sub-folders with /)."""
        return {"name": name, "text": document_text(engine, name)}

    if not read_only:
        @app.post("/v1/documents", status_code=201, summary="Add a document")
        async def post_document(
            file: Annotated[UploadFile, File(description="a .txt, .md, .pdf, .html or .docx "
                                             f"file up to {config.MAX_UPLOAD_BYTES:,} bytes")],
        ):
            """Checked, saved and indexed as the chat's uploads are: a safe name (never
            overwriting: name-2.txt), the size limit, the folder's quota, the indexer's own
            loader. Answers can quote it as soon as this returns."""
            data = await file.read(config.MAX_UPLOAD_BYTES + 1)
            saved = await run_in_threadpool(save_upload, data, file.filename or "",
                                            engine.seeds_dir)
            report = None
            if not saved.duplicate:
                report = await run_in_threadpool(engine.rebuild)
            body = {"name": saved.name, "message": saved.message, "renamed": saved.renamed,
                    "duplicate": saved.duplicate}
            if report is not None:
                body["indexed"] = {"documents": report.documents, "passages": report.passages,
                                   "skipped": report.skipped}
            return JSONResponse(body, status_code=200 if saved.duplicate else 201)

    from .openai_compat import add_openai_routes

    add_openai_routes(app, engine, slots)
    app.add_middleware(limits.BodyLimit)
    app.add_middleware(BearerAuth, token=token)  # outermost: nothing runs before it
    return app


def serve(engine: QA, host: str, port: int, token: str | None, read_only: bool) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    app = create_app(engine, token=token, read_only=read_only)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)

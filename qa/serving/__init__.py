"""The serving core shared by every way in from another program (``qa serve``, ``qa mcp``,
the OpenAI-compatible endpoint) and by the CLI: one engine holder (``engine``), one
answer-to-JSON function (``answers``), one place for who may connect (``auth``) and for how
much a request may carry (``limits``). The HTTP app (``http``) and the MCP server
(``mcp_server``) import FastAPI and the MCP SDK; this package's own import does not."""

from .answers import answer_as_text, answer_to_json, passage_to_json
from .auth import authorized, exposure_error, is_loopback, token_from
from .engine import DocumentNotFound, answer, document_text, documents, open_engine, search

__all__ = [
    "DocumentNotFound",
    "answer",
    "answer_as_text",
    "answer_to_json",
    "authorized",
    "document_text",
    "documents",
    "exposure_error",
    "is_loopback",
    "open_engine",
    "passage_to_json",
    "search",
    "token_from",
]

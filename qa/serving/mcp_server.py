"""``qa mcp``: the documents as an MCP server (the official ``mcp`` SDK), over stdio or
streamable HTTP. Tools ``ask`` and ``search``; each indexed document is a resource
``qa://documents/{name}`` whose content is its extracted text (the text quote offsets
index)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import Resource as MCPResource
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import config
from ..errors import QAError
from ..pipeline import QA
from . import limits
from .answers import answer_to_json
from .auth import BearerAuth
from .engine import answer, document_text, documents, search

RESOURCE_PREFIX = "qa://documents/"

INSTRUCTIONS = """\
Answers questions from one folder of documents by quoting them. Every answer is a span
copied word for word from a document (never generated), with the passages it comes from,
their file names and character offsets. Use `ask` for a question with a short factual answer
(who, what, when, how many); use `search` to find where a topic is discussed or to gather
passages to read yourself. Questions must be in English."""

ASK = f"""\
Answer a factual question from the indexed documents, extractively: `text` is a span copied
verbatim from a document (a name, number, date or short phrase), or null when the documents
do not state an answer. Use this for questions with a short answer; use `search` to explore a
topic or find passages. `score` is calibrated: with an answer, the probability that it is
right (0.9 means right about 9 times in 10); with `text` null, the probability that the
documents hold no answer (`guess` may then name a likely but unsure candidate). `quotes`:
the passages read, those stating the answer first, each with `source` (file), `location`
(page or heading, when known), `start`/`end` (character offsets into the document's text,
the resource qa://documents/<source>), `answer_start`/`answer_end`, and `score` (retrieval
relevance, not a confidence). Cite the quote, not your paraphrase. `history`: earlier
messages ({{"role": "user"|"assistant", "content": text}}, an assistant's content being the
answer text) so follow-ups like "How many?" are resolved; `standalone` then says how the
question was read. English questions only, at most {config.MAX_QUESTION_CHARS:,} characters."""

SEARCH = f"""\
Find the passages most relevant to a query (hybrid keyword and semantic retrieval) without
extracting an answer: best first, each with `relevance` in [0, 1] (a ranking score, not a
probability), `source` (file), `location`, `start`/`end` (character offsets into the
document's text, the resource qa://documents/<source>) and the passage `text`. Use it to see
what the documents say about a topic, to check coverage before asking, or when `ask` finds no
answer. `k`: how many passages (1 to {limits.MAX_SEARCH_K})."""


class HistoryMessage(BaseModel):
    """An earlier message: a user question, or an assistant's answer text."""

    role: Literal["user", "assistant"]
    content: str


def resource_uri(name: str) -> str:
    return RESOURCE_PREFIX + quote(name, safe="/")


class DocumentsServer(MCPServer):
    """MCPServer whose resource list is the index's documents at the time of asking."""

    def __init__(self, engine: QA, **kwargs):
        super().__init__(**kwargs)
        self.engine = engine

    async def list_resources(self) -> list[MCPResource]:
        listed = await anyio.to_thread.run_sync(documents, self.engine)
        return [
            MCPResource(uri=resource_uri(d["name"]), name=d["name"], mime_type="text/plain",
                        description=f"extracted text of {d['name']} ({d['passages']} passages); "
                                    "quote offsets index it")
            for d in listed["documents"]
        ]


def _tool_error(e: QAError) -> ToolError:
    return ToolError(str(e).splitlines()[0] if str(e) else "cannot answer that")


def build_server(engine: QA) -> MCPServer:
    """The MCP server over ``engine``: tools ``ask`` and ``search``, documents as resources."""
    server = DocumentsServer(engine, name="qa", instructions=INSTRUCTIONS, log_level="WARNING")
    slots = limits.AnswerSlots()
    reading = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    async def ask(question: str, history: list[HistoryMessage] | None = None) -> dict[str, Any]:
        try:
            result = await anyio.to_thread.run_sync(
                lambda: answer(engine, question, history, config.TOP_K, slots))
        except (QAError, limits.Busy) as e:
            raise _tool_error(QAError(str(e))) from None
        return answer_to_json(result)

    async def search_passages(
        query: str, k: Annotated[int, Field(ge=1, le=limits.MAX_SEARCH_K)] = 5
    ) -> dict[str, Any]:
        try:
            passages = await anyio.to_thread.run_sync(lambda: search(engine, query, k))
        except QAError as e:
            raise _tool_error(e) from None
        return {"query": query, "passages": passages}

    server.add_tool(ask, name="ask", title="Answer from the documents", description=ASK,
                    annotations=reading)
    server.add_tool(search_passages, name="search", title="Search the documents",
                    description=SEARCH, annotations=reading)

    @server.resource(RESOURCE_PREFIX + "{+name}", name="document", mime_type="text/plain",
                     description="an indexed document's extracted text")
    async def read_document(name: str) -> str:
        try:
            return await anyio.to_thread.run_sync(document_text, engine, unquote(name))
        except QAError as e:
            raise ResourceError(str(e)) from None

    return server


def serve_http(server: MCPServer, host: str, port: int, token: str | None) -> None:
    """Streamable HTTP at /mcp, every request behind the bearer token when one is set."""
    import uvicorn

    app = BearerAuth(server.streamable_http_app(host=host), token)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)

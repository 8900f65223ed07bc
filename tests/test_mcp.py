"""`qa mcp`: the MCP server, spawned over stdio and driven by the `mcp` SDK's own client; and
its streamable HTTP app behind the bearer token."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from mcp import Client, StdioServerParameters
from starlette.testclient import TestClient

from qa import QA
from qa.serving.auth import BearerAuth
from qa.serving.mcp_server import build_server, resource_uri

from .conftest import ROOT

DOCS = {
    "glaciers.txt": (
        "The Brenva glacier retreated 410 metres between 1990 and 2020. Survey teams from "
        "the Aosta observatory measure its front every September.\n\n"
        "Meltwater from the glacier feeds the Dora di Veny stream.\n"
    ),
    "notes/ferries.md": (
        "# Ferries\n\nThe ferry between Kallby and Sundholm takes forty minutes. It was "
        "launched in 1998 by the shipyard of Oskar Lindqvist.\n"
    ),
}
QUESTION = "How far did the Brenva glacier retreat between 1990 and 2020?"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, encoder, reader):
    """A small documents folder, indexed once here so the spawned server only loads it."""
    base = tmp_path_factory.mktemp("mcp")
    for name, text in DOCS.items():
        path = base / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    QA(base / "docs", base / "index", encoder=encoder, reader=reader).refresh()
    return base


def stdio_server(folder) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "qa.cli", "mcp", "--seeds", str(folder / "docs"), "--index",
              str(folder / "index")],
        cwd=str(ROOT),
    )


def test_over_stdio_ask_search_and_documents(folder):
    async def session():
        async with Client(stdio_server(folder), read_timeout_seconds=120) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"ask", "search"}
            assert "verbatim" in tools["ask"].description
            assert "search" in tools["ask"].description and "probability" in tools["ask"].description
            assert tools["search"].input_schema["properties"]["k"]["maximum"] >= 10

            asked = await client.call_tool("ask", {"question": QUESTION})
            assert not asked.is_error
            answer = asked.structured_content
            assert answer == json.loads(asked.content[0].text)

            texts = {}
            listed = (await client.list_resources()).resources
            assert sorted(r.name for r in listed) == sorted(DOCS)
            for resource in listed:
                read = await client.read_resource(resource.uri)
                texts[resource.name] = read.contents[0].text

            searched = await client.call_tool("search", {"query": "ferry shipyard", "k": 2})
            empty = await client.call_tool("ask", {"question": "  "})
            follow = await client.call_tool("ask", {"question": "Who launched it?", "history": [
                {"role": "user", "content": "Which ferry takes forty minutes?"},
                {"role": "assistant", "content": "The ferry between Kallby and Sundholm"}]})
            return answer, texts, searched, empty, follow

    answer, texts, searched, empty, follow = anyio.run(session)
    assert answer["text"] == "410 metres" and answer["sources"] == ["glaciers.txt"]
    assert 0.0 <= answer["score"] <= 1.0
    assert texts == DOCS  # plain text and Markdown: the extracted text is the file itself
    for quote in answer["quotes"]:
        text = texts[quote["source"]]
        assert text[quote["start"]:quote["end"]] == quote["text"]
        if quote["answer_start"] is not None:
            assert text[quote["answer_start"]:quote["answer_end"]] == answer["text"]

    passages = searched.structured_content["passages"]
    assert len(passages) == 2 and passages[0]["source"] == "notes/ferries.md"
    assert passages[0]["relevance"] >= passages[1]["relevance"]
    for p in passages:
        assert texts[p["source"]][p["start"]:p["end"]] == p["text"]

    assert empty.is_error and "empty" in empty.content[0].text
    assert not follow.is_error and follow.structured_content["standalone"]
    assert "Oskar Lindqvist" in (follow.structured_content["text"] or "")


def test_in_process_resources_refuse_other_files(folder, encoder, reader):
    engine = QA(folder / "docs", folder / "index", encoder=encoder, reader=reader)
    server = build_server(engine)

    async def session():
        async with Client(server) as client:
            ok = await client.read_resource(resource_uri("notes/ferries.md"))
            refused = []
            for uri in ("qa://documents/../index/manifest.json", "qa://documents/nope.txt",
                        "qa://documents/notes"):
                try:
                    await client.read_resource(uri)
                except Exception as e:  # noqa: BLE001 - the SDK's error for a refused read
                    refused.append(str(e))
            bad_k = await client.call_tool("search", {"query": "ferry", "k": 0})
            return ok, refused, bad_k

    ok, refused, bad_k = anyio.run(session)
    assert ok.contents[0].text == DOCS["notes/ferries.md"]
    assert len(refused) == 3
    assert bad_k.is_error


def test_http_transport_needs_the_token(folder, encoder, reader):
    engine = QA(folder / "docs", folder / "index", encoder=encoder, reader=reader)
    app = BearerAuth(build_server(engine).streamable_http_app(), "tok-81c2")
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}}
    with TestClient(app, base_url="http://127.0.0.1:8001") as client:
        refused = client.post("/mcp", json=hello)
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        wrong = client.post("/mcp", json=hello, headers={"Authorization": "Bearer tok-81c3"})
        assert wrong.status_code == 401
        let_in = client.post("/mcp", json=hello, headers={
            "Authorization": "Bearer tok-81c2", "Accept": "application/json, text/event-stream"})
        assert let_in.status_code == 200 and '"name":"qa"' in let_in.text.replace(" ", "")

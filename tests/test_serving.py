"""`qa serve`: the JSON API under /v1 and the OpenAI-compatible endpoint, on a real uvicorn
(loopback, and off loopback behind a token) and through FastAPI's TestClient."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from qa import QA, config
from qa.cli import main
from qa.serving import answer_to_json, authorized, exposure_error, token_from
from qa.serving.answers import answer_as_text, reply_answer
from qa.serving.api import create_app

from .conftest import ROOT, SEEDS, free_port

INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"
# Our own documents, beside a copy of the seeds: one in a sub-folder, one uploaded by a test.
HARBOUR = ("The harbour of Quellmouth was dredged in 1911. Its lighthouse, painted in red "
           "and white bands, was designed by the engineer Tomasz Wielgus.\n")
LIGHTHOUSE_QUESTION = "Who designed the lighthouse of Quellmouth?"
ORCHARD = ("The Pellworth orchard grows ninety-two varieties of pear. The oldest tree in the "
           "orchard was planted by Ines Barrow in 1874.\n")
ORCHARD_QUESTION = "Who planted the oldest tree in the Pellworth orchard?"
TOKEN = "tok-3f9a1c"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    shutil.copytree(SEEDS, base / "docs")
    (base / "docs" / "towns").mkdir()
    (base / "docs" / "towns" / "harbour notes.txt").write_text(HARBOUR, encoding="utf-8")
    return base


@pytest.fixture(scope="module")
def engine(folder, encoder, reader):
    """One engine and index for the module (uploads add to its folder)."""
    engine = QA(folder / "docs", folder / "index", encoder=encoder, reader=reader)
    engine.refresh()
    return engine


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine))


class Server:
    """The app on a real uvicorn in a thread, on a free port of ``host``."""

    def __init__(self, app, host: str = "127.0.0.1"):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def url(engine):
    with Server(create_app(engine)) as base:
        yield base


def one_line_error(response: httpx.Response, status: int) -> str:
    """The response's error message, checked to be the only field and one line."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and body["error"].strip()
    assert "\n" not in body["error"]
    return body["error"]


def without_timing(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "seconds"}


# -- the API on a real server ----------------------------------------------------------------


def test_ask_returns_what_qa_ask_json_prints(url, folder, capsys):
    got = httpx.post(f"{url}/v1/ask", json={"question": INTERCEPTORS, "top_k": 2}, timeout=60)
    assert got.status_code == 200
    assert main(["ask", INTERCEPTORS, "--json", "-k", "2", "--seeds", str(folder / "docs"),
                 "--index", str(folder / "index")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "500" in printed["text"]
    assert without_timing(got.json()) == without_timing(printed)


def test_upload_then_answer_from_it(url, engine):
    response = httpx.post(f"{url}/v1/documents", timeout=60,
                          files={"file": ("orchard.md", ORCHARD.encode(), "text/markdown")})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "orchard.md"
    answer = httpx.post(f"{url}/v1/ask", json={"question": ORCHARD_QUESTION}, timeout=60).json()
    assert answer["text"] == "Ines Barrow"
    assert answer["sources"] == ["orchard.md"]
    names = [d["name"] for d in httpx.get(f"{url}/v1/documents").json()["documents"]]
    assert "orchard.md" in names
    # The same bytes again add nothing.
    again = httpx.post(f"{url}/v1/documents", files={"file": ("orchard.md", ORCHARD.encode())})
    assert again.status_code == 200 and again.json()["duplicate"] is True


def test_quote_offsets_slice_the_text_endpoint(client):
    answer = client.post("/v1/ask", json={"question": LIGHTHOUSE_QUESTION}).json()
    assert answer["text"] == "Tomasz Wielgus"
    assert answer["sources"] == ["towns/harbour notes.txt"]
    for quote in answer["quotes"]:
        response = client.get(f"/v1/documents/{quote['source']}/text")
        assert response.status_code == 200
        text = response.json()["text"]
        assert text[quote["start"]:quote["end"]] == quote["text"]
        if quote["answer_start"] is not None:
            assert text[quote["answer_start"]:quote["answer_end"]] in quote["text"]
    text = client.get("/v1/documents/towns/harbour notes.txt/text").json()["text"]
    assert text == HARBOUR


@pytest.mark.parametrize("name", ["../pyproject.toml", "..%2F..%2Fetc%2Fpasswd", "towns",
                                  "towns%2F..%2Ftowns%2Fharbour notes.txt", "/etc/passwd", "nope.txt"])
def test_text_of_anything_but_an_indexed_document_is_404(client, name):
    one_line_error(client.get(f"/v1/documents/{name}/text"), 404)


def test_status_and_documents(client):
    status = client.get("/v1/status").json()
    assert status["documents"] >= 6 and status["read_only"] is False and status["stale"] == []
    listed = client.get("/v1/documents").json()["documents"]
    assert {"name": "towns/harbour notes.txt", "passages": 1} in listed


# -- every error is one line of JSON with its status -----------------------------------------


@pytest.mark.parametrize(
    "body, status, says",
    [
        ({"question": ""}, 400, "empty"),
        ({"question": "   \n"}, 400, "empty"),
        ({"question": "x" * 2001}, 400, "2,000"),
        ({"question": INTERCEPTORS, "history": "earlier"}, 422, "history"),
        ({"question": INTERCEPTORS, "history": [{"role": "bot", "content": "hi"}]}, 422, "role"),
        ({"question": INTERCEPTORS, "history": [{"content": "no role"}]}, 422, "role"),
        ({"question": INTERCEPTORS, "top_k": 0}, 422, "top_k"),
        ({"question": INTERCEPTORS, "stray": 1}, 422, "stray"),
        ({}, 422, "question"),
    ],
)
def test_bad_questions(client, body, status, says):
    assert says in one_line_error(client.post("/v1/ask", json=body), status)


def test_bodies_are_bounded(url):
    big = b'{"question": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    message = one_line_error(httpx.post(f"{url}/v1/ask", content=big,
                                        headers={"content-type": "application/json"}), 413)
    assert "limit" in message

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(12):
            yield b"x" * (1024 * 1024)

    one_line_error(httpx.post(f"{url}/v1/ask", content=chunks(),
                              headers={"content-type": "application/json"}), 413)


def test_malformed_requests(client):
    assert "JSON" in one_line_error(
        client.post("/v1/ask", content=b"{no", headers={"content-type": "application/json"}), 422)
    assert "no such route" in one_line_error(client.get("/v2/ask"), 404)
    assert "not allowed" in one_line_error(client.get("/v1/ask"), 405)


def test_uploads_are_checked_as_the_chats_are(client, engine, monkeypatch):
    big = b"word " * (config.MAX_UPLOAD_BYTES // 5 + 1)
    assert "upload limit" in one_line_error(
        client.post("/v1/documents", files={"file": ("big.txt", big)}), 413)
    assert "only" in one_line_error(
        client.post("/v1/documents", files={"file": ("tool.exe", b"MZ")}), 400)
    assert "UTF-8" in one_line_error(
        client.post("/v1/documents", files={"file": ("bin.txt", b"\xff\xfe\x00\x81" * 50)}), 400)
    one_line_error(client.post("/v1/documents", files={"other": ("a.txt", b"text")}), 422)
    monkeypatch.setattr(config, "MAX_FOLDER_FILES", 1)
    assert "quota" in one_line_error(
        client.post("/v1/documents", files={"file": ("more.txt", b"More words here.")}), 413)
    assert not (engine.seeds_dir / "more.txt").exists()
    assert not (engine.seeds_dir / "big.txt").exists()


def test_too_many_questions_at_once_get_429(engine, monkeypatch):
    from qa.serving import limits

    monkeypatch.setattr(limits, "MAX_CONCURRENT_ANSWERS", 1)
    monkeypatch.setattr(limits, "MAX_WAITING_ANSWERS", 0)
    app = create_app(engine)
    client = TestClient(app)
    with app.state.slots:  # the one slot is taken
        response = client.post("/v1/ask", json={"question": LIGHTHOUSE_QUESTION})
        assert "try again" in one_line_error(response, 429)
        assert response.headers["retry-after"] == "1"
    assert client.post("/v1/ask", json={"question": LIGHTHOUSE_QUESTION}).status_code == 200


def test_an_unexpected_failure_is_a_one_line_500(engine, monkeypatch):
    client = TestClient(create_app(engine), raise_server_exceptions=False)

    def broken():
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(engine, "status", broken)
    message = one_line_error(client.get("/v1/status"), 500)
    assert "RuntimeError" in message and "fire" not in message


def test_read_only_has_no_upload(engine):
    client = TestClient(create_app(engine, read_only=True))
    assert client.post("/v1/documents", files={"file": ("x.txt", b"Some text.")}).status_code in (
        404, 405)
    assert not (engine.seeds_dir / "x.txt").exists()
    assert client.get("/v1/status").json()["read_only"] is True
    assert client.post("/v1/ask", json={"question": LIGHTHOUSE_QUESTION}).status_code == 200


def test_openapi_schema_and_docs(client):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/ask", "/v1/status", "/v1/documents", "/v1/documents/{name}/text",
                 "/v1/chat/completions", "/v1/models"):
        assert path in schema["paths"], path
    assert "swagger" in client.get("/docs").text.lower()


# -- who may connect ---------------------------------------------------------------------------


def test_off_loopback_every_route_needs_the_token(engine):
    app = create_app(engine, token=TOKEN)
    routes = [(m, r.path.replace("{name}", "towns/harbour notes.txt"))
              for r in app.routes for m in getattr(r, "methods", ()) or ()
              if m not in ("HEAD", "OPTIONS")]
    routes += [("GET", "/no/such/route"), ("POST", "/v1/ask")]
    assert len(routes) >= 10
    with Server(app, host="0.0.0.0") as base:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = httpx.request(method, base + path, headers=headers)
                assert "token" in one_line_error(response, 401), (method, path)
                assert response.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{base}/v1/status", headers=good).status_code == 200
        answer = httpx.post(f"{base}/v1/ask", headers=good, timeout=60,
                            json={"question": LIGHTHOUSE_QUESTION}).json()
        assert answer["text"] == "Tomasz Wielgus"


def test_qa_serve_command_shares_behind_the_token_from_the_environment(folder):
    port = free_port()
    env = {**os.environ, "QA_TOKEN": TOKEN}
    command = [sys.executable, "-m", "qa.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
               "--seeds", str(folder / "docs"), "--index", str(folder / "index")]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    base, good = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "qa serve did not start"
            try:
                status = httpx.get(f"{base}/v1/status", headers=good)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert status.status_code == 200
        one_line_error(httpx.get(f"{base}/v1/status"), 401)
        answer = httpx.post(f"{base}/v1/ask", json={"question": LIGHTHOUSE_QUESTION},
                            headers=good, timeout=60)
        assert answer.json()["text"] == "Tomasz Wielgus"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])
def test_serve_refuses_to_share_without_token_or_read_only(host, capsys, monkeypatch):
    monkeypatch.delenv("QA_TOKEN", raising=False)
    assert main(["serve", "--host", host, "--seeds", str(SEEDS)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--token" in err and "--read-only" in err
    assert main(["mcp", "--http", "--host", host, "--seeds", str(SEEDS)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--token" in err and "--read-only" not in err


def test_sharing_rule():
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert exposure_error(host, None, False) is None
    assert exposure_error("0.0.0.0", None, False)
    assert exposure_error("0.0.0.0", TOKEN, False) is None
    assert exposure_error("0.0.0.0", None, True) is None
    assert authorized(None, None) and authorized("anything", None)
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer  {TOKEN}", TOKEN)
    assert not authorized(None, TOKEN) and not authorized(f"Basic {TOKEN}", TOKEN)
    assert not authorized(f"Bearer {TOKEN}x", TOKEN) and not authorized("Bearer", TOKEN)


def test_token_from_flag_or_environment(monkeypatch):
    monkeypatch.setenv("QA_TOKEN", "from-env")
    assert token_from(None) == "from-env" and token_from("flag") == "flag"
    monkeypatch.setenv("QA_TOKEN", "")
    assert token_from(None) is None
    with pytest.raises(Exception, match="empty"):
        token_from("  ")


# -- the OpenAI-compatible endpoint ----------------------------------------------------------


def test_openai_client_plain_and_streamed(url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["qa"]
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": LIGHTHOUSE_QUESTION}]
    completion = client.chat.completions.create(model="qa", messages=messages)
    content = completion.choices[0].message.content
    qa = completion.model_extra["qa"]
    assert qa["text"] == "Tomasz Wielgus" and qa["sources"] == ["towns/harbour notes.txt"]
    assert content.splitlines()[0] == "Tomasz Wielgus"
    assert "towns/harbour notes.txt" in content and "Tomasz Wielgus, was designed" not in content
    assert qa["quotes"][0]["text"].split()[:4] == content.split("> ", 1)[1].split()[:4]

    chunks = list(client.chat.completions.create(model="qa", messages=messages, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["qa"]["text"] == "Tomasz Wielgus"


def test_openai_messages_before_the_last_are_the_conversation(client):
    first = client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": "Who is sending interceptors for the Patriot system to "
                                    "Ukraine?"}]}).json()
    reply = first["choices"][0]["message"]["content"]
    follow = client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": "Who is sending interceptors for the Patriot system to "
                                    "Ukraine?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": [{"type": "text", "text": "How many?"}]}]}).json()
    qa = follow["qa"]
    assert qa["standalone"] and "interceptors" in qa["standalone"]
    assert qa["text"] and "500" in qa["text"]


def test_openai_errors(client):
    assert "user" in one_line_error(client.post("/v1/chat/completions", json={
        "messages": [{"role": "assistant", "content": "hello"}]}), 400)
    one_line_error(client.post("/v1/chat/completions", json={"messages": []}), 422)
    assert "empty" in one_line_error(client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": " "}], "stream": True}), 400)


# -- the one answer shape --------------------------------------------------------------------


def test_answer_text_leads_with_the_answer(engine):
    answer = engine.answer(LIGHTHOUSE_QUESTION)
    text = answer_as_text(answer)
    assert reply_answer(text) == answer.text == "Tomasz Wielgus"
    assert "Confidence: " in text and "[1] towns/harbour notes.txt, paragraph 1" in text
    declined = engine.answer("What is the population of Lisbon?")
    assert declined.text is None
    assert reply_answer(answer_as_text(declined)) == declined.message
    data = answer_to_json(answer)
    assert data["message"] == answer.message and data["quotes"][0]["start"] == answer.quotes[0].start


def test_document_text_in_a_chat_reply_cannot_become_markdown():
    import re

    from qa.serving.answers import literal
    from qa.types import Answer, Quote

    hostile = "See ![x](http://evil.example/t.png) and <img src=x> *now*"
    quote = Quote("notes_1.md", hostile, 0, len(hostile), 0.9, 1, 4, 37)
    text = answer_as_text(Answer("Where?", "![x](http://evil.example/t.png)", 0.9, [quote]))
    assert "\\!\\[x\\]\\(http" in text and "\\<img" in text
    assert not re.search(r"(?<!\\)(<|!\[|\]\()", text)  # nothing Markdown would act on
    assert literal(hostile).replace("\\", "") == hostile.replace("\\", "")
    assert reply_answer(text) == "![x](http://evil.example/t.png)"

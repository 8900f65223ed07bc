"""Sharing the chat: beyond loopback it needs a login or read-only mode; a login keeps every
page and API call closed to strangers; read-only mode has no upload or rebuild at all."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import app
from qa import QAError

from .conftest import ROOT, free_port

INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"
INTERCEPTOR_SOURCE = "001_d68ff4131b3e9101.txt"
USER, PASSWORD = "reader", "s3cret:with-colon"


# -- who may listen where --------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert app.is_loopback(host) is loopback
    refused = app.exposure_error(host, None, False)
    assert (refused is None) is loopback
    # A login or read-only mode makes any address acceptable.
    assert app.exposure_error(host, (USER, PASSWORD), False) is None
    assert app.exposure_error(host, None, True) is None


@pytest.mark.parametrize(
    "value, reason",
    [
        ("nocolon", "no ':' found"),
        (":pw", "the user name is empty"),
        ("   :pw", "the user name is empty"),
        ("user:", "the password is empty"),
        (":", "the user name is empty"),
    ],
)
def test_bad_auth_values_are_refused_in_one_line(value, reason, capsys, monkeypatch):
    monkeypatch.delenv("QA_AUTH", raising=False)
    with pytest.raises(QAError, match=reason):
        app.parse_auth(value)
    assert app.main(["--host", "127.0.0.1", "--auth", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --auth must be USER:PASSWORD")
    assert reason in err and "Traceback" not in err
    if "pw" in value:
        assert "pw" not in err  # the password is never echoed
    monkeypatch.setenv("QA_AUTH", value)
    assert app.main(["--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: QA_AUTH must be USER:PASSWORD")


def test_auth_values_keep_colons_in_the_password():
    assert app.parse_auth("reader:a:b:c:d:e") == ("reader", "a:b:c:d:e")
    assert app.parse_auth(" reader :pass word ") == ("reader", "pass word ")


class FakeDemo:
    local_url = "http://fake/"

    def __init__(self, read_only=False):
        self.qa_read_only = read_only
        self.launched: dict = {}

    def launch(self, **kw):
        self.launched = kw

    def block_thread(self):
        pass


@pytest.fixture
def fake_main(monkeypatch, tmp_path):
    """app.main with no engine, no Blocks and no server: what it would launch, and how."""
    seen: dict = {}

    class FakeQA:
        def __init__(self, seeds, index):
            self.seeds_dir = seeds

        def refresh(self):
            pass

    def fake_build(engine, read_only=False, **kw):
        seen["read_only"] = read_only
        seen["demo"] = FakeDemo(read_only)
        return seen["demo"]

    monkeypatch.setattr(app, "QA", FakeQA)
    monkeypatch.setattr(app, "build_app", fake_build)
    monkeypatch.delenv("QA_AUTH", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)

    def run(*args):
        code = app.main(["--seeds", str(tmp_path), *args])
        demo = seen.get("demo")
        return code, (demo.launched if demo else None), seen.get("read_only")

    return run


def test_beyond_loopback_refuses_to_start_without_a_login(fake_main, capsys, monkeypatch):
    for args in (["--host", "0.0.0.0"], ["--host", "192.168.1.20"], ["--host", "::"]):
        code, launched, _ = fake_main(*args)
        err = capsys.readouterr().err
        assert code == 2 and launched is None, args
        assert err.count("\n") == 1 and err.startswith("error: listening on ")
        assert "--auth" in err and "QA_AUTH" in err and "--read-only" in err
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # the environment's host counts too
    code, launched, _ = fake_main()
    assert code == 2 and launched is None
    assert "listening on 0.0.0.0" in capsys.readouterr().err


def test_loopback_needs_no_login(fake_main):
    for args in ([], ["--host", "127.0.0.1"], ["--host", "localhost"], ["--host", "::1"]):
        code, launched, read_only = fake_main(*args)
        assert code == 0, args
        assert launched["auth"] is None and read_only is False
        assert launched["server_name"] == (args[1] if args else "127.0.0.1")


def test_a_login_or_read_only_mode_lets_it_listen_anywhere(fake_main, monkeypatch, capsys):
    code, launched, read_only = fake_main("--host", "0.0.0.0", "--auth", "ann:pw:1-longer")
    assert code == 0 and launched["auth"] == [("ann", "pw:1-longer")] and read_only is False
    assert launched["server_name"] == "0.0.0.0" and launched["share"] is False
    assert "login required" in capsys.readouterr().out
    monkeypatch.setenv("QA_AUTH", "bob:hunter2-longer")
    code, launched, _ = fake_main("--host", "0.0.0.0")
    assert code == 0 and launched["auth"] == [("bob", "hunter2-longer")]
    code, launched, _ = fake_main("--host", "0.0.0.0", "--auth", "cy:xylophone")  # the flag wins
    assert launched["auth"] == [("cy", "xylophone")]
    monkeypatch.delenv("QA_AUTH")
    code, launched, read_only = fake_main("--host", "0.0.0.0", "--read-only")
    assert code == 0 and launched["auth"] is None and read_only is True
    assert launched["max_file_size"] == 0  # Gradio's own upload route takes nothing


def test_launch_itself_refuses_an_open_address(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    with pytest.raises(QAError, match="listening on 0.0.0.0"):
        app.launch(FakeDemo(), "0.0.0.0", 9000)
    demo = FakeDemo()
    app.launch(demo, "0.0.0.0", 9000, auth=(USER, PASSWORD))
    assert demo.launched["auth"] == [(USER, PASSWORD)]
    demo = FakeDemo(read_only=True)
    app.launch(demo, "0.0.0.0", 9000)
    assert demo.launched["auth"] is None and demo.launched["max_file_size"] == 0


def test_the_script_refuses_with_one_line_and_exit_code_2(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--host", "0.0.0.0", "--seeds", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: listening on 0.0.0.0")
    assert "Traceback" not in run.stderr and run.stdout == ""
    run = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--auth", "nocolon"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.startswith("error: --auth must be USER:PASSWORD")


# -- a server behind a login -----------------------------------------------------------------


def serve(engine, **kw):
    demo = app.build_app(engine, read_only=kw.pop("read_only", False))
    for attempt in range(3):
        port = free_port()
        try:
            app.launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True, **kw)
            return demo, f"http://127.0.0.1:{port}/"
        except OSError:
            if attempt == 2:
                raise


@pytest.fixture(scope="module")
def login_url(seed_engine):
    demo, url = serve(seed_engine, auth=(USER, PASSWORD))
    yield url
    demo.close()


def http(method, url, data=None, headers=None):
    """(status, body) of one request, errors included."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def test_without_the_login_the_api_gives_nothing(login_url):
    for path in ["config", "gradio_api/info", "gradio_api/openapi.json", "gradio_api/queue/status"]:
        code, body = http("GET", login_url + path)
        assert code == 401, path
        assert INTERCEPTOR_SOURCE not in body and "corpus" not in body
    for path in ["gradio_api/call/ask", "gradio_api/run/ask", "gradio_api/queue/join"]:
        code, body = http("POST", login_url + path, {"data": [INTERCEPTORS, []], "fn_index": 0})
        assert code == 401, path
        assert "500" not in body
    # The page itself is only the login form: no components, no endpoints.
    code, body = http("GET", login_url)
    assert code == 200
    assert '"auth_required":true' in body.replace(" ", "")
    assert INTERCEPTOR_SOURCE not in body and "corpus-status" not in body
    # A wrong password gets no cookie.
    form = f"username={USER}&password=wrong".encode()
    req = urllib.request.Request(login_url + "login", data=form, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400


def test_gradio_client_needs_the_login(login_url):
    from gradio_client import Client

    with pytest.raises(Exception) as e:  # noqa: B017 - gradio_client raises ValueError or its own
        Client(login_url, verbose=False, download_files=False).predict(
            INTERCEPTORS, [], api_name="/ask"
        )
    assert "500" not in str(e.value)
    with pytest.raises(Exception):  # noqa: B017
        Client(login_url, auth=(USER, "wrong"), verbose=False, download_files=False)
    c = Client(login_url, auth=(USER, PASSWORD), verbose=False, download_files=False)
    _, history, _ = c.predict(INTERCEPTORS, [], api_name="/ask")
    text = html.unescape(history[-1]["content"] if isinstance(history[-1]["content"], str)
                         else str(history[-1]["content"]))
    assert "500" in text and INTERCEPTOR_SOURCE in text


# -- read-only mode --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only_url(seed_engine):
    demo, url = serve(seed_engine, read_only=True)
    yield url
    demo.close()


def test_read_only_mode_has_no_upload_or_rebuild(read_only_url, seed_engine, tmp_path):
    from gradio_client import Client, handle_file

    code, body = http("GET", read_only_url + "gradio_api/info")
    assert code == 200
    endpoints = json.loads(body)["named_endpoints"]
    assert "/ask" in endpoints
    assert not {"/upload", "/rebuild"} & set(endpoints)
    code, body = http("GET", read_only_url + "config")
    config = json.loads(body)
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert "question" in ids and "corpus-status" in ids
    assert not {"upload", "rebuild", "corpus-notice"} & ids
    assert all(d.get("api_name") not in ("upload", "rebuild") for d in config["dependencies"])
    assert all(c.get("type") != "file" for c in config["components"])  # no upload control
    for path in ["gradio_api/call/upload", "gradio_api/call/rebuild"]:
        code, body = http("POST", read_only_url + path, {"data": []})
        assert code >= 400 and "event_id" not in body, path  # Gradio: no such function
    code, body = http("POST", read_only_url + "gradio_api/call/ask", {"data": ["", []]})
    assert code == 200 and "event_id" in body  # the same call reaches a function that exists
    before = sorted(p.name for p in seed_engine.seeds_dir.iterdir())
    c = Client(read_only_url, verbose=False, download_files=False)
    doc = tmp_path / "intruder.txt"
    doc.write_text("The intruder document.\n")
    with pytest.raises(Exception):  # noqa: B017
        c.predict([handle_file(str(doc))], api_name="/upload")
    with pytest.raises(Exception):  # noqa: B017
        c.predict(api_name="/rebuild")
    # Gradio's own upload route (files for components) takes nothing either.
    boundary = "qa-test-boundary"
    form = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
        f"filename=\"intruder.txt\"\r\nContent-Type: text/plain\r\n\r\n"
        f"The intruder document.\r\n--{boundary}--\r\n"
    ).encode()
    req = urllib.request.Request(read_only_url + "gradio_api/upload", data=form, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413
    assert sorted(p.name for p in seed_engine.seeds_dir.iterdir()) == before
    # Asking still works.
    _, history, status = c.predict(INTERCEPTORS, [], api_name="/ask")
    assert "500" in html.unescape(str(history[-1]["content"]))
    assert "rebuild now" not in status


def test_read_only_blocks_have_no_upload_or_rebuild_functions(seed_engine):
    demo = app.build_app(seed_engine, read_only=True)
    names = {getattr(fn.fn, "__name__", "") for fn in demo.fns.values()}
    assert "ask" in names and not {"add_files", "rebuild"} & names
    full = app.build_app(seed_engine)
    names = {getattr(fn.fn, "__name__", "") for fn in full.fns.values()}
    assert {"ask", "add_files", "rebuild"} <= names  # the test can tell them apart


"""A shared chat server against abuse: the password policy, failed logins limited per client,
nothing about the API before the login, and Gradio's raw upload route bounded and cleaned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

import app
from qa import QAError, config
from qa.serving.auth import (
    LOGIN_FAILURES_ALLOWED,
    LoginLimiter,
    check_password,
    password_problem,
    seconds_refused,
)

from .conftest import ROOT

USER, PASSWORD = "reader", "correct horse"


# -- the password policy ---------------------------------------------------------------------


@pytest.mark.parametrize("password, problem", [
    (" ", "empty or only spaces"),
    ("        ", "empty or only spaces"),
    ("\t\n", "empty or only spaces"),
    ("", "empty or only spaces"),
    ("hunter2", "has 7 characters; at least 8"),
])
def test_weak_passwords_are_refused_in_one_line_without_echoing_them(password, problem,
                                                                      capsys, monkeypatch):
    assert problem in password_problem(password)
    with pytest.raises(QAError, match=problem):
        check_password(password)
    monkeypatch.delenv("QA_AUTH", raising=False)
    if password:
        assert app.main(["--host", "0.0.0.0", "--auth", f"ann:{password}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err and "Traceback" not in err
        if password.strip():
            assert password not in err
    with pytest.raises(QAError, match=problem):
        app.launch(object(), "0.0.0.0", 9000, auth=("ann", password))


@pytest.mark.parametrize("password", ["12345678", "pass word", " spaced and long "])
def test_passwords_of_eight_characters_or_more_are_accepted(password):
    assert password_problem(password) is None
    assert app.parse_auth(f"ann:{password}") == ("ann", password)


# -- failed logins ---------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_is_refused_after_five_failures_a_minute_until_one_ages_out():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for _ in range(LOGIN_FAILURES_ALLOWED - 1):
        limiter.failed("10.0.0.1")
        clock.now += 1
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(56.0)
    assert limiter.retry_after("10.0.0.2") == 0  # per client
    clock.now += 56.0
    assert limiter.retry_after("10.0.0.1") == 0  # the first failure aged out
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") > 0
    limiter.succeeded("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 0


def test_seconds_refused_counts_only_the_window():
    assert seconds_refused([], 10.0) == 0
    assert seconds_refused([0.0, 1.0, 2.0, 3.0, 4.0], 10.0) == pytest.approx(50.0)
    assert seconds_refused([0.0, 1.0, 2.0, 3.0, 4.0], 60.5) == 0
    assert seconds_refused([0.0] * 3, 1.0, allowed=3, window=2.0) == pytest.approx(1.0)


def test_the_limiter_stays_small_under_many_addresses():
    clock = Clock()
    limiter = LoginLimiter(clock=clock, max_clients=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
        clock.now += 0.001
    assert len(limiter._failures) <= 100


# -- the running server ----------------------------------------------------------------------


def _serve(engine, **kw):
    from .test_sharing import serve

    return serve(engine, **kw)


def _post_form(url: str, fields: dict) -> tuple[int, str]:
    data = "&".join(f"{k}={v}" for k, v in fields.items()).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_server_refuses_a_sixth_failed_login_within_a_minute(seed_engine):
    demo, url = _serve(seed_engine, auth=(USER, PASSWORD))
    try:
        codes = [_post_form(url + "login", {"username": USER, "password": f"wrong{i}"})[0]
                 for i in range(LOGIN_FAILURES_ALLOWED)]
        assert codes == [400] * LOGIN_FAILURES_ALLOWED
        code, body = _post_form(url + "login", {"username": USER, "password": "wrong again"})
        assert code == 429
        message = json.loads(body)["detail"]
        assert message.startswith("Too many failed logins from your address; try again in")
        code, _ = _post_form(url + "login", {"username": USER, "password": PASSWORD})
        assert code == 429  # even the right password waits: guessing is what is slowed
    finally:
        demo.close()


def test_a_good_login_clears_the_failures(seed_engine):
    demo, url = _serve(seed_engine, auth=(USER, PASSWORD))
    try:
        for _ in range(2):
            for i in range(LOGIN_FAILURES_ALLOWED - 1):
                assert _post_form(url + "login", {"username": USER, "password": f"no{i}"})[0] == 400
            assert _post_form(url + "login", {"username": USER, "password": PASSWORD})[0] == 200
    finally:
        demo.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_login_page_describes_no_api(seed_engine):
    demo, url = _serve(seed_engine, auth=(USER, PASSWORD))
    try:
        code, page = _get(url)
        assert code == 200 and '"auth_required":true' in page.replace(" ", "")
        assert "window.gradio_api_info = {};" in page
        for leak in ("/upload", "/rebuild", "/ask", "named_endpoints"):
            assert leak not in page, leak
    finally:
        demo.close()
    # Without a login to ask for, the page is the app, described as Gradio describes it.
    demo, url = _serve(seed_engine)
    try:
        code, page = _get(url)
        assert code == 200 and "named_endpoints" in page and "/ask" in page
    finally:
        demo.close()


def _raw_upload(url: str, name: str, size: int) -> tuple[int, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n").encode()
    body += b"a" * size + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def upload_server(make_engine, tmp_path, monkeypatch):
    """A chat server whose Gradio temp folder is the test's own, over a small folder whose
    quota leaves 1.5 MB."""
    temp = tmp_path / "gradio-temp"
    temp.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    engine = make_engine({"a.txt": "The Varnel depot holds 4,312 crates of grain.\n"})
    engine.refresh()
    used = sum(p.stat().st_size for p in engine.seeds_dir.iterdir())
    monkeypatch.setattr(config, "MAX_FOLDER_BYTES", used + 1_500_000)
    monkeypatch.setattr(config, "MAX_UPLOAD_BYTES", 1_000_000)
    demo, url = _serve(engine)
    yield engine, url, temp
    demo.close()


def test_the_raw_upload_route_keeps_nothing_beyond_the_limits(upload_server):
    engine, url, temp = upload_server
    code, _ = _raw_upload(url, "big.txt", 1_100_000)  # over the upload limit
    assert code == 413
    code, _ = _raw_upload(url, "one.txt", 900_000)
    assert code == 200
    code, body = _raw_upload(url, "two.txt", 900_000)  # the quota has no room for both
    assert code == 413 and "quota" in json.loads(body)["detail"]
    kept = sum(p.stat().st_size for p in temp.rglob("*") if p.is_file())
    assert 900_000 <= kept <= config.MAX_FOLDER_BYTES


def test_an_added_upload_leaves_no_temporary_copy(upload_server, tmp_path):
    from gradio_client import Client, handle_file

    engine, url, temp = upload_server
    doc = tmp_path / "orrin.txt"
    doc.write_text("The Orrin lighthouse was kept by Mara Vell from 1911.\n")
    _, _, notice = Client(url, verbose=False, download_files=False).predict(
        [handle_file(str(doc))], api_name="/upload")
    assert "Added orrin.txt" in notice
    assert (engine.seeds_dir / "orrin.txt").is_file()
    left = [p for p in temp.rglob("*") if p.is_file() and p.name == "orrin.txt"]
    assert left == []


def test_the_servers_temporary_folder_goes_when_it_stops(tmp_path):
    """app.main makes its own temporary folder for Gradio (uploads land there: see the upload
    tests, which name theirs) and removes it when stopped with SIGTERM or Ctrl+C."""
    script = (
        "import sys, time, app\n"
        "folder = app.private_temp_dir()\n"
        "app.end_on_sigterm()\n"
        "(folder / 'upload.txt').write_text('left behind?')\n"
        "print(folder, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("GRADIO_TEMP_DIR", None)
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT)
    try:
        folder = server.stdout.readline().strip()
        assert folder.startswith(str(tmp_path / "qa-chat-"))
        assert os.path.isfile(os.path.join(folder, "upload.txt"))
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(180) == 0
    assert not os.path.exists(folder)


def test_the_server_keeps_few_visitor_sessions_in_memory(seed_engine, monkeypatch):
    """Gradio held every visitor's session (~0.4 MB each) up to 10,000 of them: the chat's
    memory grew with each new visitor. The app keeps nothing in a session, so it holds few."""
    from gradio_client import Client

    monkeypatch.setattr(app, "MAX_SESSIONS_KEPT", 2)
    demo, url = _serve(seed_engine)
    try:
        for _ in range(5):  # five visitors
            Client(url, verbose=False, download_files=False).predict("", [], api_name="/ask")
        assert 1 <= len(demo.server_app.state_holder.session_data) <= 2
    finally:
        demo.close()

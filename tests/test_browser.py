"""The chat in a real browser (Debian's chromium through Playwright): ask, read the answer and
its sources, add a document through the upload control, and check that document text can
never run as script or render as markup; the "searching" reply of a slow question, copying
citations, the layout on a 390 px wide phone, and logging in to a shared chat.

    .venv/bin/python -m pytest -q tests/test_browser.py
    .venv/bin/python tests/test_browser.py docs/chat.png    # retake the README screenshot
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"
INTERCEPTOR_SOURCE = "001_d68ff4131b3e9101.txt"
USER, PASSWORD = "reader", "correct horse:battery"
TIMEOUT_MS = 90_000  # the first answer may wait for an index update; the machine is small

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (run `make browser`)"
)


# -- page helpers (also used by the screenshot script below) ---------------------------------


def bot_messages(page):
    return page.locator('#chat [data-testid="bot"]')


def ask(page, question: str):
    """Type a question, press Enter, and return the locator of the reply once it arrives
    (the "searching" placeholder replaced by the answer)."""
    from playwright.sync_api import expect

    replies = bot_messages(page)
    before = replies.count()
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    expect(replies).to_have_count(before + 1, timeout=TIMEOUT_MS)
    reply = replies.nth(before)
    expect(reply.locator(".qa-reply, .qa-error")).to_have_count(1, timeout=TIMEOUT_MS)
    return reply


def upload(page, path: Path, expect_text: str):
    """Add a file through the corpus panel's upload control and wait for its notice."""
    from playwright.sync_api import expect

    page.locator("#upload input[type=file]").set_input_files(str(path))
    expect(page.locator("#corpus-notice")).to_contain_text(expect_text, timeout=TIMEOUT_MS)


def open_sources(reply) -> None:
    reply.locator("details.qa-sources > summary").click()
    reply.locator("details.qa-sources[open]").wait_for(timeout=10_000)


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


@pytest.fixture
def page(browser, scratch_app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(scratch_app_url)
    page.locator("#question textarea").wait_for(timeout=TIMEOUT_MS)
    page.page_errors = errors
    yield page
    context.close()


# -- tests ------------------------------------------------------------------------------------


def test_ask_read_sources_upload_and_ask_again(page, tmp_path):
    from playwright.sync_api import expect

    expect(page.locator("#corpus-status")).to_contain_text("passages indexed", timeout=TIMEOUT_MS)
    reply = ask(page, INTERCEPTORS)
    expect(reply).to_contain_text("500")
    expect(reply).to_contain_text(INTERCEPTOR_SOURCE)
    assert "500" in reply.locator("strong").first.inner_text()  # the answer, in bold, first
    open_sources(reply)
    mark = reply.locator("mark").first
    expect(mark).to_be_visible()
    assert "500" in mark.inner_text()
    expect(reply.locator(".qa-cite").first).to_contain_text("paragraph")
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    doc = tmp_path / "zarnov_observatory.txt"
    doc.write_text("The Zarnov observatory opened in 1987 with a 2.4-metre telescope.\n")
    upload(page, doc, "Added zarnov_observatory.txt")
    expect(page.locator("#corpus-notice")).to_contain_text("Indexed")
    expect(page.locator("#corpus-status")).to_contain_text("zarnov_observatory.txt")
    reply = ask(page, "When did the Zarnov observatory open?")
    expect(reply).to_contain_text("1987")
    expect(reply).to_contain_text("zarnov_observatory.txt")
    page.screenshot(path=str(tmp_path / "after-upload.png"), full_page=True)

    page.locator("#rebuild").click()
    expect(page.locator("#corpus-notice")).to_contain_text("reused", timeout=TIMEOUT_MS)
    expect(page.locator("#corpus-status")).to_contain_text("Up to date")
    assert page.page_errors == []


def test_document_text_is_shown_literally_never_run(page, tmp_path):
    from playwright.sync_api import expect

    hostile = (
        "The Quillon bridge has 7 arches. <script>window.__pwned=1</script> <b>bold</b> "
        '<img src=x onerror="window.__pwned=2"> *stars* _under_ # hash `tick` '
        "[link](http://example.invalid) | a | b |"
    )
    doc = tmp_path / "quillon_bridge.txt"
    doc.write_text(hostile + "\n")
    upload(page, doc, "Added quillon_bridge.txt")

    reply = ask(page, "How many arches does the Quillon bridge have?")
    expect(reply).to_contain_text("quillon_bridge.txt")
    open_sources(reply)
    quote = reply.locator("blockquote", has_text="Quillon bridge").first
    expect(quote).to_be_visible()
    shown = quote.inner_text()
    for literal in [
        "<script>window.__pwned=1</script>",
        "<b>bold</b>",
        '<img src=x onerror="window.__pwned=2">',
        "*stars*",
        "_under_",
        "# hash",
        "`tick`",
        "[link](http://example.invalid)",
        "| a | b |",
    ]:
        assert literal in shown, literal
    assert page.evaluate("typeof window.__pwned") == "undefined"
    chat = page.locator("#chat .message-content")
    for tag in ["script", "b", "img", "a", "code", "em", "table", "h1"]:
        assert chat.locator(tag).count() == 0, f"<{tag}> rendered from document text"
    page.screenshot(path=str(tmp_path / "literal.png"), full_page=True)

    # Uploads that are not UTF-8 text are refused with a clear note.
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\xe9 au lait.".encode("latin-1"))
    upload(page, latin, "latin.txt: not UTF-8 text")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.page_errors == []


class SlowEngine:
    """An engine whose every answer takes ``seconds`` longer: a slow question, on demand."""

    def __init__(self, engine, seconds: float):
        self._engine, self.seconds = engine, seconds

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def answer(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self._engine.answer(*args, **kwargs)


@pytest.fixture(scope="module")
def slow_url(seed_engine):
    from .conftest import serve_app

    demo, url = serve_app(SlowEngine(seed_engine, 3.0))
    yield url
    demo.close()


def open_page(browser, url, **context):
    context.setdefault("viewport", {"width": 1280, "height": 900})
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    page.page_errors = []
    page.on("pageerror", lambda e: page.page_errors.append(str(e)))
    page.goto(url)
    return ctx, page


def test_a_slow_question_shows_at_once_with_a_searching_reply(browser, slow_url):
    from playwright.sync_api import expect

    ctx, page = open_page(browser, slow_url)
    try:
        box = page.locator("#question textarea")
        box.wait_for(timeout=TIMEOUT_MS)
        box.fill(INTERCEPTORS)
        box.press("Enter")
        user = page.locator('#chat [data-testid="user"]').last
        expect(user).to_contain_text(INTERCEPTORS, timeout=2_500)  # before the answer exists
        reply = bot_messages(page).last
        searching = reply.locator(".qa-searching")
        expect(searching).to_be_visible(timeout=2_500)
        expect(searching).to_contain_text("Searching the documents")
        expect(reply.locator(".qa-reply")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(reply).to_contain_text("500")
        expect(searching).to_have_count(0)
        expect(bot_messages(page)).to_have_count(1)  # replaced, not added to
        assert page.page_errors == []
    finally:
        ctx.close()


def test_copy_citations_copies_each_citation_with_its_quoted_text(browser, app_url):
    from playwright.sync_api import expect

    ctx, page = open_page(browser, app_url)
    try:
        ctx.grant_permissions(["clipboard-read", "clipboard-write"])
        page.locator("#question textarea").wait_for(timeout=TIMEOUT_MS)
        reply = ask(page, INTERCEPTORS)
        open_sources(reply)
        shown = [" ".join(t.split()) for t in reply.locator(".qa-citation").all_inner_texts()]
        assert shown and all(", paragraph " in line and ", chars " in line for line in shown)
        assert any(line.startswith(INTERCEPTOR_SOURCE + ", paragraph ") for line in shown)
        button = reply.locator("button.qa-copy")
        button.click()
        expect(button).to_have_text("Copied")
        copied = page.evaluate("navigator.clipboard.readText()")
        quoted = [" ".join(t.split()) for t in reply.locator(".qa-text").all_inner_texts()]
        assert copied.split("\n\n") == [f"{c}\n> {q}" for c, q in zip(shown, quoted)]
        assert "<" not in copied and "relevance" not in copied
        # Selecting one citation by hand copies the same plain text.
        first = reply.locator(".qa-citation").first
        selected = first.evaluate(
            "e => { const r = document.createRange(); r.selectNodeContents(e);"
            " const s = getSelection(); s.removeAllRanges(); s.addRange(r);"
            " return s.toString(); }"
        )
        assert " ".join(selected.split()) == shown[0]
        assert first.evaluate("e => getComputedStyle(e).userSelect") != "none"
        assert page.page_errors == []
    finally:
        ctx.close()


def test_an_empty_question_says_why_nothing_happened(browser, app_url):
    from playwright.sync_api import expect

    import app

    ctx, page = open_page(browser, app_url)
    try:
        box = page.locator("#question textarea")
        box.wait_for(timeout=TIMEOUT_MS)
        box.fill("   ")
        box.press("Enter")
        expect(page.get_by_text(app.EMPTY_QUESTION)).to_be_visible(timeout=TIMEOUT_MS)
        expect(bot_messages(page)).to_have_count(0)
    finally:
        ctx.close()


def test_phone_layout_shows_answer_and_sources_without_sideways_scrolling(
    browser, app_url, tmp_path
):
    from playwright.sync_api import expect

    ctx, page = open_page(
        browser, app_url, viewport={"width": 390, "height": 844}, is_mobile=True,
        has_touch=True, device_scale_factor=2,
    )
    try:
        page.locator("#question textarea").wait_for(timeout=TIMEOUT_MS)
        reply = ask(page, INTERCEPTORS)
        open_sources(reply)
        answer = reply.locator(".qa-answer strong")
        expect(answer).to_be_visible()
        assert "500" in answer.inner_text()
        source = reply.locator(".qa-source", has_text=INTERCEPTOR_SOURCE).first
        source.scroll_into_view_if_needed()
        expect(source).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at 390"
        for locator in (answer, source, page.locator("#question textarea")):
            box = locator.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        widest = page.evaluate(
            "Math.max(...Array.from(document.querySelectorAll('#chat *'),"
            " e => e.getBoundingClientRect().right))"
        )
        assert widest <= 390.5, f"something in the chat reaches {widest} px"
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        assert page.page_errors == []
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def login_url(seed_engine):
    import app

    from .conftest import free_port

    demo = app.build_app(seed_engine)
    port = free_port()
    app.launch(demo, "127.0.0.1", port, auth=(USER, PASSWORD), prevent_thread_lock=True,
               quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_log_in_then_ask(browser, login_url):
    from playwright.sync_api import expect

    ctx, page = open_page(browser, login_url)
    try:
        expect(page.locator("#question textarea")).to_have_count(0)  # no chat before the login
        user = page.get_by_label("username")
        user.wait_for(timeout=TIMEOUT_MS)
        user.fill(USER)
        page.get_by_label("password").fill("wrong")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Incorrect Credentials", exact=False)).to_be_visible(
            timeout=TIMEOUT_MS
        )
        expect(page.locator("#question textarea")).to_have_count(0)
        user.fill(USER)  # the form clears after a failed attempt
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.locator("#question textarea").wait_for(timeout=TIMEOUT_MS)
        reply = ask(page, INTERCEPTORS)
        expect(reply).to_contain_text("500")
        expect(reply).to_contain_text(INTERCEPTOR_SOURCE)
        assert page.page_errors == []
    finally:
        ctx.close()


# -- the README screenshot --------------------------------------------------------------------


def take_screenshot(out: Path) -> None:
    """Ask who sends the interceptors over seeds/, then "How many?", open the follow-up's
    Sources, save a PNG."""
    import tempfile

    from playwright.sync_api import expect, sync_playwright

    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root), str(root / "tests")]
    from conftest import serve_app

    from qa import QA

    with tempfile.TemporaryDirectory() as tmp:  # seeds/ is only read; the index is temporary
        engine = QA(root / "seeds", Path(tmp) / "index")
        engine.refresh()
        demo, url = serve_app(engine)
        try:
            with sync_playwright() as p:
                b = launch_browser(p)
                page = b.new_page(viewport={"width": 1360, "height": 1180})
                page.goto(url)
                expect(page.locator("#corpus-status")).to_contain_text(
                    "passages indexed", timeout=TIMEOUT_MS
                )
                first = ask(page, "Who is sending interceptors for the Patriot system to Ukraine?")
                expect(first).to_contain_text("Pentagon", timeout=TIMEOUT_MS)
                reply = ask(page, "How many?")  # a follow-up, answered from the conversation
                expect(reply).to_contain_text("Answered as", timeout=TIMEOUT_MS)
                expect(reply).to_contain_text(INTERCEPTOR_SOURCE)
                open_sources(reply)
                page.locator("#chat [role=log]").hover()
                for _ in range(5):  # as a reader would: back up to the question
                    page.mouse.wheel(0, -400)
                    page.wait_for_timeout(100)
                page.locator("#chat [role=log]").evaluate("e => { e.scrollTop = 0; }")
                page.mouse.move(5, 5)
                page.wait_for_timeout(500)
                page.screenshot(path=str(out))
                b.close()
        finally:
            demo.close()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/chat.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    take_screenshot(target)
    print(f"saved {target}")

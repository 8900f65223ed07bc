"""The chat in a real browser (Debian's chromium through Playwright): ask, read the answer and
its sources, add a document through the upload control, and check that document text can
never run as script or render as markup.

    .venv/bin/python -m pytest -q tests/test_browser.py
    .venv/bin/python tests/test_browser.py docs/chat.png    # retake the README screenshot
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"
INTERCEPTOR_SOURCE = "001_d68ff4131b3e9101.txt"
TIMEOUT_MS = 90_000  # the first answer may wait for an index update; the machine is small

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (run `make browser`)"
)


# -- page helpers (also used by the screenshot script below) ---------------------------------


def bot_messages(page):
    return page.locator('#chat [data-testid="bot"]')


def ask(page, question: str):
    """Type a question, press Enter, and return the locator of the reply once it arrives."""
    from playwright.sync_api import expect

    replies = bot_messages(page)
    before = replies.count()
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    expect(replies).to_have_count(before + 1, timeout=TIMEOUT_MS)
    return replies.nth(before)


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
    upload(page, latin, "latin.txt is not UTF-8 text")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.page_errors == []


# -- the README screenshot --------------------------------------------------------------------


def take_screenshot(out: Path) -> None:
    """Ask the interceptor question over seeds/, open Sources, save a PNG."""
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
                reply = ask(page, INTERCEPTORS)
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

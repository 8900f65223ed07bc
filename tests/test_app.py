"""The web app: reply formatting (escaping, highlight, no answer, citations), the conversation
passed on as plain text, upload safety and quotas, and the running app answering through
gradio_client."""

from __future__ import annotations

import html
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app
from qa import Answer, Quote, config
from qa.uploads import (
    MAX_NAME_CHARS,
    UploadError,
    allowed_suffixes,
    check_content,
    check_quota,
    folder_usage,
    read_upload,
    safe_filename,
    save_upload,
)

INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"
INTERCEPTOR_SOURCE = "001_d68ff4131b3e9101.txt"
REPLY_TAGS = {
    "div",
    "p",
    "strong",
    "details",
    "summary",
    "ol",
    "li",
    "span",
    "blockquote",
    "mark",
    "br",
    "button",
}
HOSTILE = (
    "Intro <script>window.__pwned=1</script> and <b>bold</b> and <img src=x onerror=alert(1)> "
    "*stars* _under_ **strong** # heading `code` [link](http://example.com) | a | b | "
    "$$x^2$$ \\escape ~~strike~~ &amp; \"quotes\" 'single'"
)


class _Tags(HTMLParser):
    """Collects the tags and the text (entities decoded) of an HTML fragment."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "br":
            self.text.append("\n")

    def handle_data(self, data):
        self.text.append(data)


def parse(fragment: str) -> _Tags:
    p = _Tags()
    p.feed(fragment)
    p.close()
    return p


def text_nodes(fragment: str) -> str:
    """The raw (still escaped) text between tags."""
    return "".join(re.split(r"<[^>]*>", fragment))


def quote(text, source="doc.txt", start=100, answer=None, score=0.9, paragraph=2, location=""):
    a = text.find(answer) if answer else -1
    return Quote(
        location=location,
        source=source,
        text=text,
        start=start,
        end=start + len(text),
        score=score,
        paragraph=paragraph,
        answer_start=start + a if a >= 0 else None,
        answer_end=start + a + len(answer) if a >= 0 else None,
    )


# -- reply formatting ------------------------------------------------------------------------


def test_reply_puts_bold_answer_first_then_sources_in_the_answers_order():
    best = quote(
        "The Pentagon is sending more than 500 interceptors.",
        "a.txt",
        0,
        "more than 500",
        score=0.97,
        paragraph=1,
    )
    other = quote("Some 500 missiles in all.", "b.txt", 611, "500", score=0.61, paragraph=3)
    reply = app.format_reply(Answer("q", "more than 500", 0.93, [other, best], ["a.txt", "b.txt"]))
    # The answer's order is kept (the same in every interface), whatever the scores say.
    listed = reply[reply.index("<ol"):]
    assert listed.index("b.txt") < listed.index("a.txt")
    reply = app.format_reply(Answer("q", "more than 500", 0.93, [best, other], ["a.txt", "b.txt"]))

    assert reply.index("<strong>more than 500</strong>") < reply.index("<details")
    assert "<summary>Sources (2)</summary>" in reply
    listed = reply[reply.index("<ol"):]
    assert listed.index("a.txt") < listed.index("b.txt")
    assert "sending <mark>more than 500</mark> interceptors." in reply
    assert "Some <mark>500</mark> missiles" in reply
    cite = parse(reply).text
    text = "".join(cite)
    assert "a.txt, paragraph 1, chars 0–51 · relevance 0.97" in text
    assert "b.txt, paragraph 3, chars 611–636 · relevance 0.61" in text
    assert "confidence 93%" in text
    assert {t for t, _ in parse(reply).tags} <= REPLY_TAGS


def test_each_quote_has_a_plain_text_citation_to_copy():
    located = quote("It opened in 1987.", "obs.pdf", 40, "1987", paragraph=4, location="page 3")
    plain = quote("Nothing here.", "notes.md", 0, paragraph=1)
    reply = app.format_reply(Answer("q", "1987", 0.8, [located, plain], ["obs.pdf"]))
    assert app.citation(located) == "obs.pdf, paragraph 4, chars 40–58, page 3"
    assert app.citation(plain) == "notes.md, paragraph 1, chars 0–13"
    # The citation span's text is exactly the plain citation (what selecting it copies).
    spans = re.findall(r'<span class="qa-citation">(.*?)</span> · relevance', reply)
    assert [html.unescape(re.sub(r"<[^>]+>", "", s)) for s in spans] == [
        app.citation(located),
        app.citation(plain),
    ]
    assert f'<button type="button" class="qa-copy">{app.COPY_LABEL}</button>' in reply
    # A location is document text too: escaped, and on one line.
    odd = quote("x", "a.html", 0, location="<b>Intro</b>\n *one*")
    cited = app.format_quote(odd)
    assert "<b>" not in cited and "&lt;b&gt;Intro&lt;/b&gt; &#42;one&#42;" in cited


def test_reply_says_what_a_follow_up_was_answered_as():
    q = quote("The tunnel opens in 2031.", answer="2031")
    reply = app.format_reply(
        Answer("When?", "2031", 0.8, [q], ["doc.txt"], standalone="When does the <tunnel> open?")
    )
    assert '<p class="qa-standalone">Answered as: When does the &lt;tunnel&gt; open?</p>' in reply
    assert reply.index("qa-standalone") < reply.index("qa-answer")
    assert "qa-standalone" not in app.format_reply(Answer("q", "2031", 0.8, [q], ["doc.txt"]))


def test_the_conversation_goes_on_as_plain_text():
    first = Answer("How many <b>arches</b>?", "7 *arches*", 0.8, [quote("It has 7 *arches*.")], [])
    declined = Answer("Who?", None, 0.9, [quote("Nothing.")], [])
    history = [
        {"role": "user", "content": app.format_question("How many <b>arches</b>?")},
        {"role": "assistant", "content": app.format_reply(first)},
        {"role": "user", "content": [{"type": "text", "text": app.format_question("Empty")}]},
        {"role": "assistant", "content": app.format_error("the question is empty")},
        {"role": "user", "content": app.format_question("Who built\nit?")},
        {"role": "assistant", "content": [{"type": "text", "text": app.format_reply(declined)}]},
        {"role": "user", "content": app.format_question("Pending?")},
        {"role": "assistant", "content": app.format_searching()},
        {"role": "system", "content": "ignored"},
        "not a message",
    ]
    assert app.plain_history(history) == [
        {"role": "user", "content": "How many <b>arches</b>?"},
        {"role": "assistant", "content": "7 *arches*"},
        {"role": "user", "content": "Who built\nit?"},
        {"role": "assistant", "content": declined.message},
    ]
    assert app.plain_history(history, limit=2) == app.plain_history(history)[-2:]
    assert app.plain_history(None) == [] and app.plain_history([]) == []


def test_reply_shows_document_markup_and_markdown_literally():
    q = quote(
        HOSTILE + " The bridge has 7 arches.", "<img src=x onerror=alert(2)>.txt", answer="7 arches"
    )
    reply = app.format_reply(Answer("q", "<b>7</b> *arches*", 0.8, [q], [q.source]))

    parsed = parse(reply)
    assert {t for t, _ in parsed.tags} <= REPLY_TAGS  # only our own markup
    assert all(not k.startswith("on") for _, attrs in parsed.tags for k in attrs)
    assert "<script" not in reply.lower() and "<b>" not in reply and "<img" not in reply
    # Every character of the document survives, shown literally.
    assert HOSTILE in "".join(parsed.text)
    assert "<b>7</b> *arches*" in "".join(parsed.text)
    assert "<img src=x onerror=alert(2)>.txt" in "".join(parsed.text)
    # Markdown control characters are entities, so no renderer could act on them.
    raw = re.sub(r"&#?\w+;", "", text_nodes(reply))  # the text, entities left out
    for ch in "*_`#[]|$\\<>":
        assert ch not in raw, ch
    # The original entity text "&amp;" is itself escaped (shown as "&amp;", not "&").
    assert "&amp;amp;" in reply


def test_reply_has_no_raw_newlines_and_keeps_line_breaks():
    q = quote("Headline\n\nFirst line.\r\nSecond 500 line.", answer="500")
    reply = app.format_reply(Answer("q", "500", 0.7, [q], ["doc.txt"]))
    assert "\n" not in reply and "\r" not in reply  # Gradio's cleandoc cannot re-indent it
    assert "Headline<br>First line.<br>Second <mark>500</mark> line." in reply


def test_no_answer_says_so_plainly_and_still_quotes_closest_passages():
    q1 = quote("Nothing about cheese here.", "a.txt", score=0.4)
    q2 = quote("Nor here, about the moon.", "b.txt", score=0.5)
    ans = Answer("What colour is the moon cheese?", None, 0.87, [q2, q1], [])
    reply = app.format_reply(ans)
    assert ans.message.split(".")[0] in html.unescape(reply)  # "The documents do not say"
    assert "probability that the documents hold no answer 87%" in reply
    assert "<strong>" not in reply and "<mark>" not in reply
    assert "Closest passages (2)" in reply
    listed = reply[reply.index("<ol"):]
    assert listed.index("b.txt") < listed.index("a.txt")
    assert "Nothing about cheese here." in reply and "Nor here, about the moon." in reply


def test_error_reply_is_one_escaped_line():
    reply = app.format_error("the question is <empty>")
    assert reply == '<p class="qa-error">the question is &lt;empty&gt;</p>'


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_esc_is_inert_and_lossless(text):
    out = app.esc(text)
    assert "<" not in out.replace("<br>", "") and ">" not in out.replace("<br>", "")
    assert "\n" not in out and "\r" not in out
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    assert html.unescape(out.replace("<br>", "\n")) == normalised


def test_status_panel_lists_counts_staleness_and_escapes_names():
    status = {
        "built": "2026-11-23T01:55:24+0000",
        "documents": 2,
        "passages": 9,
        "sources": {"a.txt": 4, "<i>b</i>.md": 5},
        "skipped": {"c.txt": "c.txt: not UTF-8", "scan.pdf": "no text layer (scanned?)"},
        "stale": ["added: new_<x>.txt", "removed: a.txt"],
        "seeds_dir": "/d",
        "index_dir": "/i",
    }
    out = app.format_status(status)
    text = "".join(parse(out).text)
    assert "2 documents · 9 passages indexed" in text
    assert "2026-11-23 01:55" in text
    assert "changed since" in text and "added: new_<x>.txt" in text and "removed: a.txt" in text
    assert "<i>" not in out and "&lt;i&gt;b&lt;/i&gt;.md" in out.replace("&#95;", "_")
    assert "Skipped 2 file(s)" in text
    assert "c.txt: not UTF-8" in text and "c.txt: c.txt" not in text
    assert "scan.pdf: no text layer (scanned?)" in text  # named even when the reason is not
    assert "rebuild now" in text
    assert "rebuild now" not in "".join(parse(app.format_status(status, read_only=True)).text)
    fresh = app.format_status({**status, "stale": []})
    assert "Up to date" in fresh


def test_cli_flags_and_environment(monkeypatch):
    args = app.parse_args(
        ["--seeds", "docs", "--index", "idx", "--host", "0.0.0.0", "--port", "9000"]
    )
    assert (args.seeds, args.index, args.host, args.port) == (
        Path("docs"),
        Path("idx"),
        "0.0.0.0",
        9000,
    )
    seen = {}

    class FakeDemo:
        def launch(self, **kw):
            seen.update(kw)

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    app.launch(FakeDemo())
    assert (seen["server_name"], seen["server_port"]) == ("127.0.0.1", 7860)  # loopback
    assert seen["auth"] is None and "<script>" in seen["head"]
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    app.launch(FakeDemo(), auth=("u", "password"))  # beyond loopback only with a login
    assert (seen["server_name"], seen["server_port"]) == ("0.0.0.0", 7999)
    assert seen["auth"] == [("u", "password")]
    app.launch(FakeDemo(), "127.0.0.2", 8001)  # flags win over the environment
    assert (seen["server_name"], seen["server_port"]) == ("127.0.0.2", 8001)
    assert seen["share"] is False


# -- upload safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("notes.txt", "notes.txt"),
        ("Notes Final (v2).MD", "Notes Final (v2).md"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("..\\..\\windows\\win.ini.txt", "win.ini.txt"),
        ("/abs/path/report.md", "report.md"),
        ("a b$c;rm -rf *.txt", "a b_c_rm -rf.txt"),
        ("Überblick.md", "Uberblick.md"),
        ("报告.txt", "upload.txt"),
        ("CON.txt", "CON_.txt"),
        ("x" * 300 + ".txt", "x" * (MAX_NAME_CHARS - 4) + ".txt"),
        ("Report.PDF", "Report.pdf"),
        ("page.HTM", "page.htm"),
        ("../memo.docx", "memo.docx"),
        ("site.html", "site.html"),
    ],
)
def test_safe_filename_keeps_a_plain_basename(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize(
    "name, reason",
    [
        (".hidden.txt", "hidden"),
        ("dir/.bashrc.md", "hidden"),
        ("..", "not a file name"),
        ("evil/..", "not a file name"),
        ("", "no name"),
        ("   ", "no name"),
        ("report.exe", "only .txt, .md, "),
        ("archive.txt.gz", "only .txt, .md, "),
        ("README", "only .txt, .md, "),
        ("old.doc", "only .txt, .md, "),
        ("a\x00b.txt", "NUL"),
    ],
)
def test_safe_filename_refuses_unsafe_names(name, reason):
    with pytest.raises(UploadError, match=reason) as e:
        safe_filename(name)
    assert "\n" not in str(e.value)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=80)
    | st.builds(
        lambda a, b: a + b,
        st.text(max_size=40),
        st.sampled_from([".txt", ".md", ".TXT", "/.md", ".pdf", ".Docx", ".htm"]),
    )
)
def test_safe_filename_never_escapes_the_folder(name):
    try:
        safe = safe_filename(name)
    except UploadError:
        return
    assert safe.endswith(allowed_suffixes()) and re.fullmatch(r"[A-Za-z0-9._() -]+", safe)
    assert not safe.startswith(".") and len(safe) <= MAX_NAME_CHARS
    folder = Path("/srv/docs")
    assert (folder / safe).resolve().parent == folder


def test_uploads_take_exactly_what_the_indexer_reads():
    from qa.documents import SUFFIXES

    assert allowed_suffixes() == tuple(s.lower() for s in SUFFIXES)
    assert {".txt", ".md", ".pdf", ".html", ".htm", ".docx"} <= set(allowed_suffixes())
    for suffix in SUFFIXES:
        assert safe_filename("doc" + suffix.upper()) == "doc" + suffix


def test_check_content_messages():
    assert check_content("héllo\n".encode(), "a.txt") == "héllo\n"
    assert check_content(b"\xef\xbb\xbfwith BOM", "a.md") == "with BOM"
    assert "Hi there" in check_content(b"<html><body><p>Hi there</p></body></html>", "a.html")
    with pytest.raises(UploadError, match=r"big.txt is 11 bytes; the upload limit is 10 bytes"):
        check_content(b"x" * 11, "big.txt", max_bytes=10)
    refused = [
        ("café".encode("latin-1"), "latin.txt", r"latin.txt: not UTF-8 text \(byte 3\)$"),
        (b"abc\x00def", "bin.txt", "bin.txt: looks binary"),
        (b" \n ", "blank.txt", "blank.txt: empty"),
        (b"%PDF-1.4 not really", "fake.pdf", "fake.pdf: not a readable PDF"),
        (b"PK\x03\x04 not a zip", "fake.docx", "fake.docx: not a readable"),
    ]
    for data, name, message in refused:
        with pytest.raises(UploadError, match=message) as e:
            check_content(data, name)
        assert "\n" not in str(e.value) and "skipped" not in str(e.value)


def test_a_refused_upload_writes_nothing(tmp_path):
    for data, name in [(b"%PDF-1.4 junk", "x.pdf"), (b"\xff\xfe", "x.txt"), (b"", "x.md")]:
        with pytest.raises(UploadError):
            save_upload(data, name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_uploads_keep_to_the_folders_quota(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_bytes(b"x" * 40)
    (tmp_path / "sub" / "b.md").write_bytes(b"y" * 30)
    (tmp_path / ".examples.txt").write_bytes(b"z" * 500)  # hidden: not counted
    (tmp_path / "image.png").write_bytes(b"z" * 500)  # not a document: not counted
    assert folder_usage(tmp_path) == (2, 70)

    monkeypatch.setattr(config, "MAX_FOLDER_FILES", 3)
    monkeypatch.setattr(config, "MAX_FOLDER_BYTES", 100)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UploadError, match=r"would take the documents folder past its quota of "
                                          r"100 bytes \(70 bytes used; QA_MAX_FOLDER_BYTES"):
        save_upload(b"w" * 31, "c.txt", tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    assert save_upload(b"w" * 30, "c.txt", tmp_path).name == "c.txt"  # exactly at the quota
    monkeypatch.setattr(config, "MAX_FOLDER_BYTES", 10_000)
    with pytest.raises(UploadError, match=r"d.txt: the documents folder is full \(3 documents, "
                                          r"the quota is 3; QA_MAX_FOLDER_FILES") as e:
        save_upload(b"new\n", "d.txt", tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "d.txt").exists()
    # An upload identical to a document already there adds nothing, so the quota allows it.
    assert save_upload(b"w" * 30, "c.txt", tmp_path).duplicate
    check_quota(tmp_path, 10, "e.txt", max_files=4)  # explicit limits win over the config
    with pytest.raises(UploadError, match="quota"):
        check_quota(tmp_path, 10, "e.txt", max_files=4, max_bytes=100)


def test_quota_defaults_come_from_the_environment():
    import subprocess
    import sys

    code = "from qa import config; print(config.MAX_FOLDER_FILES, config.MAX_FOLDER_BYTES)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_MAX_FOLDER")}

    def run(**extra):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, **extra}, check=True).stdout.split()

    assert run() == ["1000", str(200 * 1024 * 1024)]
    assert run(QA_MAX_FOLDER_FILES="7", QA_MAX_FOLDER_BYTES="1234") == ["7", "1234"]


def test_size_limit_comes_from_config(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_UPLOAD_BYTES", 16)
    with pytest.raises(UploadError, match="upload limit is 16 bytes"):
        save_upload(b"x" * 17, "big.txt", tmp_path)
    big = tmp_path / "incoming.txt"
    big.write_bytes(b"x" * 1000)
    with pytest.raises(UploadError, match="incoming.txt is 1000 bytes"):
        read_upload(big)
    assert save_upload(b"x" * 16, "ok.txt", tmp_path).name == "ok.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incoming.txt", "ok.txt"]


def test_save_never_overwrites(tmp_path):
    first = save_upload(b"first version\n", "notes.txt", tmp_path)
    assert (first.name, first.renamed, first.message) == ("notes.txt", False, "added notes.txt")
    second = save_upload(b"second version\n", "../notes.txt", tmp_path)
    assert second.name == "notes-2.txt" and second.renamed
    assert second.message == "notes.txt already exists; saved as notes-2.txt instead"
    third = save_upload(b"third\n", "notes.txt", tmp_path)
    assert third.name == "notes-3.txt"
    assert (tmp_path / "notes.txt").read_bytes() == b"first version\n"
    assert (tmp_path / "notes-2.txt").read_bytes() == b"second version\n"
    same = save_upload(b"first version\n", "notes.txt", tmp_path)
    assert same.duplicate and "already in the documents" in same.message
    renamed = save_upload(b"x\n", "my notes?.txt", tmp_path)
    assert renamed.message == "added my notes?.txt as my notes.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "my notes.txt",
        "notes-2.txt",
        "notes-3.txt",
        "notes.txt",
    ]  # no temp files left


def test_save_is_atomic_and_cleans_up_on_failure(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save_upload(b"hello\n", "a.txt", tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a half file nor a temp file


def test_save_falls_back_to_replace_where_links_fail(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.txt").write_text("old")
    saved = save_upload(b"new\n", "a.txt", tmp_path)
    assert saved.name == "a-2.txt" and (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-2.txt", "a.txt"]


def test_save_refuses_a_missing_folder(tmp_path):
    with pytest.raises(UploadError, match="does not exist"):
        save_upload(b"x\n", "a.txt", tmp_path / "nope")


# -- the running app -------------------------------------------------------------------------


def _reply(history) -> str:
    content = history[-1]["content"]
    if isinstance(content, list):
        content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return content


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=False)


def test_app_answers_with_the_source(client):
    cleared, history, status = client.predict(INTERCEPTORS, [], api_name="/ask")
    assert cleared == ""
    assert [m["role"] for m in history] == ["user", "assistant"]
    reply = _reply(history)
    assert "<strong>" in reply and "<mark>" in reply and "<details" in reply
    text = html.unescape(reply)
    assert "500" in text
    assert INTERCEPTOR_SOURCE in text
    assert "documents" in status


def test_app_shows_the_question_and_a_searching_reply_first(client):
    job = client.submit(INTERCEPTORS, [], api_name="/ask")
    _, final, _ = job.result(timeout=120)
    outputs = job.outputs()
    assert len(outputs) >= 2
    _, first, _ = outputs[0]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert INTERCEPTORS in html.unescape(_reply(first[:1]))
    assert _reply(first) == app.format_searching()
    assert "Searching the documents" in html.unescape(_reply(first))
    assert "500" in html.unescape(_reply(final)) and "qa-searching" not in _reply(final)


def test_app_keeps_the_conversation(client):
    _, history, _ = client.predict(INTERCEPTORS, [], api_name="/ask")
    _, history, _ = client.predict(
        "Who is Ukraine's new Defence Minister?", history, api_name="/ask"
    )
    assert [m["role"] for m in history] == ["user", "assistant"] * 2


def test_a_follow_up_is_answered_as_the_engine_answers_it(client, seed_engine):
    _, history, _ = client.predict(INTERCEPTORS, [], api_name="/ask")
    follow_up = "When will they arrive?"
    _, history, _ = client.predict(follow_up, history, api_name="/ask")
    direct = seed_engine.answer(follow_up, history=[
        {"role": "user", "content": INTERCEPTORS},
        {"role": "assistant", "content": seed_engine.answer(INTERCEPTORS).text},
    ])
    reply = html.unescape(_reply(history))
    if direct.standalone:
        assert f"Answered as: {direct.standalone}</p>" in reply
    else:
        assert "Answered as" not in reply
    if direct.text:
        assert f"<strong>{direct.text}</strong>" in reply


@pytest.mark.parametrize(
    "question, message",
    [
        ("x" * (config.MAX_QUESTION_CHARS + 1), "the limit is"),
        ("\x00\x01 \x02", "the question is empty"),
    ],
)
def test_app_shows_bad_input_as_one_line(client, question, message):
    _, history, _ = client.predict(question, [], api_name="/ask")
    reply = _reply(history)
    assert message in html.unescape(reply)
    assert reply.startswith('<p class="qa-error">') and "Traceback" not in reply


class StubEngine:
    """Just enough of QA for the app: records what each question was asked with."""

    def __init__(self, folder: Path):
        self.seeds_dir = folder
        self.calls: list[tuple[str, list | None]] = []

    def answer(self, question, top_k=config.TOP_K, history=None):
        self.calls.append((question, history))
        q = quote("The ferry takes 43 minutes.", "ferry.pdf", 0, "43 minutes", location="page 2")
        return Answer(question, "43 minutes", 0.9, [q], ["ferry.pdf"],
                      standalone="How long does the ferry take?" if history else None)

    def status(self):
        return {"documents": 1, "passages": 1, "sources": {"ferry.pdf": 1}, "skipped": {},
                "stale": [], "seeds_dir": str(self.seeds_dir), "built": None}


@pytest.fixture
def stub_app(tmp_path):
    from gradio_client import Client

    from .conftest import serve_app

    engine = StubEngine(tmp_path)
    demo, url = serve_app(engine)
    yield engine, Client(url, verbose=False, download_files=False)
    demo.close()


def test_app_passes_the_earlier_turns_as_plain_text(stub_app):
    engine, c = stub_app
    first = "How long does the <b>ferry</b> take?"
    _, history, _ = c.predict(first, [], api_name="/ask")
    assert engine.calls[-1] == (first, [])
    _, history, _ = c.predict("And at night?", history, api_name="/ask")
    assert engine.calls[-1] == ("And at night?", [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "43 minutes"},
    ])
    reply = _reply(history)
    assert "Answered as: How long does the ferry take?" in html.unescape(reply)
    assert "ferry.pdf, paragraph 2, chars 0–27, page 2" in html.unescape(re.sub("<[^>]+>", "", reply))


def test_a_session_holds_no_more_components_however_many_questions(tmp_path):
    """Gradio keeps a new component in the session for each update it is sent (gr.skip()
    too): the app sends the corpus panel as a value, so a long chat does not grow memory."""
    from gradio_client import Client

    from .conftest import serve_app

    demo, url = serve_app(StubEngine(tmp_path))
    try:
        c = Client(url, verbose=False, download_files=False)

        def held() -> list[int]:
            return [len(s.blocks_config.blocks) for s in demo.state_holder.session_data.values()]

        c.predict("How long does the ferry take?", [], api_name="/ask")
        before = held()
        for question in ["And at night?", "How long does the ferry take?", "   "] * 2:
            c.predict(question, [], api_name="/ask")
        assert held() == before and len(before) == 1
    finally:
        demo.close()


def test_app_upload_adds_a_document_and_reindexes(scratch_app_url, tmp_path):
    from gradio_client import Client, handle_file

    c = Client(scratch_app_url, verbose=False, download_files=False)
    doc = tmp_path / "kelpie_ferry.txt"
    doc.write_text("The Kelpie ferry crosses the Marrow Sound in exactly 43 minutes.\n")
    _, status, notice = c.predict([handle_file(str(doc))], api_name="/upload")
    notice = html.unescape(notice)
    assert "Added kelpie_ferry.txt" in notice and "Indexed" in notice
    assert "kelpie_ferry.txt" in html.unescape(status)
    _, history, _ = c.predict(
        "How long does the Kelpie ferry take to cross the Marrow Sound?", [], api_name="/ask"
    )
    text = html.unescape(_reply(history))
    assert "43 minutes" in text and "kelpie_ferry.txt" in text
    # The same name again with other content is kept apart, not overwritten.
    doc.write_text("The Kelpie ferry was repainted green in 2019.\n")
    _, _, notice = c.predict([handle_file(str(doc))], api_name="/upload")
    assert "saved as kelpie_ferry-2.txt" in html.unescape(notice)


def test_app_upload_reads_other_formats_and_refuses_unreadable_ones(scratch_app_url, tmp_path):
    from gradio_client import Client, handle_file

    c = Client(scratch_app_url, verbose=False, download_files=False)
    page = tmp_path / "orrin_lighthouse.html"
    page.write_text(
        "<html><head><title>Orrin</title><script>var x = 1;</script></head><body>"
        "<h2>Keepers</h2><p>The Orrin lighthouse was kept by Mara Vell from 1911.</p>"
        "</body></html>\n"
    )
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not a PDF")
    _, status, notice = c.predict(
        [handle_file(str(page)), handle_file(str(broken))], api_name="/upload"
    )
    notice = html.unescape(notice)
    assert "Added orrin_lighthouse.html" in notice and "Indexed" in notice
    assert "Not added: broken.pdf: not a readable PDF" in notice
    assert "broken.pdf" not in html.unescape(status)
    _, history, _ = c.predict("Who kept the Orrin lighthouse?", [], api_name="/ask")
    text = html.unescape(re.sub("<[^>]+>", "", _reply(history)))
    assert "Mara Vell" in text and "var x" not in text
    # The citation names the section the quote sits in (the HTML heading).
    assert re.search(r"orrin_lighthouse\.html, paragraph \d+, chars \d+–\d+, Keepers · ", text)


def test_app_answers_several_users_at_once(app_url):
    from gradio_client import Client

    clients = [Client(app_url, verbose=False, download_files=False) for _ in range(3)]
    jobs = [c.submit(INTERCEPTORS, [], api_name="/ask") for c in clients]
    for job in jobs:
        _, history, _ = job.result(timeout=120)
        assert "500" in html.unescape(_reply(history))


def test_example_questions_come_from_the_documents_folder(tmp_path):
    import app

    assert app.load_examples(tmp_path) == []  # none kept: none shown
    (tmp_path / app.EXAMPLES_FILE).write_text(
        "How long is the bridge?\n\n   Who   built it?  \n" + "x" * 5000 + "\n", encoding="utf-8"
    )
    assert app.load_examples(tmp_path) == ["How long is the bridge?", "Who built it?"]
    (tmp_path / app.EXAMPLES_FILE).write_bytes(b"\xff\xfe bad")
    assert app.load_examples(tmp_path) == []


@pytest.mark.parametrize(
    "question", [INTERCEPTORS, "What is the capital of France?"], ids=["answer", "decline"]
)
def test_every_interface_gives_the_same_quotes_in_the_same_order(
    client, seed_engine, question, capsys
):
    """Python, `qa ask --json` and the chat API: the same quotes, order and labelled numbers."""
    import json
    import re

    from qa.cli import main

    r = seed_engine.answer(question)
    python = [(q.source, q.start, q.end, f"{q.score:.2f}") for q in r.quotes]

    args = ["ask", question, "--json", "--seeds", str(seed_engine.seeds_dir),
            "--index", str(seed_engine.index_dir)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    cli = [(q["source"], q["start"], q["end"], f"{q['score']:.2f}") for q in out["quotes"]]
    assert out["score"] == r.score and out["text"] == r.text

    _, history, _ = client.predict(question, [], api_name="/ask")
    reply = html.unescape(_reply(history))
    chat = [(s, int(a), int(b), rel) for s, a, b, rel in re.findall(
        r'<span class="qa-source">([^<]+)</span>, paragraph \d+, chars (\d+)–(\d+)[^<]*</span>'
        r" · relevance ([\d.]+)", reply)]
    assert python == cli == chat and python
    if r.text is None:
        assert f"no answer {round(r.score * 100)}%" in reply
    else:
        assert f"confidence {round(r.score * 100)}%" in reply


def test_a_guess_is_offered_as_a_guess_not_an_answer():
    q = quote("Harbour master Idris Calloway said so.", "a.txt", answer="Idris Calloway")
    ans = Answer("Who runs the harbour?", None, 0.3, [q], [], guess="Idris Calloway",
                 guess_confidence=0.42)
    text = html.unescape(app.format_reply(ans))
    assert "Not sure enough to answer: perhaps \u201cIdris Calloway\u201d (confidence 42%)" in text
    assert "<strong>" not in text and "<mark>Idris Calloway</mark>" in text
    assert "Closest passages (1)" in text

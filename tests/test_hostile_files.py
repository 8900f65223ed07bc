"""No document, file name or damaged file can stop the service (issue 24): each hostile file
skips only itself, with its reason, and the documents beside it are answered as before."""

from __future__ import annotations

import encodings.aliases
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa import QA, config
from qa import index as index_mod
from qa.documents import (
    SUFFIXES,
    Document,
    extract,
    loaders,
    printable_name,
    scan_documents,
    split_document,
)
from qa.errors import QAError
from qa.index.folder import read_source

from .document_files import HARBOUR, docx_bomb, docx_bytes, pdf_bomb, pdf_bytes

INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"
# The charsets of the issue: bytes transforms (not text encodings) and strict-only codecs.
ODD_CHARSETS = ["rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri", "undefined", "idna"]
BEACON = "The beacon on Carrow Point was first lit in 1862 by the keeper Ada Frane."


def _page(charset: str, body: str) -> bytes:
    return (f'<html><head><meta charset="{charset}"></head><body><p>{body}</p></body></html>'
            ).encode()


def _refusal(data: bytes, source: str) -> str:
    with pytest.raises(QAError) as e:
        extract(data, source)
    message = str(e.value)
    assert message.startswith(f"{source}: ") and "\n" not in message
    return message


# -- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ODD_CHARSETS)
def test_a_page_naming_a_bytes_codec_or_a_strict_one_is_read_as_utf8(charset):
    text = extract(_page(charset, BEACON), "page.html").text
    assert text == BEACON


def test_only_text_encodings_decode_a_page():
    assert loaders.html_codec("rot13") == "utf-8" and loaders.html_codec("base64") == "utf-8"
    assert loaders.html_codec("no-such-codec") == "utf-8"
    assert loaders.html_codec("latin-1") == "cp1252"  # as browsers read it
    assert loaders.html_codec("koi8-r") == "koi8-r"
    page = _page("koi8-r", "").replace(b"<p></p>", "<p>Привет, мир.</p>".encode("koi8-r"))
    assert extract(page, "ru.html").text == "Привет, мир."


def test_text_that_is_not_text_is_replaced_one_for_one():
    """unicode-escape is a text encoding that can yield lone surrogates: each becomes U+FFFD,
    so offsets hold and the index can be written as UTF-8."""
    data = _page("unicode_escape", "Half a pair \\ud800 here, and more words after it.")
    text = extract(data, "odd.html").text
    assert text == "Half a pair \ufffd here, and more words after it."
    text.encode("utf-8")


def test_any_parser_failure_is_a_one_line_skip(monkeypatch):
    def explode(data, source):
        raise RecursionError("maximum recursion depth exceeded\nin a nested table")

    monkeypatch.setitem(loaders.LOADERS, ".html", explode)
    message = _refusal(b"<p>x</p>", "deep.html")
    assert message == ("deep.html: cannot be read (RecursionError: maximum recursion depth "
                       "exceeded); skipped")


# -- limits -----------------------------------------------------------------------------------


def test_a_small_pdf_that_expands_to_tens_of_thousands_of_passages_is_skipped_early(
        monkeypatch):
    # The bomb is real: each draw of its form is 60 more passages.
    monkeypatch.setattr(config, "MAX_EXPANSION_RATIO", 10**9)
    small = extract(pdf_bomb(draws=20), "b.pdf")
    assert len(split_document(Document("b.pdf", small.text, "", small.sections))) == 20 * 60
    monkeypatch.undo()

    data = pdf_bomb(draws=1000)  # 60,000 passages, 3 M characters from 1.1 KB
    assert len(data) < 1500
    drawn = []
    draw = loaders._TextBudget.draw
    monkeypatch.setattr(loaders._TextBudget, "draw",
                        lambda self, n: (drawn.append(n), draw(self, n)))
    message = _refusal(data, "bomb.pdf")
    assert "expands to over 100 times its size" in message and "characters of text" in message
    assert "QA_MAX_EXPANSION_RATIO" in message
    # Stopped while extracting: at the limit (100 x 1.1 KB), not after 3 M characters.
    assert sum(drawn) <= config.MAX_EXPANSION_RATIO * len(data) + max(drawn)


def test_the_characters_limit_stops_every_format(monkeypatch):
    monkeypatch.setattr(config, "MAX_DOCUMENT_CHARS", 1000)
    long_text = " ".join([HARBOUR] * 10)
    pages = [[HARBOUR]] * 8
    for source, data in [
        ("a.txt", long_text.encode()),
        ("a.md", long_text.encode()),
        ("a.html", f"<p>{long_text}</p>".encode()),
        ("a.docx", docx_bytes([("Normal", HARBOUR)] * 10)),
        ("a.pdf", pdf_bytes(pages)),
    ]:
        message = _refusal(data, source)
        assert "past the limit of 1,000 characters per document" in message, source
        assert "QA_MAX_DOCUMENT_CHARS" in message
    monkeypatch.setattr(config, "MAX_DOCUMENT_CHARS", 100_000)
    assert extract(long_text.encode(), "a.txt").text == long_text


def test_the_pages_and_passages_limits(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "MAX_PDF_PAGES", 2)
    message = _refusal(pdf_bytes([[HARBOUR]] * 3), "three.pdf")
    assert message == ("three.pdf: 3 pages, over the limit of 2 per PDF (QA_MAX_PDF_PAGES "
                       "sets it); skipped")
    assert extract(pdf_bytes([[HARBOUR]] * 2), "two.pdf").text

    monkeypatch.setattr(config, "MAX_DOCUMENT_PASSAGES", 3)
    (tmp_path / "four.txt").write_text("\n\n".join([HARBOUR] * 4))
    (tmp_path / "three.txt").write_text("\n\n".join([HARBOUR] * 3))
    found = {f.source: f for f in scan_documents(tmp_path)}
    read = read_source(tmp_path, found["four.txt"])
    assert read.skipped and read.meta["error"] == (
        "four.txt: 4 passages, over the limit of 3 per document (QA_MAX_DOCUMENT_PASSAGES "
        "sets it); skipped")
    assert len(read_source(tmp_path, found["three.txt"]).passages) == 3


def test_uploads_are_held_to_the_same_limits(monkeypatch, tmp_path):
    from qa.uploads import UploadError, save_upload

    with pytest.raises(UploadError, match="expands to over 100 times its size"):
        save_upload(pdf_bomb(draws=1000), "bomb.pdf", tmp_path)
    monkeypatch.setattr(config, "MAX_DOCUMENT_PASSAGES", 3)
    with pytest.raises(UploadError, match="4 passages, over the limit of 3 per document"):
        save_upload("\n\n".join([HARBOUR] * 4).encode(), "four.txt", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_limits_print_as_the_docs_state_them():
    from qa.display import format_bytes

    assert format_bytes(config.MAX_FILE_BYTES) == "20 MB"  # not "21 MB"
    assert format_bytes(config.MAX_UPLOAD_BYTES) == "5 MB"
    assert format_bytes(200 * 1024 * 1024) == "200 MB"
    assert format_bytes(1536) == "1.5 KB" and format_bytes(999) == "999 bytes"
    limits = (Path(__file__).resolve().parent.parent / "docs" / "limits.md").read_text()
    for name, shown in [("QA_MAX_FILE_BYTES", "20 MB"), ("QA_MAX_DOCUMENT_CHARS", "20,000,000"),
                        ("QA_MAX_DOCUMENT_PASSAGES", "50,000"), ("QA_MAX_PDF_PAGES", "10,000"),
                        ("QA_MAX_EXPANSION_RATIO", "100")]:
        row = next(line for line in limits.splitlines() if name in line)
        assert shown in row, name


# -- names ------------------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_indexed_under_its_printable_form(make_engine):
    engine = make_engine({"harbour.txt": HARBOUR})
    os.mkdir(bytes(engine.seeds_dir) + b"/d\xfcr")
    with open(bytes(engine.seeds_dir) + b"/d\xfcr/caf\xe9.txt", "wb") as f:
        f.write(BEACON.encode())
    engine.refresh()
    assert set(engine.index.manifest["sources"]) == {"harbour.txt", "d\\xfcr/caf\\xe9.txt"}
    answer = engine.answer("Who first lit the beacon on Carrow Point?")
    assert "Ada Frane" in answer.text and answer.sources == ["d\\xfcr/caf\\xe9.txt"]
    manifest = (engine.index_dir / "manifest.json").read_bytes()
    manifest.decode("utf-8")
    assert not engine.stale_reasons()  # the printable name is stable from scan to scan


def test_printable_names_are_one_to_one():
    assert printable_name("caf\udce9.txt") == "caf\\xe9.txt"
    assert printable_name("caf\\xe9.txt") == "caf\\\\xe9.txt"  # typed: the backslash doubled
    assert printable_name("plain name.txt") == "plain name.txt"
    assert printable_name("two\nlines\x1b[2J.txt") == "two\\x0alines\\x1b[2J.txt"
    assert printable_name("\u009b.txt") == "\\u009b.txt"  # U+009B, not the byte 9B
    assert printable_name("\udc9b.txt") == "\\x9b.txt"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.binary(min_size=1, max_size=40))
def test_printable_names_never_collide(a, b):
    pa, pb = printable_name(os.fsdecode(a)), printable_name(os.fsdecode(b))
    pa.encode("utf-8")
    assert (pa == pb) == (a == b)


_NAME_BYTES = st.binary(min_size=1, max_size=60).filter(
    lambda b: b"/" not in b and b"\0" not in b and not b.startswith(b"."))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_NAME_BYTES, st.binary(max_size=300))
def test_any_name_and_content_is_read_or_skipped_and_recorded(name, content):
    """Arbitrary bytes as a file's name and content: the scan lists it under a name that
    can be stored, reading it gives passages or a one-line reason, and its manifest entry
    can always be written."""
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(os.fsencode(folder), name + b".txt"), "wb") as f:
            f.write(content)
        found = scan_documents(Path(folder))
        if not found:  # an ignored name: an editor's backup or autosave
            assert name.endswith(b"~") or name.startswith((b"~$", b"#"))
            return
        (file,) = found
        read = read_source(Path(folder), file)
        if read.skipped:
            assert read.meta["error"].startswith(file.source + ": ")
            assert "\n" not in read.meta["error"]
        index_mod.versions.json_bytes({file.source: read.meta}).decode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.sampled_from(SUFFIXES))
def test_any_bytes_in_any_format_are_read_or_skipped(data, suffix):
    try:
        extracted = extract(data, "f" + suffix)
    except QAError as e:
        assert str(e).startswith("f" + suffix + ": ") and "\n" not in str(e)
        return
    extracted.text.encode("utf-8")


_CODEC_NAMES = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
                      | set(ODD_CHARSETS) | {"unicode_escape", "punycode", "utf-7"})


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_CODEC_NAMES), st.binary(max_size=200))
def test_any_declared_charset_reads_or_skips(charset, body):
    data = _page(charset, "").replace(b"<p></p>", b"<p>" + body + b" Some words.</p>")
    try:
        text = extract(data, "page.html").text
    except QAError as e:
        assert str(e).startswith("page.html: ") and "\n" not in str(e)
        return
    text.encode("utf-8")


# -- a documents folder with every hostile file beside the seeds ------------------------------


def _deep_folder(root: Path) -> str:
    """A folder nested past PATH_MAX (4096 bytes): made relative to open folders."""
    fd = os.open(root, os.O_RDONLY)
    depth = 0
    try:
        while depth * 201 < 4300:
            os.mkdir("d" * 200, dir_fd=fd)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, depth = inner, depth + 1
        with open(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write(BEACON)
    finally:
        os.close(fd)
    return "/".join(["d" * 200] * (depth - 1))


def plant_hostile_files(docs: Path, outside: Path) -> tuple[dict[str, str], set[str]]:
    """Every hostile file of the issue, small and made here: (skipped source -> words of its
    reason, sources that must be indexed as ordinary documents)."""
    skipped: dict[str, str] = {}
    indexed: set[str] = set()
    for charset in ODD_CHARSETS:
        (docs / f"charset-{charset}.html").write_bytes(_page(charset, BEACON))
        indexed.add(f"charset-{charset}.html")
    with open(bytes(docs) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"The caf\xc3\xa9 on the quay serves 140 breakfasts a day.")
    indexed.add("caf\\xe9.txt")
    (docs / "escape\x1b]0;owned\x07.txt").write_text(
        "The lamp room was repainted in 1990.\x1b]0;owned\x07\x1b[2J\r(confidence 1.00)\u202e")
    indexed.add("escape\\x1b]0;owned\\x07.txt")  # its name as one printable line
    (docs / "bomb.pdf").write_bytes(pdf_bomb(draws=1000))
    skipped["bomb.pdf"] = "expands to over 100 times its size"
    (docs / "bomb.docx").write_bytes(docx_bomb())
    skipped["bomb.docx"] = "expands to over 100 times its size"
    (docs / "garbage.pdf").write_bytes(os.urandom(2000))
    skipped["garbage.pdf"] = "not a readable PDF"
    (docs / "garbage.docx").write_bytes(b"PK\x03\x04" + os.urandom(500))
    skipped["garbage.docx"] = "not a readable .docx"
    (docs / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    skipped["latin1.txt"] = "not UTF-8"
    os.mkfifo(docs / "pipe.txt")
    skipped["pipe.txt"] = "not a regular file"
    (outside / "secret.txt").write_text("The vault code is 4471.")
    os.symlink(outside / "secret.txt", docs / "secret.txt")
    skipped["secret.txt"] = "a symbolic link to outside the documents folder"
    os.symlink(outside, docs / "linked")
    skipped["linked"] = "a symbolic link to a folder"
    skipped[_deep_folder(docs)] = "folder cannot be read (File name too long)"
    return skipped, indexed


@pytest.fixture(scope="module")
def planted(tmp_path_factory, seed_engine, encoder, reader):
    """(engine, before, skipped, indexed): the seeds with their index, then every hostile
    file added and the index refreshed; ``before``: the seeds' manifest entries."""
    base = tmp_path_factory.mktemp("hostile")
    shutil.copytree(seed_engine.seeds_dir, base / "docs")
    shutil.copytree(seed_engine.index_dir, base / "index")
    (base / "outside").mkdir()
    before = json.loads((base / "index" / "manifest.json").read_text())["sources"]
    skipped, indexed = plant_hostile_files(base / "docs", base / "outside")
    engine = QA(base / "docs", base / "index", encoder=encoder, reader=reader)
    engine.refresh()
    return engine, before, skipped, indexed


def test_the_seeds_are_answered_beside_every_hostile_file(planted):
    engine, before, skipped, indexed = planted
    answer = engine.answer(INTERCEPTORS)
    assert "500" in answer.text
    assert "Ada Frane" in engine.answer("Who first lit the beacon on Carrow Point?").text


def test_each_hostile_file_is_skipped_with_its_reason_or_read(planted):
    engine, before, skipped, indexed = planted
    status = engine.status()
    assert set(status["skipped"]) == set(skipped)
    for source, words in skipped.items():
        reason = status["skipped"][source]
        assert reason.startswith(f"{source}: ") and words in reason, reason
        assert reason.endswith("; skipped") and "\n" not in reason
    assert indexed <= set(status["sources"])
    assert not status["stale"]  # every skip is recorded: nothing to rebuild at the next check


def test_nothing_else_changed(planted):
    engine, before, skipped, indexed = planted
    sources = engine.index.manifest["sources"]
    assert {s: sources[s] for s in before} == before  # the seeds' entries, untouched
    assert set(sources) == set(before) | indexed
    names = os.listdir(engine.index_dir)
    assert not [n for n in names if n.startswith(".tmp-") or n.endswith(".tmp")]
    assert len([n for n in names if n.startswith("v-")]) <= index_mod.versions.KEEP_VERSIONS


# -- failed builds ----------------------------------------------------------------------------


def test_a_failed_commit_leaves_nothing_behind_and_the_previous_index_serves(
        make_engine, monkeypatch):
    engine = make_engine({"harbour.txt": HARBOUR})
    engine.refresh()
    listing = sorted(os.listdir(engine.index_dir))
    (engine.seeds_dir / "beacon.txt").write_text(BEACON)

    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(index_mod.versions.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        engine.rebuild()
    assert sorted(os.listdir(engine.index_dir)) == listing  # no version folder, no temp file
    monkeypatch.undo()
    engine._index = None
    engine._manifest_stamp = None
    assert "800,000" in engine.answer("How many containers can the terminal handle?").text


def test_an_unexpected_build_failure_keeps_the_previous_index_serving(make_engine, monkeypatch):
    engine = make_engine({"harbour.txt": HARBOUR})
    engine.refresh()
    (engine.seeds_dir / "beacon.txt").write_text(BEACON)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a build step")

    monkeypatch.setattr(engine.backend, "build", broken)
    assert "800,000" in engine.answer("How many containers can the terminal handle?").text


def test_a_manifest_holding_strings_that_are_not_text_is_still_written(tmp_path):
    path = tmp_path / "manifest.json"
    index_mod.versions.write_json_atomic(path, {"error": "caf\udce9.txt: odd \ud800"})
    assert json.loads(path.read_text("utf-8")) == {"error": "caf\udce9.txt: odd \ud800"}
    assert os.listdir(tmp_path) == ["manifest.json"]


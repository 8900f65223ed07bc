"""Reading PDF, HTML, DOCX, Markdown and text through the one loader registry: extracted text,
sections, offsets, locations, and a one-line refusal naming the file for each kind of failure."""

from __future__ import annotations

import json
import os
import time

import pytest

from qa import config
from qa import index as index_mod
from qa.documents import (
    LOADERS,
    SUFFIXES,
    Extracted,
    extract,
    load_document,
    location_at,
    markdown_sections,
    read_text,
    reflow_page,
    scan_documents,
    split_document,
)
from qa.errors import QAError
from qa.reading.answers import quotes_for
from qa.types import Hit, Passage

from .document_files import (
    DIRECTOR,
    HARBOUR,
    HTML_PAGE,
    LIGHTHOUSE,
    docx_bytes,
    encrypted_pdf,
    pdf_bytes,
    scanned_pdf,
)


def _refusal(data: bytes, source: str) -> str:
    with pytest.raises(QAError) as e:
        extract(data, source)
    message = str(e.value)
    assert message.startswith(f"{source}: ") and "\n" not in message, message
    return message


def _passages(tmp_path, name: str, data: bytes) -> tuple[str, list[Passage]]:
    path = tmp_path / name
    path.write_bytes(data)
    doc = load_document(tmp_path, name, path)
    passages = split_document(doc)
    for p in passages:
        assert doc.text[p.start : p.end] == p.text
    return doc.text, passages


def _passage_with(passages: list[Passage], words: str) -> Passage:
    found = [p for p in passages if words in p.text]
    assert len(found) == 1, (words, [p.text for p in passages])
    return found[0]


def test_one_registry_names_every_suffix_config_lists():
    assert SUFFIXES == config.DOCUMENT_SUFFIXES
    assert set(SUFFIXES) == {".txt", ".md", ".pdf", ".html", ".htm", ".docx"}
    assert set(LOADERS) == set(SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in SUFFIXES)


def test_unsupported_suffix_is_refused():
    assert "not a supported format" in _refusal(b"hello", "notes.rtf")


# -- text and Markdown ----------------------------------------------------------------------


def test_text_and_markdown_are_the_file_as_stored(tmp_path):
    raw = "\ufeffHeading\r\n\r\nBody text here, with a café.\r\n".encode()
    for name in ("a.txt", "a.md"):
        (tmp_path / name).write_bytes(raw)
        doc = load_document(tmp_path, name, tmp_path / name)
        assert doc.text == read_text(tmp_path / name) == raw.decode("utf-8-sig")
    assert extract(raw, "a.txt").sections == ()


def test_markdown_headings_are_sections_outside_code_fences():
    text = (
        "# The Douro\n\nIntro paragraph.\n\nTributaries\n===========\n\nText.\n\n"
        "```\n# not a heading\n```\n\n## Wine  ##\n\nMore.\n\n---\n\n#hashtag is no heading\n"
    )
    sections = markdown_sections(text)
    assert [label for _, label in sections] == ["The Douro", "Tributaries", "Wine"]
    for offset, label in sections:
        assert text[offset:].lstrip("# ").startswith(label)
    assert extract(text.encode(), "x.md").sections == sections


def test_markdown_passages_carry_their_heading(tmp_path):
    body = "The river rises in Spain and flows west for 897 kilometres to the Atlantic Ocean."
    md = f"# The Douro\n\n{body}\n\n## Port wine\n\nPort wine is made from grapes grown in the valley."
    _, passages = _passages(tmp_path, "douro.md", md.encode())
    assert _passage_with(passages, "897").location == "The Douro"
    assert _passage_with(passages, "grapes").location == "Port wine"
    assert _passage_with(passages, "grapes").text.startswith("## Port wine")


# -- PDF ------------------------------------------------------------------------------------


def test_pdf_pages_are_sections_and_wrapped_lines_are_rejoined(tmp_path):
    data = pdf_bytes([[HARBOUR, DIRECTOR], [LIGHTHOUSE]], heading="Harbour Report")
    extracted = extract(data, "report.pdf")
    text = extracted.text
    assert [label for _, label in extracted.sections] == ["page 1", "page 2"]
    page2 = extracted.sections[1][0]
    assert text[page2:] == LIGHTHOUSE and text[page2 - 2 : page2] == "\n\n"
    # The paragraphs come back whole, one line each, separated by blank lines.
    assert text[:page2].split("\n\n") == ["Harbour Report", HARBOUR, DIRECTOR, ""]

    full, passages = _passages(tmp_path, "report.pdf", data)
    assert full == text
    assert _passage_with(passages, "800,000").location == "page 1"
    assert _passage_with(passages, "800,000").text.startswith("Harbour Report")
    assert _passage_with(passages, "Thomas Vale").location == "page 2"


def test_a_page_footer_stays_on_its_page(tmp_path):
    data = pdf_bytes([[HARBOUR], [LIGHTHOUSE]], footer=True)
    text, passages = _passages(tmp_path, "report.pdf", data)
    assert "Page 1" in text
    lighthouse = _passage_with(passages, "Thomas Vale")
    assert lighthouse.location == "page 2" and lighthouse.text.startswith("The Skerry")
    assert _passage_with(passages, "800,000").text.endswith("Page 1")


def test_reflow_without_positions_uses_line_lengths():
    page = (
        "Short Title\n"
        "A line that is long enough to have wrapped at the right margin of the\n"
        "page, and this one ends with a compound word split over lines: well-\n"
        "known words keep their hyphen.\n"
        "A new paragraph starts here and runs on for a while until the margin\n"
        "is reached."
    )
    assert reflow_page(page) == (
        "Short Title\n\nA line that is long enough to have wrapped at the right margin of the "
        "page, and this one ends with a compound word split over lines: well-known words keep "
        "their hyphen.\n\nA new paragraph starts here and runs on for a while until the margin "
        "is reached."
    )


def test_reflow_breaks_paragraphs_at_gaps_size_changes_and_columns():
    lines = [
        "Title of the page in big type",
        "first line of a paragraph, it",
        "goes on in the second line ok",
        "a new paragraph after the gap",
        "the other column starts here.",
    ]
    assert len({len(line) for line in lines}) == 1  # line lengths alone join them all
    page = "\n".join(lines)
    positions = [(800, 16), (770, 12), (756, 12), (720, 12), (790, 12)]
    assert reflow_page(page, positions).split("\n\n") == [
        lines[0], f"{lines[1]} {lines[2]}", lines[3], lines[4]]
    assert reflow_page(page) == " ".join(lines)


def test_password_protected_pdf_is_refused_but_an_owner_only_lock_is_read():
    data = pdf_bytes([[LIGHTHOUSE]])
    for algorithm in ("RC4-128", "AES-256"):
        assert "encrypted" in _refusal(encrypted_pdf(data, "secret", algorithm), "locked.pdf")
        assert extract(encrypted_pdf(data, "", algorithm), "open.pdf").text == LIGHTHOUSE


def test_scanned_and_damaged_pdfs_are_refused():
    assert "no text layer" in _refusal(scanned_pdf(), "scan.pdf")
    data = pdf_bytes([[LIGHTHOUSE]])
    assert "not a readable PDF" in _refusal(data[: len(data) // 2], "cut.pdf")
    assert "not a readable PDF" in _refusal(b"%PDF-1.7\nnot really", "fake.pdf")
    assert "not a readable PDF" in _refusal(b"", "empty.pdf")


# -- HTML -----------------------------------------------------------------------------------


def test_html_blocks_become_paragraphs_without_scripts_styles_or_navigation():
    extracted = extract(HTML_PAGE.encode(), "notes.html")
    blocks = extracted.text.split("\n\n")
    assert blocks == [
        "Lighthouse Notes",
        LIGHTHOUSE,
        "The keeper's house",
        "The keeper\u2019s house has four rooms\nand a garden of 60 square metres.",
        "Open from May to September on weekdays and weekends.",
        "Height",
        "41 metres",
        "  line one\n    line two",
    ]
    for dropped in ("tracking", "color", "Menu entry", "Home", "Skip to", "Related",
                    "Copyright", "hidden paragraph", "console", "Lighthouse notes"):  # fmt: skip
        assert dropped not in extracted.text
    assert extracted.sections == (
        (0, "Lighthouse Notes"),
        (extracted.text.index("The keeper's"), "The keeper's house"),
    )
    assert extract(HTML_PAGE.encode(), "notes.htm") == extracted


def test_html_passages_carry_their_heading(tmp_path):
    _, passages = _passages(tmp_path, "notes.html", HTML_PAGE.encode())
    assert _passage_with(passages, "Thomas Vale").location == "Lighthouse Notes"
    rooms = _passage_with(passages, "four rooms")
    assert rooms.location == "The keeper's house" and rooms.text.startswith("The keeper's house")


def test_html_encodings_and_long_headings():
    latin = '<meta charset="iso-8859-1"><p>Caf\xe9 prices rose by 4 percent.</p>'.encode("latin-1")
    assert extract(latin, "a.html").text == "Café prices rose by 4 percent."
    xhtml = b'<?xml version="1.0" encoding="utf-8"?><html><body><p>Hello there.</p></body></html>'
    assert extract(xhtml, "b.html").text == "Hello there."
    heading = "A very long heading " * 10
    sections = extract(f"<h1>{heading}</h1><p>Body.</p>".encode(), "c.html").sections
    assert len(sections[0][1]) <= 80 and sections[0][1].endswith("…")
    assert "not UTF-8" in _refusal("<p>caf\xe9</p>".encode("latin-1"), "d.html")


def test_html_without_text_is_refused():
    only_code = b"<html><head><style>p{}</style></head><body><script>x=1</script>" \
                b"<nav>Menu</nav></body></html>"  # fmt: skip
    assert "no text outside scripts" in _refusal(only_code, "code.html")
    assert "empty" in _refusal(b"  \n", "blank.html")
    assert "binary" in _refusal(b"<p>a\x00b</p>", "nul.html")


# -- DOCX -----------------------------------------------------------------------------------


def test_docx_paragraphs_cells_and_heading_styles(tmp_path):
    data = docx_bytes(
        [("Title", "Harbour Report"), ("Normal", HARBOUR), ("Heading 1", "The director"),
         ("Normal", DIRECTOR), ("Normal", "   "), ("Heading 2", "Figures")],
        table=[["Quay length", "1,240 metres"], ["x", "y"]],
        merge_last_row=True,
    )  # fmt: skip
    extracted = extract(data, "report.docx")
    assert extracted.text.split("\n\n") == [
        "Harbour Report", HARBOUR, "The director", DIRECTOR, "Figures",
        "Quay length", "1,240 metres", "merged across the row",
    ]  # fmt: skip
    assert [label for _, label in extracted.sections] == ["Harbour Report", "The director",
                                                         "Figures"]
    for offset, label in extracted.sections:
        assert extracted.text[offset:].startswith(label)
    _, passages = _passages(tmp_path, "report.docx", data)
    assert _passage_with(passages, "800,000").location == "Harbour Report"
    assert _passage_with(passages, "Elena Marsh").location == "The director"


def test_damaged_and_foreign_docx_files_are_refused():
    data = docx_bytes([("Normal", HARBOUR)])
    assert "not a readable .docx" in _refusal(data[: len(data) // 2], "cut.docx")
    assert "not a readable .docx" in _refusal(b"PK\x03\x04garbage", "zip.docx")
    assert "not a readable .docx" in _refusal(pdf_bytes([[HARBOUR]]), "renamed.docx")
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500)
    assert "encrypted or old-format" in _refusal(ole, "locked.docx")
    assert "no text" in _refusal(docx_bytes([("Normal", "  ")]), "blank.docx")


def test_a_docx_that_unpacks_far_past_its_size_is_refused_before_parsing(monkeypatch):
    import io
    import zipfile

    buffer = io.BytesIO(docx_bytes([("Normal", HARBOUR)]))
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/media/padding.bin", bytes(10_000_000))  # deflates to ~10 KB
    data = buffer.getvalue()
    assert len(data) < 100_000
    ratio = 10_800_000 / len(data)  # what it unpacks to per byte: over 100
    assert ratio > 150
    message = _refusal(data, "bomb.docx")
    assert message.startswith("bomb.docx: expands to over 100 times its size (")
    assert "bytes unpacked from" in message and "QA_MAX_EXPANSION_RATIO" in message
    monkeypatch.setattr(config, "MAX_EXPANSION_RATIO", int(ratio) + 10)
    assert HARBOUR in extract(data, "padded.docx").text  # within a raised limit: read


# -- every format -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "a.md", "a.html", "a.pdf", "a.docx"])
def test_empty_files_are_refused(name):
    assert _refusal(b"", name)


def test_oversized_files_are_refused_before_they_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.pdf"
    path.write_bytes(pdf_bytes([[HARBOUR] * 8]))
    assert path.stat().st_size > 1000
    with pytest.raises(QAError, match=r"^big.pdf: .* KB is over the limit of 1000 bytes per "
                                      r"document \(QA_MAX_FILE_BYTES sets it\); skipped$"):
        load_document(tmp_path, "big.pdf", path)


def test_location_is_the_last_section_at_or_before_an_offset():
    sections = ((0, "page 1"), (10, "page 2"), (25, "page 3"))
    assert [location_at(sections, o) for o in (0, 9, 10, 24, 25, 999)] == [
        "page 1", "page 1", "page 2", "page 2", "page 3", "page 3"]  # fmt: skip
    assert location_at(((5, "Intro"),), 2) == "" and location_at((), 3) == ""
    assert Extracted("x").sections == ()


def test_quotes_carry_their_passage_location():
    class Stub:
        def passage(self, i):
            return Passage("r.pdf", 10 * i, 10 * i + 5, "hello", i + 1, "", f"page {i + 1}")

    hits = [Hit(0, 1.0, None, None), Hit(1, 0.5, None, None)]
    quotes = quotes_for(Stub(), hits, [(1, 0, 2)], top_k=2)
    assert [(q.start, q.location) for q in quotes] == [(10, "page 2"), (0, "page 1")]
    assert quotes[0].answer_start == 10


# -- a folder of every format, built into an index ------------------------------------------


def _folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(
        pdf_bytes([[HARBOUR, DIRECTOR], [LIGHTHOUSE]], footer=True, heading="Harbour Report"))
    (folder / "notes.html").write_bytes(HTML_PAGE.encode())
    (folder / "memo.docx").write_bytes(docx_bytes(
        [("Title", "Ferry Memo"), ("Heading 1", "Timetable"),
         ("Normal", "The ferry to Skerry leaves at 9 am every day and returns at 5 pm."),
         ("Heading 1", "Fares"),
         ("Normal", "A return ticket costs 14 euros for adults and 7 euros for children.")]))
    (folder / "plain.txt").write_text(
        "Depot Notes\n\nThe Varnel depot holds 4,312 crates of grain.\n", encoding="utf-8")
    # Broken files next to the good ones.
    (folder / "locked.pdf").write_bytes(encrypted_pdf(pdf_bytes([[LIGHTHOUSE]]), "secret"))
    (folder / "scan.pdf").write_bytes(scanned_pdf())
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not a real archive")
    (folder / "script.html").write_bytes(b"<script>var a = 1;</script><style>b{}</style>")
    (folder / "big.txt").write_text("filler words " * 20_000, encoding="utf-8")
    return folder


EXPECTED = {  # source, words in one of its passages -> that passage's location
    ("report.pdf", "800,000"): "page 1",
    ("report.pdf", "Thomas Vale"): "page 2",
    ("notes.html", "four rooms"): "The keeper's house",
    ("memo.docx", "9 am"): "Timetable",
    ("memo.docx", "14 euros"): "Fares",
    ("plain.txt", "4,312"): "",
}
BROKEN = {
    "locked.pdf": "encrypted",
    "scan.pdf": "no text layer",
    "broken.docx": "not a readable .docx",
    "script.html": "no text outside scripts",
    "big.txt": "per document (QA_MAX_FILE_BYTES",
}


def _check_index(idx, folder):
    passages = [idx.passage(i) for i in range(len(idx))]
    for (source, words), location in EXPECTED.items():
        found = [p for p in passages if p.source == source and words in p.text]
        assert len(found) == 1, (source, words)
        p = found[0]
        assert p.location == location, (source, words, p.location)
        extracted = load_document(folder, source, folder / source).text
        assert extracted[p.start : p.end] == p.text


def test_a_folder_of_every_format_is_indexed_with_locations(tmp_path, monkeypatch, encoder):
    monkeypatch.setattr(config, "MAX_FILE_BYTES", 200_000)
    folder = _folder(tmp_path)
    assert {f.source for f in scan_documents(folder)} >= {s for s, _ in EXPECTED}
    manifest, report = index_mod.build(folder, tmp_path / "index", encoder)
    assert set(manifest["sources"]) == {s for s, _ in EXPECTED}
    skipped = manifest["skipped_files"]
    assert set(skipped) == set(BROKEN) == set(report.skipped)
    for source, words in BROKEN.items():
        reason = skipped[source]["error"]
        assert reason.startswith(f"{source}: ") and words in reason and "\n" not in reason
    on_disk = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert on_disk["skipped_files"] == skipped
    idx = index_mod.load(tmp_path / "index")
    _check_index(idx, folder)
    assert index_mod.stale_reasons(folder, idx.manifest, encoder.model_id) == []

    # Touching files changes nothing; editing a PDF's text is an edit.
    later = time.time_ns() + 10**9
    for name in ("report.pdf", "memo.docx", "locked.pdf", "big.txt"):
        os.utime(folder / name, ns=(later, later))
    assert index_mod.stale_reasons(folder, idx.manifest, encoder.model_id) == []
    (folder / "report.pdf").write_bytes(
        pdf_bytes([[HARBOUR, DIRECTOR], [LIGHTHOUSE.replace("1871", "1872")]], footer=True,
                  heading="Harbour Report"))
    assert index_mod.stale_reasons(folder, idx.manifest, encoder.model_id) == [
        "edited: report.pdf"]

    # An incremental update keeps the locations of the rows it copies and of those it reads.
    (folder / "plain.txt").write_text("The Varnel depot holds 4,312 crates of grain and rice.")
    _, update = index_mod.build(folder, tmp_path / "index", encoder, previous=idx)
    assert 0 < update.embedded < update.passages
    updated = index_mod.load(tmp_path / "index")
    _check_index(updated, folder)
    assert any("1872" in updated.passage(i).text for i in range(len(updated)))


def test_answers_quote_the_page(make_engine):
    engine = make_engine({
        "report.pdf": pdf_bytes([[HARBOUR, DIRECTOR], [LIGHTHOUSE]], heading="Harbour Report"),
        "notes.txt": "Depot Notes\n\nThe Varnel depot holds 4,312 crates of grain.",
    })  # fmt: skip
    r = engine.answer("When was the Skerry lighthouse built?")
    assert r.text == "1871"
    q = r.quotes[0]
    assert (q.source, q.location) == ("report.pdf", "page 2")
    extracted = load_document(engine.seeds_dir, "report.pdf", engine.seeds_dir / "report.pdf")
    assert extracted.text[q.start : q.end] == q.text
    assert extracted.text[q.answer_start : q.answer_end] == "1871"

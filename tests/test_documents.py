"""Splitting documents into passages with exact offsets, and finding documents on disk."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa import config
from qa.documents import (
    document_title,
    is_fragment,
    load_document,
    read_text,
    scan_documents,
    sentence_spans,
    split_spans,
)
from qa.errors import QAError

from .conftest import SEEDS

BODY = (
    "The council approved the new budget on Monday after a long debate. "
    "Members argued about transport spending for most of the afternoon."
)


def test_every_seed_passage_slices_back_out_of_its_file():
    found = scan_documents(SEEDS)
    assert len(found) >= 5
    for doc in found:
        source, text = doc.source, read_text(doc.path)
        spans = split_spans(text)
        assert spans, source
        for a, b in spans:
            assert 0 <= a < b <= len(text)
            assert text[a:b] == text[a:b].strip()
        # Nothing but whitespace is left out.
        covered = set()
        for a, b in spans:
            covered.update(range(a, b))
        assert all(text[i].isspace() for i in range(len(text)) if i not in covered), source


def test_headline_joins_the_paragraph_after_it_and_trailing_furniture_the_one_before():
    text = f"City Approves Budget\n\n{BODY}\n\n{BODY}\n\nMost Popular\n\nTo Top\n"
    spans = split_spans(text)
    assert len(spans) == 2
    first, last = (text[a:b] for a, b in spans)
    assert first.startswith("City Approves Budget") and first.endswith("afternoon.")
    assert last.endswith("To Top")
    assert not any(is_fragment(text[a:b]) for a, b in spans)


def test_fragments_before_a_section_break_join_the_paragraph_before_them():
    text = f"{BODY}\n\nPage 1\n\nChapter Two\n\n{BODY}"
    chapter = text.index("Chapter Two")
    assert [text[a:b] for a, b in split_spans(text)] == [BODY, f"Page 1\n\nChapter Two\n\n{BODY}"]
    assert [text[a:b] for a, b in split_spans(text, breaks=[0, chapter])] == [
        f"{BODY}\n\nPage 1", f"Chapter Two\n\n{BODY}"]


def test_fragments_only_document_is_one_passage():
    text = "Read also:\n\nMore news\n"
    assert [text[a:b] for a, b in split_spans(text)] == ["Read also:\n\nMore news"]


def test_fragment_detection():
    assert is_fragment("Most Popular")
    assert is_fragment("Read also:")
    assert is_fragment("Mar 29, 2024 - 07:01")
    assert is_fragment("Ukraine calls NATO members for additional air defense systems")
    assert not is_fragment(BODY)


def test_single_line_breaks_split_when_a_file_has_no_blank_lines():
    text = f"{BODY}\n{BODY}\n{BODY}"
    assert len(split_spans(text)) == 3


def test_long_paragraph_becomes_overlapping_windows_at_sentence_boundaries():
    sentences = [f"Sentence number {i} talks about topic {i} in some detail." for i in range(60)]
    text = " ".join(sentences)
    spans = split_spans(text, max_chars=400)
    assert len(spans) > 3
    for a, b in spans:
        assert b - a <= 400
        assert text[a:b].endswith(".")
    for (_, b1), (a2, _) in zip(spans, spans[1:]):
        assert a2 < b1, "consecutive windows overlap by a sentence"


def test_run_on_sentence_is_cut_at_spaces():
    text = " ".join(["word"] * 1000)
    spans = split_spans(text, max_chars=300)
    assert all(b - a <= 300 for a, b in spans)
    assert text[spans[0][0] : spans[0][1]].split() == ["word"] * (len(text[spans[0][0] : spans[0][1]].split()))


def test_sentences_do_not_break_after_abbreviations():
    text = "The U.S. is sending aid. Mr. Smith said so. Talks began on Jan. 4 in Geneva. Done."
    got = [text[a:b] for a, b in sentence_spans(text)]
    assert got == [
        "The U.S. is sending aid.",
        "Mr. Smith said so.",
        "Talks began on Jan. 4 in Geneva.",
        "Done.",
    ]


def test_document_title():
    assert document_title(f"# The Douro\n\n{BODY}") == "The Douro"
    assert document_title(f"World\n\nBig Headline Here\n\n{BODY}") == "World Big Headline Here"
    assert document_title(BODY) == ""


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_offsets_index_the_text_as_stored(tmp_path, newline):
    raw = f"Headline Here{newline}{newline}{BODY}{newline}{newline}{BODY} Café ünïcode."
    path = tmp_path / "doc.txt"
    path.write_bytes(b"\xef\xbb\xbf" + raw.encode("utf-8"))
    doc = load_document(tmp_path, "doc.txt", path)
    stored = open(path, encoding="utf-8-sig", newline="").read()
    assert doc.text == stored and not stored.startswith("\ufeff")
    spans = split_spans(doc.text)
    assert len(spans) == 2
    for a, b in spans:
        assert stored[a:b] == doc.text[a:b]


def test_not_utf8_and_binary_files_are_refused_with_their_name(tmp_path):
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(QAError, match="latin.txt: not UTF-8"):
        load_document(tmp_path, "latin.txt", tmp_path / "latin.txt")
    with pytest.raises(QAError, match="bin.txt: looks binary"):
        load_document(tmp_path, "bin.txt", tmp_path / "bin.txt")


def test_oversized_file_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_FILE_BYTES", 1000)
    (tmp_path / "big.txt").write_text("x " * 1000)
    with pytest.raises(QAError, match="big.txt: .* limit"):
        load_document(tmp_path, "big.txt", tmp_path / "big.txt")


def test_document_discovery(tmp_path):
    root = tmp_path / "docs"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.md").write_text(BODY)
    (root / "top.txt").write_text(BODY)
    (root / "notes.rtf").write_text(BODY)
    (root / "Report.PDF").write_bytes(b"%PDF-1.4")
    (root / ".hidden.txt").write_text(BODY)
    (root / "draft.txt~").write_text(BODY)
    (root / "#autosave.txt#").write_text(BODY)
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_text(BODY)
    outside = tmp_path / "outside.txt"
    outside.write_text(BODY)
    os.symlink(outside, root / "link_out.txt")
    os.symlink(root / "top.txt", root / "link_in.txt")
    os.mkfifo(root / "pipe.txt")  # reading it would block the build forever
    (root / "folder.txt").mkdir()
    (root / "folder.txt" / "inner.txt").write_text(BODY)
    os.symlink(root / "a", root / "linked_folder")
    os.symlink(tmp_path / "gone.txt", root / "broken.txt")
    scanned = scan_documents(root)
    found = [doc for doc in scanned if not doc.skip]
    assert [doc.source for doc in found] == [
        "Report.PDF",
        "a/b/c/deep.md",
        "folder.txt/inner.txt",
        "link_in.txt",
        "top.txt",
    ]
    # What cannot be read is listed with its reason, never silently left out.
    assert {doc.source: doc.skip for doc in scanned if doc.skip} == {
        "broken.txt": "broken.txt: a broken symbolic link; skipped",
        "link_out.txt": "link_out.txt: a symbolic link to outside the documents folder; skipped",
        "linked_folder": "linked_folder: a symbolic link to a folder (links to folders are not "
                         "followed); skipped",
        "pipe.txt": "pipe.txt: not a regular file (a FIFO, socket or device); skipped",
    }
    top = found[-1]
    st = os.stat(root / "top.txt")
    assert (top.path, top.size, top.mtime_ns) == (str(root / "top.txt"), st.st_size, st.st_mtime_ns)


def test_a_file_gone_since_the_scan_is_refused_with_its_name(tmp_path):
    with pytest.raises(QAError, match="gone.txt: cannot be read"):
        load_document(tmp_path, "gone.txt", tmp_path / "gone.txt")


text_strategy = st.lists(
    st.sampled_from(list("abc XYZ.!?,\n\r\t-'\"é€") + ["\r\n", "\n\n", ". ", "Mr. ", "word "]),
    max_size=800,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=text_strategy, max_chars=st.integers(min_value=20, max_value=500))
def test_property_passages_slice_back_and_cover_all_non_blank_text(text, max_chars):
    spans = split_spans(text, max_chars=max_chars)
    covered = set()
    for a, b in spans:
        assert 0 <= a < b <= len(text)
        piece = text[a:b]
        assert piece == piece.strip() and piece
        covered.update(range(a, b))
    missing = [i for i in range(len(text)) if i not in covered and not text[i].isspace()]
    assert not missing


@settings(max_examples=200, deadline=None)
@given(text=text_strategy)
def test_property_sentences_are_trimmed_slices(text):
    for a, b in sentence_spans(text):
        assert text[a:b] == text[a:b].strip() and a < b
    joined = re.sub(r"\s", "", "".join(text[a:b] for a, b in sentence_spans(text)))
    assert joined == re.sub(r"\s", "", text)

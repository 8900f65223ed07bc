"""Splitting extracted document text into passages with exact character offsets."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

from .. import config
from ..types import Passage
from .loaders import Document, OverLimit

_BLANK_LINE = re.compile(r"(?:\r\n|\r|\n)[ \t\f\v]*(?:\r\n|\r|\n)\s*")
_LINE_BREAK = re.compile(r"(?:\r\n|\r|\n)\s*")
# A sentence ends at . ! ? (then closing quotes or brackets) before whitespace and a capital,
# digit or opening quote; or at a line break.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9])|(?=\r\n|\r|\n)")
_ABBREVIATION = re.compile(
    r"(?:\b[A-Za-z]\.(?:[A-Za-z]\.)*|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Gen|Lt|Col|Sgt|Capt|Cmdr|Adm|Rep|"
    r"Sen|Gov|Pres|Rev|Hon|Jr|Sr|Inc|Ltd|Co|Corp|Bros|No|Nos|vs|etc|approx|Jan|Feb|Mar|Apr|"
    r"Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mt|Ft|Fig|Vol|pp|ca|cf|al|e\.g|i\.e)\.)$"
)
_WORD = re.compile(r"\w+")


def _blocks(text: str) -> list[tuple[int, int]]:
    """Paragraph spans: separated by blank lines, or by line breaks when there are none."""
    separator = _BLANK_LINE if _BLANK_LINE.search(text) else _LINE_BREAK
    spans = []
    pos = 0
    for m in separator.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s is not None]


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def is_fragment(block: str) -> bool:
    """Headlines, bylines and one-line page furniture ("Most Popular", "Read also:")."""
    words = len(_WORD.findall(block))
    if words < config.FRAGMENT_MAX_WORDS:
        return True
    ends_sentence = block.rstrip()[-1:] in ".!?\"”’)…"
    return not ends_sentence and words <= config.HEADLINE_MAX_WORDS and "\n" not in block


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans of ``text[start:end]`` by punctuation, trimmed, as absolute offsets."""
    end = len(text) if end is None else end
    spans = []
    pos = start
    for m in _SENTENCE_END.finditer(text, start, end):
        if m.group() == ".":
            if _ABBREVIATION.search(text, max(pos, m.end() - 12), m.end()):
                continue
        spans.append((pos, m.end()))
        pos = m.end()
    spans.append((pos, end))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s is not None]


def _windows(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Split a long span at sentence boundaries into windows overlapping by one sentence."""
    if end - start <= max_chars:
        return [(start, end)]
    sentences: list[tuple[int, int]] = []
    for a, b in sentence_spans(text, start, end):
        while b - a > max_chars:  # a run-on "sentence": cut at the last space that fits
            cut = text.rfind(" ", a + 1, a + max_chars)
            cut = cut if cut > a else a + max_chars
            sentences.append((a, cut))
            a = cut
            while a < b and text[a].isspace():
                a += 1
        if a < b:
            sentences.append((a, b))
    windows = []
    i = 0
    while i < len(sentences):
        j = i
        while j + 1 < len(sentences) and sentences[j + 1][1] - sentences[i][0] <= max_chars:
            j += 1
        windows.append((sentences[i][0], sentences[j][1]))
        if j + 1 >= len(sentences):
            break
        i = j if j > i else j + 1  # overlap: the next window repeats the last sentence
    return windows


def split_spans(
    text: str, max_chars: int = config.MAX_PASSAGE_CHARS, breaks: Sequence[int] = ()
) -> list[tuple[int, int]]:
    """Passage spans of a document.

    Fragments are merged into the paragraph that follows them (a headline introduces what
    comes next); fragments at the end of a document join the paragraph before them, and so do
    fragments before a break: ``breaks`` are the sorted offsets where sections start (a PDF
    page, a heading), so a page's footer stays on its page.
    """
    return [(a, b) for a, b, _ in _passage_spans(text, max_chars, breaks)]


def _passage_spans(
    text: str, max_chars: int, breaks: Sequence[int]
) -> list[tuple[int, int, int]]:
    """(start, end, body) of each passage: ``body`` is where its text proper begins, after
    the headings and other fragments that lead it."""
    merged: list[tuple[int, int, int]] = []
    pending: int | None = None  # start of a run of fragments waiting for a paragraph
    pending_end = 0
    for a, b in _blocks(text):
        if pending is not None and merged and _break_between(breaks, pending, a):
            merged[-1] = (merged[-1][0], pending_end, merged[-1][2])
            pending = None
        if is_fragment(text[a:b]):
            if pending is None:
                pending = a
            pending_end = b
            continue
        merged.append((a if pending is None else pending, b, a))
        pending = None
    if pending is not None:
        if merged:
            merged[-1] = (merged[-1][0], len(text.rstrip()), merged[-1][2])
        else:
            merged.append((pending, len(text.rstrip()), pending))
    spans = []
    for a, b, body in merged:
        for start, end in _windows(text, a, b, max_chars):
            spans.append((start, end, body if start < body < end else start))
    return spans


def _break_between(breaks: Sequence[int], lo: int, hi: int) -> bool:
    """Whether a break lies in (lo, hi]."""
    i = bisect.bisect_right(breaks, lo)
    return i < len(breaks) and breaks[i] <= hi


def document_title(text: str, max_chars: int = 300) -> str:
    """The run of headline-like blocks that opens a document ("# " marks stripped), if any."""
    parts = []
    for a, b in _blocks(text):
        block = text[a:b]
        if not is_fragment(block):
            break
        parts.append(block.lstrip("#").strip())
    return " ".join(" ".join(parts).split())[:max_chars]


def location_at(sections: Sequence[tuple[int, str]], offset: int) -> str:
    """The label of the last section starting at or before ``offset`` ("" before the first)."""
    i = bisect.bisect_right(sections, offset, key=lambda s: s[0])
    return sections[i - 1][1] if i else ""


def split_document(doc: Document, max_chars: int = config.MAX_PASSAGE_CHARS) -> list[Passage]:
    """The passages of a document, each located by the last section starting at or before
    its text proper (a passage led by a title and a heading is located by the heading)."""
    title = document_title(doc.text)
    breaks = [offset for offset, _ in doc.sections]
    spans = _passage_spans(doc.text, max_chars, breaks)
    check_passages(len(spans), doc.source)
    return [
        Passage(doc.source, a, b, doc.text[a:b], i + 1, title, location_at(doc.sections, body))
        for i, (a, b, body) in enumerate(spans)
    ]


def check_passages(count: int, source: str) -> None:
    """Raise OverLimit when a document splits into more than ``MAX_DOCUMENT_PASSAGES``."""
    if count > config.MAX_DOCUMENT_PASSAGES:
        raise OverLimit(
            f"{source}: {count:,} passages, over the limit of {config.MAX_DOCUMENT_PASSAGES:,} "
            "per document (QA_MAX_DOCUMENT_PASSAGES sets it); skipped"
        )

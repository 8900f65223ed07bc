"""Finding documents on disk and splitting them into passages with exact character offsets.

Offsets index the file's text as stored: decoded as UTF-8, a leading BOM dropped, and no
newline translation (``open(path, encoding="utf-8-sig", newline="").read()``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import config
from .errors import QAError
from .types import Passage


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the documents folder, with forward slashes
    text: str
    sha256: str


@dataclass(slots=True)  # not frozen: that makes creating one 4x slower (10,000s per scan)
class FileState:
    """A document found on disk, with what the cheap freshness check compares: its name, size
    and modification time."""

    source: str  # path relative to the documents folder, with forward slashes
    path: str
    size: int
    mtime_ns: int


def read_text(path: Path) -> str:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return f.read()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_ignored(name: str) -> bool:
    return (
        name.startswith(".")
        or name.startswith("~$")
        or name.endswith("~")
        or (name.startswith("#") and name.endswith("#"))
    )


def scan_documents(root: Path) -> list[FileState]:
    """Every document under ``root``, sorted by source id.

    Hidden and editor temp files are ignored; symbolic links are followed only while they
    point inside ``root``. Plain strings and ``os.scandir`` entries, not ``Path`` objects:
    this runs before every answer on folders of 10,000s of files.
    """
    root = Path(root)
    real_root = root.resolve()
    found: list[FileState] = []
    pending = [("", str(root))]
    while pending:
        prefix, folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if _is_ignored(name):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append((f"{prefix}{name}/", entry.path))
            elif name.lower().endswith(config.DOCUMENT_SUFFIXES) and entry.is_file():
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if not target.is_relative_to(real_root) or not target.is_file():
                        continue
                try:
                    st = entry.stat()
                except OSError:  # removed while we looked
                    continue
                found.append(FileState(prefix + name, entry.path, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.source)
    return found


def load_document(root: Path, source: str, path: str | Path) -> Document:
    """Read one document. Raises QAError with a one-line reason when it cannot be used."""
    try:
        size = os.stat(path).st_size
        if size > config.MAX_FILE_BYTES:
            raise QAError(
                f"{source}: {size / 1e6:.1f} MB is over the {config.MAX_FILE_BYTES / 1e6:.0f} MB "
                "limit per document (set QA_MAX_FILE_BYTES to raise it)"
            )
        text = read_text(path)
    except UnicodeDecodeError as e:
        raise QAError(f"{source}: not UTF-8 text (byte {e.start}); skipped") from None
    except OSError as e:  # unreadable, or removed since the folder was scanned
        raise QAError(f"{source}: cannot be read ({e.strerror or e}); skipped") from None
    if "\x00" in text:
        raise QAError(f"{source}: looks binary (contains NUL bytes); skipped")
    return Document(source, text, content_hash(text))


_BLANK_LINE = re.compile(r"(?:\r\n|\r|\n)[ \t\f\v]*(?:\r\n|\r|\n)\s*")
_LINE_BREAK = re.compile(r"(?:\r\n|\r|\n)\s*")
# A sentence ends at . ! ? (optionally followed by closing quotes or brackets) before whitespace.
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


def split_spans(text: str, max_chars: int = config.MAX_PASSAGE_CHARS) -> list[tuple[int, int]]:
    """Passage spans of a document.

    Fragments are merged into the paragraph that follows them (a headline introduces what
    comes next); fragments at the end of a document join the paragraph before them.
    """
    merged: list[tuple[int, int]] = []
    pending: int | None = None  # start of a run of fragments waiting for a paragraph
    for a, b in _blocks(text):
        if is_fragment(text[a:b]):
            if pending is None:
                pending = a
            continue
        if pending is not None:
            a, pending = pending, None
        merged.append((a, b))
    if pending is not None:
        if merged:
            merged[-1] = (merged[-1][0], len(text.rstrip()))
        else:
            merged.append((pending, len(text.rstrip())))
    spans = []
    for a, b in merged:
        spans.extend(_windows(text, a, b, max_chars))
    return spans


def document_title(text: str, max_chars: int = 300) -> str:
    """The run of headline-like blocks that opens a document ("# " marks stripped), if any."""
    parts = []
    for a, b in _blocks(text):
        block = text[a:b]
        if not is_fragment(block):
            break
        parts.append(block.lstrip("#").strip())
    return " ".join(" ".join(parts).split())[:max_chars]


def split_document(doc: Document, max_chars: int = config.MAX_PASSAGE_CHARS) -> list[Passage]:
    title = document_title(doc.text)
    return [
        Passage(doc.source, a, b, doc.text[a:b], i + 1, title)
        for i, (a, b) in enumerate(split_spans(doc.text, max_chars))
    ]

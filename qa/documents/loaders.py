"""Reading documents: one loader per suffix, each turning a file's bytes into plain text and
its sections. Offsets everywhere index this extracted text.

- ``.txt``, ``.md``: the file decoded as UTF-8, a leading BOM dropped, newlines untouched.
- ``.html``, ``.htm``: block elements as paragraphs separated by blank lines, inline whitespace
  collapsed; scripts, styles, navigation, page header, footer and asides dropped.
- ``.docx``: paragraphs and table cells separated by blank lines.
- ``.pdf``: each page's text (pypdf), wrapped lines rejoined, pages separated by blank lines.

Whatever goes wrong in a loader (a parser's own exception, a codec, a limit) is a QAError with
a one-line reason that skips that document alone. The limits of ``config`` (docs/limits.md)
are checked while a file is read: characters as text accumulates, a PDF's pages before any is
read and its text as pypdf draws it, a .docx's unpacked size before it is parsed.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..display import format_bytes
from ..errors import QAError

LABEL_MAX_CHARS = 80
Sections = tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Extracted:
    text: str
    # (offset into text, label) in increasing offset order: "page N" for PDF, the heading text
    # for HTML, DOCX and Markdown; none for plain text.
    sections: Sections = ()


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the documents folder, with forward slashes
    text: str  # the extracted text
    sha256: str  # of the extracted text
    sections: Sections = ()
    file_sha256: str = ""  # of the file's bytes, what the freshness check compares


def read_text(path: str | Path) -> str:
    """A text file as stored: UTF-8, a leading BOM dropped, no newline translation."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return f.read()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _label(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LABEL_MAX_CHARS else text[: LABEL_MAX_CHARS - 1].rstrip() + "…"


def _reason(e: BaseException) -> str:
    """A parser's exception as a short phrase for a one-line message."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 100 else text[:99] + "…"


class OverLimit(QAError):
    """A document expands past one of the limits in ``config`` (docs/limits.md)."""


def check_chars(count: int, source: str) -> None:
    """Raise OverLimit when a document's text has grown past ``config.MAX_DOCUMENT_CHARS``."""
    if count > config.MAX_DOCUMENT_CHARS:
        raise OverLimit(
            f"{source}: its text runs past the limit of {config.MAX_DOCUMENT_CHARS:,} "
            "characters per document (QA_MAX_DOCUMENT_CHARS sets it); skipped"
        )


def check_expansion(count: int, file_bytes: int, source: str, what: str) -> None:
    """Raise OverLimit when a compressed file expands past ``config.MAX_EXPANSION_RATIO``
    times its size (``count`` units of ``what`` so far)."""
    ratio = config.MAX_EXPANSION_RATIO
    if count > ratio * max(file_bytes, 1):
        raise OverLimit(
            f"{source}: expands to over {ratio:,} times its size ({count:,} {what} from "
            f"{format_bytes(file_bytes)}; a decompression bomb? QA_MAX_EXPANSION_RATIO sets "
            "the limit); skipped"
        )


def _join(blocks: Iterable[tuple[str, bool]], source: str = "") -> Extracted:
    """Blocks (text, is_heading) as paragraphs separated by blank lines; headings as sections.
    Stops with OverLimit as soon as the text passes the characters limit."""
    parts: list[str] = []
    sections: list[tuple[int, str]] = []
    offset = 0
    for text, heading in blocks:
        if parts:
            offset += 2
        if heading:
            sections.append((offset, _label(text)))
        parts.append(text)
        offset += len(text)
        check_chars(offset, source)
    return Extracted("\n\n".join(parts), tuple(sections))


# -- text and Markdown ------------------------------------------------------------------------


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise QAError(f"{source}: not UTF-8 text (byte {e.start}); skipped") from None
    if "\x00" in text:
        raise QAError(f"{source}: looks binary (contains NUL bytes); skipped")
    check_chars(len(text), source)
    return text


def _plain(data: bytes, source: str) -> Extracted:
    return Extracted(_decode(data, source))


_MD_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_MD_ATX = re.compile(r" {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_MD_SETEXT = re.compile(r" {0,3}(?:=+|-+)[ \t]*")


def markdown_sections(text: str) -> Sections:
    """ATX ("# Title") and setext (underlined) headings outside fenced code blocks."""
    sections = []
    fence = None
    offset = 0
    first: tuple[int, str] = (0, "")  # the current paragraph's first line
    lines_in_paragraph = 0
    for raw in text.splitlines(keepends=True):
        line = raw.rstrip("\r\n")
        start, offset = offset, offset + len(raw)
        m = _MD_FENCE.match(line)
        if fence is not None or m:
            if fence is None:
                fence = m.group(1)
            elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            lines_in_paragraph = 0
            continue
        atx = _MD_ATX.fullmatch(line)
        if atx or not line.strip():
            if atx and atx.group(1) and atx.group(1).strip():
                sections.append((start, _label(atx.group(1))))
            lines_in_paragraph = 0
        elif lines_in_paragraph == 1 and _MD_SETEXT.fullmatch(line):
            sections.append((first[0], _label(first[1])))
            lines_in_paragraph = 0
        else:
            if lines_in_paragraph == 0:
                first = (start, line)
            lines_in_paragraph += 1
    return tuple(sections)


def _markdown(data: bytes, source: str) -> Extracted:
    text = _decode(data, source)
    return Extracted(text, markdown_sections(text))


# -- HTML -------------------------------------------------------------------------------------

_HTML_DROP = frozenset(
    "script style noscript template head svg math iframe object embed canvas button select "
    "textarea nav aside".split()
)
_HTML_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})
_HTML_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HTML_BLOCKS = _HTML_HEADINGS | frozenset(
    "address article blockquote body caption center dd details dialog dir div dl dt fieldset "
    "figcaption figure footer form header hgroup hr html legend li main menu ol p pre section "
    "summary table tbody td tfoot th thead tr ul".split()
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
# What browsers decode these declarations as (the WHATWG encoding standard).
_CHARSET_ALIASES = {"iso8859-1": "cp1252", "ascii": "cp1252"}  # by codecs.lookup names


def html_codec(label: str) -> str:
    """The codec to decode a page declaring ``charset=label``: a text encoding Python knows
    (as browsers do, an unknown label, or one naming a bytes transform such as base64, zlib
    or rot13, is ignored: UTF-8)."""
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return "utf-8"
    if not info._is_text_encoding:  # base64, hex, zlib, bz2, uu, quopri, rot13
        return "utf-8"
    return _CHARSET_ALIASES.get(info.name, info.name)


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_only(text: str) -> str:
    """``text`` with each lone surrogate (which a codec such as unicode-escape can yield, and
    which neither lxml nor UTF-8 accepts) replaced by U+FFFD, one for one so offsets hold."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _decode_html(data: bytes, source: str) -> str:
    return text_only(_decode_declared(data, source))


def _decode_declared(data: bytes, source: str) -> str:
    for bom, codec in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    declared = _META_CHARSET.search(data[:4096])
    if declared:
        codec = html_codec(declared.group(1).decode("ascii"))
        try:
            return data.decode(codec, errors="replace")
        except (UnicodeError, ValueError, TypeError):  # "undefined", idna: strict only
            return data.decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise QAError(
            f"{source}: not UTF-8 text (byte {e.start}) and declares no charset; skipped"
        ) from None


def _html_dropped(el, tag: str) -> bool:
    if tag in _HTML_DROP or el.get("hidden") is not None:
        return True
    if el.get("role", "").strip().lower() in _HTML_DROP_ROLES:
        return True
    if _HIDDEN_STYLE.search(el.get("style", "")):
        return True
    if tag in ("header", "footer"):  # the page's banner and footer, not an article's own
        return not any(a.tag in _HTML_SECTIONING for a in el.iterancestors())
    return False


def _html_blocks(root) -> list[tuple[str, bool]]:
    from lxml import etree

    blocks: list[tuple[str, bool]] = []
    lines: list[list[str]] = [[]]  # the current block's lines (split by <br>) of text pieces

    def flush(heading: bool = False) -> None:
        text = "\n".join(t for t in (" ".join("".join(p).split()) for p in lines) if t)
        lines[:] = [[]]
        if text:
            blocks.append((text, heading))

    skipped = None  # the element whose subtree was just skipped
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag.lower() if isinstance(el.tag, str) else ""  # "": a comment
        if event == "start":
            if not tag:
                continue
            if _html_dropped(el, tag):
                walker.skip_subtree()
                skipped = el
            elif tag == "pre":
                flush()
                text = el.text_content().strip("\r\n").rstrip()
                if text.strip():
                    blocks.append((text, False))
                walker.skip_subtree()
                skipped = el
            elif tag == "br":
                lines.append([])
            else:
                if tag in _HTML_BLOCKS:
                    flush()
                if el.text:
                    lines[-1].append(el.text)
            continue
        if tag and el is not skipped and tag in _HTML_BLOCKS:
            flush(heading=tag in _HTML_HEADINGS)
        if el is skipped:
            skipped = None
        if el.tail:
            lines[-1].append(el.tail)
    flush()
    return blocks


def _html(data: bytes, source: str) -> Extracted:
    from lxml import etree, html

    text = _decode_html(data, source)
    if "\x00" in text:
        raise QAError(f"{source}: looks binary (contains NUL bytes); skipped")
    check_chars(len(text), source)
    text = _XML_DECLARATION.sub("", text, count=1)  # lxml refuses str with an encoding line
    if not text.strip():
        raise QAError(f"{source}: empty (no text); skipped")
    try:
        root = html.document_fromstring(text)
        extracted = _join(_html_blocks(root), source)
    except (etree.ParserError, ValueError) as e:
        raise QAError(f"{source}: not readable HTML ({_reason(e)}); skipped") from None
    if not extracted.text.strip():
        raise QAError(f"{source}: no text outside scripts, styles and navigation; skipped")
    return extracted


# -- DOCX -------------------------------------------------------------------------------------

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_DOCX_HEADING = re.compile(r"Title|Heading \d")


def _docx_blocks(container) -> Iterator[tuple[str, bool]]:
    from docx.table import _Cell
    from docx.text.paragraph import Paragraph

    for item in container.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if text:
                style = item.style.name if item.style is not None else ""
                yield text, bool(_DOCX_HEADING.fullmatch(style or ""))
            continue
        for row in item.rows:
            for tc in row._tr.tc_lst:  # each cell once, however many grid columns it spans
                cell = _Cell(tc, item)
                nested = list(_docx_blocks(cell))
                text = "\n".join(t for t, _ in nested)
                if text:
                    yield text, False


def _docx(data: bytes, source: str) -> Extracted:
    if data.startswith(_OLE_MAGIC):
        raise QAError(
            f"{source}: an encrypted or old-format (.doc) Word file, not a readable .docx; skipped"
        )
    import zipfile

    import docx

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise QAError(f"{source}: not a readable .docx file ({_reason(e)}); skipped") from None
    # zipfile never inflates a member past its declared size, so this bounds the memory used.
    check_expansion(unpacked, len(data), source, "bytes unpacked")
    try:
        extracted = _join(_docx_blocks(docx.Document(io.BytesIO(data))), source)
    except QAError:
        raise
    except Exception as e:  # zipfile, lxml and python-docx each raise their own
        raise QAError(f"{source}: not a readable .docx file ({_reason(e)}); skipped") from None
    if not extracted.text.strip():
        raise QAError(f"{source}: no text in the document; skipped")
    return extracted


# -- PDF --------------------------------------------------------------------------------------

# A line shorter than this share of the page's longest line ends its paragraph (or is a
# heading); so does a gap above the next line this many times the page's usual line spacing,
# a change of font size by this factor, or a jump back up the page (a new column).
PDF_FULL_LINE = 0.8
PDF_PARAGRAPH_GAP = 1.3
PDF_SIZE_CHANGE = 1.15

Position = tuple[float, float]  # a line's baseline height on the page and its font size


def reflow_page(text: str, positions: list[Position | None] | None = None) -> str:
    """One page's extracted text as paragraphs separated by blank lines, wrapped lines joined.

    ``positions``: for each line of ``text``, where pypdf drew it (None where unknown).
    """
    lines = [" ".join(line.split()) for line in text.split("\n")]
    if positions is None or len(positions) != len(lines):
        positions = [None] * len(lines)
    width = max((len(line) for line in lines), default=0)
    # The line spacing: the smallest step down between lines of one size (not sub-line jitter).
    gaps = [
        a[0] - b[0] for a, b in zip(positions, positions[1:])
        if a and b and _same_size(a[1], b[1]) and a[0] - b[0] > 0.5 * a[1]
    ]
    usual_gap = min(gaps) if gaps else None
    paragraphs: list[str] = []
    current = ""
    for i, line in enumerate(lines):
        if line:
            if not current:
                current = line
            elif current.endswith("-") and current[-2:-1].isalpha() and line[0].islower():
                current += line  # a hyphenated word or compound split over two lines
            else:
                current += " " + line
        here, below = positions[i], positions[i + 1] if i + 1 < len(positions) else None
        ends = not line or len(line) < PDF_FULL_LINE * width
        if here and below and not ends:
            gap = here[0] - below[0]
            ends = (
                gap < 0
                or (usual_gap is not None and gap > PDF_PARAGRAPH_GAP * usual_gap)
                or not _same_size(here[1], below[1])
            )
        if current and ends:
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return "\n\n".join(paragraphs)


def _same_size(a: float, b: float) -> bool:
    return max(a, b) <= PDF_SIZE_CHANGE * min(a, b)


@dataclass
class _TextBudget:
    """Characters a PDF's pages may still yield: counted as pypdf draws each piece of text,
    so a page that repeats a text object millions of times stops at the limit."""

    source: str
    file_bytes: int
    drawn: int = 0
    kept: int = 0

    def draw(self, n: int) -> None:
        self.drawn += n
        check_expansion(self.drawn, self.file_bytes, self.source, "characters of text")
        check_chars(self.drawn, self.source)

    def add(self, n: int) -> None:
        self.kept += n + 2
        check_chars(self.kept, self.source)


def _page_text(page, budget: _TextBudget) -> str:
    """A page's text (pypdf's ``extract_text``), reflowed with where each line was drawn."""
    chunks: list[tuple[str, Position]] = []

    def visit(text, cm, tm, font, size):
        budget.draw(len(text))
        a, b, c, d, e, f = tm
        A, B, C, D, E, F = cm
        # The text matrix times the current transformation matrix: baseline height, scale.
        chunks.append((text, (e * B + f * D + F, (size or 0) * math.hypot(c * A + d * C,
                                                                            c * B + d * D))))

    text = page.extract_text(visitor_text=visit) or ""
    budget.add(len(text))
    lines, positions = [""], [None]
    for piece, position in chunks:
        for k, part in enumerate(piece.split("\n")):
            if k:
                lines.append("")
                positions.append(None)
            if part.strip() and positions[-1] is None and position[1] > 0:
                positions[-1] = position
            lines[-1] += part
    return reflow_page(text, positions if "\n".join(lines) == text else None)


def _pdf(data: bytes, source: str) -> Extracted:
    import pypdf

    # pypdf logs every oddity it works around, even as errors; we report a failed file once.
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("") != pypdf.PasswordType.NOT_DECRYPTED
            except Exception:  # an unsupported encryption scheme
                opened = False
            if not opened:
                raise QAError(f"{source}: the PDF is encrypted (password protected); skipped")
        count = len(reader.pages)
        if count > config.MAX_PDF_PAGES:
            raise OverLimit(f"{source}: {count:,} pages, over the limit of "
                            f"{config.MAX_PDF_PAGES:,} per PDF (QA_MAX_PDF_PAGES sets it); skipped")
        budget = _TextBudget(source, len(data))
        pages = [_page_text(page, budget) for page in reader.pages]
    except QAError:
        raise
    except Exception as e:  # pypdf raises many kinds on damaged files
        raise QAError(f"{source}: not a readable PDF ({_reason(e)}); skipped") from None
    parts, sections, offset = [], [], 0
    for number, page in enumerate(pages, start=1):
        if not page:
            continue
        if parts:
            offset += 2
        sections.append((offset, f"page {number}"))
        parts.append(page)
        offset += len(page)
    if not parts:
        raise QAError(f"{source}: the PDF has no text layer (scanned? it would need OCR); skipped")
    return Extracted("\n\n".join(parts), tuple(sections))


# -- the registry -----------------------------------------------------------------------------

Loader = Callable[[bytes, str], Extracted]
_READERS: dict[str, Loader] = {
    ".txt": _plain,
    ".md": _markdown,
    ".html": _html,
    ".htm": _html,
    ".docx": _docx,
    ".pdf": _pdf,
}
# config.DOCUMENT_SUFFIXES says which suffixes are read (a KeyError here: one has no reader).
LOADERS: dict[str, Loader] = {suffix: _READERS[suffix] for suffix in config.DOCUMENT_SUFFIXES}
SUFFIXES: tuple[str, ...] = tuple(LOADERS)


def suffix_of(source: str) -> str:
    return os.path.splitext(source)[1].lower()


def extract(data: bytes, source: str) -> Extracted:
    """The text and sections of a document's bytes, read by the loader for its suffix.

    Raises QAError with a one-line reason, starting with ``source``, when it cannot be read.
    """
    loader = LOADERS.get(suffix_of(source))
    if loader is None:
        raise QAError(f"{source}: not a supported format (reads {', '.join(SUFFIXES)}); skipped")
    try:
        extracted = loader(data, source)
    except QAError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser's failure on hostile bytes skips the file
        raise QAError(f"{source}: cannot be read ({type(e).__name__}: {_reason(e)}); "
                      "skipped") from None
    if not extracted.text.strip():
        raise QAError(f"{source}: empty (no text); skipped")
    check_chars(len(extracted.text), source)
    text = text_only(extracted.text)
    return extracted if text is extracted.text else Extracted(text, extracted.sections)


def read_regular(path: str | Path, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of a regular file. Opened without blocking and checked after
    opening, so a FIFO or device put in a document's place is refused, never waited on."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(0, "not a regular file (a FIFO, socket or device)")
        return f.read(limit + 1)


def load_document(root: Path, source: str, path: str | Path) -> Document:
    """Read one document. Raises QAError with a one-line reason when it cannot be used."""
    limit = config.MAX_FILE_BYTES
    try:
        size = os.stat(path).st_size
        if size <= limit:
            data = read_regular(path, limit)
            size = len(data)
    except OSError as e:  # unreadable, or removed since the folder was scanned
        raise QAError(f"{source}: cannot be read ({e.strerror or e}); skipped") from None
    if size > limit:
        raise OverLimit(
            f"{source}: {format_bytes(size)} is over the limit of {format_bytes(limit)} per "
            "document (QA_MAX_FILE_BYTES sets it); skipped"
        )
    extracted = extract(data, source)
    return Document(
        source,
        extracted.text,
        content_hash(extracted.text),
        extracted.sections,
        hashlib.sha256(data).hexdigest(),
    )

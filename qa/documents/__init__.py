"""Documents: finding them on disk (``scanning``), reading each format into text with exact
offsets (``loaders``, one registry keyed by suffix) and splitting that text into passages
(``splitting``)."""

from __future__ import annotations

from ..types import Passage
from .loaders import (
    LOADERS,
    SUFFIXES,
    Document,
    Extracted,
    content_hash,
    extract,
    load_document,
    markdown_sections,
    read_regular,
    read_text,
    reflow_page,
)
from .scanning import FileState, printable_name, scan_documents
from .splitting import (
    document_title,
    is_fragment,
    location_at,
    sentence_spans,
    split_document,
    split_spans,
)

__all__ = [
    "LOADERS",
    "SUFFIXES",
    "Document",
    "Extracted",
    "FileState",
    "Passage",
    "content_hash",
    "document_title",
    "extract",
    "is_fragment",
    "load_document",
    "location_at",
    "markdown_sections",
    "read_regular",
    "read_text",
    "printable_name",
    "reflow_page",
    "scan_documents",
    "sentence_spans",
    "split_document",
    "split_spans",
]

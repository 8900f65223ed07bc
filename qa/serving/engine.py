"""The engine every interface serves: one ``QA`` over a documents folder and its index, opened
with the CLI's defaults, and what the interfaces read from it besides answers (the documents,
their extracted text, retrieved passages)."""

from __future__ import annotations

from pathlib import Path

from .. import config
from ..errors import QAError
from ..pipeline import QA, clean_question
from ..types import Answer
from . import limits
from .answers import passage_to_json


class DocumentNotFound(QAError):
    """No indexed document has that name."""


def open_engine(
    seeds: str | Path = config.DEFAULT_SEEDS,
    index: str | Path | None = None,
    *,
    model: str = config.EMBEDDING_MODEL,
    reader: str = config.READER,
    store: str | None = None,
    min_confidence: str | float | None = None,
) -> QA:
    """The engine for a documents folder: the index in ``index`` (default: ./vectorstore for
    ./seeds, a folder of its own for any other), ``store`` a store URI (default: $QA_STORE),
    ``reader`` a reader spec, ``min_confidence`` the trained reader's threshold."""
    from ..reading import make_reader

    if min_confidence is not None:
        reader = make_reader(reader, min_confidence=min_confidence)
    return QA(seeds, index, model=model, reader=reader, store=store)


def answer(engine: QA, question: str, history=None, top_k: int = config.TOP_K,
           slots: limits.AnswerSlots | None = None) -> Answer:
    """``engine.answer`` as every interface calls it: the last
    ``limits.MAX_HISTORY_MESSAGES`` of ``history`` (messages as dicts or pydantic models),
    within ``slots`` (at most so many answers at once; ``limits.Busy`` past the queue)."""
    earlier = [m if isinstance(m, dict) else m.model_dump() for m in history or []]
    earlier = earlier[-limits.MAX_HISTORY_MESSAGES:]
    if slots is None:
        return engine.answer(question, top_k=top_k, history=earlier)
    with slots:
        return engine.answer(question, top_k=top_k, history=earlier)


def documents(engine: QA) -> dict:
    """The indexed documents with their passage counts, and the files skipped with why
    (from the committed index; never waits for a rebuild)."""
    status = engine.status()
    return {
        "documents": [{"name": name, "passages": n} for name, n in status["sources"].items()],
        "skipped": status["skipped"],
        "stale": status["stale"],
    }


def document_text(engine: QA, name: str) -> str:
    """The extracted text of indexed document ``name`` (its path relative to the documents
    folder, with forward slashes): the text that quote offsets index. Only names the index
    holds are read, so no other file can be reached; DocumentNotFound otherwise."""
    from ..documents import load_document

    index = engine.index  # brings the index up to date with the folder first
    if not isinstance(name, str) or name not in set(index.sources):
        raise DocumentNotFound(f"no indexed document is named {_shown(name)}")
    root = engine.seeds_dir.resolve()
    path = (engine.seeds_dir / name).resolve()
    if not path.is_relative_to(root):  # a symbolic link turned outward since indexing
        raise DocumentNotFound(f"no indexed document is named {_shown(name)}")
    return load_document(engine.seeds_dir, name, path).text


def search(engine: QA, query: str, k: int = 5) -> list[dict]:
    """The ``k`` passages most relevant to ``query`` (hybrid retrieval, no reading), best
    first, each with its file, offsets and relevance in [0, 1]."""
    query = clean_question(query)
    if not isinstance(k, int) or k < 1:
        raise QAError("k must be a positive whole number")
    index = engine.index
    vector = engine.encoder.encode_query(query)
    from ..retrieval import retrieve

    hits = retrieve(index, vector, query, k=k, keep_each=0)[:k]
    return [passage_to_json(index.passage(h.passage_id), h.score) for h in hits]


def _shown(name: object, limit: int = 120) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(name))
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")

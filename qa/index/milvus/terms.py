"""The text Milvus's BM25 function sees, and the document frequencies of terms kept in
``qa_meta``."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

from ...tokens import STOPWORDS, stem, terms, words
from ...types import Passage

_PLAIN_TERM = re.compile(r"[a-z0-9]{1,32}")


def _word(term: str) -> str:
    """A term as one token of any Milvus analyzer: plain short terms as they are, others
    (hyphens, apostrophes, non-ASCII letters, long words) as a hash led by "_"."""
    if _PLAIN_TERM.fullmatch(term):
        return term
    return "_" + hashlib.blake2b(term.encode("utf-8"), digest_size=8).hexdigest()


def bm25_document(search_text: str, mode: str) -> str:
    """What Milvus's BM25 function indexes for a passage."""
    if mode == "milvus":
        return search_text
    return " ".join(_word(t) for t in terms(search_text))


def bm25_query(query_terms: list[str], text: str | None, mode: str) -> str:
    """What Milvus's BM25 function is asked: our terms as its words, or (``bm25=milvus``) the
    question's own words whose stems are the terms, for Milvus's analyzer."""
    if mode == "milvus":
        wanted = set(query_terms)
        found = [w for _, _, w in words(text or "") if w not in STOPWORDS and stem(w) in wanted]
        return " ".join(found or query_terms)
    return " ".join(_word(t) for t in query_terms)


def df_key(collection: str, term: str) -> str:
    """The qa_meta key of a term's document frequency: hashed, since pymilvus passes string
    ids to Milvus inside an unescaped filter expression."""
    return f"{collection}/df/{hashlib.blake2b(term.encode('utf-8'), digest_size=12).hexdigest()}"


def frequencies(passages: Iterable[Passage]) -> Counter:
    """How many of the passages hold each term."""
    counts: Counter[str] = Counter()
    for p in passages:
        counts.update(set(terms(p.search_text)))
    return counts

"""Hybrid retrieval: BM25 and dense rankings fused by a convex combination of their scores.

Each ranking's scores are normalised over its own top candidates (BM25 divided by its best
score, cosine similarity min-max scaled) and mixed with weight ``SPARSE_WEIGHT`` for BM25.
On our own question sets this beat reciprocal rank fusion and either retriever alone (see
README), in line with Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval".
"""

from __future__ import annotations

import numpy as np

from . import config
from .reading.question import analyse
from .types import Hit


def normalise_dense(scores: np.ndarray) -> np.ndarray:
    if len(scores) == 0:
        return scores
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.ones_like(scores)


def normalise_sparse(scores: np.ndarray) -> np.ndarray:
    if len(scores) == 0:
        return scores
    high = float(scores.max())
    return scores / high if high > 0 else np.zeros_like(scores)


def fuse(
    dense: tuple[np.ndarray, np.ndarray],
    sparse: tuple[np.ndarray, np.ndarray],
    sparse_weight: float = config.SPARSE_WEIGHT,
) -> dict[int, float]:
    """Convex combination of normalised scores; a passage one retriever missed gets 0 there."""
    fused: dict[int, float] = {}
    for (ids, scores), weight, norm in (
        (dense, 1 - sparse_weight, normalise_dense),
        (sparse, sparse_weight, normalise_sparse),
    ):
        for pid, value in zip(ids.tolist(), norm(np.asarray(scores, dtype=np.float64)).tolist()):
            fused[pid] = fused.get(pid, 0.0) + weight * value
    return fused


def retrieve(
    index,
    query_vector: np.ndarray | None,
    question: str,
    k: int = config.TOP_K,
    mode: str = "hybrid",
    depth: int = config.CANDIDATES_PER_RETRIEVER,
    keep_each: int = 0,
) -> list[Hit]:
    """Top-k passages for a question. ``mode`` is "hybrid", "dense" or "sparse". With
    ``keep_each``, hybrid results also hold the top ``keep_each`` of each retriever (after
    the k fused ones, so up to k + 2 * keep_each hits)."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    dense = sparse = empty
    if mode in ("hybrid", "dense") and query_vector is not None:
        dense = index.dense_search(query_vector, depth)
    if mode in ("hybrid", "sparse"):
        sparse = index.sparse_search(analyse(question).search_terms, depth, text=question)
    weight = {"hybrid": config.SPARSE_WEIGHT, "dense": 0.0, "sparse": 1.0}[mode]
    fused = fuse(dense, sparse, weight)
    dense_of = dict(zip(dense[0].tolist(), dense[1].tolist()))
    sparse_of = dict(zip(sparse[0].tolist(), sparse[1].tolist()))
    order = sorted(fused, key=lambda p: (-fused[p], p))
    top = order[:k]
    if mode == "hybrid" and keep_each:
        # Each retriever's own best passages stay in reach of the reader even when the other
        # retriever outvotes them: a rare name that only BM25 matches, a paraphrase that only
        # the dense model sees.
        chosen = set(top)
        for ids in (sparse[0][:keep_each], dense[0][:keep_each]):
            for p in ids.tolist():
                if p not in chosen:
                    chosen.add(p)
                    top.append(p)
    return [Hit(p, fused[p], dense_of.get(p), sparse_of.get(p)) for p in top]

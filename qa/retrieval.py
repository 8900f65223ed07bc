"""Hybrid retrieval: BM25 and dense rankings fused by reciprocal rank fusion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import config
from .question import analyse


@dataclass(frozen=True)
class Hit:
    passage_id: int
    score: float  # fused score, scaled so the best possible is 1.0
    dense_score: float | None  # cosine similarity, when the dense search found it
    sparse_score: float | None  # BM25 score, when BM25 found it
    dense_rank: int | None
    sparse_rank: int | None


def rrf(rankings: list[np.ndarray], weights: list[float], k: int = config.RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: sum of weight / (k + rank) over the rankings (ranks from 1)."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, pid in enumerate(ranking, start=1):
            fused[int(pid)] = fused.get(int(pid), 0.0) + weight / (k + rank)
    return fused


def retrieve(
    index,
    query_vector: np.ndarray | None,
    question: str,
    k: int = config.TOP_K,
    mode: str = "hybrid",
    depth: int = config.CANDIDATES_PER_RETRIEVER,
) -> list[Hit]:
    """Top-k passages for a question. ``mode`` is "hybrid", "dense" or "sparse"."""
    dense_ids = dense_scores = sparse_ids = sparse_scores = np.zeros(0)
    if mode in ("hybrid", "dense") and query_vector is not None:
        dense_ids, dense_scores = index.dense_search(query_vector, depth)
    if mode in ("hybrid", "sparse"):
        sparse_ids, sparse_scores = index.sparse_search(analyse(question).search_terms, depth)
    weights = [config.DENSE_WEIGHT, config.SPARSE_WEIGHT]
    fused = rrf([dense_ids, sparse_ids], weights)
    best_possible = sum(w / (config.RRF_K + 1) for w, r in zip(weights, [dense_ids, sparse_ids]) if len(r))
    dense_pos = {int(p): i for i, p in enumerate(dense_ids)}
    sparse_pos = {int(p): i for i, p in enumerate(sparse_ids)}
    order = sorted(fused, key=lambda p: (-fused[p], p))[:k]
    hits = []
    for pid in order:
        d, s = dense_pos.get(pid), sparse_pos.get(pid)
        hits.append(
            Hit(
                passage_id=pid,
                score=fused[pid] / best_possible if best_possible else 0.0,
                dense_score=float(dense_scores[d]) if d is not None else None,
                sparse_score=float(sparse_scores[s]) if s is not None else None,
                dense_rank=d + 1 if d is not None else None,
                sparse_rank=s + 1 if s is not None else None,
            )
        )
    return hits

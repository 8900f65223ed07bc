"""The contract between the pipeline and a reader."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..types import Answer, Hit


class Annotator(Protocol):
    """Index-time analysis a reader needs: passage texts -> named tables, a block of rows per
    passage. ``id`` is recorded in the manifest, so an index is read only by a reader whose
    annotator made it."""

    id: str
    tables: tuple[str, ...]

    def __call__(self, texts: list[str]) -> dict[str, list[np.ndarray]]: ...


class Reader(Protocol):
    name: str  # the spec that makes this reader ("trained", "rules", ...)
    depth: int  # fused passages to read (each retriever's own best come on top)

    def annotator(self) -> Annotator | None:
        """What the index must hold for this reader (None: passage texts are enough)."""
        ...

    def read(self, question: str, query_vector: np.ndarray, index, hits: list[Hit],
             top_k: int) -> Answer:
        """The answer to ``question`` from the retrieved ``hits`` (best first), with at most
        ``top_k`` quotes besides those stating the answer."""
        ...

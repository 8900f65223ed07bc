"""The contracts of an index, whichever engine holds it: local files (``files``) or Milvus
(``milvus``).

``Store`` is what retrieval and the readers use: one served version of the index, its
passages and annotations by id, dense and BM25 search. ``Backend`` is where the versions live:
it reads the committed manifest, says when a new version was committed, loads the current one
and builds the next from the documents folder. ``qa.index.open_store`` picks a backend from a
URI. The pipeline above them has one code path for both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..types import Passage

if TYPE_CHECKING:
    from ..documents import FileState

Progress = Callable[[str, int, int], None]  # (stage, done, total)
# An annotator turns passage texts into named tables: for each passage a block of rows.
Annotator = Callable[[list[str]], dict[str, list[np.ndarray]]]


@dataclass
class BuildReport:
    documents: int
    passages: int
    embedded: int  # passages encoded in this build
    reused: int  # passages whose vectors came from the previous version
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason
    seconds: float = 0.0


def passage_key(text: str, model_id: str) -> bytes:
    """What a passage's vector depends on: its search text and the embedding model."""
    return hashlib.blake2b(f"{model_id}\0{text}".encode(), digest_size=16).digest()


def stable_id(key: bytes, source: str, occurrence: int) -> int:
    """A passage's id in an engine that upserts and deletes by id: derived from its content
    key, its file and which occurrence of that text in the file it is, so re-indexing an
    unchanged passage keeps its id from version to version. A positive int64."""
    digest = hashlib.blake2b(
        key + source.encode("utf-8") + b"\0" + str(occurrence).encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


class Store(Protocol):
    """One served version of an index. Passage ids are whatever its searches return, and
    ``passage(id)`` takes them; the file store's are row numbers of the version, Milvus's are
    ``stable_id``s. Searches are thread-safe.

    A store that fuses hybrid retrieval itself also has ``fusion`` (its ranker's name, or None
    to fuse in ``qa.retrieval``) and ``hybrid_search(query_vector, terms, k, text)``."""

    manifest: dict  # what the version holds (sources with sizes, times, hashes; model; ...)
    version: str  # names the version served; changes with every committed build
    sources: list[str]  # the indexed documents, sorted
    tables: Collection[str]  # names of the reader annotation tables it holds

    @property
    def model_id(self) -> str: ...

    def __len__(self) -> int: ...

    def passage(self, pid: int) -> Passage: ...

    def text(self, pid: int) -> str: ...

    def rows(self, table: str, pid: int) -> np.ndarray:
        """The passage's rows of an annotation table (see ``Annotator``)."""
        ...

    def document_frequency(self, term: str) -> int:
        """How many passages hold the term (a ``qa.tokens.terms`` term)."""
        ...

    def dense_search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, inner products) of the k passages nearest to the query vector, best first."""
        ...

    def sparse_search(
        self, query_terms: list[str], k: int, text: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, BM25 scores > 0) of the k best passages for the terms, best first. ``text``:
        the question the terms came from, for a store that analyses text itself."""
        ...

    def source_passages(self, source: str) -> np.ndarray:
        """The ids of one document's passages (what an incremental update replaces)."""
        ...


class Backend(Protocol):
    """Where an index's versions live, and how the next one is built."""

    kind: str  # "files" or "milvus"
    location: str  # for people: the index folder, or the store URI and its collection

    def read_manifest(self) -> dict | None:
        """The committed manifest, or None when nothing was built. Raises IndexCorrupt."""
        ...

    def stamp(self) -> Hashable | None:
        """Cheap: changes whenever another version is committed (None: none yet)."""
        ...

    def load(self, trusted: str | None = None) -> Store | None:
        """The current version, or None. ``trusted``: a version this process just wrote."""
        ...

    def building(self) -> AbstractContextManager[None]:
        """Held around a build from before the store is first touched: where another process
        is building, wait for it (saying so) rather than fail."""
        ...

    def build(
        self,
        seeds_dir: Path,
        encoder,
        annotator=None,
        progress: Progress | None = None,
        previous: Store | None = None,
        found: list[FileState] | None = None,
        full: bool = False,
    ) -> tuple[dict, BuildReport]:
        """Index the folder into a new committed version and return its manifest. Unchanged
        documents and passages are reused from ``previous`` (or the store's current version)
        unless ``full``; ``found``: a scan of the folder just taken."""
        ...

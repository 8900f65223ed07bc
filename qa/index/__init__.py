"""The index: one contract (``protocol``), two stores behind it.

- ``files``: the default, versioned folders of numpy arrays, FAISS and BM25 in bm25s's format,
  committed atomically (``versions``);
- ``milvus``: one Milvus collection per corpus (Milvus Lite in a local ``.db`` file, or a
  Milvus server or cluster), loaded only when a ``milvus://`` store is named.

``open_store(uri, seeds_dir, index_dir)`` picks one from a URI: "" or a folder path is the file
store, ``milvus:///path/file.db`` Milvus Lite, ``milvus://host:19530`` a Milvus server.
"""

from __future__ import annotations

from pathlib import Path

from .. import config
from ..errors import QAError
from . import versions
from . import versions as store  # the name the pipeline and older code use
from .files import (
    BM25_TERMS,
    BM25Scores,
    FileBackend,
    Index,
    build,
    load,
)
from .folder import stale_reasons
from .protocol import Annotator, Backend, BuildReport, Progress, Store, passage_key, stable_id
from .versions import IndexCorrupt

MILVUS_SCHEME = "milvus://"


def open_store(uri: str | None, seeds_dir: Path, index_dir: Path | None = None) -> Backend:
    """The backend a store URI names, for the documents in ``seeds_dir``.

    ``uri``: "" or None (the file store in ``index_dir``, or the folder's default), a folder
    path (the file store there), or ``milvus://...`` (see ``qa.index.milvus``)."""
    uri = (uri or "").strip()
    if uri.startswith(MILVUS_SCHEME):
        from .milvus import MilvusBackend

        return MilvusBackend(uri, Path(seeds_dir))
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://") or "/"
    elif "://" in uri:
        raise QAError(f"unknown store {uri!r}: use a folder, milvus:///path/to/file.db or "
                      "milvus://host:19530")
    if uri:
        path = Path(uri)
        if index_dir is not None and Path(index_dir).resolve() != path.resolve():
            raise QAError(f"two index folders named: --index {index_dir} and --store {uri}")
        index_dir = path
    return FileBackend(Path(index_dir) if index_dir else config.index_dir_for(Path(seeds_dir)))


__all__ = [
    "Annotator",
    "BM25Scores",
    "BM25_TERMS",
    "Backend",
    "BuildReport",
    "FileBackend",
    "Index",
    "IndexCorrupt",
    "Progress",
    "Store",
    "build",
    "load",
    "open_store",
    "passage_key",
    "stable_id",
    "stale_reasons",
    "store",
    "versions",
]

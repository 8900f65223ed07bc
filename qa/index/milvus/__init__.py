"""The Milvus store: the same index in Milvus, through pymilvus (imported only when used).

One collection per corpus version holds every passage: its text, source, offsets, title and
location, the reader's annotations (JSON), the MiniLM vector, and a BM25 sparse vector that
Milvus computes itself from a text field (its BM25 function; full-text search). The collection
a corpus serves is named by an alias, ``qa_<corpus>``:

- a full build writes a new collection ``qa_<corpus>__<time>_<id>`` and then switches the
  alias to it, so a reader never sees half an index; the two collections before it are kept
  for readers that loaded them lately, older ones are dropped;
- an incremental update upserts the passages of added and edited documents (by ``stable_id``:
  an unchanged passage keeps its id and its vector) and deletes those of removed ones, in the
  live collection, upserts before deletes.

The manifest (the same one the file store keeps: sources with sizes, times and hashes, skipped
files, model, annotator, counts) and the document frequencies of the rules reader's terms live
in one shared collection, ``qa_meta``, keyed by collection, so a store is self-describing and
several app servers can share it. A manifest is committed by one row (``<collection>/head``)
after its chunks are written; an update marks that row dirty while it changes the live
collection, and an update that finds it dirty (a crash mid-update) rebuilds in full.

URIs: ``milvus:///abs/path/qa.db`` or ``milvus://rel/path/qa.db`` (Milvus Lite, embedded, one
process per file), ``milvus://host:19530`` (a Milvus server or cluster; ``QA_MILVUS_TOKEN``
for one that requires a login). Options after ``?``: ``corpus=NAME`` (the collection's name,
by default the documents folder's name and a hash of its path), ``bm25=qa|milvus`` (who
tokenises for BM25: our own terms, given to Milvus as words, the default; or Milvus's standard
analyzer over the raw text), ``fusion=qa|rrf|weighted`` (hybrid retrieval fused here as for
the file store, the default; or inside Milvus by ``hybrid_search`` with its RRF or weighted
ranker).

Modules: ``client`` (URIs, connections, errors, limits), ``terms`` (BM25 text, term
frequencies), ``build`` (one build or update), ``backend`` (a corpus's collections and
manifest), ``index`` (a served collection, searched).
"""

from .backend import KEEP_COLLECTIONS, META, MilvusBackend
from .client import StoreUnavailable, parse_uri
from .index import MilvusIndex

__all__ = ["KEEP_COLLECTIONS", "META", "MilvusBackend", "MilvusIndex", "StoreUnavailable",
           "parse_uri"]

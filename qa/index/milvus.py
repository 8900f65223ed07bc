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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from .. import config
from ..documents import SUFFIXES, FileState, scan_documents
from ..errors import QAError
from ..tokens import STOPWORDS, stem, terms, words
from ..types import Passage
from . import files
from .folder import read_source
from .protocol import BuildReport, passage_key, stable_id
from .versions import FORMAT_VERSION, IndexCorrupt

log = logging.getLogger("qa")

INSTALL_HINT = "install the milvus extra: pip install -e '.[milvus]'"
SCHEME = "milvus://"
DEFAULT_PORT = 19530
META = "qa_meta"  # manifests and document frequencies of every corpus in the database
KEEP_COLLECTIONS = 3  # the served one and the two before it
CONNECT_TIMEOUT = 5.0  # seconds to reach a server
READ_TIMEOUT = 30.0
WRITE_TIMEOUT = 300.0
BATCH_ROWS = 1000  # rows per insert, upsert or get
QUERY_LIMIT = 16_384  # Milvus's most rows for one query
PARAGRAPH_WINDOW = 4096
MAX_VARCHAR = 65535  # bytes, Milvus's limit for a VARCHAR field
MAX_KEY_BYTES = 2048
MANIFEST_CHUNK = 16_000  # characters per manifest row: at most 64,000 bytes of UTF-8
ROW_CACHE = 8192  # passages whose fields a loaded version keeps from its searches
BM25_MODES = ("qa", "milvus")
FUSIONS = ("qa", "rrf", "weighted")
PASSAGE_FIELDS = ["source", "start", "end", "paragraph", "title", "location", "text"]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_PLAIN_TERM = re.compile(r"[a-z0-9]{1,32}")


class StoreUnavailable(QAError):
    """Milvus cannot be reached, or refused what was asked (the message names the URI)."""


# -- addresses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MilvusURI:
    uri: str  # as given, for messages
    address: str  # what MilvusClient takes: a .db path (Milvus Lite) or http://host:port
    lite: bool
    corpus: str | None
    bm25: str
    fusion: str


def parse_uri(uri: str) -> MilvusURI:
    """Read a ``milvus://`` store URI; a bad one is a QAError saying what is wrong."""
    if not uri.startswith(SCHEME):
        raise QAError(f"not a Milvus store URI: {uri!r}")
    rest, _, query = uri[len(SCHEME):].partition("?")
    try:
        options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    except ValueError:
        raise QAError(f"{uri}: unreadable options after '?'") from None
    unknown = sorted(set(options) - {"corpus", "bm25", "fusion"})
    if unknown:
        raise QAError(f"{uri}: unknown option {unknown[0]!r} (use corpus, bm25 or fusion)")
    corpus = options.get("corpus")
    if corpus is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,60}", corpus):
        raise QAError(f"{uri}: corpus must be 1 to 60 letters, digits or underscores")
    bm25, fusion = options.get("bm25", "qa"), options.get("fusion", "qa")
    if bm25 not in BM25_MODES:
        raise QAError(f"{uri}: bm25 must be one of {', '.join(BM25_MODES)}")
    if fusion not in FUSIONS:
        raise QAError(f"{uri}: fusion must be one of {', '.join(FUSIONS)}")
    if rest.endswith(".db"):  # a Milvus Lite file
        path = Path(rest).expanduser().resolve()
        return MilvusURI(uri, str(path), True, corpus, bm25, fusion)
    host, _, port = rest.rstrip("/").partition(":")
    if not host or "/" in host or (port and not port.isdigit()):
        raise QAError(f"{uri}: use milvus:///path/to/file.db (Milvus Lite) or "
                      "milvus://host:19530 (a Milvus server)")
    return MilvusURI(uri, f"http://{host}:{port or DEFAULT_PORT}", False, corpus, bm25, fusion)


def corpus_name(seeds_dir: Path) -> str:
    """The default corpus name of a folder: its name and a hash of its path, as the file
    store names its folders under ./vectorstore/corpora."""
    resolved = Path(seeds_dir).resolve()
    name = re.sub(r"[^A-Za-z0-9]+", "_", resolved.name).strip("_")[:40] or "docs"
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    return f"{name}_{digest}"


# -- connecting -----------------------------------------------------------------------------

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()
_build_locks: dict[tuple[str, str], threading.Lock] = {}


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise QAError(f"the Milvus store needs pymilvus: {INSTALL_HINT}") from None
    # pymilvus and Milvus Lite log every failed call with its traceback; each failure reaches
    # the user once, as the one-line QAError it is turned into here.
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer", "milvus_lite",
                 "grpc._server"):  # the last: an in-process Milvus Lite server's own log
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    return pymilvus


def _reason(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())[:300]


def _is_connection_error(error: BaseException) -> bool:
    text = _reason(error).lower()
    return getattr(error, "code", None) == 2 or "connect" in text or "unavailable" in text


def _connect(target: MilvusURI):
    pymilvus = _pymilvus()
    with _clients_lock:
        client = _clients.get(target.address)
        if client is not None:
            return client
        if target.lite:
            try:
                import milvus_lite  # noqa: F401 - pymilvus opens .db files through it
            except ImportError:
                raise QAError(f"a Milvus Lite store ({target.uri}) needs milvus-lite: "
                              f"{INSTALL_HINT}") from None
            Path(target.address).parent.mkdir(parents=True, exist_ok=True)
        try:
            # A connection of our own (pymilvus shares them by address otherwise): when the
            # server goes away, it is dropped and the next call opens a fresh one.
            client = pymilvus.MilvusClient(uri=target.address, timeout=CONNECT_TIMEOUT,
                                           dedicated=True,
                                           token=os.environ.get("QA_MILVUS_TOKEN", ""))
        except Exception as e:  # noqa: BLE001 - any failure to connect is one message
            if target.lite:
                raise StoreUnavailable(
                    f"cannot open Milvus Lite file {target.address} ({_reason(e)}; Milvus Lite "
                    "serves one process per file: is another process using it?)") from None
            raise StoreUnavailable(f"cannot reach Milvus at {target.uri} ({_reason(e)})") from None
        _clients[target.address] = client
        return client


def _literal(text: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- BM25 text --------------------------------------------------------------------------------


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


# -- the backend ------------------------------------------------------------------------------


class MilvusBackend:
    """A corpus's index in Milvus (see the module's docstring)."""

    kind = "milvus"
    index_dir = None  # no local folder

    def __init__(self, uri: str, seeds_dir: Path):
        self.target = parse_uri(uri)
        self.uri = uri
        self.alias = f"qa_{self.target.corpus or corpus_name(seeds_dir)}"
        self.location = f"{uri} (collection {self.alias})"
        self._client = None
        self._meta_ready = False

    @property
    def client(self):
        if self._client is None:
            self._client = _connect(self.target)
        return self._client

    def _forget_client(self) -> None:
        client, self._client, self._meta_ready = self._client, None, False
        with _clients_lock:
            if _clients.get(self.target.address) is client:
                del _clients[self.target.address]
        try:
            if client is not None:
                client.close()
        except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
            log.debug("closing the Milvus client failed", exc_info=True)

    @contextmanager
    def talking(self, doing: str) -> Iterator[None]:
        """Turn what pymilvus and gRPC raise into one line naming the URI."""
        try:
            yield
        except QAError:
            raise
        except Exception as e:
            pymilvus = _pymilvus()
            import grpc

            if not isinstance(e, (pymilvus.MilvusException, grpc.RpcError)):
                raise
            if _is_connection_error(e):
                self._forget_client()  # the next call connects again
                raise StoreUnavailable(f"cannot reach Milvus at {self.uri} ({_reason(e)})") from None
            raise StoreUnavailable(f"Milvus at {self.uri} failed to {doing} ({_reason(e)})") from None

    # -- reading what is committed --

    def current_collection(self) -> str | None:
        """The collection the corpus's alias names, or None before the first build."""
        client = self.client
        pymilvus = _pymilvus()
        try:
            return client.describe_alias(self.alias, timeout=READ_TIMEOUT)["collection_name"]
        except pymilvus.MilvusException:
            if self.alias not in client.list_aliases(timeout=READ_TIMEOUT).get("aliases", []):
                return None
            raise

    def _get_meta(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if not self._meta_ready:
            if not self.client.has_collection(META, timeout=READ_TIMEOUT):
                return out
            self.client.load_collection(META, timeout=WRITE_TIMEOUT)  # a no-op when loaded
            self._meta_ready = True
        for i in range(0, len(keys), BATCH_ROWS):
            rows = self.client.get(META, ids=keys[i : i + BATCH_ROWS], output_fields=["body"],
                                   timeout=READ_TIMEOUT)
            out.update({row["key"]: row["body"] for row in rows})
        return out

    def _head(self, collection: str) -> dict | None:
        body = self._get_meta([f"{collection}/head"]).get(f"{collection}/head")
        return json.loads(body) if body is not None else None

    def _manifest(self, collection: str, head: dict) -> dict:
        keys = [f"{collection}/manifest/{head['version']}/{i}" for i in range(head["parts"])]
        bodies = self._get_meta(keys)
        if len(bodies) != len(keys):
            raise IndexCorrupt(f"{self.location}: the manifest of {collection} is incomplete; "
                               "it will be rebuilt")
        try:
            manifest = json.loads("".join(bodies[k] for k in keys))
        except ValueError as e:
            raise IndexCorrupt(f"{self.location}: unreadable manifest ({e})") from None
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("store") != "milvus":
            raise IndexCorrupt(f"{self.location}: unknown index format; it will be rebuilt")
        return manifest

    def _committed(self) -> tuple[str, dict, dict] | None:
        """(collection, head, manifest) of what the alias serves, or None."""
        collection = self.current_collection()
        if collection is None:
            return None
        head = self._head(collection)
        if head is None:
            raise IndexCorrupt(f"{self.location}: collection {collection} has no manifest; "
                               "it will be rebuilt")
        return collection, head, self._manifest(collection, head)

    def read_manifest(self) -> dict | None:
        with self.talking("read the manifest"):
            committed = self._committed()
        return committed[2] if committed else None

    def stamp(self) -> Hashable | None:
        with self.talking("read the manifest"):
            collection = self.current_collection()
            if collection is None:
                return None
            head = self._head(collection) or {}
        return (collection, head.get("version"), head.get("dirty", False))

    def load(self, trusted: str | None = None) -> MilvusIndex | None:
        with self.talking("load the index"):
            committed = self._committed()
            if committed is None:
                return None
            collection, _, manifest = committed
            self.client.load_collection(collection, timeout=WRITE_TIMEOUT)
        return MilvusIndex(self, collection, manifest)

    # -- building --

    def build(self, seeds_dir, encoder, annotator=None, progress=None, previous=None, found=None,
              full: bool = False) -> tuple[dict, BuildReport]:
        """Bring the corpus's collection up to date with the folder: in place when only some
        documents changed, else as a new collection the alias then names. ``full``: a new
        collection from the documents alone, no vector reused."""
        key = (self.target.address, self.alias)
        with _clients_lock:
            lock = _build_locks.setdefault(key, threading.Lock())
        with lock, self.talking("update the index"):
            return _Build(self, Path(seeds_dir), encoder, annotator, progress,
                          None if full else previous, found, full).run()

    # -- writing, used by _Build --

    def ensure_meta(self) -> None:
        pymilvus = _pymilvus()
        if self._meta_ready or self.client.has_collection(META, timeout=READ_TIMEOUT):
            if not self._meta_ready:
                self.client.load_collection(META, timeout=WRITE_TIMEOUT)
            self._meta_ready = True
            return
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", pymilvus.DataType.VARCHAR, is_primary=True,
                         max_length=MAX_KEY_BYTES)
        schema.add_field("body", pymilvus.DataType.VARCHAR, max_length=MAX_VARCHAR)
        # Milvus wants a vector field in every collection; this one holds nothing.
        schema.add_field("unused", pymilvus.DataType.FLOAT_VECTOR, dim=2)
        indexes = self.client.prepare_index_params()
        indexes.add_index("unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(META, schema=schema, index_params=indexes,
                                      consistency_level="Strong", timeout=WRITE_TIMEOUT)
        self._meta_ready = True

    def put_meta(self, items: dict[str, str]) -> None:
        rows = [{"key": k, "body": v, "unused": [0.0, 0.0]} for k, v in items.items()]
        for i in range(0, len(rows), BATCH_ROWS):
            self.client.upsert(META, rows[i : i + BATCH_ROWS], timeout=WRITE_TIMEOUT)

    def drop_meta(self, keys: list[str]) -> None:
        for i in range(0, len(keys), BATCH_ROWS):
            self.client.delete(META, ids=keys[i : i + BATCH_ROWS], timeout=WRITE_TIMEOUT)

    def drop_meta_of(self, collection: str) -> None:
        """Forget a dropped collection's manifests and frequencies."""
        self.client.delete(META, filter=f"key like {_literal(collection + '/%')}",
                           timeout=WRITE_TIMEOUT)

    def source_rows(self, collection: str, source: str, fields: list[str]) -> list[dict]:
        """Every row of one document (a query returns at most QUERY_LIMIT rows: a longer
        document is read in windows of paragraphs)."""
        where = f"source == {_literal(source)}"
        count = self.client.query(collection, filter=where, output_fields=["count(*)"],
                                  timeout=READ_TIMEOUT)[0]["count(*)"]
        if count <= QUERY_LIMIT:
            return self.client.query(collection, filter=where, output_fields=fields,
                                     limit=QUERY_LIMIT, timeout=READ_TIMEOUT)
        rows: list[dict] = []
        low = 0
        while len(rows) < count:
            rows += self.client.query(
                collection, filter=f"{where} and paragraph >= {low} and "
                f"paragraph < {low + PARAGRAPH_WINDOW}", output_fields=fields,
                limit=QUERY_LIMIT, timeout=READ_TIMEOUT)
            low += PARAGRAPH_WINDOW
        return rows

    def write_manifest(self, collection: str, manifest: dict, previous: dict | None = None,
                       ) -> None:
        """Write the manifest's chunks, then commit it with the head row; the chunks of the
        version before ``previous`` (the head it replaces) are dropped."""
        text = json.dumps(manifest, ensure_ascii=False, separators=(",", ":"))
        parts = [text[i : i + MANIFEST_CHUNK] for i in range(0, len(text), MANIFEST_CHUNK)]
        version = manifest["version"]
        self.put_meta({f"{collection}/manifest/{version}/{i}": p for i, p in enumerate(parts)})
        kept = {k: previous[k] for k in ("version", "parts")} if previous else None
        self.set_head(collection, {"version": version, "parts": len(parts), "dirty": False,
                                   "previous": kept})
        older = (previous or {}).get("previous")
        if older:  # readers that loaded the previous version may still read its chunks
            self.drop_meta([f"{collection}/manifest/{older['version']}/{i}"
                            for i in range(older["parts"])])

    def set_head(self, collection: str, head: dict) -> None:
        self.put_meta({f"{collection}/head": json.dumps(head)})

    def create_collection(self, name: str, dimension: int, dense: dict) -> None:
        pymilvus = _pymilvus()
        DataType = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("key", DataType.VARCHAR, max_length=32)  # the passage key, in hex
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        for name_ in ("start", "end", "paragraph"):
            schema.add_field(name_, DataType.INT64)
        for name_ in ("title", "location", "text"):
            schema.add_field(name_, DataType.VARCHAR, max_length=MAX_VARCHAR)
        analyzer = {}
        if self.target.bm25 == "milvus":
            analyzer = {"analyzer_params": {"tokenizer": "standard", "filter": [
                "lowercase", {"type": "stop", "stop_words": sorted(STOPWORDS)}]}}
        schema.add_field("bm25_text", DataType.VARCHAR, max_length=MAX_VARCHAR,
                         enable_analyzer=True, **analyzer)
        schema.add_field("ann", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(pymilvus.Function(
            name="bm25", function_type=pymilvus.FunctionType.BM25,
            input_field_names=["bm25_text"], output_field_names=["sparse"]))
        indexes = self.client.prepare_index_params()
        if dense["type"] == "flat-ip":
            indexes.add_index("vector", index_type="FLAT", metric_type="IP")
        else:
            indexes.add_index("vector", index_type="IVF_FLAT", metric_type="IP",
                              params={"nlist": dense["params"]["nlist"]})
        indexes.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                          params={"bm25_k1": files.BM25_K1, "bm25_b": files.BM25_B})
        indexes.add_index("source", index_type="INVERTED")
        self.client.create_collection(name, schema=schema, index_params=indexes,
                                      consistency_level="Strong", timeout=WRITE_TIMEOUT)

    def switch_alias(self, collection: str) -> None:
        """The commit of a full build: the alias names the new collection."""
        if self.current_collection() is None:
            self.client.create_alias(collection, self.alias, timeout=WRITE_TIMEOUT)
        else:
            self.client.alter_alias(collection, self.alias, timeout=WRITE_TIMEOUT)

    def collect_garbage(self, serving: str) -> None:
        """Drop this corpus's collections older than the last KEEP_COLLECTIONS, and the
        manifests and frequencies kept for them (left by builds that did not finish, too)."""
        names = sorted(n for n in self.client.list_collections(timeout=READ_TIMEOUT)
                       if n.startswith(f"{self.alias}__") and n != serving)
        for name in names[: max(0, len(names) - (KEEP_COLLECTIONS - 1))]:
            self.client.drop_collection(name, timeout=WRITE_TIMEOUT)
            self.drop_meta_of(name)


# -- one build --------------------------------------------------------------------------------


@dataclass
class _Row:
    id: int
    key: bytes
    passage: Passage
    vector: np.ndarray | None = None
    ann: dict | None = None

    def record(self, bm25: str) -> dict:
        p = self.passage
        return {
            "id": self.id, "key": self.key.hex(), "source": p.source, "start": p.start,
            "end": p.end, "paragraph": p.paragraph, "title": p.title, "location": p.location,
            "text": p.text, "bm25_text": bm25_document(p.search_text, bm25),
            "ann": self.ann or {}, "vector": self.vector.tolist(),
        }  # fmt: skip


class _Build:
    """One build of a corpus into Milvus (see ``MilvusBackend.build``)."""

    def __init__(self, backend: MilvusBackend, seeds_dir: Path, encoder, annotator, progress,
                 previous, found, full: bool):
        self.backend, self.client = backend, backend.client
        self.seeds_dir, self.encoder, self.annotator = seeds_dir, encoder, annotator
        self.progress, self.previous, self.found, self.full = progress, previous, found, full
        self.bm25 = backend.target.bm25
        self.tables = sorted(annotator.tables) if annotator is not None else []
        self.annotator_id = annotator.id if annotator is not None else None
        self.embedded = 0
        self.shapes: dict[str, list] = {}  # each annotation table's dtype and row shape

    def run(self) -> tuple[dict, BuildReport]:
        t0 = time.perf_counter()
        if not self.seeds_dir.is_dir():
            raise QAError(f"documents folder {self.seeds_dir} does not exist")
        try:
            committed = self.backend._committed()
        except IndexCorrupt as e:
            log.warning("%s", e)
            committed = None
        scan = self.found if self.found is not None else scan_documents(self.seeds_dir)
        current = committed if committed and self._can_update(committed) else None
        sources, skipped, fresh = self._read(scan, current[2] if current else None)
        if not sources:
            formats = ", ".join(SUFFIXES)
            raise QAError(f"no readable documents with text ({formats}) in {self.seeds_dir}")
        n = sum(meta["passages"] for meta in sources.values())
        dense = _dense_plan(n, current[2]["dense"] if current else None)
        if current and current[2]["dense"] != dense:  # the size calls for another index
            current = None
            sources, skipped, fresh = self._read(scan, None)
        if current:
            manifest = self._update(current, sources, skipped, fresh, dense)
        else:
            manifest = self._rebuild(committed, sources, skipped, fresh, dense)
        report = BuildReport(
            documents=len(sources), passages=n, embedded=self.embedded, reused=n - self.embedded,
            skipped={s: m["error"] for s, m in skipped.items()},
            seconds=time.perf_counter() - t0,
        )
        return manifest, report

    def _can_update(self, committed: tuple[str, dict, dict]) -> bool:
        """Whether the served collection can be updated in place."""
        _, head, manifest = committed
        return (
            not self.full
            and not head.get("dirty")
            and manifest.get("seeds_dir") == str(self.seeds_dir.resolve())
            and manifest["model"]["id"] == self.encoder.model_id
            and manifest.get("annotator") == self.annotator_id
            and manifest.get("bm25") == self.bm25
        )

    def _read(self, scan: list[FileState], manifest: dict | None):
        """(sources, skipped, fresh passages by source): documents whose name, size and time
        the manifest has are kept as they are, the rest read."""
        known = manifest["sources"] if manifest else {}
        sources: dict[str, dict] = {}
        skipped: dict[str, dict] = {}
        fresh: dict[str, list[Passage]] = {}
        for file in scan:
            old = known.get(file.source)
            if old is not None and (old["size"], old["mtime_ns"]) == (file.size, file.mtime_ns):
                sources[file.source] = old
                continue
            read = read_source(self.seeds_dir, file)
            if read.skipped:
                skipped[file.source] = read.meta
            else:
                sources[file.source] = read.meta
                fresh[file.source] = read.passages
        return sources, skipped, fresh

    def _manifest(self, collection: str, sources, skipped, dense, shapes) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "store": "milvus",
            "version": f"m-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}",
            "collection": collection,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seeds_dir": str(self.seeds_dir.resolve()),
            "model": {"id": self.encoder.model_id, "dimension": int(self.encoder.dimension)},
            "dense": dense,
            "bm25": self.bm25,
            "counts": {"documents": len(sources),
                       "passages": sum(m["passages"] for m in sources.values())},
            "source_names": sorted(sources),
            "sources": sources,
            "skipped_files": skipped,
            "tables": self.tables,
            "table_shapes": shapes,
            "annotator": self.annotator_id,
        }

    def _rows(self, fresh: dict[str, list[Passage]]) -> list[_Row]:
        rows = []
        for source in sorted(fresh):
            seen: Counter[bytes] = Counter()
            for p in fresh[source]:
                key = passage_key(p.search_text, self.encoder.model_id)
                rows.append(_Row(stable_id(key, source, seen[key]), key, p))
                seen[key] += 1
        return rows

    def _complete(self, rows: list[_Row]) -> None:
        """Embed and annotate the rows that have no vector (or annotations) yet."""
        todo = [r for r in rows if r.vector is None]
        if todo:
            def encode_progress(done: int, total: int) -> None:
                if self.progress:
                    self.progress("embedding", done, total)

            vectors = self.encoder.encode([r.passage.search_text for r in todo],
                                          progress=encode_progress)
            for r, v in zip(todo, vectors):
                r.vector = np.asarray(v, dtype=np.float32)
            self.embedded += len(todo)
        if self.annotator is not None:
            need = [r for r in rows if r.ann is None]
            if self.progress:
                self.progress("analysing", 0, len(need))
            tables = self.annotator([r.passage.text for r in need]) if need else {}
            if self.progress:
                self.progress("analysing", len(need), len(need))
            for name, blocks in tables.items():
                for r, block in zip(need, blocks):
                    r.ann = r.ann or {}
                    r.ann[name] = np.asarray(block).tolist()
                if blocks:
                    first = np.asarray(blocks[0])
                    self.shapes[name] = [first.dtype.str, list(first.shape[1:])]
            for r in rows:
                r.ann = r.ann or {}

    def _write(self, collection: str, rows: list[_Row], upsert: bool = False) -> None:
        put = self.client.upsert if upsert else self.client.insert
        for i in range(0, len(rows), BATCH_ROWS):
            put(collection, [r.record(self.bm25) for r in rows[i : i + BATCH_ROWS]],
                timeout=WRITE_TIMEOUT)
            if self.progress:
                self.progress("writing", min(i + BATCH_ROWS, len(rows)), len(rows))

    def _reuse_from_collection(self, collection: str, rows: list[_Row], ann: bool) -> None:
        """Vectors (and annotations) of rows the collection holds under the same id."""
        fields = ["vector", "ann"] if ann else ["vector"]
        for i in range(0, len(rows), BATCH_ROWS):
            batch = rows[i : i + BATCH_ROWS]
            found = {row["id"]: row for row in self.client.get(
                collection, ids=[r.id for r in batch], output_fields=fields,
                timeout=READ_TIMEOUT)}
            for r in batch:
                old = found.get(r.id)
                if old is not None:
                    r.vector = np.asarray(old["vector"], dtype=np.float32)
                    if ann:
                        r.ann = dict(old["ann"])

    def _reuse_from_files(self, index: files.Index, rows: list[_Row], ann: bool) -> None:
        """Vectors (and annotations) from a file store index, by passage key: moving an
        index from files to Milvus embeds nothing again."""
        if ann:
            for t in self.tables:
                table = index.tables[t][1]
                self.shapes[t] = [table.dtype.str, list(table.shape[1:])]
        stored = np.ascontiguousarray(index.passage_keys).tobytes()
        where = {stored[i : i + 16]: i // 16 for i in range(0, len(stored), 16)}
        for r in rows:
            i = where.get(r.key)
            if i is not None:
                r.vector = np.array(index.vectors[i], dtype=np.float32)
                if ann:
                    r.ann = {t: np.asarray(index.rows(t, i)).tolist() for t in self.tables}

    def _rebuild(self, committed, sources, skipped, fresh, dense) -> dict:
        """A new collection with every passage, committed by switching the alias."""
        backend = self.backend
        backend.ensure_meta()
        name = f"{backend.alias}__{time.strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}"
        rows = self._rows(fresh)
        same_model = committed and committed[2]["model"]["id"] == self.encoder.model_id
        if self.previous is not None and not self.full and isinstance(self.previous, files.Index):
            if self.previous.model_id == self.encoder.model_id:
                self._reuse_from_files(self.previous, rows, self._same_annotator(
                    self.previous.manifest))
        elif committed and same_model and not self.full:
            self._reuse_from_collection(committed[0], rows, self._same_annotator(committed[2]))
        self._complete(rows)
        old_shapes = committed[2].get("table_shapes", {}) if committed else {}
        shapes = {**old_shapes, **self.shapes}
        backend.create_collection(name, int(self.encoder.dimension), dense)
        try:
            self._write(name, rows)
            self._put_frequencies(name, _frequencies(r.passage for r in rows), Counter(),
                                  new=True)
            self.client.flush(name, timeout=WRITE_TIMEOUT)
            manifest = self._manifest(name, sources, skipped, dense, shapes)
            backend.write_manifest(name, manifest)
        except BaseException:
            self._drop_quietly(name)
            raise
        backend.switch_alias(name)
        backend.collect_garbage(serving=name)
        return manifest

    def _drop_quietly(self, name: str) -> None:
        try:
            self.client.drop_collection(name, timeout=WRITE_TIMEOUT)
            self.backend.drop_meta_of(name)
        except Exception:  # noqa: BLE001 - the build's own error is the one to report
            log.debug("could not drop %s", name, exc_info=True)

    def _same_annotator(self, manifest: dict) -> bool:
        return self.annotator is not None and manifest.get("annotator") == self.annotator_id

    def _update(self, current, sources, skipped, fresh, dense) -> dict:
        """Upsert the passages of added and edited documents and delete those of removed ones
        in the served collection; the new manifest commits it."""
        collection, head, old = current
        backend = self.backend
        gone = sorted(set(old["sources"]) - set(sources))
        if not fresh and not gone:  # only skipped files or times changed
            manifest = self._manifest(collection, sources, skipped, dense,
                                      old.get("table_shapes", {}))
            backend.write_manifest(collection, manifest, previous=head)
            return manifest
        backend.set_head(collection, dict(head, dirty=True))  # a crash from here: full rebuild
        rows = self._rows(fresh)
        fields = ["id", "vector", "text", "title"] + (["ann"] if self.tables else [])
        existing: dict[int, dict] = {}
        for source in [*sorted(fresh), *gone]:
            if source in old["sources"]:
                for row in backend.source_rows(collection, source, fields):
                    existing[row["id"]] = row
        for r in rows:
            row = existing.get(r.id)
            if row is not None:
                r.vector = np.asarray(row["vector"], dtype=np.float32)
                if self.tables:
                    r.ann = dict(row["ann"])
        self._complete(rows)
        shapes = {**old.get("table_shapes", {}), **self.shapes}
        self._write(collection, rows, upsert=True)
        kept = {r.id for r in rows}
        stale = [pid for pid in existing if pid not in kept]
        for i in range(0, len(stale), BATCH_ROWS):
            self.client.delete(collection, ids=stale[i : i + BATCH_ROWS], timeout=WRITE_TIMEOUT)
        added = _frequencies(r.passage for r in rows if r.id not in existing)
        removed = _frequencies(
            Passage("", 0, 0, existing[pid]["text"], 0, existing[pid]["title"]) for pid in stale)
        self._put_frequencies(collection, added, removed)
        manifest = self._manifest(collection, sources, skipped, dense, shapes)
        backend.write_manifest(collection, manifest, previous=head)
        return manifest

    def _put_frequencies(self, collection: str, added: Counter, removed: Counter,
                         new: bool = False) -> None:
        """Apply changes to the collection's document frequencies (the rules reader's IDF);
        ``new``: the collection has none yet."""
        changed = [t for t in set(added) | set(removed) if len(t.encode()) < MAX_KEY_BYTES - 200]
        keys = {t: f"{collection}/df/{t}" for t in changed}
        now = {} if new else {
            k: int(v) for k, v in self.backend._get_meta(list(keys.values())).items()}
        values = {t: now.get(keys[t], 0) + added[t] - removed[t] for t in changed}
        self.backend.put_meta({keys[t]: str(v) for t, v in values.items() if v > 0})
        self.backend.drop_meta([keys[t] for t, v in values.items() if v <= 0])


def _dense_plan(n: int, previous: dict | None) -> dict:
    """The dense index for n passages, as the file store chooses it (exact up to 50,000, then
    IVF-Flat); a collection keeps its IVF cells while the size is within 2x of their count."""
    plan = files._dense_meta(n, previous)
    if plan["params"].pop("reuse_cells", False):
        return previous  # type: ignore[return-value]
    plan["params"].pop("train", None)  # Milvus trains its cells on what it holds
    return plan


def _frequencies(passages: Iterable[Passage]) -> Counter:
    """How many of the passages hold each term."""
    counts: Counter[str] = Counter()
    for p in passages:
        counts.update(set(terms(p.search_text)))
    return counts


# -- a loaded version ---------------------------------------------------------------------------


class MilvusIndex:
    """One served collection (a ``Store``). Ids are ``stable_id``s; the fields of the passages
    a search returns come with it and are kept, so reading them costs no further call."""

    def __init__(self, backend: MilvusBackend, collection: str, manifest: dict):
        self.backend = backend
        self.collection = collection
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.sources: list[str] = manifest["source_names"]
        self.tables: tuple[str, ...] = tuple(manifest.get("tables", []))
        self._shapes: dict = manifest.get("table_shapes", {})
        self._fields = PASSAGE_FIELDS + (["ann"] if self.tables else [])
        self._rows: dict[int, dict] = {}
        self._df: dict[str, int] = {}
        self._bm25 = manifest.get("bm25", "qa")
        self.fusion: str | None = None if backend.target.fusion == "qa" else backend.target.fusion
        params = manifest["dense"]["params"]
        self._dense_params = {"metric_type": "IP",
                              "params": {"nprobe": params["nprobe"]} if "nprobe" in params else {}}

    def __len__(self) -> int:
        return int(self.manifest["counts"]["passages"])

    @property
    def model_id(self) -> str:
        return self.manifest["model"]["id"]

    @property
    def client(self):
        return self.backend.client

    def _ask(self, doing: str, call):
        """``call()`` against the collection, loading it first where a restarted server
        released it."""
        with self.backend.talking(doing):
            try:
                return call()
            except Exception as e:
                if "load" not in _reason(e).lower():
                    raise
                self.client.load_collection(self.collection, timeout=WRITE_TIMEOUT)
                return call()

    def _keep(self, hits) -> tuple[np.ndarray, np.ndarray]:
        if len(self._rows) > ROW_CACHE:
            self._rows.clear()
        ids, scores = [], []
        for hit in hits:
            pid = int(hit["id"])
            self._rows[pid] = hit["entity"]
            ids.append(pid)
            scores.append(float(hit["distance"]))
        return np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float32)

    def _row(self, pid: int, field: str = "text") -> dict:
        row = self._rows.get(pid)
        if row is None or field not in row:
            found = self._ask("read a passage", lambda: self.client.get(
                self.collection, ids=[int(pid)], output_fields=self._fields + ["ann"],
                timeout=READ_TIMEOUT))
            if not found:
                raise QAError(f"passage {pid} is no longer in {self.backend.location}; "
                              "ask again")
            row = found[0]
            self._rows[int(pid)] = row
        return row

    def passage(self, pid: int) -> Passage:
        r = self._row(pid)
        return Passage(source=r["source"], start=int(r["start"]), end=int(r["end"]),
                       text=r["text"], paragraph=int(r["paragraph"]), title=r["title"],
                       location=r["location"])

    def text(self, pid: int) -> str:
        return self._row(pid)["text"]

    def rows(self, table: str, pid: int) -> np.ndarray:
        if table not in self.tables:
            raise KeyError(table)
        data = self._row(pid, "ann")["ann"].get(table, [])
        if table not in self._shapes:  # no passage had rows when it was built
            return np.asarray(data, dtype=np.int32)
        dtype, trailing = self._shapes[table]
        return np.asarray(data, dtype=np.dtype(dtype)).reshape((-1, *trailing))

    def document_frequency(self, term: str) -> int:
        found = self._df.get(term)
        if found is None:
            key = f"{self.collection}/df/{term}"
            with self.backend.talking("read a document frequency"):
                found = int(self.backend._get_meta([key]).get(key, 0))
            self._df[term] = found
        return found

    def dense_search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        vector = np.asarray(query_vector, dtype=np.float32).reshape(-1).tolist()
        hits = self._ask("search", lambda: self.client.search(
            self.collection, data=[vector], anns_field="vector", limit=k,
            output_fields=self._fields, search_params=self._dense_params,
            timeout=READ_TIMEOUT))[0]
        return self._keep(hits)

    def sparse_search(self, query_terms: list[str], k: int,
                      text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        query = bm25_query(query_terms, text, self._bm25)
        if not query or len(self) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        hits = self._ask("search", lambda: self.client.search(
            self.collection, data=[query], anns_field="sparse", limit=k,
            output_fields=self._fields, search_params={"metric_type": "BM25"},
            timeout=READ_TIMEOUT))[0]
        ids, scores = self._keep(hits)
        # Milvus scores BM25 with a (k1 + 1) factor that bm25s's Lucene variant leaves out;
        # Milvus Lite reports the score negated. Divided out, the scores are the file store's.
        scores = np.abs(scores) / (files.BM25_K1 + 1)
        keep = scores > 0
        return ids[keep], scores[keep]

    def hybrid_search(self, query_vector: np.ndarray, query_terms: list[str], k: int,
                      text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fused inside Milvus (``fusion=rrf`` or ``weighted``): (ids, fused scores)."""
        pymilvus = _pymilvus()
        vector = np.asarray(query_vector, dtype=np.float32).reshape(-1).tolist()
        depth = config.CANDIDATES_PER_RETRIEVER
        requests = [pymilvus.AnnSearchRequest(data=[vector], anns_field="vector",
                                              param=self._dense_params, limit=depth)]
        query = bm25_query(query_terms, text, self._bm25)
        if query:
            requests.append(pymilvus.AnnSearchRequest(
                data=[query], anns_field="sparse", param={"metric_type": "BM25"}, limit=depth))
        if self.fusion == "rrf":
            ranker = pymilvus.RRFRanker()
        elif query:
            ranker = pymilvus.WeightedRanker(1 - config.SPARSE_WEIGHT, config.SPARSE_WEIGHT)
        else:
            ranker = pymilvus.WeightedRanker(1.0)
        hits = self._ask("search", lambda: self.client.hybrid_search(
            self.collection, requests, ranker, limit=k, output_fields=self._fields,
            timeout=READ_TIMEOUT))[0]
        return self._keep(hits)

    def source_passages(self, source: str) -> np.ndarray:
        ids = [int(r["id"]) for r in self._ask("list a document's passages", lambda: (
            self.backend.source_rows(self.collection, source, ["id"])))]
        return np.array(sorted(ids), dtype=np.int64)

"""The Milvus backend of a corpus: its collections, its alias, and its manifest in ``qa_meta``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import QAError
from ...tokens import STOPWORDS
from .. import files
from ..protocol import BuildReport
from ..versions import FORMAT_VERSION, IndexCorrupt, exclusive
from .build import Build
from .client import (
    BATCH_ROWS,
    LITE_RELEASE_SECONDS,
    MAX_KEY_BYTES,
    MAX_VARCHAR,
    QUERY_LIMIT,
    READ_TIMEOUT,
    WRITE_TIMEOUT,
    StoreUnavailable,
    connect,
    corpus_name,
    forget_client,
    import_pymilvus,
    is_connection_error,
    lite_lock_path,
    literal,
    parse_uri,
    reason,
)
from .index import MilvusIndex

log = logging.getLogger("qa")
META = "qa_meta"  # manifests and document frequencies of every corpus in the database
KEEP_COLLECTIONS = 3  # the served one and the two before it
PARAGRAPH_WINDOW = 4096
MANIFEST_CHUNK = 16_000  # characters per manifest row: at most 64,000 bytes of UTF-8
_build_locks: dict[tuple[str, str], threading.Lock] = {}
_build_locks_lock = threading.Lock()


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
            self._client = connect(self.target)
        return self._client

    def _forget_client(self) -> None:
        client, self._client, self._meta_ready = self._client, None, False
        forget_client(self.target.address, client)
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
            pymilvus = import_pymilvus()
            import grpc

            if not isinstance(e, (pymilvus.MilvusException, grpc.RpcError)):
                raise
            if is_connection_error(e):
                self._forget_client()  # the next call connects again
                raise StoreUnavailable(f"cannot reach Milvus at {self.uri} ({reason(e)})") from None
            raise StoreUnavailable(f"Milvus at {self.uri} failed to {doing} ({reason(e)})") from None

    # -- reading what is committed --

    def current_collection(self) -> str | None:
        """The collection the corpus's alias names, or None before the first build."""
        client = self.client
        pymilvus = import_pymilvus()
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

    @contextmanager
    def building(self) -> Iterator[None]:
        """Held around a build, from before the store is first opened. Milvus Lite serves one
        process per file: a second process that wants to build there waits for the build
        under way (a lock file beside the database), then for that process to let go of the
        file, and builds from what it committed, instead of failing at once.

        A Milvus server has no such lock: only builders in this process take turns (see
        ``build``). Builders in other processes or machines are not kept apart: both embed
        the same passages; full builds still commit whole (the alias switches to a complete
        collection, the last switch wins), but two in-place updates at once may interleave
        their upserts and deletes. Run one builder per corpus against a server."""
        if not self.target.lite:
            yield
            return
        with exclusive(lite_lock_path(self.target), self.target.address) as waited:
            if waited and self._client is None:
                self._client = connect(self.target, patience=LITE_RELEASE_SECONDS)
            yield

    def build(self, seeds_dir, encoder, annotator=None, progress=None, previous=None, found=None,
              full: bool = False) -> tuple[dict, BuildReport]:
        """Bring the corpus's collection up to date with the folder: in place when only some
        documents changed, else as a new collection the alias then names. ``full``: a new
        collection from the documents alone, no vector reused."""
        key = (self.target.address, self.alias)
        with _build_locks_lock:
            lock = _build_locks.setdefault(key, threading.Lock())
        with lock, self.talking("update the index"):
            return Build(self, Path(seeds_dir), encoder, annotator, progress,
                          None if full else previous, found, full).run()

    # -- writing, used by Build --

    def ensure_meta(self) -> None:
        pymilvus = import_pymilvus()
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
        self.client.delete(META, filter=f"key like {literal(collection + '/%')}",
                           timeout=WRITE_TIMEOUT)

    def source_rows(self, collection: str, source: str, fields: list[str]) -> list[dict]:
        """Every row of one document (a query returns at most QUERY_LIMIT rows: a longer
        document is read in windows of paragraphs)."""
        where = f"source == {literal(source)}"
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
        pymilvus = import_pymilvus()
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

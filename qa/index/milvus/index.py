"""One served Milvus collection, searched as a ``Store``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ... import config
from ...errors import QAError
from ...types import Passage
from .. import files
from .client import READ_TIMEOUT, WRITE_TIMEOUT, import_pymilvus, reason
from .terms import bm25_query, df_key

if TYPE_CHECKING:
    from .backend import MilvusBackend

log = logging.getLogger("qa")
ROW_CACHE = 8192  # passages whose fields a loaded version keeps from its searches
PASSAGE_FIELDS = ["source", "start", "end", "paragraph", "title", "location", "text"]


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
                if "load" not in reason(e).lower():
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
            key = df_key(self.collection, term)
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
        pymilvus = import_pymilvus()
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

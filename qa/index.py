"""Building, loading and checking the index: passages, dense vectors (FAISS), BM25 and the
reader's annotations, kept side by side in one committed version (see ``store``)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .documents import (
    Passage,
    content_hash,
    iter_document_paths,
    load_document,
    read_text,
    scan_states,
    split_document,
)
from .errors import QAError

log = logging.getLogger("qa")

Progress = Callable[[str, int, int], None]  # (stage, done, total)
# An annotator turns passage texts into named tables: for each passage a block of rows.
Annotator = Callable[[list[str]], dict[str, list[np.ndarray]]]

# Above this many passages the dense index is IVF-Flat: 4 * sqrt(n) k-means cells, trained on
# up to 64 vectors a cell, of which NPROBE are scanned per question. HNSW (M=32, efSearch up to
# 1024) left 42% of a 1M-passage benchmark index unreachable, even from a vector's own
# position (recall@10 0.75); IVF-Flat reached recall@10 0.994 there at 1.65 ms a question.
EXACT_SEARCH_MAX = 50_000
IVF_CELLS_PER_SQRT_N = 4
IVF_TRAIN_PER_CELL = 64
IVF_NPROBE = 32


@dataclass
class BuildReport:
    documents: int
    passages: int
    embedded: int  # passages encoded in this build
    reused: int  # passages whose vectors came from the previous version
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason
    seconds: float = 0.0


def passage_key(text: str, model_id: str) -> bytes:
    return hashlib.blake2b(f"{model_id}\0{text}".encode(), digest_size=16).digest()


class Index:
    """A loaded, immutable index version. Arrays are memory-mapped; searches are thread-safe."""

    def __init__(self, index_dir: Path, manifest: dict, vdir: Path):
        self.dir = Path(index_dir)
        self.manifest = manifest
        self.version = manifest["version_dir"]
        self.sources: list[str] = manifest["source_names"]
        self.titles: list[str] = [manifest["sources"][s].get("title", "") for s in self.sources]
        self.passage_source = store.load_array(vdir, "passage_source")
        self.passage_start = store.load_array(vdir, "passage_start")
        self.passage_end = store.load_array(vdir, "passage_end")
        self.passage_paragraph = store.load_array(vdir, "passage_paragraph")
        self.passage_keys = store.load_array(vdir, "passage_keys")
        self.text_offsets = store.load_array(vdir, "text_offsets")
        self.text_bytes = store.load_array(vdir, "texts")
        self.vectors = store.load_array(vdir, "vectors")
        self._vdir = vdir
        self._dense = None
        self._dense_lock = threading.Lock()
        self._bm25 = BM25Scores(vdir / "bm25")
        self.tables = {
            name: (store.load_array(vdir, f"{name}.ptr"), store.load_array(vdir, f"{name}.rows"))
            for name in manifest.get("tables", [])
        }

    def __len__(self) -> int:
        return len(self.passage_start)

    @property
    def model_id(self) -> str:
        return self.manifest["model"]["id"]

    def text(self, i: int) -> str:
        a, b = self.text_offsets[i], self.text_offsets[i + 1]
        return self.text_bytes[a:b].tobytes().decode("utf-8")

    def passage(self, i: int) -> Passage:
        return Passage(
            source=self.sources[int(self.passage_source[i])],
            start=int(self.passage_start[i]),
            end=int(self.passage_end[i]),
            text=self.text(i),
            paragraph=int(self.passage_paragraph[i]),
            title=self.titles[int(self.passage_source[i])],
        )

    def rows(self, table: str, i: int) -> np.ndarray:
        ptr, rows = self.tables[table]
        return rows[ptr[i] : ptr[i + 1]]

    @property
    def dense(self):
        """The FAISS index, loaded on first use (importing faiss costs a cold start ~0.5 s)."""
        if self._dense is None:
            with self._dense_lock:
                if self._dense is None:
                    import faiss

                    dense = faiss.read_index(str(self._vdir / "dense.faiss"))
                    if "nprobe" in self.manifest["dense"]["params"]:
                        dense.nprobe = self.manifest["dense"]["params"]["nprobe"]
                    self._dense = dense
        return self._dense

    def dense_search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if self.manifest["dense"]["type"] == "flat-ip":
            # Exact inner product over the memory-mapped vectors: the same result as FAISS's
            # flat index, without loading FAISS for small folders.
            scores = np.asarray(self.vectors) @ query
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return top, scores[top]
        scores, ids = self.dense.search(query.reshape(1, -1), k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    @property
    def vocabulary(self) -> dict[str, int]:
        return self._bm25.vocab_dict

    def document_frequency(self, term: str) -> int:
        """How many passages contain the (stemmed) term, read off the BM25 postings."""
        token_id = self._bm25.vocab_dict.get(term)
        return 0 if token_id is None else self._bm25.document_frequency(token_id)

    def sparse_search(self, query_terms: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = [self._bm25.vocab_dict[t] for t in query_terms if t in self._bm25.vocab_dict]
        if not ids or len(self) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self._bm25.scores(ids)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > 0]
        return top, scores[top]


class BM25Scores:
    """The query side of a saved bm25s index, read straight from its arrays.

    bm25s stores each (passage, term) BM25 score in a CSC matrix, so a query's scores are sums
    of posting lists; reading them directly avoids importing bm25s and scipy (~1 s) per process.
    """

    def __init__(self, path: Path):
        with open(path / "vocab.index.json", encoding="utf-8") as f:
            self.vocab_dict: dict[str, int] = json.load(f)
        with open(path / "params.index.json", encoding="utf-8") as f:
            params = json.load(f)
        if params.get("method", "lucene") not in ("lucene", "robertson", "atire"):
            raise ValueError(f"unsupported BM25 variant {params.get('method')}")
        self.num_docs = int(params["num_docs"])
        self.data = np.load(path / "data.csc.index.npy", mmap_mode="r", allow_pickle=False)
        self.indices = np.load(path / "indices.csc.index.npy", mmap_mode="r", allow_pickle=False)
        self.indptr = np.load(path / "indptr.csc.index.npy", mmap_mode="r", allow_pickle=False)

    def document_frequency(self, token_id: int) -> int:
        return int(self.indptr[token_id + 1] - self.indptr[token_id])

    def scores(self, token_ids: list[int]) -> np.ndarray:
        out = np.zeros(self.num_docs, dtype=np.float32)
        for t in token_ids:
            a, b = int(self.indptr[t]), int(self.indptr[t + 1])
            out[self.indices[a:b]] += self.data[a:b]  # a passage occurs once per posting list
        return out


def load(index_dir: Path, checksums: bool = True) -> Index | None:
    """Load the current version, or None when there is none. Raises IndexCorrupt."""
    manifest = store.read_manifest(index_dir)
    if manifest is None:
        return None
    vdir = store.verify(index_dir, manifest, checksums=checksums)
    try:
        return Index(index_dir, manifest, vdir)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise store.IndexCorrupt(f"index {vdir} cannot be loaded: {e}".splitlines()[0]) from None


def stale_reasons(seeds_dir: Path, manifest: dict | None, model_id: str) -> list[str]:
    """Why the index no longer matches the documents (empty when it does).

    Names, sizes and modification times are compared first; a file that only looks changed is
    confirmed by its content hash, so touching a file does not force a rebuild.
    """
    if manifest is None:
        return ["no index has been built"]
    if manifest["model"]["id"] != model_id:
        return [f"embedding model changed ({manifest['model']['id']} -> {model_id})"]
    known: dict = {**manifest["sources"], **manifest.get("skipped_files", {})}
    reasons = []
    current = {s.source: s for s in scan_states(Path(seeds_dir))}
    for source in sorted(set(known) - set(current)):
        reasons.append(f"removed: {source}")
    for source, state in current.items():
        meta = known.get(source)
        if meta is None:
            reasons.append(f"added: {source}")
        elif meta["size"] != state.size or meta["mtime_ns"] != state.mtime_ns:
            try:
                changed = content_hash(read_text(Path(seeds_dir) / source)) != meta["sha256"]
            except (OSError, UnicodeDecodeError):
                changed = "error" not in meta
            if changed:
                reasons.append(f"edited: {source}")
    return reasons


def build(
    seeds_dir: Path,
    index_dir: Path,
    encoder,
    annotator: Annotator | None = None,
    progress: Progress | None = None,
    previous: Index | None = None,
) -> tuple[dict, BuildReport]:
    """Index every document under ``seeds_dir`` into a new committed version.

    Vectors and annotations of passages whose text is unchanged are reused from ``previous``.
    Only one builder writes an index at a time; a second one waits for the first.
    """
    with store.build_lock(Path(index_dir)):
        return _build(seeds_dir, index_dir, encoder, annotator, progress, previous)


def _build(seeds_dir, index_dir, encoder, annotator, progress, previous):
    t0 = time.perf_counter()
    seeds_dir, index_dir = Path(seeds_dir), Path(index_dir)
    if not seeds_dir.is_dir():
        raise QAError(f"documents folder {seeds_dir} does not exist")
    passages: list[Passage] = []
    sources: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    unchanged = _unchanged_sources(previous, seeds_dir)
    for source, path in iter_document_paths(seeds_dir):
        st = path.stat()
        old = unchanged.get(source)
        if old is not None and (old[0]["size"], old[0]["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            # Same name, size and time as in the previous version: reuse without reading.
            sources[source] = old[0]
            passages.extend(previous.passage(i) for i in old[1])
            continue
        try:
            doc = load_document(seeds_dir, source, path)
        except QAError as e:
            log.warning("%s", e)
            skipped[source] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "error": str(e)}
            continue
        doc_passages = split_document(doc)
        if not doc_passages:
            skipped[source] = {
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": doc.sha256,
                "error": f"{source}: empty document",
            }
            continue
        sources[source] = {
            "sha256": doc.sha256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "passages": len(doc_passages),
            "chars": len(doc.text),
            "title": doc_passages[0].title,
        }
        passages.extend(doc_passages)
    if not passages:
        raise QAError(f"no readable .txt or .md documents with text in {seeds_dir}")

    texts = [p.text for p in passages]
    search_texts = [p.search_text for p in passages]
    keys = [passage_key(t, encoder.model_id) for t in search_texts]
    old_rows: dict[bytes, int] = {}
    if previous is not None and previous.model_id == encoder.model_id:
        old_rows = {k.tobytes(): i for i, k in enumerate(np.asarray(previous.passage_keys))}
    reuse = [old_rows.get(k) for k in keys]
    new_idx = [i for i, r in enumerate(reuse) if r is None]

    def encode_progress(done: int, total: int) -> None:
        if progress:
            progress("embedding", done, total)

    new_vectors = encoder.encode([search_texts[i] for i in new_idx], progress=encode_progress)
    vectors = np.empty((len(texts), encoder.dimension), dtype=np.float32)
    if new_idx:
        vectors[new_idx] = new_vectors
    for i, r in enumerate(reuse):
        if r is not None:
            vectors[i] = previous.vectors[r]

    tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if annotator is not None:
        tables = _annotate(annotator, texts, reuse, previous, progress)

    term_ids, vocab = _bm25_terms(search_texts, reuse, previous)
    tables["bm25_terms"] = _stack_blocks([np.asarray(ids, dtype=np.int32) for ids in term_ids])

    dense_meta = _dense_meta(len(texts))
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds_dir": str(seeds_dir.resolve()),
        "model": {"id": encoder.model_id, "dimension": int(vectors.shape[1])},
        "dense": dense_meta,
        "counts": {"documents": len(sources), "passages": len(passages)},
        "source_names": sorted(sources),
        "sources": sources,
        "skipped_files": skipped,
        "tables": sorted(tables),
    }

    def write(vdir: Path) -> None:
        _write_passages(vdir, passages, manifest["source_names"], keys)
        store.save_array(vdir, "vectors", vectors)
        _write_dense(vdir, vectors, dense_meta)
        _write_bm25(vdir / "bm25", term_ids, vocab)
        for name, (ptr, rows) in tables.items():
            store.save_array(vdir, f"{name}.ptr", ptr)
            store.save_array(vdir, f"{name}.rows", rows)

    manifest = store.commit(index_dir, write, manifest)
    report = BuildReport(
        documents=len(sources),
        passages=len(passages),
        embedded=len(new_idx),
        reused=len(passages) - len(new_idx),
        skipped={s: m["error"] for s, m in skipped.items()},
        seconds=time.perf_counter() - t0,
    )
    return manifest, report


def _unchanged_sources(previous: Index | None, seeds_dir: Path) -> dict[str, tuple[dict, range]]:
    """Previous version's metadata and passage rows per source, when it indexed this folder."""
    if previous is None or previous.manifest.get("seeds_dir") != str(seeds_dir.resolve()):
        return {}
    positions = np.arange(len(previous.sources))
    order = np.asarray(previous.passage_source)
    lows = np.searchsorted(order, positions, side="left").tolist()
    highs = np.searchsorted(order, positions, side="right").tolist()
    return {
        source: (previous.manifest["sources"][source], range(lo, hi))
        for source, lo, hi in zip(previous.sources, lows, highs)
    }


def _annotate(annotator, texts, reuse, previous, progress):
    """Reader tables for every passage: fresh for new passages, copied for unchanged ones."""
    names_needed = set(annotator.tables)
    if previous is None or not names_needed <= set(previous.tables):
        reuse = [None] * len(texts)
    todo = [i for i, r in enumerate(reuse) if r is None]
    if progress:
        progress("analysing", 0, len(todo))
    fresh = annotator([texts[i] for i in todo]) if todo else {}
    if progress:
        progress("analysing", len(todo), len(todo))
    position = {i: n for n, i in enumerate(todo)}
    tables = {}
    for name in sorted(names_needed):
        blocks = []
        for i, r in enumerate(reuse):
            if r is None:
                blocks.append(fresh[name][position[i]])
            else:
                blocks.append(np.asarray(previous.rows(name, r)))
        tables[name] = _stack_blocks(blocks)
    return tables


def _stack_blocks(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(blocks) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(b) for b in blocks])
    non_empty = [b for b in blocks if len(b)]
    if non_empty:
        rows = np.concatenate(non_empty)
    else:
        rows = np.zeros((0,) + tuple(blocks[0].shape[1:]) if blocks else (0,), dtype=np.int32)
    return ptr, rows


def _dense_meta(n: int) -> dict:
    if n <= EXACT_SEARCH_MAX:
        return {"type": "flat-ip", "params": {}}
    cells = int(IVF_CELLS_PER_SQRT_N * np.sqrt(n))
    return {
        "type": "ivf-flat-ip",
        "params": {
            "nlist": cells,
            "nprobe": min(IVF_NPROBE, cells),
            "train": min(n, IVF_TRAIN_PER_CELL * cells),
        },
    }


def _write_passages(vdir: Path, passages: list[Passage], names: list[str], keys) -> None:
    position = {name: i for i, name in enumerate(names)}
    encoded = [p.text.encode("utf-8") for p in passages]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    store.save_array(vdir, "texts", np.frombuffer(b"".join(encoded), dtype=np.uint8))
    store.save_array(vdir, "text_offsets", offsets)
    store.save_array(
        vdir, "passage_source", np.array([position[p.source] for p in passages], np.int32)
    )
    store.save_array(vdir, "passage_start", np.array([p.start for p in passages], np.int64))
    store.save_array(vdir, "passage_end", np.array([p.end for p in passages], np.int64))
    store.save_array(vdir, "passage_paragraph", np.array([p.paragraph for p in passages], np.int32))
    # Raw bytes, (n, 16) uint8: numpy's fixed-width bytes type would drop trailing zero bytes.
    store.save_array(
        vdir, "passage_keys", np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 16)
    )


def _write_dense(vdir: Path, vectors: np.ndarray, meta: dict) -> None:
    import faiss

    d = vectors.shape[1]
    if meta["type"] == "flat-ip":
        index = faiss.IndexFlatIP(d)
    else:
        params = meta["params"]
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        # A fixed sample (and faiss's fixed k-means seed): the same vectors give the same index.
        sample = np.random.default_rng(0).choice(len(vectors), params["train"], replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
    index.add(np.ascontiguousarray(vectors))
    faiss.write_index(index, str(vdir / "dense.faiss"))


def _bm25_terms(search_texts, reuse, previous) -> tuple[list, dict[str, int]]:
    """Every passage's BM25 terms as ids into a vocabulary that only grows: unchanged passages
    keep the ids stored in the previous version, so only new passages are tokenised."""
    from .tokens import terms

    usable = previous is not None and "bm25_terms" in previous.tables
    vocab: dict[str, int] = dict(previous.vocabulary) if usable else {"": 0}
    term_ids = []
    for text, r in zip(search_texts, reuse):
        if usable and r is not None:
            term_ids.append(previous.rows("bm25_terms", r))
            continue
        ids = []
        for term in terms(text):
            if term not in vocab:
                vocab[term] = len(vocab)
            ids.append(vocab[term])
        term_ids.append(ids)
    return term_ids, vocab


def _write_bm25(path: Path, term_ids: list, vocab: dict[str, int]) -> None:
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG when imported
    retriever = bm25s.BM25()
    retriever.index(([list(map(int, ids)) for ids in term_ids], vocab), show_progress=False)
    retriever.save(str(path), allow_pickle=False)

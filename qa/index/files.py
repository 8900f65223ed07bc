"""The file store: passages, dense vectors (FAISS), BM25 and the reader's annotations, kept
side by side in one committed version of a folder (see ``versions``)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..documents import SUFFIXES, FileState, Passage, scan_documents
from ..errors import QAError
from . import versions as store
from .folder import read_source
from .protocol import Annotator, BuildReport, Progress, passage_key

log = logging.getLogger("qa")

# Above this many passages the dense index is IVF-Flat: 4 * sqrt(n) k-means cells, trained on
# up to 64 vectors a cell, of which NPROBE are scanned per question. HNSW (M=32, efSearch up to
# 1024) left 42% of a 1M-passage benchmark index unreachable, even from a vector's own
# position (recall@10 0.75); IVF-Flat reached recall@10 0.994 there at 1.65 ms a question.
EXACT_SEARCH_MAX = 50_000
IVF_CELLS_PER_SQRT_N = 4
IVF_TRAIN_PER_CELL = 64
IVF_NPROBE = 32
# An update keeps the previous version's IVF cells (training them is 4 s at 60,000 passages,
# 7 s at 100,000) while the cell count the new size calls for is within this factor of theirs.
IVF_RETRAIN = 2.0
# Passages encoded at a time in a build: big enough for batches of similar length, small
# enough that a chunk's texts and vectors are a few MB.
ENCODE_CHUNK = 8192


class Index:
    """A loaded, immutable index version. Every array is read into memory and checked against
    the manifest first (see ``versions.read_verified``), so nothing done to the files later
    can reach a version being served; searches are thread-safe."""

    def __init__(self, index_dir: Path, manifest: dict, vdir: Path, checksums: bool = True):
        self.dir = Path(index_dir)
        self.manifest = manifest
        self.version = manifest["version_dir"]
        self.sources: list[str] = manifest["source_names"]
        self.titles: list[str] = [manifest["sources"][s].get("title", "") for s in self.sources]
        files = manifest["files"]
        self._checksums = checksums

        def array(name: str) -> np.ndarray:
            return store.load_array(vdir, name, files, checksums)

        self.passage_source = array("passage_source")
        self.passage_start = array("passage_start")
        self.passage_end = array("passage_end")
        self.passage_paragraph = array("passage_paragraph")
        self.passage_keys = array("passage_keys")
        self.text_offsets = array("text_offsets")
        self.text_bytes = array("texts")
        if "location_offsets.npy" in files:
            self.location_offsets = array("location_offsets")
            self.location_bytes = array("locations")
        else:  # an index from before locations were stored: none
            self.location_offsets = np.zeros(len(self.passage_start) + 1, np.int64)
            self.location_bytes = np.zeros(0, np.uint8)
        self.vectors = array("vectors")
        self._vdir = vdir
        self._dense = None
        self._dense_lock = threading.Lock()
        self._bm25 = BM25Scores(vdir / "bm25", files, checksums)
        self.tables = {
            name: (array(f"{name}.ptr"), array(f"{name}.rows"))
            for name in manifest.get("tables", [])
        }
        problem = self._count_problem()
        if problem:
            raise store.IndexCorrupt(f"index {vdir} does not match its manifest ({problem})")

    def _count_problem(self) -> str | None:
        """Where the arrays disagree with the manifest or each other; None when they agree."""
        n = self.manifest["counts"]["passages"]
        rows = {
            "passage_source": len(self.passage_source), "passage_start": len(self.passage_start),
            "passage_end": len(self.passage_end), "passage_keys": len(self.passage_keys),
            "passage_paragraph": len(self.passage_paragraph), "vectors": len(self.vectors),
            "text_offsets": len(self.text_offsets) - 1,
            "location_offsets": len(self.location_offsets) - 1,
            **{f"{name}.ptr": len(ptr) - 1 for name, (ptr, _) in self.tables.items()},
        }
        for name, count in rows.items():
            if count != n:
                return f"{name} has {count:,} rows, the manifest counts {n:,} passages"
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.manifest["model"]["dimension"]:
            return f"vectors of shape {self.vectors.shape}"
        if n and (int(self.text_offsets[-1]) != len(self.text_bytes)
                  or int(self.location_offsets[-1]) != len(self.location_bytes)):
            return "text offsets run past the texts"
        if n and not 0 <= int(np.min(self.passage_source)) <= int(np.max(self.passage_source)) \
                < len(self.sources):
            return "passages of unknown documents"
        if self._bm25.num_docs != n:
            return f"BM25 counts {self._bm25.num_docs:,} passages"
        return None

    def __len__(self) -> int:
        return len(self.passage_start)

    @property
    def model_id(self) -> str:
        return self.manifest["model"]["id"]

    def text(self, i: int) -> str:
        a, b = self.text_offsets[i], self.text_offsets[i + 1]
        return self.text_bytes[a:b].tobytes().decode("utf-8")

    def location(self, i: int) -> str:
        a, b = self.location_offsets[i], self.location_offsets[i + 1]
        return self.location_bytes[a:b].tobytes().decode("utf-8") if b > a else ""

    @property
    def has_locations(self) -> bool:
        return "location_offsets.npy" in self.manifest.get("files", {})

    def passage(self, i: int) -> Passage:
        return Passage(
            source=self.sources[int(self.passage_source[i])],
            start=int(self.passage_start[i]),
            end=int(self.passage_end[i]),
            text=self.text(i),
            paragraph=int(self.passage_paragraph[i]),
            title=self.titles[int(self.passage_source[i])],
            location=self.location(i),
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

                    data = store.read_verified(self._vdir, "dense.faiss",
                                               self.manifest["files"], self._checksums)
                    try:
                        dense = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
                    except RuntimeError as e:
                        raise store.IndexCorrupt(
                            f"index file {self._vdir / 'dense.faiss'} cannot be read: {e}"
                            .splitlines()[0]) from None
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

    def sparse_search(
        self, query_terms: list[str], k: int, text: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = [self._bm25.vocab_dict[t] for t in query_terms if t in self._bm25.vocab_dict]
        if not ids or len(self) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self._bm25.scores(ids)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > 0]
        return top, scores[top]


    def source_passages(self, source: str) -> np.ndarray:
        """The rows of one document's passages (a version holds them in source order)."""
        position = int(np.searchsorted(self.sources, source))
        if position == len(self.sources) or self.sources[position] != source:
            return np.zeros(0, np.int64)
        order = np.asarray(self.passage_source)
        lo, hi = np.searchsorted(order, [position, position + 1])
        return np.arange(lo, hi, dtype=np.int64)


class BM25Scores:
    """The query side of a saved bm25s index, read straight from its arrays.

    bm25s stores each (passage, term) BM25 score in a CSC matrix, so a query's scores are sums
    of posting lists; reading them directly avoids importing bm25s and scipy (~1 s) per process.
    """

    def __init__(self, path: Path, files: dict | None = None, checksums: bool = True):
        """``files``: the manifest's table of a version's files, to check these against
        (their names relative to the version folder, as ``bm25/...``)."""
        folder = path.name
        listed = None if files is None else {
            name.removeprefix(f"{folder}/"): meta for name, meta in files.items()
            if name.startswith(f"{folder}/")}

        def read_json(name: str):
            return json.loads(store.read_verified(path, name, listed, checksums).decode("utf-8"))

        self.vocab_dict: dict[str, int] = read_json("vocab.index.json")
        params = read_json("params.index.json")
        if params.get("method", "lucene") not in ("lucene", "robertson", "atire"):
            raise ValueError(f"unsupported BM25 variant {params.get('method')}")
        self.num_docs = int(params["num_docs"])
        self.data = store.load_array(path, "data.csc.index", listed, checksums)
        self.indices = store.load_array(path, "indices.csc.index", listed, checksums)
        self.indptr = store.load_array(path, "indptr.csc.index", listed, checksums)

    def document_frequency(self, token_id: int) -> int:
        return int(self.indptr[token_id + 1] - self.indptr[token_id])

    def scores(self, token_ids: list[int]) -> np.ndarray:
        out = np.zeros(self.num_docs, dtype=np.float32)
        for t in token_ids:
            a, b = int(self.indptr[t]), int(self.indptr[t + 1])
            out[self.indices[a:b]] += self.data[a:b]  # a passage occurs once per posting list
        return out


def load(index_dir: Path, checksums: bool = True, trusted: str | None = None) -> Index | None:
    """Load the current version, or None when there is none. Raises IndexCorrupt.

    ``trusted`` names a version this process has just written and hashed: if it is still the
    current one, only file sizes are checked (hashing it again costs ~50 ms at 10,000 files).
    """
    manifest = store.read_manifest(index_dir)
    if manifest is None:
        return None
    checksums = checksums and manifest.get("version_dir") != trusted
    # Sizes first (cheap: a damaged version is refused before anything is read); each file's
    # checksum is then checked on the very bytes that are loaded.
    vdir = store.verify(index_dir, manifest, checksums=False)
    try:
        return Index(index_dir, manifest, vdir, checksums=checksums)
    except store.IndexCorrupt:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, UnicodeDecodeError) as e:
        raise store.IndexCorrupt(f"index {vdir} cannot be loaded: {e}".splitlines()[0]) from None


class FileBackend:
    """The index in a local folder: versioned directories committed through manifest.json."""

    kind = "files"

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self.location = str(self.index_dir)
        if self.index_dir.exists() and not self.index_dir.is_dir():
            raise QAError(f"the index folder {self.index_dir} is a file, not a folder")

    def read_manifest(self) -> dict | None:
        return store.read_manifest(self.index_dir)

    def stamp(self) -> Hashable | None:
        try:
            st = (self.index_dir / store.MANIFEST).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self, trusted: str | None = None) -> Index | None:
        return load(self.index_dir, trusted=trusted)

    def building(self) -> AbstractContextManager[None]:
        """Nothing to hold before ``build``: it takes the folder's lock itself, and a build
        that waited catches up with what the other one committed."""
        return nullcontext()

    def build(self, seeds_dir, encoder, annotator=None, progress=None, previous=None, found=None,
              full: bool = False) -> tuple[dict, BuildReport]:
        """``full``: a new version from the documents alone, nothing reused."""
        return build(seeds_dir, self.index_dir, encoder, annotator=annotator, progress=progress,
                     previous=None if full else previous, found=found, catch_up=not full)


def build(
    seeds_dir: Path,
    index_dir: Path,
    encoder,
    annotator: Annotator | None = None,
    progress: Progress | None = None,
    previous: Index | None = None,
    found: list[FileState] | None = None,
    catch_up: bool = False,
) -> tuple[dict, BuildReport]:
    """Index every document under ``seeds_dir`` into a new committed version.

    Vectors and annotations of passages whose text is unchanged are reused from ``previous``;
    so are its rows of files whose name, size and modification time are unchanged. ``found``:
    a scan of the folder just taken (by ``stale_reasons``), instead of scanning it again.
    Only one builder writes an index at a time (a lock file); a second one waits for the
    first. ``catch_up``: it then starts from what the first committed, and builds nothing when
    that already matches the folder, so two processes never embed the same passages twice.
    """
    with store.build_lock(Path(index_dir)):
        if catch_up:
            previous, current = _catch_up(Path(seeds_dir), Path(index_dir), encoder, annotator,
                                          previous)
            if current is not None:
                return current
        return _build(seeds_dir, index_dir, encoder, annotator, progress, previous, found)


def _catch_up(seeds_dir: Path, index_dir: Path, encoder, annotator, previous: Index | None
              ) -> tuple[Index | None, tuple[dict, BuildReport] | None]:
    """What another builder committed while this one waited for the lock: its version, to
    build from; and, when it already matches the folder, that version with a report of no
    work (then nothing is built)."""
    try:
        manifest = store.read_manifest(index_dir)
        same = previous is not None and manifest is not None \
            and manifest["version_dir"] == previous.version
        if manifest is None or same:
            return previous, None
        current = load(index_dir)
    except QAError:
        return previous, None
    from .folder import stale_reasons

    annotator_id = annotator.id if annotator is not None else None
    if current is None or stale_reasons(seeds_dir, manifest, encoder.model_id, None, annotator_id):
        return current or previous, None
    counts = manifest["counts"]
    report = BuildReport(
        documents=counts["documents"], passages=counts["passages"], embedded=0,
        reused=counts["passages"],
        skipped={s: m["error"] for s, m in manifest.get("skipped_files", {}).items()})
    return current, (manifest, report)


# BM25 as bm25s computes it (its default "lucene" variant), so bm25s can load what we write.
BM25_K1 = 1.5
BM25_B = 0.75
BM25_TERMS = "bm25_terms"  # the table of each passage's term ids, kept for incremental builds


@dataclass
class Columns:
    """Per-passage arrays, row i describing passage i; the same names as on ``Index``.

    ``tables`` and the texts are ragged: the rows of passage i are ``rows[ptr[i]:ptr[i + 1]]``.
    """

    passage_keys: np.ndarray  # (n, 16) uint8
    vectors: np.ndarray  # (n, dimension) float32
    passage_source: np.ndarray  # int32, a position in the sorted source names
    passage_start: np.ndarray  # int64
    passage_end: np.ndarray  # int64
    passage_paragraph: np.ndarray  # int32
    text_offsets: np.ndarray  # int64, n + 1
    text_bytes: np.ndarray  # uint8, the passages' UTF-8 texts end to end
    location_offsets: np.ndarray  # int64, n + 1
    location_bytes: np.ndarray  # uint8, the passages' locations ("page 3", a heading) in UTF-8
    tables: dict[str, tuple[np.ndarray, np.ndarray]]


PASSAGE_ARRAYS = (
    "passage_keys",
    "vectors",
    "passage_source",
    "passage_start",
    "passage_end",
    "passage_paragraph",
    "text_offsets",
)


def _build(seeds_dir, index_dir, encoder, annotator, progress, previous, found):
    t0 = time.perf_counter()
    seeds_dir, index_dir = Path(seeds_dir), Path(index_dir)
    if not seeds_dir.is_dir():
        raise QAError(f"documents folder {seeds_dir} does not exist")
    table_names = sorted([*(annotator.tables if annotator is not None else ()), BM25_TERMS])
    reusable = previous is not None and previous.has_locations and _can_copy_rows(
        previous, seeds_dir, encoder, table_names, annotator)
    old_sources = _source_rows(previous) if reusable else {}
    # The new version as runs of rows: (True, lo, hi) copies rows lo:hi of the previous
    # version, (False, lo, hi) takes rows lo:hi of the passages read in this build.
    runs: list[tuple[bool, int, int]] = []
    fresh: list[Passage] = []
    sources: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    for file in found if found is not None else scan_documents(seeds_dir):
        old = old_sources.get(file.source)
        if old is not None and (old[0]["size"], old[0]["mtime_ns"]) == (file.size, file.mtime_ns):
            sources[file.source] = old[0]
            _add_run(runs, True, old[1].start, old[1].stop)
            continue
        read = read_source(seeds_dir, file)
        if read.skipped:
            skipped[file.source] = read.meta
            continue
        sources[file.source] = read.meta
        _add_run(runs, False, len(fresh), len(fresh) + len(read.passages))
        fresh.extend(read.passages)
    if not sources:
        formats = ", ".join(SUFFIXES)
        raise QAError(f"no readable documents with text ({formats}) in {seeds_dir}")

    source_names = sorted(sources)
    # Term ids only grow, so rows copied from the previous version keep their meaning.
    usable = previous is not None and BM25_TERMS in previous.tables
    vocabulary: dict[str, int] = dict(previous.vocabulary) if usable else {"": 0}
    new_columns, embedded = _fresh_columns(
        fresh, source_names, encoder, annotator, table_names, vocabulary, previous, progress
    )
    columns = _gather(runs, previous, new_columns, source_names, table_names)
    dense_meta = _dense_meta(
        len(columns.vectors), previous.manifest["dense"] if reusable else None
    )
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds_dir": str(seeds_dir.resolve()),
        "model": {"id": encoder.model_id, "dimension": int(columns.vectors.shape[1])},
        "dense": dense_meta,
        "counts": {"documents": len(sources), "passages": len(columns.vectors)},
        "source_names": source_names,
        "sources": sources,
        "skipped_files": skipped,
        "tables": table_names,
        "annotator": annotator.id if annotator is not None else None,
    }

    def write(vdir: Path) -> None:
        for name in PASSAGE_ARRAYS:
            store.save_array(vdir, name, getattr(columns, name))
        store.save_array(vdir, "texts", columns.text_bytes)
        store.save_array(vdir, "location_offsets", columns.location_offsets)
        store.save_array(vdir, "locations", columns.location_bytes)
        for name, (ptr, rows) in columns.tables.items():
            store.save_array(vdir, f"{name}.ptr", ptr)
            store.save_array(vdir, f"{name}.rows", rows)
        _write_dense(vdir, columns.vectors, dense_meta, previous)
        _write_bm25(vdir / "bm25", columns.tables[BM25_TERMS], vocabulary)

    if progress:
        progress("writing", len(columns.vectors), len(columns.vectors))
    manifest = store.commit(index_dir, write, manifest)
    report = BuildReport(
        documents=len(sources),
        passages=len(columns.vectors),
        embedded=embedded,
        reused=len(columns.vectors) - embedded,
        skipped={s: m["error"] for s, m in skipped.items()},
        seconds=time.perf_counter() - t0,
    )
    return manifest, report


def _can_copy_rows(previous: Index, seeds_dir: Path, encoder, table_names: list[str],
                   annotator) -> bool:
    """Whether the previous version's rows can be copied as they are: same folder, same
    model, every table this build writes, made by the same annotator."""
    return (
        previous.manifest.get("seeds_dir") == str(seeds_dir.resolve())
        and previous.model_id == encoder.model_id
        and set(table_names) <= set(previous.tables)
        and (annotator is None or previous.manifest.get("annotator") == annotator.id)
    )


def _source_rows(previous: Index) -> dict[str, tuple[dict, range]]:
    """The previous version's metadata and passage rows for each source."""
    positions = np.arange(len(previous.sources))
    order = np.asarray(previous.passage_source)
    lows = np.searchsorted(order, positions, side="left").tolist()
    highs = np.searchsorted(order, positions, side="right").tolist()
    return {
        source: (previous.manifest["sources"][source], range(lo, hi))
        for source, lo, hi in zip(previous.sources, lows, highs)
    }


def _add_run(runs: list[tuple[bool, int, int]], copied: bool, lo: int, hi: int) -> None:
    if runs and runs[-1][0] == copied and runs[-1][2] == lo:
        runs[-1] = (copied, runs[-1][1], hi)
    else:
        runs.append((copied, lo, hi))


def _fresh_columns(
    passages, source_names, encoder, annotator, table_names, vocabulary, previous, progress
):
    """Columns for the passages read in this build, and how many of them were embedded.

    A passage whose text the previous version holds (under the same model) keeps its vector
    and every table row it has there; only the rest are embedded, annotated and tokenised.
    """
    if not passages:
        return None, 0
    search_texts = [p.search_text for p in passages]
    keys = [passage_key(t, encoder.model_id) for t in search_texts]
    old_row: dict[bytes, int] = {}
    if previous is not None and previous.model_id == encoder.model_id:
        stored = np.ascontiguousarray(previous.passage_keys).tobytes()
        old_row = {stored[i : i + 16]: i // 16 for i in range(0, len(stored), 16)}
    reuse = [old_row.get(k) for k in keys]

    todo = [i for i, r in enumerate(reuse) if r is None]

    def encode_progress(done: int, total: int) -> None:
        if progress:
            progress("embedding", done, total)

    vectors = np.empty((len(passages), encoder.dimension), dtype=np.float32)
    if todo:
        encode_progress(0, len(todo))
    # In chunks, so that no second copy of every vector (and of every text) is ever held.
    for lo in range(0, len(todo), ENCODE_CHUNK):
        chunk = todo[lo : lo + ENCODE_CHUNK]

        def chunk_progress(done: int, total: int, lo: int = lo) -> None:
            encode_progress(lo + done, len(todo))

        vectors[chunk] = encoder.encode([search_texts[i] for i in chunk], progress=chunk_progress)
    kept = [i for i, r in enumerate(reuse) if r is not None]
    if kept:
        vectors[kept] = previous.vectors[[reuse[i] for i in kept]]

    blocks: dict[str, list] = {}
    if annotator is not None:
        blocks = _annotate(annotator, [p.text for p in passages], reuse, previous, progress)
    blocks[BM25_TERMS] = _bm25_terms(search_texts, reuse, previous, vocabulary)

    position = {name: i for i, name in enumerate(source_names)}
    encoded = [p.text.encode("utf-8") for p in passages]
    text_offsets, text_bytes = _stack_blocks([np.frombuffer(b, dtype=np.uint8) for b in encoded])
    location_offsets, location_bytes = _stack_blocks(
        [np.frombuffer(p.location.encode("utf-8"), dtype=np.uint8) for p in passages]
    )
    columns = Columns(
        # Raw bytes, (n, 16) uint8: numpy's fixed-width bytes type would drop trailing zeros.
        passage_keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 16),
        vectors=vectors,
        passage_source=np.array([position[p.source] for p in passages], np.int32),
        passage_start=np.array([p.start for p in passages], np.int64),
        passage_end=np.array([p.end for p in passages], np.int64),
        passage_paragraph=np.array([p.paragraph for p in passages], np.int32),
        text_offsets=text_offsets,
        text_bytes=text_bytes,
        location_offsets=location_offsets,
        location_bytes=location_bytes.astype(np.uint8, copy=False),
        tables={name: _stack_blocks(blocks[name]) for name in table_names},
    )
    return columns, len(todo)


def _gather(runs, previous: Index | None, fresh: Columns | None, source_names, table_names):
    """The new version's columns: runs of rows copied from the previous version or the fresh
    passages, concatenated in order."""
    remap = None
    if previous is not None:
        position = {name: i for i, name in enumerate(source_names)}
        remap = np.array([position.get(s, -1) for s in previous.sources], dtype=np.int32)
    parts = [(previous if copied else fresh, lo, hi) for copied, lo, hi in runs]

    def flat(name: str) -> np.ndarray:
        if len(parts) == 1:  # one run (a fresh build): no copy
            cols, lo, hi = parts[0]
            return getattr(cols, name)[lo:hi]
        return np.concatenate([getattr(cols, name)[lo:hi] for cols, lo, hi in parts])

    def ragged(table) -> tuple[np.ndarray, np.ndarray]:
        lengths, rows = [], []
        for cols, lo, hi in parts:
            ptr, values = table(cols)
            lengths.append(np.diff(ptr[lo : hi + 1]))
            rows.append(values[ptr[lo] : ptr[hi]])
        return _stack_lengths(np.concatenate(lengths)), np.concatenate(rows)

    sources = [
        cols.passage_source[lo:hi] if cols is fresh else remap[cols.passage_source[lo:hi]]
        for cols, lo, hi in parts
    ]
    text_offsets, text_bytes = ragged(lambda cols: (cols.text_offsets, cols.text_bytes))
    location_offsets, location_bytes = ragged(
        lambda cols: (cols.location_offsets, cols.location_bytes))
    return Columns(
        passage_keys=flat("passage_keys"),
        vectors=flat("vectors"),
        passage_source=np.concatenate(sources).astype(np.int32, copy=False),
        passage_start=flat("passage_start"),
        passage_end=flat("passage_end"),
        passage_paragraph=flat("passage_paragraph"),
        text_offsets=text_offsets,
        text_bytes=text_bytes,
        location_offsets=location_offsets,
        location_bytes=location_bytes.astype(np.uint8, copy=False),
        tables={
            name: ragged(lambda cols, name=name: cols.tables[name]) for name in table_names
        },
    )


def _annotate(annotator, texts, reuse, previous, progress) -> dict[str, list[np.ndarray]]:
    """Reader table rows for each passage: fresh, or copied when the previous version has
    the passage and the tables."""
    names_needed = set(annotator.tables)
    if (previous is None or not names_needed <= set(previous.tables)
            or previous.manifest.get("annotator") != annotator.id):
        reuse = [None] * len(texts)
    todo = [i for i, r in enumerate(reuse) if r is None]
    if progress:
        progress("analysing", 0, len(todo))
    fresh = annotator([texts[i] for i in todo]) if todo else {}
    if progress:
        progress("analysing", len(todo), len(todo))
    position = {i: n for n, i in enumerate(todo)}
    return {
        name: [
            fresh[name][position[i]] if r is None else np.asarray(previous.rows(name, r))
            for i, r in enumerate(reuse)
        ]
        for name in sorted(names_needed)
    }


def _stack_lengths(lengths) -> np.ndarray:
    """Row pointers for ragged rows of these lengths."""
    ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    return ptr


def _stack_blocks(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ptr = _stack_lengths([len(b) for b in blocks])
    non_empty = [b for b in blocks if len(b)]
    if non_empty:
        rows = np.concatenate(non_empty)
    else:
        rows = np.zeros((0,) + tuple(blocks[0].shape[1:]) if blocks else (0,), dtype=np.int32)
    return ptr, rows


def _dense_meta(n: int, previous: dict | None = None) -> dict:
    """How to index ``n`` vectors densely. ``previous``: the dense metadata of the version
    this build updates, whose IVF cells are kept while they suit the size (see IVF_RETRAIN)."""
    if n <= EXACT_SEARCH_MAX:
        return {"type": "flat-ip", "params": {}}
    cells = int(IVF_CELLS_PER_SQRT_N * np.sqrt(n))
    if previous is not None and previous["type"] == "ivf-flat-ip":
        kept = previous["params"]["nlist"]
        if 1 / IVF_RETRAIN <= kept / cells <= IVF_RETRAIN:
            return {"type": "ivf-flat-ip", "params": dict(previous["params"], reuse_cells=True)}
    return {
        "type": "ivf-flat-ip",
        "params": {
            "nlist": cells,
            "nprobe": min(IVF_NPROBE, cells),
            "train": min(n, IVF_TRAIN_PER_CELL * cells),
        },
    }


def _write_dense(vdir: Path, vectors: np.ndarray, meta: dict, previous=None) -> None:
    import faiss

    d = vectors.shape[1]
    if meta["type"] == "flat-ip":
        index = faiss.IndexFlatIP(d)
    elif meta["params"].get("reuse_cells"):
        old = faiss.extract_index_ivf(previous.dense)
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(old.quantizer.reconstruct_n(0, old.nlist))
        index = faiss.IndexIVFFlat(quantizer, d, old.nlist, faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
    else:
        params = meta["params"]
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        # A fixed sample (and faiss's fixed k-means seed): the same vectors give the same index.
        sample = np.random.default_rng(0).choice(len(vectors), params["train"], replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
    index.add(np.ascontiguousarray(vectors))
    faiss.write_index(index, str(vdir / "dense.faiss"))


def _bm25_terms(search_texts, reuse, previous, vocab: dict[str, int]) -> list[np.ndarray]:
    """Each passage's BM25 terms as ids into ``vocab`` (which grows as new terms appear);
    passages the previous version holds keep their stored ids, so only new ones are tokenised."""
    from ..tokens import terms

    usable = previous is not None and BM25_TERMS in previous.tables
    term_ids = []
    for text, r in zip(search_texts, reuse):
        if usable and r is not None:
            term_ids.append(np.asarray(previous.rows(BM25_TERMS, r)))
            continue
        # setdefault evaluates len(vocab) first: a new term gets the next id.
        ids = [vocab.setdefault(term, len(vocab)) for term in terms(text)]
        term_ids.append(np.array(ids, dtype=np.int32))
    return term_ids


def _write_bm25(path: Path, terms: tuple[np.ndarray, np.ndarray], vocab: dict[str, int]) -> None:
    """Save each (passage, term) BM25 score as a CSC matrix in bm25s's format, so that
    ``bm25s.BM25.load`` reads it; computed with numpy in one pass (bm25s loops over passages
    in Python: 0.5 s for 10,000 passages, which made up most of an incremental update)."""
    ptr, term_ids = terms
    n_docs, n_terms = len(ptr) - 1, len(vocab)
    lengths = np.diff(ptr)
    passage = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    # Sorting (term, passage) pairs gives CSC order, and the run lengths are term frequencies.
    pairs, tf = np.unique(term_ids.astype(np.int64) * max(n_docs, 1) + passage, return_counts=True)
    term, passage = np.divmod(pairs, max(n_docs, 1))
    df = np.bincount(term, minlength=n_terms)
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    average = lengths.mean() if n_docs and lengths.any() else 1.0
    norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / average)
    scores = (idf[term] * (tf / (tf + norm[passage]))).astype(np.float32)
    path.mkdir()
    np.save(path / "data.csc.index.npy", scores, allow_pickle=False)
    np.save(path / "indices.csc.index.npy", passage.astype(np.int32), allow_pickle=False)
    np.save(path / "indptr.csc.index.npy", _stack_lengths(df), allow_pickle=False)
    with open(path / "vocab.index.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(vocab, ensure_ascii=False))
    params = {
        "k1": BM25_K1, "b": BM25_B, "delta": 0.5, "method": "lucene", "idf_method": "lucene",
        "dtype": "float32", "int_dtype": "int32", "num_docs": n_docs, "backend": "numpy",
    }  # fmt: skip
    with open(path / "params.index.json", "w", encoding="utf-8") as f:
        json.dump(params, f, indent=4)

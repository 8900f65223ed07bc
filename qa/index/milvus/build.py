"""One build of a corpus into Milvus: a new collection, or an update of the live one in place
(see ``MilvusBackend.build``)."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...documents import SUFFIXES, FileState, scan_documents
from ...errors import QAError
from ...types import Passage
from .. import files
from ..folder import read_source
from ..protocol import BuildReport, passage_key, stable_id
from ..versions import FORMAT_VERSION, IndexCorrupt
from .client import BATCH_ROWS, READ_TIMEOUT, WRITE_TIMEOUT
from .terms import bm25_document, df_key, frequencies

if TYPE_CHECKING:
    from .backend import MilvusBackend

log = logging.getLogger("qa")
# Milvus builds an IVF index per segment (a Milvus Lite segment holds up to 100,000 rows),
# each with the collection's cell count, so its cells are finer than the file store's single
# index: scanning 32 of them found 94% of the exact top 10 for the benchmark's questions at
# 100,000 passages, 128 found all of them, at no measurable cost in Milvus Lite.
MILVUS_NPROBE = 128


@dataclass
class Row:
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


class Build:
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
        dense = dense_plan(n, current[2]["dense"] if current else None)
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

    def _rows(self, fresh: dict[str, list[Passage]]) -> list[Row]:
        rows = []
        for source in sorted(fresh):
            seen: Counter[bytes] = Counter()
            for p in fresh[source]:
                key = passage_key(p.search_text, self.encoder.model_id)
                rows.append(Row(stable_id(key, source, seen[key]), key, p))
                seen[key] += 1
        return rows

    def _complete(self, rows: list[Row]) -> None:
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

    def _write(self, collection: str, rows: list[Row], upsert: bool = False) -> None:
        put = self.client.upsert if upsert else self.client.insert
        for i in range(0, len(rows), BATCH_ROWS):
            put(collection, [r.record(self.bm25) for r in rows[i : i + BATCH_ROWS]],
                timeout=WRITE_TIMEOUT)
            if self.progress:
                self.progress("writing", min(i + BATCH_ROWS, len(rows)), len(rows))

    def _reuse_from_collection(self, collection: str, rows: list[Row], ann: bool) -> None:
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

    def _reuse_from_files(self, index: files.Index, rows: list[Row], ann: bool) -> None:
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
            self._put_frequencies(name, frequencies(r.passage for r in rows), Counter(),
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
        added = frequencies(r.passage for r in rows if r.id not in existing)
        removed = frequencies(
            Passage("", 0, 0, existing[pid]["text"], 0, existing[pid]["title"]) for pid in stale)
        self._put_frequencies(collection, added, removed)
        manifest = self._manifest(collection, sources, skipped, dense, shapes)
        backend.write_manifest(collection, manifest, previous=head)
        return manifest

    def _put_frequencies(self, collection: str, added: Counter, removed: Counter,
                         new: bool = False) -> None:
        """Apply changes to the collection's document frequencies (the rules reader's IDF);
        ``new``: the collection has none yet."""
        changed = set(added) | set(removed)
        keys = {t: df_key(collection, t) for t in changed}
        now = {} if new else {
            k: int(v) for k, v in self.backend._get_meta(list(keys.values())).items()}
        values = {t: now.get(keys[t], 0) + added[t] - removed[t] for t in changed}
        self.backend.put_meta({keys[t]: str(v) for t, v in values.items() if v > 0})
        self.backend.drop_meta([keys[t] for t, v in values.items() if v <= 0])


def dense_plan(n: int, previous: dict | None) -> dict:
    """The dense index for n passages, as the file store chooses it (exact up to 50,000, then
    IVF-Flat, nprobe MILVUS_NPROBE); a collection keeps its cells while the size is within 2x
    of their count."""
    plan = files._dense_meta(n, previous)
    if plan["params"].pop("reuse_cells", False):
        return previous  # type: ignore[return-value]
    plan["params"].pop("train", None)  # Milvus trains its cells on what it holds
    if "nprobe" in plan["params"]:
        plan["params"]["nprobe"] = min(plan["params"]["nlist"], MILVUS_NPROBE)
    return plan

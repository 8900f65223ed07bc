"""What every store records of the documents folder: reading a document into passages (or
the reason it is skipped), and whether the folder still matches a manifest."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..documents import (
    FileState,
    content_hash,
    extract,
    load_document,
    read_regular,
    scan_documents,
    split_document,
)
from ..errors import QAError
from ..types import Passage

log = logging.getLogger("qa")


@dataclass
class SourceRead:
    """One document as a build reads it: what the manifest records of it, and its passages
    (none when it is skipped; then ``meta["error"]`` says why)."""

    meta: dict
    passages: list[Passage]

    @property
    def skipped(self) -> bool:
        return "error" in self.meta


def read_source(seeds_dir: Path, file: FileState) -> SourceRead:
    """Read and split one document; one that cannot be used, for whatever reason (unreadable,
    empty, over a limit, or a parser failing on it), is skipped with its one-line reason."""
    stamp = {"size": file.size, "mtime_ns": file.mtime_ns}
    if file.skip:
        return SourceRead({**stamp, "error": file.skip}, [])
    try:
        doc = load_document(seeds_dir, file.source, file.path)
        passages = split_document(doc)
    except QAError as e:
        return SourceRead({**stamp, **file_hash(file), "error": str(e)}, [])
    except Exception as e:  # noqa: BLE001 - one document's failure skips only that document
        error = f"{file.source}: cannot be read ({type(e).__name__}: {e}); skipped"
        return SourceRead({**stamp, **file_hash(file), "error": error.splitlines()[0]}, [])
    if not passages:
        error = f"{file.source}: empty document; skipped"
        return SourceRead({**stamp, "sha256": doc.sha256, "file_sha256": doc.file_sha256,
                           "error": error}, [])
    meta = {
        "sha256": doc.sha256,
        "file_sha256": doc.file_sha256,
        **stamp,
        "passages": len(passages),
        "chars": len(doc.text),
        "title": passages[0].title,
    }
    return SourceRead(meta, passages)


def file_hash(file: FileState) -> dict:
    """The hash of a skipped file's bytes, when it is a regular file small enough to read."""
    if file.skip or file.size > config.MAX_FILE_BYTES:
        return {}
    try:
        return {"file_sha256": _sha256(file.path)}
    except OSError:
        return {}


def _sha256(path: str) -> str:
    """SHA-256 of a document's bytes (never waiting on a FIFO put in its place)."""
    return hashlib.sha256(read_regular(path, config.MAX_FILE_BYTES)).hexdigest()


def stale_reasons(
    seeds_dir: Path, manifest: dict | None, model_id: str, found: list[FileState] | None = None,
    annotator_id: str | None = None,
) -> list[str]:
    """Why the index no longer matches the documents (empty when it does); ``found`` is the
    folder's scan when the caller has just taken it.

    Names, sizes and modification times are compared first; a file that only looks changed is
    confirmed by the hash of its bytes, so touching a file does not force a rebuild.
    """
    if manifest is None:
        return ["no index has been built"]
    if manifest["model"]["id"] != model_id:
        return [f"embedding model changed ({manifest['model']['id']} -> {model_id})"]
    if annotator_id is not None and manifest.get("annotator") != annotator_id:
        return [f"the reader needs annotations {annotator_id} "
                f"(the index has {manifest.get('annotator') or 'none'})"]
    known: dict = {**manifest["sources"], **manifest.get("skipped_files", {})}
    reasons = []
    if found is None:
        found = scan_documents(Path(seeds_dir))
    current = {s.source: s for s in found}
    for source in sorted(set(known) - set(current)):
        reasons.append(f"removed: {source}")
    for source, state in current.items():
        meta = known.get(source)
        if meta is None:
            reasons.append(f"added: {source}")
        elif meta["size"] != state.size or meta["mtime_ns"] != state.mtime_ns:
            if changed(state, meta):
                reasons.append(f"edited: {source}")
    return reasons


def changed(state: FileState, meta: dict) -> bool:
    """Whether a file whose size or time changed holds other content than the index read."""
    limit = config.MAX_FILE_BYTES
    if state.skip:  # not a file that can be read: changed unless it was skipped so before
        return meta.get("error") != state.skip
    if state.size > limit:  # too big to read now: changed unless it was too big before
        return not ("error" in meta and meta["size"] > limit)
    try:
        if "file_sha256" in meta:
            return _sha256(state.path) != meta["file_sha256"]
        if "sha256" in meta:  # an index from before file hashes were stored
            data = read_regular(state.path, limit)
            return content_hash(extract(data, state.source).text) != meta["sha256"]
    except (OSError, QAError):
        return "error" not in meta
    return True

"""The on-disk index: versioned directories committed atomically through ``manifest.json``.

A build writes every file into a fresh ``v-*`` directory, fsyncs it, records each file's
SHA-256 in the manifest, and only then replaces ``manifest.json`` (write to a temporary file,
fsync, ``os.replace``). A crash at any point leaves the previous manifest, and so the previous
version, serving. Nothing is pickled: arrays are ``.npy`` loaded with ``allow_pickle=False``,
metadata is JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import QAError

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
LOCK = ".build.lock"
KEEP_VERSIONS = 3  # the current one and two before it, for readers that loaded them lately


class IndexCorrupt(QAError):
    pass


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_bytes(data: Any) -> bytes:
    """``data`` as UTF-8 JSON; any string that is not text (a lone surrogate) is written as a
    ``\\uXXXX`` escape, so this never fails on what a file name or a parser brought in."""
    # dumps, not dump: only the one-shot encoder is the fast C one (10k sources: 0.6 s).
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON atomically; nothing is left behind on failure."""
    payload = json_bytes(data)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        crash_point("manifest-written")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_manifest(index_dir: Path) -> dict | None:
    path = Path(index_dir) / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise IndexCorrupt(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorrupt(f"{path}: unknown index format; it will be rebuilt")
    problem = manifest_problem(manifest)
    if problem:
        raise IndexCorrupt(f"{path}: damaged manifest ({problem}); it will be rebuilt")
    return manifest


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


# The manifest's shape: each key with the test its value must pass. Everything the pipeline,
# ``qa status`` and a loaded index read is here, so that none of them meets a surprise.
_MANIFEST_SCHEMA: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "version_dir": ("a version folder name", lambda v: isinstance(v, str) and v.startswith("v-")),
    "created": ("a time", lambda v: isinstance(v, str)),
    "model": ("{id, dimension}", lambda v: isinstance(v, dict) and isinstance(v.get("id"), str)
              and _is_count(v.get("dimension"))),
    "dense": ("{type, params}", lambda v: isinstance(v, dict) and isinstance(v.get("type"), str)
              and isinstance(v.get("params"), dict)),
    "counts": ("{documents, passages}", lambda v: isinstance(v, dict)
               and _is_count(v.get("documents")) and _is_count(v.get("passages"))),
    "source_names": ("a list of names", lambda v: isinstance(v, list)
                     and all(isinstance(n, str) for n in v)),
    "sources": ("a table of documents", lambda v: isinstance(v, dict) and all(
        isinstance(m, dict) and _is_count(m.get("passages")) and _is_count(m.get("size"))
        for m in v.values())),
    "skipped_files": ("a table of skipped files", lambda v: isinstance(v, dict) and all(
        isinstance(m, dict) and isinstance(m.get("error"), str) and _is_count(m.get("size"))
        for m in v.values())),
    "tables": ("a list of names", lambda v: isinstance(v, list)
               and all(isinstance(n, str) for n in v)),
    "files": ("a table of files with sizes and SHA-256s", lambda v: isinstance(v, dict) and all(
        isinstance(m, dict) and _is_count(m.get("bytes")) and _is_sha256(m.get("sha256"))
        for m in v.values())),
}
_OPTIONAL = {"skipped_files"}


def manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a manifest's shape and counts, in a few words; None when nothing."""
    for key, (expected, ok) in _MANIFEST_SCHEMA.items():
        if key not in manifest:
            if key in _OPTIONAL:
                continue
            return f"no {key!r}"
        if not ok(manifest[key]):
            return f"{key!r} is not {expected}"
    names, sources, counts = manifest["source_names"], manifest["sources"], manifest["counts"]
    if sorted(sources) != names:
        return "the source names do not match the sources"
    if counts["documents"] != len(names):
        return f"it counts {counts['documents']:,} documents but lists {len(names):,}"
    listed = sum(m["passages"] for m in sources.values())
    if counts["passages"] != listed:
        return f"it counts {counts['passages']:,} passages but its documents hold {listed:,}"
    return None


def version_path(index_dir: Path, manifest: dict) -> Path:
    name = manifest.get("version_dir", "")
    if not name.startswith("v-") or "/" in name or "\\" in name:
        raise IndexCorrupt(f"{index_dir}: manifest names no valid version directory")
    return Path(index_dir) / name


def verify(index_dir: Path, manifest: dict, checksums: bool = True) -> Path:
    """Check that every file the manifest lists exists with its size (and SHA-256)."""
    vdir = version_path(index_dir, manifest)
    for name, meta in manifest.get("files", {}).items():
        path = vdir / name
        try:
            size = path.stat().st_size
        except OSError:
            raise IndexCorrupt(f"index file {path} is missing") from None
        if size != meta["bytes"]:
            raise IndexCorrupt(f"index file {path} has {size} bytes, expected {meta['bytes']}")
        if checksums and file_sha256(path) != meta["sha256"]:
            raise IndexCorrupt(f"index file {path} fails its checksum")
    return vdir


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: QA_CRASH_AT=name kills this process right here."""
    if os.environ.get("QA_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def commit(index_dir: Path, write: Callable[[Path], None], manifest: dict) -> dict:
    """Write a new version with ``write(directory)`` and make it current atomically."""
    index_dir = Path(index_dir)
    make_index_dir(index_dir)
    name = f"v-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tmp = index_dir / f".tmp-{name}"
    tmp.mkdir()
    crash_point("begin")
    try:
        write(tmp)
        crash_point("written")
        paths = sorted(p for p in tmp.rglob("*") if p.is_file())
        # Threads: one file's fsync waits on the disk while another's hash uses the CPU
        # (both release the GIL); at 10,000 passages this takes ~50 ms off an update.
        with ThreadPoolExecutor(max_workers=4) as pool:
            sealed = list(pool.map(_seal, paths))
        files = {p.relative_to(tmp).as_posix(): meta for p, meta in zip(paths, sealed)}
        for d in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
            fsync_dir(d)
        crash_point("synced")
        os.rename(tmp, index_dir / name)
        fsync_dir(index_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    crash_point("renamed")
    manifest = dict(manifest, format_version=FORMAT_VERSION, version_dir=name, files=files)
    try:
        write_json_atomic(index_dir / MANIFEST, manifest)
    except BaseException:  # not committed: the version folder must not outlive the build
        shutil.rmtree(index_dir / name, ignore_errors=True)
        raise
    crash_point("committed")
    _collect_garbage(index_dir, keep=name)
    return manifest


def _seal(path: Path) -> dict:
    """Flush one written file to disk; its size and SHA-256 for the manifest."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _collect_garbage(index_dir: Path, keep: str) -> None:
    versions = sorted(
        (p for p in index_dir.iterdir() if p.is_dir() and p.name.startswith("v-")),
        key=lambda p: p.stat().st_mtime,
    )
    old = [p for p in versions if p.name != keep][: max(0, len(versions) - KEEP_VERSIONS)]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    # Leftovers of builds killed before their commit (builders hold the lock, so none is live).
    for p in index_dir.iterdir():
        if p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(f".{MANIFEST}.") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


def save_array(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(directory / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def read_verified(directory: Path, name: str, files: dict | None, checksums: bool = True
                  ) -> bytes:
    """The bytes of a version's file, read into memory (never mapped: a file truncated in
    place under a map kills the process with SIGBUS) and checked against the manifest's
    ``files`` entry: present, of its size and, with ``checksums``, its SHA-256. IndexCorrupt
    says in one line what does not match. ``files`` None: an unlisted file, read as it is."""
    path = Path(directory) / name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IndexCorrupt(f"index file {path} cannot be read ({e.strerror or e})") from None
    if files is None:
        return data
    meta = files.get(name)
    if meta is None:
        raise IndexCorrupt(f"index file {path} has no checksum in the manifest")
    if len(data) != meta["bytes"]:
        raise IndexCorrupt(f"index file {path} has {len(data)} bytes, expected {meta['bytes']}")
    if checksums and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise IndexCorrupt(f"index file {path} fails its checksum")
    return data


def load_array(directory: Path, name: str, files: dict | None = None,
               checksums: bool = True) -> np.ndarray:
    """Load ``name``.npy into memory, checked as ``read_verified`` says. The array is a
    read-only view of the bytes read (no second copy); no pickled objects are accepted."""
    data = read_verified(directory, f"{name}.npy", files, checksums)
    path = Path(directory) / f"{name}.npy"
    try:
        header = io.BytesIO(data)
        major, _ = np.lib.format.read_magic(header)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(header)
        if dtype.hasobject:
            raise ValueError("object arrays are not accepted")
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(data, dtype=dtype, count=count, offset=header.tell())
    except ValueError as e:
        raise IndexCorrupt(f"index file {path} is not a readable array ({e})") from None
    return array.reshape(shape, order="F" if fortran else "C")


def make_index_dir(index_dir: Path) -> None:
    """Create the index folder (and its parents); QAError when a file stands in the way."""
    if index_dir.exists() and not index_dir.is_dir():
        raise QAError(f"the index folder {index_dir} is a file, not a folder")
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QAError(f"cannot create the index folder {index_dir} ({e.strerror or e})") from None


@contextmanager
def build_lock(index_dir: Path, wait_seconds: float | None = None) -> Iterator[bool]:
    """Hold the index's builder lock; say so when another build holds it, then wait.
    Yields whether it waited."""
    make_index_dir(index_dir)
    with exclusive(index_dir / LOCK, str(index_dir), wait_seconds) as waited:
        yield waited


@contextmanager
def exclusive(lock_path: Path, what: str, wait_seconds: float | None = None) -> Iterator[bool]:
    """Hold the cross-process lock file ``lock_path`` for a build of ``what``; when another
    process holds it, log that this one waits, then wait (QAError after ``wait_seconds``).
    Yields whether it waited."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path))
    waited = False
    try:
        lock.acquire(timeout=1)
    except Timeout:
        import logging

        logging.getLogger("qa").warning("another build of %s is running; waiting", what)
        waited = True
        try:
            lock.acquire(timeout=-1 if wait_seconds is None else wait_seconds)
        except Timeout:
            raise QAError(f"another build of {what} is still running") from None
    try:
        yield waited
    finally:
        lock.release()

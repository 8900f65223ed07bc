"""Adding uploaded files to the documents folder safely.

Everything a browser sends is untrusted: the file name may carry a path ("../../x.txt",
"C:\\x.txt"), a hidden or odd name, or the wrong type; the content may be too big, or not
readable as its type says (binary, not UTF-8, an encrypted or scanned PDF, a corrupt DOCX).
Uploads accept exactly the types the indexer reads (``qa.documents.SUFFIXES``) and check the
content with the indexer's own loader (``qa.documents.extract``). ``save_upload`` checks all
of that, never overwrites an existing document (it picks ``name-2.txt`` instead and says so)
and writes atomically: the bytes go to a hidden temporary file in the same folder (ignored by
the indexer), which is then linked or renamed into place, so the indexer never sees half a
file. A folder has a quota: uploads may not take it past ``config.MAX_FOLDER_FILES``
documents or ``config.MAX_FOLDER_BYTES`` bytes of them.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from . import config
from .display import format_bytes
from .errors import QAError

MAX_NAME_CHARS = 120
# The whitelist: ASCII letters, digits, and . _ - ( ) and space inside a name.
_DISALLOWED = re.compile(r"[^A-Za-z0-9._() -]+")
_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}

_save_lock = threading.Lock()  # one writer at a time inside this process


def allowed_suffixes() -> tuple[str, ...]:
    """The file types uploads may add: exactly those the indexer reads."""
    from .documents import SUFFIXES

    return tuple(s.lower() for s in SUFFIXES)


def _kinds(suffixes: tuple[str, ...]) -> str:
    return suffixes[0] if len(suffixes) == 1 else ", ".join(suffixes[:-1]) + " and " + suffixes[-1]


class UploadError(QAError):
    """An upload was refused; the message is one line that says why, for the user."""


class TooLarge(UploadError):
    """Refused for its size: the file is over the upload limit, or the folder's quota."""


@dataclass(frozen=True)
class SavedUpload:
    original: str  # the name as uploaded (possibly unsafe; for messages only)
    name: str  # the file name it was saved under, inside the documents folder
    path: Path
    renamed: bool  # saved under another name because the safe name was taken
    duplicate: bool = False  # identical to an existing document: nothing was written
    safe: str = ""  # the safe form of the uploaded name (before any "-2" suffix)

    @property
    def message(self) -> str:
        if self.duplicate:
            return f"{self.name} is already in the documents with the same content; nothing added"
        if self.renamed:
            return f"{self.safe} already exists; saved as {self.name} instead"
        uploaded = re.split(r"[\\/]", str(self.original))[-1]
        if uploaded != self.name:
            return f"added {_shown(uploaded)} as {self.name}"
        return f"added {self.name}"


def _shown(name: str, limit: int = 80) -> str:
    """A file name fit for a one-line message (no control characters, bounded length)."""
    name = "".join(ch if ch.isprintable() else "?" for ch in str(name))
    return name if len(name) <= limit else name[: limit - 1] + "…"


def safe_filename(name: str) -> str:
    """The name an uploaded file may be saved under, or UploadError saying why not.

    Only the last path component is kept (both / and \\ separate), accents are folded to
    ASCII, characters outside the whitelist become "_", and the result must be a visible
    (not dot-led) name of a type the indexer reads, at most MAX_NAME_CHARS characters.
    """
    if not isinstance(name, str) or not name.strip():
        raise UploadError("the file has no name")
    if "\x00" in name:
        raise UploadError("the file name contains a NUL character")
    base = re.split(r"[\\/]", name.strip())[-1].strip()
    shown = _shown(base or name)
    if base in ("", ".", ".."):
        raise UploadError(f"{_shown(name)}: not a file name")
    if base.startswith("."):
        raise UploadError(f"{shown}: hidden file names (starting with '.') are not accepted")
    stem, dot, suffix = base.rpartition(".")
    suffixes = allowed_suffixes()
    if not dot or "." + suffix.lower() not in suffixes:
        raise UploadError(f"{shown}: only {_kinds(suffixes)} files can be added")
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    stem = _DISALLOWED.sub("_", folded).strip(" ._-")
    stem = re.sub(r"_{2,}", "_", stem)
    if not stem:
        stem = "upload"  # nothing left after folding to the whitelist (e.g. a CJK name)
    if stem.split(".")[0].lower() in _RESERVED:
        stem = f"{stem}_"
    suffix = "." + suffix.lower()
    stem = stem[: MAX_NAME_CHARS - len(suffix)].rstrip(" .")
    return stem + suffix


def check_content(data: bytes, name: str, max_bytes: int | None = None) -> str:
    """The text the indexer would read from an upload named ``name`` (by its type), or
    UploadError saying in one line why it cannot be used: too big, or refused by the indexer's
    loader (not UTF-8, binary, empty, encrypted, scanned, corrupt)."""
    from .documents import extract, split_spans
    from .documents.splitting import check_passages

    limit = config.MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    shown = _shown(name)
    if len(data) > limit:
        raise TooLarge(
            f"{shown} is {_size(len(data))}; the upload limit is {_size(limit)} per file"
        )
    try:
        extracted = extract(data, str(name))
        breaks = [offset for offset, _ in extracted.sections]
        check_passages(len(split_spans(extracted.text, breaks=breaks)), str(name))
    except QAError as e:
        reason = str(e).splitlines()[0] if str(e) else f"{shown}: cannot be read"
        reason = re.sub(r";\s*skipped\.?$", "", reason.strip())
        raise UploadError(reason) from None
    except Exception as e:  # noqa: BLE001 - a parser's own failure on hostile bytes
        raise UploadError(f"{shown}: cannot be read ({type(e).__name__})") from None
    return extracted.text


def _size(n: int) -> str:
    return format_bytes(n)


def read_upload(path: str | Path, name: str | None = None, max_bytes: int | None = None) -> bytes:
    """Read an uploaded file from disk without reading more than the limit allows."""
    limit = config.MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    path = Path(path)
    shown = _shown(name or path.name)
    try:
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(
                f"{shown} is {_size(size)}; the upload limit is {_size(limit)} per file"
            )
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UploadError(f"{shown} could not be read ({e.strerror or e})") from None
    return data


def folder_usage(folder: str | Path) -> tuple[int, int]:
    """(documents, bytes) in ``folder`` and its sub-folders, as the quota counts them: every
    visible regular file of a type uploads may add (hidden names, symlinks and other files
    are left out)."""
    suffixes = tuple(s.lower() for s in allowed_suffixes())
    files = size = 0
    pending = [str(folder)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(
                    suffixes
                ):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:  # removed while we looked
                continue
    return files, size


def check_quota(
    folder: str | Path,
    incoming: int,
    name: str = "the file",
    max_files: int | None = None,
    max_bytes: int | None = None,
) -> None:
    """Raise UploadError (one line) when adding ``incoming`` bytes as one more document would
    take ``folder`` past its quota (``config.MAX_FOLDER_FILES`` / ``MAX_FOLDER_BYTES``)."""
    max_files = config.MAX_FOLDER_FILES if max_files is None else max_files
    max_bytes = config.MAX_FOLDER_BYTES if max_bytes is None else max_bytes
    files, size = folder_usage(folder)
    shown = _shown(name)
    if files + 1 > max_files:
        raise TooLarge(
            f"{shown}: the documents folder is full ({files:,} documents, the quota is "
            f"{max_files:,}; QA_MAX_FOLDER_FILES sets it)"
        )
    if size + incoming > max_bytes:
        raise TooLarge(
            f"{shown} ({_size(incoming)}) would take the documents folder past its quota of "
            f"{_size(max_bytes)} ({_size(size)} used; QA_MAX_FOLDER_BYTES sets it)"
        )


def candidate_names(name: str):
    """name.txt, name-2.txt, name-3.txt, ..."""
    stem, suffix = name.rsplit(".", 1)
    yield name
    for i in range(2, 10_000):
        tail = f"-{i}.{suffix}"
        yield stem[: MAX_NAME_CHARS - len(tail)] + tail


def save_upload(
    data: bytes, name: str, folder: str | Path, max_bytes: int | None = None
) -> SavedUpload:
    """Check an upload and write it into ``folder`` under a safe, unused name.

    Raises UploadError (one line) when the name, size or content is refused. An existing
    document is never overwritten: the upload is saved as ``name-2.txt`` (and so on), and
    the returned SavedUpload says so; an upload identical to the document already under
    its name is not written twice.
    """
    folder = Path(folder)
    safe = safe_filename(name)
    check_content(data, safe, max_bytes)
    if not folder.is_dir():
        raise UploadError(f"the documents folder {folder} does not exist")
    with _save_lock:
        existing = folder / safe
        if existing.is_file() and not existing.is_symlink():
            try:
                if existing.read_bytes() == data:
                    return SavedUpload(
                        name, safe, existing, renamed=False, duplicate=True, safe=safe
                    )
            except OSError:
                pass
        check_quota(folder, len(data), safe)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            for candidate in candidate_names(safe):
                target = folder / candidate
                if _claim(tmp, target):
                    _fsync_dir(folder)
                    return SavedUpload(
                        name, candidate, target, renamed=candidate != safe, safe=safe
                    )
            raise UploadError(f"{safe}: too many files with this name already")
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)


def _claim(tmp: str, target: Path) -> bool:
    """Move ``tmp`` to ``target`` atomically unless ``target`` exists; True when done.

    A hard link fails when the name is taken, so no check-then-write race can overwrite a
    file that appears meanwhile; where links are not supported, fall back to a checked
    os.replace (still atomic, and this process holds the lock).
    """
    if os.path.lexists(target):
        return False
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:
        if os.path.lexists(target):
            return False
        os.replace(tmp, target)
        return True
    os.unlink(tmp)
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Gradio's raw upload route takes files before the app sees them: at most this many files'
# worth of bytes in one request, and never more than the folder's quota has room for.
MAX_FILES_PER_REQUEST = 10
MULTIPART_SLACK = 64 * 1024  # headers and boundaries of a multipart request


def directory_bytes(folder: str | Path) -> int:
    """The bytes of every regular file under ``folder`` (0 when it does not exist)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while we looked
                continue
    return total


def upload_room(folder: str | Path, waiting: int, max_bytes: int | None = None) -> int:
    """How many bytes one more upload request may carry: what the documents folder's quota
    leaves once ``waiting`` bytes (uploads not yet added) are counted, and at most
    MAX_FILES_PER_REQUEST files of the upload limit."""
    quota = config.MAX_FOLDER_BYTES if max_bytes is None else max_bytes
    _, used = folder_usage(folder)
    per_request = MAX_FILES_PER_REQUEST * config.MAX_UPLOAD_BYTES + MULTIPART_SLACK
    return max(0, min(per_request, quota - used - waiting + MULTIPART_SLACK))

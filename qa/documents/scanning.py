"""Finding the documents in a folder, with what the cheap freshness check compares."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .loaders import SUFFIXES


@dataclass(slots=True)  # not frozen: that makes creating one 4x slower (10,000s per scan)
class FileState:
    """A document found on disk, with what the cheap freshness check compares: its name, size
    and modification time. ``skip``: why it cannot be read at all (a FIFO, a link out of the
    folder, a folder that cannot be listed), found without opening it; "" for a document."""

    source: str  # path relative to the documents folder, with forward slashes
    path: str
    size: int
    mtime_ns: int
    skip: str = ""


# A backslash, a lone surrogate (a byte that is not UTF-8), and what a terminal would take as
# a command: C0 and C1 controls, DEL, bidi controls, line and paragraph separators.
_UNUSUAL = re.compile("[\\\\\ud800-\udfff\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028"
                      "\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # the byte ``code - 0xDC00`` that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def printable_name(name: str) -> str:
    """A file name as one line of text that can be stored and shown, one to one: a byte that
    is not UTF-8 (which Python carries as a lone surrogate) written ``\\xNN`` as Python writes
    bytes (``b"caf\\xe9.txt"`` is listed as ``caf\\xe9.txt``), a control character as
    ``\\x1b`` or ``\\u202e``, and a backslash as two, so no other name prints the same."""
    return _UNUSUAL.sub(_escape, name) if _UNUSUAL.search(name) else name


def _is_ignored(name: str) -> bool:
    return (
        name.startswith(".")
        or name.startswith("~$")
        or name.endswith("~")
        or (name.startswith("#") and name.endswith("#"))
    )


def _skipped(source: str, path: str, reason: str) -> FileState:
    """A file or folder listed as skipped, stamped with its own (not its target's) status."""
    try:
        st = os.stat(path, follow_symlinks=False)
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size = mtime = 0
    return FileState(source, path, size, mtime, f"{source}: {reason}; skipped")


def _link_problem(path: str, real_root: Path) -> str:
    """Why a symbolic link to a document cannot be followed ("" when it can)."""
    try:
        target = Path(path).resolve(strict=True)
    except FileNotFoundError:
        return "a broken symbolic link"
    except (OSError, RuntimeError):
        return "a symbolic link that cannot be followed (a loop?)"
    if not target.is_relative_to(real_root):
        return "a symbolic link to outside the documents folder"
    if not target.is_file():
        return "a symbolic link to something that is not a regular file"
    return ""


def _entry_state(entry: os.DirEntry, source: str, real_root: Path) -> FileState | None:
    """The state of one document-named entry, a skipped one, or None when it vanished."""
    try:
        if entry.is_symlink():
            problem = _link_problem(entry.path, real_root)
            if problem:
                return _skipped(source, entry.path, problem)
        elif not entry.is_file(follow_symlinks=False):
            return _skipped(source, entry.path, "not a regular file (a FIFO, socket or device)")
        st = entry.stat()
    except FileNotFoundError:  # removed while we looked
        return None
    except OSError as e:  # a path too long to open, no permission
        return _skipped(source, entry.path, f"cannot be read ({e.strerror or e})")
    return FileState(source, entry.path, st.st_size, st.st_mtime_ns)


def scan_documents(root: Path) -> list[FileState]:
    """Every document under ``root`` with a suffix a loader reads, sorted by source id.

    Hidden and editor temp files are ignored; symbolic links are followed only while they
    point inside ``root`` to a file. Whatever cannot be read (links out of the folder or to
    folders, FIFOs, folders that cannot be listed, paths too long) is listed with ``skip``
    set, so the build names it. Plain strings and ``os.scandir`` entries, not ``Path``
    objects: this runs before every answer on folders of 10,000s of files.
    """
    root = Path(root)
    real_root = root.resolve()
    found: list[FileState] = []
    pending = [("", str(root))]
    while pending:
        prefix, folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except OSError as e:
            if prefix:  # a sub-folder; the documents folder itself is checked by its callers
                found.append(_skipped(prefix.rstrip("/"), folder,
                                      f"folder cannot be read ({e.strerror or e})"))
            continue
        for entry in entries:
            name = entry.name
            if _is_ignored(name):
                continue
            source = prefix + printable_name(name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((source + "/", entry.path))
                    continue
                if entry.is_symlink() and entry.is_dir():
                    found.append(_skipped(source, entry.path, "a symbolic link to a folder "
                                          "(links to folders are not followed)"))
                    continue
            except OSError:
                continue
            if name.lower().endswith(SUFFIXES):
                state = _entry_state(entry, source, real_root)
                if state is not None:
                    found.append(state)
    found.sort(key=lambda f: f.source)
    return found


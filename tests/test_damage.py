"""An index damaged under a running engine: files truncated or rewritten in place, a manifest
of the wrong shape or with edited counts. The engine keeps answering from what it loaded, and
a new load refuses the damage in one line and rebuilds."""

from __future__ import annotations

import json
import logging

import pytest

from qa import QA
from qa import index as index_mod
from qa.index import versions

HARBOUR = (
    "The Quellin harbour master is Elena Marsh. She took office in 2019.\n\n"
    "The Quellin container terminal opened in 1987 and handles grain and timber.\n"
)
DIRECTOR = "Who is the Quellin harbour master?"


# Enough passages that the vectors span several memory pages: reading a mapped page past the
# end of a file truncated in place is what kills a process with SIGBUS.
LEDGER = "\n\n".join(
    f"Ledger entry {i}: the barge Tarn-{i} unloaded {100 + 7 * i} sacks of barley at pier {i % 5}."
    for i in range(24)
) + "\n"


@pytest.fixture
def served(make_engine):
    engine = make_engine({"a.txt": HARBOUR, "ledger.txt": LEDGER})
    assert engine.answer(DIRECTOR).text == "Elena Marsh"
    return engine


def _fresh(engine) -> QA:
    """Another engine over the same folders, as a restarted server would be."""
    return QA(engine.seeds_dir, engine.index_dir, encoder=engine.encoder, reader=engine.reader)


def _manifest(engine) -> dict:
    return json.loads((engine.index_dir / versions.MANIFEST).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["vectors.npy", "texts.npy", "bm25/data.csc.index.npy",
                                  "bm25/vocab.index.json"])
def test_a_file_truncated_in_place_under_a_serving_engine(served, name, caplog):
    version = served.index.version
    path = served.index_dir / version / name
    with open(path, "r+b") as f:  # in place, as cp over the folder does: a map of it would die
        f.truncate(path.stat().st_size // 3)
    assert served.answer(DIRECTOR).text == "Elena Marsh"
    assert served.answer("When did the Quellin container terminal open?").text == "1987"

    restarted = _fresh(served)
    with caplog.at_level(logging.WARNING, logger="qa"):
        assert restarted.answer(DIRECTOR).text == "Elena Marsh"
    assert f"{name} has" in caplog.text and "rebuilding" in caplog.text
    assert restarted.index.version != version
    assert index_mod.load(served.index_dir) is not None


def test_bytes_flipped_in_place_are_refused_and_rebuilt(served, caplog):
    version = served.index.version
    path = served.index_dir / version / "texts.npy"
    data = bytearray(path.read_bytes())
    at = data.index(b"Elena")
    data[at : at + 5] = b"Ghost"
    with open(path, "r+b") as f:
        f.write(data)
    assert served.answer(DIRECTOR).text == "Elena Marsh"  # what was loaded, checked, stays
    restarted = _fresh(served)
    with caplog.at_level(logging.WARNING, logger="qa"):
        assert restarted.answer(DIRECTOR).text == "Elena Marsh"
    assert "texts.npy fails its checksum; rebuilding" in caplog.text
    assert restarted.index.version != version


def _wrong_shape(m: dict) -> dict:
    return {"format_version": m["format_version"], "version_dir": m["version_dir"],
            "sources": []}


def _count_edited(m: dict) -> dict:
    m["counts"]["passages"] = 999_999
    return m


def _count_edited_throughout(m: dict) -> dict:
    """Counts that agree with each other but not with the arrays."""
    m["counts"]["passages"] += 5
    m["sources"]["a.txt"]["passages"] += 5
    return m


def _checksum_removed(m: dict) -> dict:
    del m["files"]["texts.npy"]
    return m


def _checksum_mangled(m: dict) -> dict:
    m["files"]["vectors.npy"]["sha256"] = "not a checksum"
    return m


@pytest.mark.parametrize("edit, message", [
    (_wrong_shape, "damaged manifest (no 'created')"),
    (_count_edited, "damaged manifest (it counts 999,999 passages but its documents hold"),
    (_count_edited_throughout, "does not match its manifest (passage_source has"),
    (_checksum_removed, "texts.npy has no checksum in the manifest"),
    (_checksum_mangled, "damaged manifest ('files' is not a table of files"),
])
def test_a_damaged_manifest_is_one_line_and_a_rebuild(served, edit, message, caplog):
    versions.write_json_atomic(served.index_dir / versions.MANIFEST, edit(_manifest(served)))
    restarted = _fresh(served)
    status = restarted.status()  # never a traceback
    if "manifest (" in message and "match" not in message:
        assert any(message in line for line in status["stale"]), status["stale"]
    with caplog.at_level(logging.WARNING, logger="qa"):
        assert restarted.answer(DIRECTOR).text == "Elena Marsh"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(message in w and "\n" not in w for w in warnings), warnings
    rebuilt = _manifest(restarted)
    assert versions.manifest_problem(rebuilt) is None
    assert rebuilt["counts"]["passages"] == len(restarted.index)
    assert restarted.status()["passages"] == len(restarted.index)

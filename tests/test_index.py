"""The on-disk index: manifest, staleness, atomic commits, corruption, incremental updates."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from qa import QAError
from qa import index as index_mod
from qa.index import files as index_files
from qa.index import versions as store

DOC_A = (
    "Harbour Report\n\nThe harbour authority opened a new container terminal in Brindle on "
    "4 June. The terminal can handle 800,000 containers a year.\n\n"
    "Port director Elena Marsh said the project cost $240 million and took three years."
)
DOC_B = (
    "Lighthouse Notes\n\nThe Skerry lighthouse was built in 1871 by the engineer Thomas Vale. "
    "Its light can be seen from 22 nautical miles away."
)


def test_manifest_records_what_the_index_holds(make_engine):
    engine = make_engine({"a.txt": DOC_A, "sub/b.md": DOC_B})
    engine.refresh()
    manifest = json.loads((engine.index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == store.FORMAT_VERSION
    assert manifest["model"]["id"] == engine.encoder.model_id
    assert manifest["model"]["dimension"] == 384
    assert set(manifest["sources"]) == {"a.txt", "sub/b.md"}
    for meta in manifest["sources"].values():
        assert len(meta["sha256"]) == 64 and meta["passages"] >= 1
    assert manifest["counts"] == {"documents": 2, "passages": len(engine.index)}
    vdir = engine.index_dir / manifest["version_dir"]
    for name, meta in manifest["files"].items():
        assert (vdir / name).stat().st_size == meta["bytes"]
    # Everything is JSON or .npy without pickled objects.
    for path in vdir.rglob("*.npy"):
        np.load(path, allow_pickle=False)


def test_stale_detection_add_edit_delete_and_touch(make_engine):
    engine = make_engine({"a.txt": DOC_A})
    engine.refresh()
    assert engine.stale_reasons() == []
    folder = engine.seeds_dir

    (folder / "b.txt").write_text(DOC_B)
    assert engine.stale_reasons() == ["added: b.txt"]
    engine.refresh()
    assert engine.stale_reasons() == []
    assert engine.status()["documents"] == 2

    (folder / "a.txt").write_text(DOC_A.replace("800,000", "900,000"))
    assert engine.stale_reasons() == ["edited: a.txt"]
    assert engine.answer("How many containers can the terminal handle a year?").text == "900,000"

    (folder / "b.txt").unlink()
    assert engine.stale_reasons() == ["removed: b.txt"]
    engine.refresh()
    assert "b.txt" not in engine.status()["sources"]

    # Touching a file without changing it does not make the index stale.
    before = engine.index.version
    os.utime(folder / "a.txt", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert engine.stale_reasons() == []
    engine.refresh()
    assert engine.index.version == before


def test_model_change_makes_index_stale(make_engine):
    engine = make_engine({"a.txt": DOC_A})
    engine.refresh()
    manifest = engine.index.manifest
    assert index_mod.stale_reasons(engine.seeds_dir, manifest, "another-model")[0].startswith(
        "embedding model changed"
    )


def test_failure_mid_build_keeps_the_previous_index(make_engine, monkeypatch):
    engine = make_engine({"a.txt": DOC_A})
    engine.refresh()
    old_manifest = (engine.index_dir / "manifest.json").read_text()
    old_answer = engine.answer("When did the container terminal open?").text
    (engine.seeds_dir / "b.txt").write_text(DOC_B)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(index_files, "_write_bm25", boom)
    with pytest.raises(OSError, match="simulated"):
        engine.rebuild()
    assert (engine.index_dir / "manifest.json").read_text() == old_manifest
    assert not list(engine.index_dir.glob(".tmp-*")), "the half-written version is removed"
    reloaded = index_mod.load(engine.index_dir)
    assert reloaded.manifest == json.loads(old_manifest)
    assert engine.answer("When did the container terminal open?").text == old_answer is not None

    monkeypatch.undo()
    engine.refresh()
    assert "b.txt" in engine.status()["sources"]


def test_truncated_index_file_is_detected_and_rebuilt(make_engine, caplog):
    engine = make_engine({"a.txt": DOC_A})
    engine.refresh()
    vdir = engine.index_dir / engine.index.version
    with open(vdir / "vectors.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(store.IndexCorrupt, match="vectors.npy"):
        index_mod.load(engine.index_dir)

    fresh = type(engine)(
        engine.seeds_dir, engine.index_dir, encoder=engine.encoder, reader=engine.reader
    )
    assert fresh.answer("Who is the port director?").text == "Elena Marsh"
    assert index_mod.load(engine.index_dir) is not None


def test_tampered_file_fails_its_checksum(make_engine):
    engine = make_engine({"a.txt": DOC_A})
    engine.refresh()
    path = engine.index_dir / engine.index.version / "texts.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(store.IndexCorrupt, match="checksum"):
        index_mod.load(engine.index_dir)


def test_incremental_update_reembeds_only_changed_passages(make_engine):
    engine = make_engine({"a.txt": DOC_A, "b.txt": DOC_B})
    first = engine.rebuild()
    assert first.reused == 0 and first.embedded == first.passages
    (engine.seeds_dir / "b.txt").write_text(DOC_B.replace("1871", "1872"))
    second = engine.rebuild()
    assert second.embedded == 1
    assert second.reused == second.passages - 1


def test_incremental_and_full_rebuild_answer_identically(make_engine, tmp_path):
    engine = make_engine({"a.txt": DOC_A, "b.txt": DOC_B})
    engine.refresh()
    (engine.seeds_dir / "a.txt").write_text(DOC_A.replace("Elena Marsh", "Oskar Lind"))
    (engine.seeds_dir / "c.txt").write_text("The ferry to Skerry leaves at 9 am every day.")
    engine.refresh()
    full = type(engine)(
        engine.seeds_dir, tmp_path / "full-index", encoder=engine.encoder, reader=engine.reader
    )
    for question in [
        "Who is the port director?",
        "When was the Skerry lighthouse built?",
        "How much did the terminal project cost?",
        "When does the ferry leave?",
    ]:
        a, b = engine.answer(question), full.answer(question)
        assert a.text == b.text and a.score == pytest.approx(b.score)
        assert [(q.source, q.start, q.end) for q in a.quotes] == [
            (q.source, q.start, q.end) for q in b.quotes
        ]


def _contents(idx) -> dict:
    """Everything a version holds, keyed by what it means rather than by row or term id."""
    vocab = sorted(idx.vocabulary)
    return {
        "passages": [idx.passage(i) for i in range(len(idx))],
        "keys": np.asarray(idx.passage_keys).tolist(),
        "vectors": np.asarray(idx.vectors),
        "tables": {name: [idx.rows(name, i).tolist() for i in range(len(idx))]
                   for name in idx.tables if name != index_files.BM25_TERMS},
        "bm25": {t: idx._bm25.scores([idx.vocabulary[t]]) for t in vocab
                 if idx.document_frequency(t)},
    }  # fmt: skip


def test_incremental_version_holds_exactly_what_a_full_build_holds(make_engine, tmp_path):
    """Rows copied from the previous version, spliced around edited, added and removed files,
    must give the arrays a full build gives, down to every BM25 score."""
    files = {f"f{i}.txt": f"Note {i}\n\nDepot {i} holds {i * 7} crates of grain." for i in range(6)}
    files["f2.txt"] = DOC_A
    files["sub/f3.txt"] = DOC_B
    engine = make_engine(files)
    engine.refresh()
    folder = engine.seeds_dir
    (folder / "f2.txt").write_text(DOC_A.replace("Elena Marsh", "Oskar Lind") + "\n\nA new pier.")
    (folder / "f4.txt").unlink()
    (folder / "f0a.txt").write_text("The ferry to Skerry leaves at 9 am every day.")
    (folder / "f5.txt").write_text(files["f5.txt"])  # same text, new modification time
    report = engine.refresh(force=True)
    assert report is not None and 0 < report.embedded < report.passages
    full = type(engine)(folder, tmp_path / "full", encoder=engine.encoder, reader=engine.reader)
    ours, theirs = _contents(engine.index), _contents(full.index)
    assert ours["passages"] == theirs["passages"]
    assert ours["keys"] == theirs["keys"]
    np.testing.assert_array_equal(ours["vectors"], theirs["vectors"])
    assert ours["tables"] == theirs["tables"]
    assert ours["bm25"].keys() == theirs["bm25"].keys()
    for term, scores in ours["bm25"].items():
        np.testing.assert_allclose(scores, theirs["bm25"][term], rtol=1e-6, err_msg=term)


def test_bm25_arrays_are_the_ones_bm25s_builds(tmp_path):
    """Our numpy BM25 writer against bm25s's own indexer, on random term ids with repeats,
    empty passages and vocabulary entries no passage uses any more."""
    import bm25s

    rng = np.random.default_rng(3)
    vocab = {"": 0, **{f"t{i}": i for i in range(1, 60)}}  # builds start from {"": 0}, as bm25s
    blocks = [rng.integers(1, 50, rng.integers(0, 30)).astype(np.int32) for _ in range(40)]
    ptr, rows = index_files._stack_blocks(blocks)
    index_files._write_bm25(tmp_path / "ours", (ptr, rows), vocab)
    reference = bm25s.BM25()
    reference.index(([b.tolist() for b in blocks], dict(vocab)), show_progress=False)
    ours = bm25s.BM25.load(str(tmp_path / "ours"), allow_pickle=False)
    assert ours.vocab_dict == vocab
    for name in ("indptr", "indices"):
        np.testing.assert_array_equal(ours.scores[name], reference.scores[name])
    np.testing.assert_allclose(ours.scores["data"], reference.scores["data"], rtol=1e-6)
    for query in ([0, 1], [5, 49], [55]):
        np.testing.assert_allclose(
            ours.get_scores_from_ids(query), reference.get_scores_from_ids(query), rtol=1e-6
        )


def test_a_file_gone_between_scan_and_build_is_skipped_not_fatal(make_engine, caplog):
    from qa.documents import scan_documents

    engine = make_engine({"a.txt": DOC_A, "b.txt": DOC_B})
    engine.refresh()
    (engine.seeds_dir / "c.txt").write_text("The ferry leaves at 9 am.")
    found = scan_documents(engine.seeds_dir)
    (engine.seeds_dir / "c.txt").unlink()
    with caplog.at_level("WARNING", logger="qa"):
        engine.rebuild(found=found)
    assert "c.txt: cannot be read" in caplog.text
    assert set(engine.status()["sources"]) == {"a.txt", "b.txt"}
    assert engine.stale_reasons() == ["removed: c.txt"]
    engine.refresh(force=True)
    assert engine.stale_reasons() == []
    assert engine.answer("Who is the port director?").text == "Elena Marsh"


def test_missing_and_empty_folders_are_clear_errors(tmp_path, encoder, reader):
    from qa import QA

    with pytest.raises(QAError, match="does not exist"):
        QA(tmp_path / "nope", tmp_path / "i", encoder=encoder, reader=reader).answer("Why?")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QAError, match="no readable"):
        QA(tmp_path / "empty", tmp_path / "i", encoder=encoder, reader=reader).answer("Why?")


def test_bad_files_are_skipped_with_a_warning_and_the_rest_indexed(make_engine, caplog):
    engine = make_engine(
        {
            "good.txt": DOC_A,
            "latin1.txt": "Caf\xe9 prices rose.".encode("latin-1"),
            "binary.txt": b"\x00\x01\x02\x03binary",
            "empty.txt": "",
            "blank.md": "   \n\n\t\n",
            "bom_crlf.txt": "\ufeffFerry Times\r\n\r\nThe ferry leaves at 9 am.\r\n".encode(),
        }
    )
    with caplog.at_level("WARNING", logger="qa"):
        engine.refresh()
    status = engine.status()
    assert set(status["sources"]) == {"good.txt", "bom_crlf.txt"}
    assert set(status["skipped"]) == {"latin1.txt", "binary.txt", "empty.txt", "blank.md"}
    assert "latin1.txt: not UTF-8" in caplog.text
    # Skipped files do not make the index look stale.
    assert engine.stale_reasons() == []
    r = engine.answer("When does the ferry leave?")
    assert r.text == "9 am"
    q = r.quotes[0]
    stored = open(engine.seeds_dir / q.source, encoding="utf-8-sig", newline="").read()
    assert stored[q.start : q.end] == q.text


def test_query_side_scoring_matches_bm25s_and_faiss(seed_engine):
    """BM25 is scored from the saved arrays and small dense indexes with numpy, without
    importing bm25s or FAISS at query time: both must agree with the libraries exactly."""
    import bm25s

    from qa.reading.question import analyse

    idx = seed_engine.index
    library_bm25 = bm25s.BM25.load(str(idx._vdir / "bm25"), allow_pickle=False)
    for question in ["How many interceptors?", "Who is the defence minister?", "NASAMS range"]:
        terms = analyse(question).search_terms
        ids = [library_bm25.vocab_dict[t] for t in terms if t in library_bm25.vocab_dict]
        np.testing.assert_allclose(
            idx._bm25.scores(ids), library_bm25.get_scores_from_ids(ids), rtol=1e-6
        )
        vector = seed_engine.encoder.encode_query(question)
        ours_ids, ours_scores = idx.dense_search(vector, 10)
        faiss_scores, faiss_ids = idx.dense.search(vector.reshape(1, -1), 10)
        assert ours_ids.tolist() == faiss_ids[0].tolist()
        np.testing.assert_allclose(ours_scores, faiss_scores[0], rtol=1e-5)


def test_a_50_mb_file_is_refused_clearly_and_the_rest_indexed(make_engine, caplog):
    engine = make_engine({"a.txt": DOC_A})
    with open(engine.seeds_dir / "huge.txt", "w") as f:
        line = "The same long line of filler text repeats here again and again.\n"
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            f.write(line)
    with caplog.at_level("WARNING", logger="qa"):
        engine.refresh()
    status = engine.status()
    assert "huge.txt" in status["skipped"] and "per document (QA_MAX_FILE_BYTES" in status["skipped"]["huge.txt"]
    assert "huge.txt" in caplog.text
    assert engine.answer("Who is the port director?").text == "Elena Marsh"


def test_slow_freshness_checks_are_spaced_out(make_engine, monkeypatch):
    """A folder whose check takes 50 ms is checked at most every ~0.45 s (10% of the time).
    The clock is simulated, so a busy machine cannot change the outcome."""
    import qa.config
    import qa.index
    import qa.pipeline

    class Clock:
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

        perf_counter = monotonic

    monkeypatch.setattr(qa.config, "FRESHNESS_SLOW_CHECK_SECONDS", 0.01)  # the default
    engine = make_engine({"a.txt": "The Varnel depot holds 4,312 crates of grain."})
    engine.refresh()
    clock = Clock()
    monkeypatch.setattr(qa.pipeline, "time", clock)
    real = qa.index.stale_reasons
    calls = []

    def slow(*args):
        calls.append(clock.now)
        clock.now += 0.05
        return real(*args)

    monkeypatch.setattr(qa.index, "stale_reasons", slow)
    engine.refresh(force=True)
    engine.answer("How many crates does the Varnel depot hold?")
    clock.now += 0.3
    engine.answer("How many crates does the Varnel depot hold?")
    assert len(calls) == 1  # within 0.45 s of the slow check: not checked again
    clock.now += 0.2
    engine.answer("How many crates does the Varnel depot hold?")
    assert len(calls) == 2


def test_large_indexes_are_ivf_with_high_recall(tmp_path):
    """Above EXACT_SEARCH_MAX the dense index is IVF-Flat; on tightly clustered vectors (where
    HNSW lost whole clusters) it finds what exact search finds, and the same vectors always
    give the same index."""
    import faiss

    index = index_files
    rng = np.random.default_rng(3)
    bases = rng.normal(size=(60, 32)).astype(np.float32)
    vectors = bases[rng.integers(0, 60, 20_000)] + 0.6 * rng.normal(size=(20_000, 32)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    meta = index._dense_meta(len(vectors))
    assert meta["type"] == "flat-ip"  # 20,000 is below the threshold ...
    meta = index._dense_meta(index.EXACT_SEARCH_MAX + 1)  # ... the real choice above it
    assert meta["type"] == "ivf-flat-ip" and meta["params"]["nprobe"] == index.IVF_NPROBE
    meta["params"].update(nlist=int(4 * np.sqrt(len(vectors))), train=len(vectors))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        index._write_dense(tmp_path / name, vectors, meta)
    assert (tmp_path / "a" / "dense.faiss").read_bytes() == (
        tmp_path / "b" / "dense.faiss"
    ).read_bytes()
    ivf = faiss.read_index(str(tmp_path / "a" / "dense.faiss"))
    ivf.nprobe = meta["params"]["nprobe"]
    queries = vectors[rng.choice(len(vectors), 50, replace=False)]
    _, got = ivf.search(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, got)])
    assert recall >= 0.95


def test_updates_keep_the_ivf_cells_until_the_size_changes_twofold(tmp_path, monkeypatch):
    """Training IVF cells takes seconds at 100,000 passages: an update reuses the previous
    version's cells, and retrains only once the size calls for half or twice as many."""
    from types import SimpleNamespace

    import faiss

    monkeypatch.setattr(index_files, "EXACT_SEARCH_MAX", 100)
    rng = np.random.default_rng(5)
    bases = rng.normal(size=(40, 32)).astype(np.float32)
    vectors = bases[rng.integers(0, 40, 4_100)] + 0.6 * rng.normal(size=(4_100, 32)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first = index_files._dense_meta(4_000)
    (tmp_path / "a").mkdir()
    index_files._write_dense(tmp_path / "a", vectors[:4_000], first)
    previous = SimpleNamespace(dense=faiss.read_index(str(tmp_path / "a" / "dense.faiss")))

    update = index_files._dense_meta(4_100, first)
    assert update["params"]["reuse_cells"] and update["params"]["nlist"] == first["params"]["nlist"]
    assert "reuse_cells" not in index_files._dense_meta(17_000, first)["params"]  # wants 521 cells: 2.07x
    assert "reuse_cells" not in index_files._dense_meta(900, first)["params"]  # wants 120 cells: 0.48x
    assert index_files._dense_meta(50, first)["type"] == "flat-ip"

    (tmp_path / "b").mkdir()
    index_files._write_dense(tmp_path / "b", vectors, update, previous)
    updated = faiss.read_index(str(tmp_path / "b" / "dense.faiss"))
    old_ivf, new_ivf = faiss.extract_index_ivf(previous.dense), faiss.extract_index_ivf(updated)
    np.testing.assert_array_equal(
        new_ivf.quantizer.reconstruct_n(0, new_ivf.nlist),
        old_ivf.quantizer.reconstruct_n(0, old_ivf.nlist),
    )
    assert updated.ntotal == len(vectors)
    updated.nprobe = update["params"]["nprobe"]
    queries = vectors[-50:]  # the vectors this update added
    _, got = updated.search(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, got)]) >= 0.95


def test_an_index_from_before_locations_and_file_hashes_loads_and_updates(make_engine):
    """Indexes written before passages had locations and sources had file hashes still load
    (locations ""), are checked by text hash, and the next update adds what they lack."""
    engine = make_engine({"a.md": "# Harbour\n\n" + DOC_A.split("\n\n", 1)[1], "b.txt": DOC_B})
    engine.refresh()
    index_dir, folder = engine.index_dir, engine.seeds_dir
    manifest = json.loads((index_dir / "manifest.json").read_text())
    vdir = index_dir / manifest["version_dir"]
    for name in ("location_offsets.npy", "locations.npy"):
        (vdir / name).unlink()
        del manifest["files"][name]
    for meta in manifest["sources"].values():
        del meta["file_sha256"]
    store.write_json_atomic(index_dir / "manifest.json", manifest)
    old = index_mod.load(index_dir)
    assert len(old) == 3 and {old.passage(i).location for i in range(len(old))} == {""}

    later = time.time_ns() + 10**9
    os.utime(folder / "a.md", ns=(later, later))
    assert index_mod.stale_reasons(folder, old.manifest, engine.encoder.model_id) == []
    (folder / "b.txt").write_text(DOC_B.replace("1871", "1872"))
    assert index_mod.stale_reasons(folder, old.manifest, engine.encoder.model_id) == [
        "edited: b.txt"]

    _, report = index_mod.build(folder, index_dir, engine.encoder, previous=old)
    assert report.embedded == 1 and report.reused == 2  # every file re-read, one re-embedded
    new = index_mod.load(index_dir)
    located = [(new.passage(i).source, new.passage(i).location) for i in range(len(new))]
    assert located == [("a.md", "Harbour"), ("a.md", "Harbour"), ("b.txt", "")]
    assert all("file_sha256" in meta for meta in new.manifest["sources"].values())


def test_touching_a_skipped_file_keeps_the_index_fresh(make_engine):
    engine = make_engine({"a.txt": DOC_A, "bin.txt": b"\x00\x01binary", "bad.pdf": b"%PDF-1.4 x"})
    engine.refresh()
    assert set(engine.status()["skipped"]) == {"bin.txt", "bad.pdf"}
    later = time.time_ns() + 10**9
    for name in ("bin.txt", "bad.pdf"):
        os.utime(engine.seeds_dir / name, ns=(later, later))
    assert engine.stale_reasons() == []
    (engine.seeds_dir / "bin.txt").write_text("The ferry leaves at 9 am.")
    assert engine.stale_reasons() == ["edited: bin.txt"]

"""The Milvus store, against Milvus Lite for real (a .db file in a temporary folder) and a
Milvus Lite server in a subprocess: same answers as the file store, incremental updates,
stable ids, alias switching under readers, a dead or unreachable server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from qa import QA, QAError
from qa.cli import main
from qa.index import milvus as milvus_mod
from qa.index.milvus import build as milvus_build
from qa.index.milvus import client as milvus_client

from .conftest import DEV_QUESTIONS, ROOT, SEEDS

DEPOT = "The Varnel depot holds 4,312 crates of spare parts."
FERRY = "Ferry Times\n\nThe Skerry ferry leaves the harbour at 9 am every day."
LIGHTHOUSE = ("Lighthouse Notes\n\nThe Skerry lighthouse was built in 1871 by the engineer "
              "Thomas Vale. Its light can be seen from 22 nautical miles away.")


def seed_questions() -> list[str]:
    """The dev questions on the seeds (../shared/eval), or the seeds' own examples."""
    if DEV_QUESTIONS.exists():
        return [json.loads(line)["question"]
                for line in DEV_QUESTIONS.read_text().splitlines() if line.strip()]
    return [q for q in (SEEDS / ".examples.txt").read_text().splitlines() if q.strip()]


def answer_key(r) -> tuple:
    """Everything an answer says, offsets and numbers included."""
    return (r.text, r.score, r.sources, [(q.source, q.paragraph, q.start, q.end, q.answer_start,
                                          q.answer_end, q.score, q.text) for q in r.quotes])


def lite(tmp_path, name: str = "qa.db") -> str:
    return f"milvus://{tmp_path / name}"


@pytest.fixture
def make_milvus(tmp_path, encoder, reader):
    """make_milvus({"a.txt": "text"}) -> QA over those files with a Milvus Lite store."""

    def make(files: dict[str, str], name: str = "docs", store: str | None = None, **kw):
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(content, encoding="utf-8")
        kw.setdefault("reader", reader)
        return QA(folder, encoder=encoder, store=store or lite(tmp_path), **kw)

    return make


def _collection(engine) -> str:
    return engine.backend.current_collection()


@pytest.mark.parametrize("reader_name", ["trained", "rules"])
def test_same_answers_and_offsets_as_the_file_store(tmp_path, encoder, reader, rules_reader,
                                                    reader_name):
    chosen = reader if reader_name == "trained" else rules_reader
    shutil.copytree(SEEDS, tmp_path / "seeds")
    on_files = QA(tmp_path / "seeds", tmp_path / "index", encoder=encoder, reader=chosen)
    on_milvus = QA(tmp_path / "seeds", encoder=encoder, reader=chosen, store=lite(tmp_path))
    assert on_milvus.index_dir is None and on_milvus.status()["store"] == "milvus"
    questions = seed_questions()
    assert len(questions) >= 4
    answered = 0
    for question in questions:
        a, b = on_files.answer(question), on_milvus.answer(question)
        assert answer_key(a) == answer_key(b), question
        answered += b.text is not None
        for q in b.quotes:
            stored = (tmp_path / "seeds" / q.source).read_text(encoding="utf-8-sig")
            assert stored[q.start : q.end] == q.text
    assert answered >= 3
    status = on_milvus.status()
    assert status["stale"] == [] and status["passages"] == len(on_files.index)
    assert status["index_dir"].startswith(lite(tmp_path))


def test_bm25_and_document_frequencies_match_the_file_store(tmp_path, encoder, reader):
    from qa.reading.question import analyse
    from qa.tokens import terms

    shutil.copytree(SEEDS, tmp_path / "seeds")
    (tmp_path / "seeds" / "quotes.txt").write_text(
        "O'Brien's ferry leaves at 9 o'clock from pier \"B\\2\"; Dvořák's café is open.")
    on_files = QA(tmp_path / "seeds", tmp_path / "index", encoder=encoder, reader=reader)
    on_milvus = QA(tmp_path / "seeds", encoder=encoder, reader=reader, store=lite(tmp_path))
    fi, mi = on_files.index, on_milvus.index
    for question in ["How many interceptors?", "Who is the defence minister?", "NASAMS range",
                     "When does O'Brien's ferry leave?"]:
        search_terms = analyse(question).search_terms
        f_ids, f_scores = fi.sparse_search(search_terms, 10)
        m_ids, m_scores = mi.sparse_search(search_terms, 10)
        assert [fi.passage(i) for i in f_ids] == [mi.passage(i) for i in m_ids]
        np.testing.assert_allclose(m_scores, f_scores, rtol=1e-5)
        vector = encoder.encode_query(question)
        f_ids, f_scores = fi.dense_search(vector, 10)
        m_ids, m_scores = mi.dense_search(vector, 10)
        assert [fi.passage(i) for i in f_ids] == [mi.passage(i) for i in m_ids]
        np.testing.assert_allclose(m_scores, f_scores, rtol=1e-5)
    vocabulary = {t for i in range(len(fi)) for t in terms(fi.passage(i).search_text)}
    assert len(vocabulary) > 300 and {"o'brien", "o'clock", "dvořák", "café"} <= vocabulary
    assert {t: mi.document_frequency(t) for t in vocabulary} == {
        t: fi.document_frequency(t) for t in vocabulary}
    assert mi.document_frequency("zzzunseen") == 0


def test_add_edit_delete_update_the_collection_in_place(make_milvus, tmp_path, encoder, reader):
    engine = make_milvus({"depot.txt": DEPOT, "ferry.txt": FERRY})
    first = engine.rebuild()
    assert first.embedded == first.passages == 2
    collection = _collection(engine)
    folder = engine.seeds_dir

    (folder / "lighthouse.txt").write_text(LIGHTHOUSE)
    assert engine.stale_reasons() == ["added: lighthouse.txt"]
    assert "Thomas Vale" in engine.answer("Who built the Skerry lighthouse?").text
    (folder / "depot.txt").write_text(DEPOT.replace("4,312", "5,120"))
    assert engine.stale_reasons() == ["edited: depot.txt"]
    assert engine.answer("How many crates does the Varnel depot hold?").text == "5,120"
    (folder / "ferry.txt").unlink()
    report = engine.refresh(force=True)
    assert report is not None and report.embedded == 0
    assert _collection(engine) == collection  # updated in place, no new collection
    index = engine.index
    assert index.sources == ["depot.txt", "lighthouse.txt"]
    assert len(index.source_passages("ferry.txt")) == 0
    assert len(index.source_passages("depot.txt")) == 1
    # The collection holds exactly the manifest's passages: the edited one's old row is gone.
    client = engine.backend.client
    rows = client.query(collection, filter="id >= 0", output_fields=["source", "text"])
    assert sorted((r["source"], r["text"]) for r in rows) == sorted(
        (index.passage(i).source, index.passage(i).text)
        for s in index.sources for i in index.source_passages(s))
    assert len(rows) == len(index) == 2
    # Frequencies follow the edits: what a full file build of the same folder counts.
    full = QA(folder, tmp_path / "full-index", encoder=encoder, reader=reader)
    for term in ["4,312", "5,120", "ferry", "skerry", "depot", "lighthous"]:
        assert index.document_frequency(term) == full.index.document_frequency(term), term
    # And the answers are the full build's: the same answers and quotes (Milvus Lite keeps
    # BM25 statistics per segment, and updated rows sit in a segment of their own, so the
    # relevance numbers may differ) until a full build, which gives exactly the same.
    questions = ["How many crates does the Varnel depot hold?",
                 "When does the Skerry ferry leave?", "Who built the Skerry lighthouse?"]
    for question in questions:
        a, b = engine.answer(question), full.answer(question)
        assert (a.text, a.sources) == (b.text, b.sources)
        assert [(q.source, q.start, q.end, q.answer_start, q.answer_end) for q in a.quotes] == [
            (q.source, q.start, q.end, q.answer_start, q.answer_end) for q in b.quotes]
    engine.rebuild(full=True)
    for question in questions:
        assert answer_key(engine.answer(question)) == answer_key(full.answer(question))


def test_passage_ids_are_stable_across_versions(make_milvus):
    engine = make_milvus({"depot.txt": DEPOT, "lighthouse.txt": LIGHTHOUSE})
    engine.refresh()

    def ids(index) -> dict:
        return {index.passage(i).source: int(i) for s in index.sources
                for i in index.source_passages(s)}

    before = ids(engine.index)
    assert len(before) == 2  # one passage each
    (engine.seeds_dir / "depot.txt").write_text(DEPOT.replace("4,312", "5,120"))
    engine.refresh(force=True)
    after = ids(engine.index)
    assert after["lighthouse.txt"] == before["lighthouse.txt"]  # unchanged: the same id
    assert after["depot.txt"] != before["depot.txt"]  # edited: a new id
    old_collection = _collection(engine)
    engine.rebuild(full=True)
    assert _collection(engine) != old_collection
    assert ids(engine.index) == after  # a new collection, the same ids


def test_full_rebuilds_switch_the_alias_under_concurrent_readers(make_milvus):
    engine = make_milvus({"depot.txt": DEPOT, "ferry.txt": FERRY})
    engine.refresh()
    question = "How many crates does the Varnel depot hold?"
    values = ["4,312", "5,120"]
    errors, answers = [], []
    stop = threading.Event()

    def ask():
        while not stop.is_set():
            try:
                r = engine.answer(question)
                q = r.quotes[0]
                assert r.text in values, r.text
                assert q.text[q.answer_start - q.start : q.answer_end - q.start] == r.text
                assert len(engine.index) == 2
                answers.append(r.text)
            except Exception as e:  # noqa: BLE001 - every failure is collected
                errors.append(repr(e))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    collections = {_collection(engine)}
    try:
        for i in range(5):
            value = values[(i + 1) % 2]
            # Written atomically, so every reader sees one state of the document or the other.
            tmp = engine.seeds_dir / ".depot.txt.tmp"
            tmp.write_text(DEPOT.replace("4,312", value))
            os.replace(tmp, engine.seeds_dir / "depot.txt")
            engine.rebuild(full=True)
            collections.add(_collection(engine))
            assert engine.answer(question).text == value
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(answers) > 10 and set(answers) == set(values)
    assert len(collections) == 6  # every full build wrote a collection of its own
    kept = [n for n in engine.backend.client.list_collections()
            if n.startswith(engine.backend.alias + "__")]
    assert len(kept) == milvus_mod.KEEP_COLLECTIONS and _collection(engine) in kept


def test_two_engines_share_one_store(make_milvus):
    one = make_milvus({"a.txt": "The lighthouse was built in 1871 by Thomas Vale."})
    assert one.answer("Who built the lighthouse?").text == "Thomas Vale"
    two = type(one)(one.seeds_dir, encoder=one.encoder, reader=one.reader,
                    store=one.backend.uri)
    (one.seeds_dir / "a.txt").write_text("The lighthouse was built in 1871 by Ada Brun.")
    two.rebuild()
    assert one.answer("Who built the lighthouse?").text == "Ada Brun"
    assert one.index.version == two.index.version


def test_an_update_that_fails_midway_loses_nothing(make_milvus, monkeypatch, caplog):
    engine = make_milvus({"depot.txt": DEPOT, "ferry.txt": FERRY})
    engine.refresh()
    before = answer_key(engine.answer("When does the Skerry ferry leave?"))
    collection = _collection(engine)
    (engine.seeds_dir / "depot.txt").write_text(DEPOT.replace("4,312", "5,120"))

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(milvus_build.Build, "_write", boom)
    with pytest.raises(OSError, match="simulated"):
        engine.rebuild()
    # The served index still answers, from what it held.
    with caplog.at_level("WARNING", logger="qa"):
        engine.refresh(force=True)  # what answer() does first (unless a check was just made)
    assert "answering from the previous index" in caplog.text
    assert answer_key(engine.answer("When does the Skerry ferry leave?")) == before
    monkeypatch.undo()
    # The update found the collection marked mid-update, so it rebuilt in full.
    report = engine.refresh(force=True)
    assert report is not None and _collection(engine) != collection
    assert report.embedded == 1 and report.reused == 1
    assert engine.answer("How many crates does the Varnel depot hold?").text == "5,120"


def test_a_failed_full_build_leaves_no_collection_behind(make_milvus, monkeypatch):
    engine = make_milvus({"depot.txt": DEPOT})
    engine.refresh()
    names = set(engine.backend.client.list_collections())

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(milvus_mod.MilvusBackend, "write_manifest", boom)
    with pytest.raises(OSError, match="simulated"):
        engine.rebuild(full=True)
    assert set(engine.backend.client.list_collections()) == names
    assert engine.answer("How many crates does the Varnel depot hold?").text == "4,312"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir, port: int) -> subprocess.Popen:
    """A Milvus Lite gRPC server, as ``milvus-lite server`` runs it, reachable at the port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from pymilvus import MilvusClient

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:  # serving, not only listening
            MilvusClient(f"http://127.0.0.1:{port}", timeout=2, dedicated=True).close()
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the Milvus Lite server did not start")


def test_a_server_that_dies_loses_nothing(make_milvus, tmp_path):
    port = _free_port()
    uri = f"milvus://127.0.0.1:{port}"
    server = _serve(tmp_path / "server-data", port)
    try:
        engine = make_milvus({"depot.txt": DEPOT, "ferry.txt": FERRY}, store=uri)
        assert engine.answer("How many crates does the Varnel depot hold?").text == "4,312"
        before = answer_key(engine.answer("When does the Skerry ferry leave?"))
    finally:
        server.kill()
        server.wait(timeout=30)
    (engine.seeds_dir / "depot.txt").write_text(DEPOT.replace("4,312", "5,120"))
    t0 = time.monotonic()
    with pytest.raises(QAError) as err:
        engine.answer("When does the Skerry ferry leave?")
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert message.startswith(f"cannot reach Milvus at {uri}") and "\n" not in message

    server = _serve(tmp_path / "server-data", port)
    try:
        assert answer_key(engine.answer("When does the Skerry ferry leave?")) == before
        assert engine.answer("How many crates does the Varnel depot hold?").text == "5,120"
        fresh = type(engine)(engine.seeds_dir, encoder=engine.encoder, reader=engine.reader,
                             store=uri)
        assert fresh.stale_reasons() == []
    finally:
        server.kill()
        server.wait(timeout=30)


def test_an_unreachable_server_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(DEPOT)
    uri = f"milvus://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    code = main(["ask", "How many crates?", "--seeds", str(tmp_path / "docs"), "--store", uri])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - t0 < 10
    assert err.startswith(f"qa: error: cannot reach Milvus at {uri} (")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_lite_file_in_use_by_another_process_is_one_line(make_milvus, tmp_path, capsys):
    engine = make_milvus({"depot.txt": DEPOT}, store=lite(tmp_path, "shared.db"))
    engine.refresh()  # this process now holds the file
    proc = subprocess.run(
        [sys.executable, "-m", "qa.cli", "status", "--seeds", str(engine.seeds_dir),
         "--store", lite(tmp_path, "shared.db")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"qa: error: cannot open Milvus Lite file {tmp_path}/shared.db")
    assert "another process" in proc.stderr and proc.stderr.count("\n") == 1
    assert engine.answer("How many crates does the Varnel depot hold?").text == "4,312"


LITE_BUILD = ("import sys; from qa import QA; "
              "r = QA(sys.argv[1], reader='rules:fast', store=sys.argv[2]).rebuild(); "
              "print(r.embedded, r.passages)")


def test_two_processes_building_one_lite_file_take_turns(tmp_path, encoder):
    """Both start while a build holds the lock (this test's, so that both are surely under
    way at once); each waits, then one builds and the other takes what it committed."""
    from filelock import FileLock

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "depot.txt").write_text(DEPOT)
    (folder / "ferry.txt").write_text(FERRY)
    store = lite(tmp_path)
    target = milvus_client.parse_uri(store)
    held = FileLock(str(milvus_client.lite_lock_path(target)))
    held.acquire()
    procs, logs = [], [tmp_path / "first.err", tmp_path / "second.err"]
    try:
        for log in logs:
            with open(log, "w") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", LITE_BUILD, str(folder), store], cwd=ROOT,
                    stdout=subprocess.PIPE, stderr=err, text=True))
        deadline = time.monotonic() + 120
        while not all("waiting" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            time.sleep(0.2)
    finally:
        held.release()
    results = []
    for proc, log in zip(procs, logs):
        out, _ = proc.communicate(timeout=300)
        err = log.read_text()
        assert proc.returncode == 0, err
        assert f"another build of {target.address} is running; waiting" in err
        results.append(tuple(int(n) for n in out.split()))
    # One embedded every passage, the other none: it built from what the first committed.
    passages = results[0][1]
    assert sorted(results) == [(0, passages), (passages, passages)]
    engine = QA(folder, encoder=encoder, reader="rules:fast", store=store)
    assert engine.stale_reasons() == []
    client, collection = engine.backend.client, _collection(engine)
    assert [n for n in client.list_collections() if n.startswith(engine.backend.alias)] == [
        collection]
    rows = client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
    assert rows == engine.status()["passages"] == passages
    assert engine.answer("How many crates does the Varnel depot hold?").text == "4,312"


@pytest.mark.parametrize("uri, message", [
    ("milvus://", "use milvus:///path/to/file.db"),
    ("milvus://host:port", "use milvus:///path/to/file.db"),
    ("milvus:///tmp/x.db?colour=red", "unknown option 'colour'"),
    ("milvus:///tmp/x.db?bm25=porter", "bm25 must be one of qa, milvus"),
    ("milvus:///tmp/x.db?corpus=no-dashes", "corpus must be"),
    ("redis://localhost:6379", "unknown store"),
])
def test_bad_store_uris_are_refused_in_one_line(tmp_path, uri, message, capsys):
    code = main(["status", "--seeds", str(tmp_path), "--store", uri])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_missing_pymilvus_names_the_extra(make_milvus, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    monkeypatch.setattr(milvus_client, "_clients", {})
    engine = make_milvus({"depot.txt": DEPOT})
    with pytest.raises(QAError, match=r"install the milvus extra: pip install -e '\.\[milvus\]'"):
        engine.answer("How many crates?")


def test_the_file_store_never_imports_pymilvus(tmp_path):
    shutil.copytree(SEEDS, tmp_path / "seeds")
    code = ("import sys; from qa.cli import main; "
            f"main(['ask', 'How many interceptors?', '--seeds', {str(tmp_path / 'seeds')!r}, "
            f"'--index', {str(tmp_path / 'index')!r}]); "
            "print('pymilvus' in sys.modules, 'milvus_lite' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False False"


@pytest.mark.parametrize("module", ["client", "terms", "build", "index", "backend"])
def test_each_milvus_module_imports_alone(module):
    """No import circle inside qa/index/milvus: each module loads first in a fresh process
    (build and index name the backend for type checkers only)."""
    proc = subprocess.run([sys.executable, "-c", f"import qa.index.milvus.{module}"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_cli_build_ask_and_migrate(tmp_path, capsys):
    shutil.copytree(SEEDS, tmp_path / "seeds")
    question = "How many interceptors is the Pentagon sending to Ukraine?"
    files_args = ["--seeds", str(tmp_path / "seeds"), "--index", str(tmp_path / "index")]
    assert main(["build", *files_args]) == 0
    capsys.readouterr()
    assert main(["ask", question, "--json", *files_args]) == 0
    on_files = json.loads(capsys.readouterr().out)

    store = ["--seeds", str(tmp_path / "seeds"), "--store", lite(tmp_path)]
    assert main(["migrate", *files_args[2:], *store]) == 0
    out = capsys.readouterr().out
    assert "moved 5 documents" in out and "(0 embedded," in out and lite(tmp_path) in out
    assert main(["ask", question, "--json", *store]) == 0
    on_milvus = json.loads(capsys.readouterr().out)
    on_milvus.pop("seconds"), on_files.pop("seconds")
    assert on_milvus == on_files and "500" in on_milvus["text"]
    assert main(["status", *store]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["build", "--full", *store]) == 0
    assert "(36 embedded, 0 reused)" in capsys.readouterr().out

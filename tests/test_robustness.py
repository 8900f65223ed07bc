"""Crash safety (kill -9 during builds), concurrent readers and builders, and `qa watch`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from qa import index as index_mod
from qa.index import versions as store

from .conftest import ROOT, SEEDS

CRASH_POINTS = ["begin", "written", "synced", "renamed", "manifest-written", "committed"]

BUILD = (
    "import sys; from qa import QA; "
    "QA(sys.argv[1], sys.argv[2], reader='rules:fast').rebuild()"
)


def _build_in_subprocess(seeds, index, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(seeds), str(index)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _current(index_dir):
    manifest = store.read_manifest(index_dir)
    idx = index_mod.load(index_dir)  # verifies every checksum
    return manifest["version_dir"], idx


@pytest.fixture(scope="module")
def crash_corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    shutil.copytree(SEEDS, base / "seeds")
    proc = _build_in_subprocess(base / "seeds", base / "index")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return base


def test_kill_9_at_every_commit_step_leaves_a_working_index(crash_corpus):
    seeds, index = crash_corpus / "seeds", crash_corpus / "index"
    (seeds / "extra.txt").write_text("The Varnel depot holds 4,312 crates of spare parts.")
    results = {}
    for point in CRASH_POINTS:
        before, _ = _current(index)
        proc = _build_in_subprocess(seeds, index, {"QA_CRASH_AT": point})
        assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read()
        after, idx = _current(index)
        # Before the manifest is replaced the old version serves; after, the new one.
        if point == "committed":
            assert after != before and "extra.txt" in idx.sources
            (seeds / "extra.txt").write_text(
                "The Varnel depot holds 4,312 crates of spare parts. " * (2 + len(results))
            )
        else:
            assert after == before
        assert len(idx) == idx.manifest["counts"]["passages"] == len(idx.vectors)
        assert idx.dense.ntotal == len(idx)
        results[point] = "ok"
    # The next build completes and clears the leftovers.
    proc = _build_in_subprocess(seeds, index)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    version, idx = _current(index)
    assert "extra.txt" in idx.sources
    assert not list(index.glob(".tmp-*")) and not list(index.glob(".manifest.json.*"))
    assert len([p for p in index.iterdir() if p.name.startswith("v-")]) <= store.KEEP_VERSIONS
    assert results == {p: "ok" for p in CRASH_POINTS}


@pytest.mark.parametrize("delay", [0.5, 2.0, 4.0])
def test_kill_9_at_random_moments(crash_corpus, delay):
    seeds, index = crash_corpus / "seeds", crash_corpus / "index"
    (seeds / "timed.txt").write_text(f"The ferry left at {delay} o'clock on a grey morning.")
    before, _ = _current(index)
    proc = _build_in_subprocess(seeds, index)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    version, idx = _current(index)  # whatever the moment, a complete version serves
    assert len(idx) == len(idx.vectors) == idx.dense.ntotal


def test_concurrent_answers_during_rebuilds(make_engine):
    engine = make_engine(
        {
            "depot.txt": "The Varnel depot holds 4,312 crates of spare parts.",
            "ferry.txt": "The Skerry ferry leaves the harbour at 9 am every day.",
        }
    )
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
                answers.append(r.text)
            except Exception as e:  # noqa: BLE001 - every failure is collected
                errors.append(repr(e))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    rebuilds = 0
    for i in range(6):
        value = values[(i + 1) % 2]
        # Written atomically, so every reader sees one state of the document or the other.
        tmp = engine.seeds_dir / ".depot.txt.tmp"
        tmp.write_text(f"The Varnel depot holds {value} crates of spare parts.")
        os.replace(tmp, engine.seeds_dir / "depot.txt")
        engine.rebuild()
        rebuilds += 1
        assert engine.answer(question).text == value
    stop.set()
    for t in threads:
        t.join(timeout=60)
    print(f"threads=4 answers={len(answers)} rebuilds={rebuilds} errors={len(errors)}")
    assert not errors, errors[:3]
    assert len(answers) > 20 and set(answers) == set(values)


def test_two_builders_at_once_take_turns(make_engine):
    engine = make_engine({"a.txt": "The lighthouse was built in 1871 by Thomas Vale."})
    results, errors = [], []

    def build():
        try:
            results.append(
                index_mod.build(engine.seeds_dir, engine.index_dir, engine.encoder,
                                annotator=engine.reader.annotator())
            )
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 3
    version, idx = _current(engine.index_dir)
    assert idx.sources == ["a.txt"]


def test_index_replaced_by_another_process_is_picked_up(make_engine):
    engine = make_engine({"a.txt": "The lighthouse was built in 1871 by Thomas Vale."})
    assert engine.answer("Who built the lighthouse?").text == "Thomas Vale"
    other = type(engine)(engine.seeds_dir, engine.index_dir, encoder=engine.encoder,
                         reader=engine.reader)
    (engine.seeds_dir / "a.txt").write_text("The lighthouse was built in 1871 by Ada Brun.")
    other.rebuild()
    version = json.loads((engine.index_dir / "manifest.json").read_text())["version_dir"]
    assert engine.answer("Who built the lighthouse?").text == "Ada Brun"
    assert engine.index.version == version


def test_watch_updates_the_index_when_files_change(make_engine, capsys):
    from qa.watch import watch

    engine = make_engine({"a.txt": "The lighthouse was built in 1871 by Thomas Vale."})
    stop, updates = threading.Event(), []
    thread = threading.Thread(
        target=watch, kwargs=dict(engine=engine, interval=0.2, stop=stop, on_update=updates.append)
    )
    thread.start()
    try:
        time.sleep(1.0)
        (engine.seeds_dir / "b.txt").write_text("The ferry leaves the harbour at 9 am.")
        deadline = time.time() + 60
        while not updates and time.time() < deadline:
            time.sleep(0.2)
        assert updates, "watch did not update the index"
        assert "b.txt" in engine.status()["sources"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert "qa watch: updated (added: b.txt)" in capsys.readouterr().out

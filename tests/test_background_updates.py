"""Serving while the index changes: answers never wait for an update (only for the very first
build), and two builders of one index never embed the same passages twice."""

from __future__ import annotations

import json
import threading

import pytest

from qa import QA, config

DEPOT = "The Varnel depot holds 4,312 crates of grain.\n"
LIGHTHOUSE = "The Orrin lighthouse was kept by Mara Vell from 1911.\n"
KEEPER = "Who kept the Orrin lighthouse?"


@pytest.fixture
def never_wait(monkeypatch):
    """The default outside the tests: an answer does not wait for the update it starts."""
    monkeypatch.setattr(config, "ANSWER_WAITS_FOR_UPDATE_SECONDS", 0.0)


@pytest.fixture
def blocked_encoder(encoder, monkeypatch):
    """Passage encoding (builds only; questions use encode_query) held until ``release`` is
    set; ``started`` is set when a build reaches it, ``calls`` holds each call's texts."""

    class Blocked:
        started = threading.Event()
        release = threading.Event()
        calls: list[list[str]] = []

    real = encoder.encode

    def encode(texts, *args, **kwargs):
        Blocked.calls.append(list(texts))
        Blocked.started.set()
        assert Blocked.release.wait(120), "the test never released the encoder"
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(encoder, "encode", encode)
    yield Blocked
    Blocked.release.set()


def _answer_in_thread(engine, question: str, timeout: float = 60.0):
    """engine.answer(question), or None when it did not return within ``timeout``."""
    out = []
    worker = threading.Thread(target=lambda: out.append(engine.answer(question)), daemon=True)
    worker.start()
    worker.join(timeout)
    return out[0] if out else None


def test_a_question_is_answered_from_the_current_version_while_an_update_runs(
    make_engine, blocked_encoder, never_wait
):
    engine = make_engine({"a.txt": DEPOT})
    blocked_encoder.release.set()
    engine.refresh()
    blocked_encoder.release.clear()
    blocked_encoder.started.clear()
    (engine.seeds_dir / "b.txt").write_text(LIGHTHOUSE, encoding="utf-8")

    # The encoder is held, so an answer that waited for the update would never return.
    during = _answer_in_thread(engine, KEEPER)
    assert during is not None, "the answer waited for the update"
    assert blocked_encoder.started.wait(60)
    assert "b.txt" not in {q.source for q in during.quotes}
    updating = engine.status()["updating"]
    assert updating is not None and updating["stage"] == "embedding" and updating["total"] >= 1
    assert json.loads(json.dumps(engine.status()))["updating"] == updating  # qa status --json
    depot = _answer_in_thread(engine, "How many crates does the Varnel depot hold?")
    assert depot is not None and depot.text == "4,312"

    blocked_encoder.release.set()
    assert engine.wait_for_update(120)
    assert engine.status()["updating"] is None
    after = engine.answer(KEEPER)
    assert after.text == "Mara Vell" and after.sources == ["b.txt"]


def test_the_first_build_is_waited_for(make_engine, never_wait):
    engine = make_engine({"b.txt": LIGHTHOUSE})
    assert engine.answer(KEEPER).text == "Mara Vell"


def test_an_engine_over_a_built_index_answers_before_checking_the_folder(
    make_engine, blocked_encoder, never_wait, encoder, reader
):
    """A new process (here a new engine) loads the version on disk and answers from it while
    the change it finds is indexed."""
    built = make_engine({"a.txt": DEPOT})
    blocked_encoder.release.set()
    built.refresh()
    blocked_encoder.release.clear()
    (built.seeds_dir / "b.txt").write_text(LIGHTHOUSE, encoding="utf-8")
    fresh = QA(built.seeds_dir, built.index_dir, encoder=encoder, reader=reader)
    answer = _answer_in_thread(fresh, "How many crates does the Varnel depot hold?")
    assert answer is not None and answer.text == "4,312"
    blocked_encoder.release.set()
    assert fresh.wait_for_update(120)
    assert fresh.answer(KEEPER).text == "Mara Vell"


def test_two_builders_of_one_index_embed_each_passage_once(
    make_engine, blocked_encoder, encoder, reader
):
    first = make_engine({"a.txt": DEPOT})
    blocked_encoder.release.set()
    first.refresh()
    second = QA(first.seeds_dir, first.index_dir, encoder=encoder, reader=reader)
    second.refresh()  # loads the version the first built
    blocked_encoder.release.clear()
    blocked_encoder.started.clear()
    blocked_encoder.calls.clear()
    (first.seeds_dir / "b.txt").write_text(LIGHTHOUSE, encoding="utf-8")

    reports = {}
    one = threading.Thread(target=lambda: reports.setdefault("first", first.rebuild()))
    one.start()
    assert blocked_encoder.started.wait(60)  # the first holds the index's build lock now
    two = threading.Thread(target=lambda: reports.setdefault("second", second.rebuild()))
    two.start()
    two.join(1.0)
    assert two.is_alive(), "the second builder did not wait for the first"
    blocked_encoder.release.set()
    one.join(120)
    two.join(120)
    assert reports["first"].embedded >= 1
    assert reports["second"].embedded == 0
    assert sum(len(c) for c in blocked_encoder.calls) == reports["first"].embedded
    assert second.index.version == first.index.version
    assert second.answer(KEEPER).text == "Mara Vell"


def test_the_chat_answers_while_an_upload_is_indexed_and_shows_how_far_it_is(
    scratch_app_url, scratch_engine, blocked_encoder, never_wait, tmp_path
):
    import html

    from gradio_client import Client, handle_file

    from .test_app import INTERCEPTORS, _reply

    uploader = Client(scratch_app_url, verbose=False, download_files=False)
    asker = Client(scratch_app_url, verbose=False, download_files=False)
    doc = tmp_path / "tamsin_bridge.txt"
    doc.write_text("The Tamsin bridge was painted ochre by Ilse Brandt in 1954.\n")
    upload = uploader.submit([handle_file(str(doc))], api_name="/upload")
    assert blocked_encoder.started.wait(120)  # the upload is being indexed, and held there
    job = asker.submit(INTERCEPTORS, [], api_name="/ask")
    _, history, status = job.result(timeout=60)
    assert "500" in html.unescape(_reply(history))
    assert "Indexing new documents (embedding 0 of 1 passages)" in html.unescape(status)
    assert not upload.done()
    blocked_encoder.release.set()
    _, status, notice = upload.result(timeout=120)
    assert "Indexed" in html.unescape(notice) and "tamsin_bridge.txt" in html.unescape(status)
    assert "Indexing new documents" not in html.unescape(status)
    _, history, _ = asker.predict("Who painted the Tamsin bridge?", [], api_name="/ask")
    assert "Ilse Brandt" in html.unescape(_reply(history))

"""answer() from Python: the contract, bad input, and quality on the dev and our own sets."""

from __future__ import annotations

import pytest

from qa import QAError
from qa.evaluate import evaluate, load_questions
from qa.serving import answer_to_json

from .conftest import DATA, DEV_QUESTIONS

INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"


def test_answer_contract(seed_engine):
    r = seed_engine.answer(INTERCEPTORS, top_k=3)
    assert r.text and "500" in r.text
    assert 0.0 <= r.score <= 1.0
    assert 1 <= len(r.quotes) <= 3
    assert r.quotes[0].source in r.sources
    for q in r.quotes:
        stored = open(seed_engine.seeds_dir / q.source, encoding="utf-8-sig", newline="").read()
        assert stored[q.start : q.end] == q.text
        if q.answer_start is not None:
            assert q.start <= q.answer_start < q.answer_end <= q.end
    d = answer_to_json(r)
    assert d["text"] == r.text and d["quotes"][0]["source"] == r.quotes[0].source


def test_top_k_controls_the_number_of_quotes(seed_engine):
    assert len(seed_engine.answer(INTERCEPTORS, top_k=1).quotes) == 1
    assert len(seed_engine.answer(INTERCEPTORS, top_k=5).quotes) == 5


@pytest.mark.parametrize(
    "question, message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * 100_000, "100,000 characters"),
        (None, "must be text"),
        ("Why\ud800?", "U\\+D800 at character 4, half of a character pair, not text"),
    ],
)
def test_bad_questions_are_refused_in_one_line(seed_engine, question, message):
    with pytest.raises(QAError, match=message) as err:
        seed_engine.answer(question)
    assert "\n" not in str(err.value)


def test_bad_top_k_is_refused(seed_engine):
    with pytest.raises(QAError, match="top_k"):
        seed_engine.answer(INTERCEPTORS, top_k=0)


def test_control_characters_and_other_languages_are_handled(seed_engine):
    r = seed_engine.answer("How many\x00 interceptors\x1b is the Pentagon\x07 sending to Ukraine?")
    assert r.text and "500" in r.text
    r = seed_engine.answer("¿Cuántos interceptores envía el Pentágono a Ucrania?")
    assert r.quotes  # answered or declined, never an error
    r = seed_engine.answer("Сколько перехватчиков?")
    assert r.text is None or isinstance(r.text, str)


# Floors a few points under each reader's measured figures (README), so that a regression in
# retrieval, reading or offsets fails here: (F1, no-answer %, answered %, first quote holds
# the answer %) on dev, and (F1, no-answer %) on our own sets.
DEV_FLOORS = {"trained": (80, 100, 80, 80), "rules": (85, 100, 100, 95)}
OWN_FLOORS = {"trained": (40, 50), "rules": (60, 25)}


@pytest.mark.skipif(not DEV_QUESTIONS.exists(), reason="../shared/eval is not beside this checkout")
@pytest.mark.parametrize("reader_name", ["trained", "rules"])
def test_dev_questions(seed_engine, rules_reader, reader_name, tmp_path):
    from qa import QA

    engine = seed_engine
    if reader_name == "rules":
        engine = QA(seed_engine.seeds_dir, tmp_path / "index", encoder=seed_engine.encoder,
                    reader=rules_reader)
    report = evaluate(engine, load_questions(DEV_QUESTIONS))
    f1, declined, answered, first_quote = DEV_FLOORS[reader_name]
    assert report.f1 >= f1
    assert report.no_answer_accuracy >= declined
    assert report.answered_rate >= answered
    assert report.first_quote_hit >= first_quote
    hits = report.retrieval_first_hit
    assert hits["hybrid"] >= max(hits["dense"], hits["sparse"])


@pytest.mark.parametrize("reader_name", ["trained", "rules"])
@pytest.mark.parametrize("name", ["news", "encyclopedia", "heldout"])
def test_own_question_sets(make_engine, rules_reader, name, reader_name):
    import shutil

    engine = make_engine({}, name=name)
    if reader_name == "rules":
        engine.reader = rules_reader
    shutil.copytree(DATA / name, engine.seeds_dir, dirs_exist_ok=True)
    report = evaluate(engine, load_questions(DATA / f"{name}_questions.jsonl"))
    f1, declined = OWN_FLOORS[reader_name]
    assert report.f1 >= f1
    assert report.no_answer_accuracy >= declined
    hits = report.retrieval_first_hit
    assert hits["hybrid"] >= max(hits["dense"], hits["sparse"])


def test_hybrid_hits_keep_each_retrievers_best(seed_engine):
    from qa.reading.question import analyse
    from qa.retrieval import retrieve

    index = seed_engine.index
    question = "Which newspaper reported the interceptor shipment?"
    vector = seed_engine.encoder.encode_query(question)
    dense_ids, _ = index.dense_search(vector, 50)
    sparse_ids, _ = index.sparse_search(analyse(question).search_terms, 50)
    fused = [h.passage_id for h in retrieve(index, vector, question, k=1)]
    hits = [h.passage_id for h in retrieve(index, vector, question, k=1, keep_each=2)]
    assert hits[0] == fused[0]  # the fused order comes first
    assert set(dense_ids[:2].tolist()) | set(sparse_ids[:2].tolist()) <= set(hits)
    assert len(hits) == len(set(hits)) <= 5


def test_a_long_earlier_turn_does_not_fail_the_follow_up(seed_engine):
    """A chat's history may hold a turn over the question limit (refused when asked, still
    shown): the rewrite of a follow-up must not take it in and pass the limit itself."""
    from qa.conversation import Turn, standalone_question

    long_turn = ("How many interceptors is the Pentagon sending to Ukraine and"
                 + " its many allied partner nations" * 62 + "?")
    assert len(long_turn) > 2000
    # What the rewrite alone makes of "Why?" after it: over the limit.
    assert len(standalone_question("Why?", Turn(long_turn, long_turn, "more than 500"))) > 2000
    history = [{"role": "user", "content": long_turn},
               {"role": "assistant", "content": "more than 500"}]
    answer = seed_engine.answer("Why?", history=history)  # no QAError
    assert answer.question == "Why?" and answer.standalone is None


def test_seeds_none_means_the_default_folder(tmp_path, encoder, reader):
    from qa import QA, config

    engine = QA(None, tmp_path / "index", encoder=encoder, reader=reader)
    assert engine.seeds_dir == config.DEFAULT_SEEDS
    with pytest.raises(QAError, match="must be a path, not int"):
        QA(3, tmp_path / "index", encoder=encoder, reader=reader)

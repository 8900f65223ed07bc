"""The trained reader (the default): the shipped int8 ONNX model, its offsets, its agreement
with the fp32 export, declining, agreement across documents, and its index contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qa import QAError
from qa.evaluate import f1_score
from qa.reading.trained import MODEL_DIR, SpanModel, TrainedReader

HARBOUR = {
    "harbour.txt": (
        "Brenmouth Harbour Reopens\n\n"
        "The harbour at Brenmouth reopened on 4 March after a two-year rebuild that cost "
        "£48 million. Harbour master Idris Calloway said the new quay can berth ships up to "
        "220 metres long.\n\n"
        "The council expects about 310 cruise calls a year once the terminal is finished in "
        "2027. Fishing boats keep their old moorings on the eastern wall."
    ),
    "ferry.txt": (
        "Ferry Line Starts\n\n"
        "A ferry line between Brenmouth and the island of Skerra will start in June, run by "
        "the operator Tidewise. Crossings take 50 minutes and tickets cost £12."
    ),
}


@pytest.fixture
def harbour(make_engine):
    return make_engine(HARBOUR, name="harbour")


@pytest.mark.parametrize(
    "question, gold",
    [
        ("How much did the Brenmouth harbour rebuild cost?", "£48 million"),
        ("Who is the harbour master of Brenmouth?", "Idris Calloway"),
        ("Which company runs the ferry to Skerra?", "Tidewise"),
        ("How long does the ferry crossing to Skerra take?", "50 minutes"),
    ],
)
def test_answers_and_offsets_slice_back_out_of_the_file(harbour, question, gold):
    r = harbour.answer(question)
    assert r.text is not None and f1_score(r.text, gold) >= 0.5, (r.text, gold)
    marked = [q for q in r.quotes if q.answer_start is not None]
    assert marked and marked[0] is r.quotes[0]
    for q in marked:
        text = (harbour.seeds_dir / q.source).read_text(encoding="utf-8")
        assert text[q.start : q.end] == q.text
        assert text[q.answer_start : q.answer_end] == r.text
        before, answer, after = q.highlighted
        assert before + answer + after == q.text
    assert 0.0 < r.score <= 1.0


@pytest.mark.parametrize(
    "question",
    [
        "What is the boiling point of liquid nitrogen?",
        "Who won the 1998 football World Cup?",
    ],
)
def test_declines_when_the_documents_hold_no_answer(harbour, question):
    r = harbour.answer(question)
    assert r.text is None, r.text
    assert r.guess is None and r.message.startswith("The documents do not say")
    assert r.quotes and all(q.answer_start is None for q in r.quotes)
    assert 0.0 <= r.score <= 1.0


def test_agreement_across_documents_cites_every_source(make_engine):
    a = "The Orsa festival drew about 30,000 visitors this summer, its organisers said."
    b = "Organisers of the Orsa festival counted about 30,000 visitors over the summer."
    engine = make_engine({"a.txt": a, "b.txt": b}, name="agree")
    r = engine.answer("How many visitors did the Orsa festival draw?")
    assert r.text is not None and "30,000" in r.text
    assert sorted(r.sources) == ["a.txt", "b.txt"]
    assert {q.source for q in r.quotes if q.answer_start is not None} == {"a.txt", "b.txt"}


def test_int8_model_matches_the_fp32_export_on_a_fixed_sample():
    """The sample's fp32 spans were recorded when the model was exported (training/export.py),
    with windows of the length recorded beside them."""
    recorded = json.loads((MODEL_DIR / "fp32_sample.json").read_text(encoding="utf-8"))
    sample = recorded["questions"]
    model = SpanModel(MODEL_DIR, max_length=recorded["max_length"])
    same, overlap = 0, []
    for item in sample:
        span = model.best_spans(item["question"], [item["context"]])[0]
        ref = item["fp32"]
        got = item["context"][span.start : span.end]
        want = item["context"][ref["start"] : ref["end"]]
        same += (span.start, span.end) == (ref["start"], ref["end"])
        overlap.append(f1_score(got, want))
    assert len(sample) >= 40
    assert same / len(sample) >= 0.75
    assert sum(overlap) / len(overlap) >= 0.85


def test_a_long_passage_is_read_where_the_question_words_are():
    model = SpanModel(MODEL_DIR)
    filler = " ".join(f"Item {i} of the ledger was filed without remark." for i in range(60))
    text = filler + " The Kaldor lighthouse keeper was named Oswin Mirrel in 1911."
    q_ids = model.tokenizer.encode("Who was the Kaldor lighthouse keeper?",
                                   add_special_tokens=False).ids
    ids, offsets = model._window(q_ids, text)
    assert len(ids) + len(q_ids) + 3 <= model.max_length
    assert text[offsets[0][0] : offsets[-1][1]].endswith("in 1911.")
    span = model.best_spans("Who was the Kaldor lighthouse keeper?", [text])[0]
    assert text[span.start : span.end] == "Oswin Mirrel"


def test_calibration_is_monotone_and_its_threshold_a_probability():
    cal = json.loads((MODEL_DIR / "calibration.json").read_text(encoding="utf-8"))
    assert 0.0 < cal["threshold"] < 1.0
    assert cal["right"][0] > 0 and cal["none"][0] < 0  # a larger margin: likelier right
    assert 0.0 <= cal["validation"]["ece_held_half"] < 0.1


def test_a_missing_model_is_one_clear_error(tmp_path, make_engine):
    engine = make_engine(HARBOUR, name="nomodel")
    engine.reader = TrainedReader(tmp_path / "no-model")
    with pytest.raises(QAError) as e:
        engine.answer("Who is the harbour master?")
    assert "\n" not in str(e.value) and "no-model" in str(e.value) and "missing" in str(e.value)


def test_the_manifest_records_the_annotations_and_readers_rebuild_what_they_need(
    make_engine, rules_reader
):
    from qa.reading import make_reader

    engine = make_engine(HARBOUR, name="switch")
    engine.refresh()
    assert engine.status()["annotations"] is None  # the trained reader needs none
    fast = make_reader("rules:fast")
    engine.reader = fast
    assert engine.stale_reasons() and "annotations" in engine.stale_reasons()[0]
    engine.refresh()
    assert engine.status()["annotations"] == fast.annotator().id
    # An index annotated by rules:fast is not silently read by the full rules reader.
    engine.reader = rules_reader
    assert "annotations" in engine.stale_reasons()[0]
    engine.refresh()
    assert engine.status()["annotations"] == rules_reader.annotator().id
    assert engine.answer("Who is the harbour master of Brenmouth?").text
    # The trained reader reads any index: no rebuild.
    engine.reader = TrainedReader()
    assert engine.stale_reasons() == []


def test_model_files_are_small_and_licensed():
    size = (MODEL_DIR / "reader.onnx").stat().st_size
    assert size <= 30 * 1024 * 1024
    card = (MODEL_DIR / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in card and "CC BY-SA" in card
    assert Path(MODEL_DIR / "LICENSE").is_file()


def test_span_features_count_agreeing_windows_and_the_best_rival():
    from qa.reading.trained import FEATURES, FLOOR, Span, span_features

    spans = [Span(0, 0, 9, 4.0, -1.0), Span(1, 5, 14, 2.5, -2.0), Span(2, 0, 6, 3.0, -1.5),
             Span(3, 0, 4, -1.0, -3.0)]
    answers = ["5,000 men", "about 5000", "Harald", "Harald"]
    x = span_features("How many men did Harald lead?", 0, spans, answers)
    assert set(x) == set(FEATURES)
    assert x["agree"] == pytest.approx(math.log(2))  # "about 5000" says the same number
    assert x["rival"] == 3.0  # the best window naming something else
    assert x["rank"] == 0.0 and x["windows_answering"] == 3.0
    assert x["repeats_question"] == pytest.approx(0.5)  # "men" is in the question
    harald = span_features("How many men did Harald lead?", 2, spans, answers)
    assert harald["repeats_question"] == 1.0 and harald["rival"] == 4.0
    alone = span_features("Who led them?", 0, spans[:1], answers[:1])
    assert alone["agree"] == 0.0 and alone["rival"] == FLOOR


@pytest.mark.parametrize("change", [{"features": ["margin", "shoe_size"]},
                                    {"right": [1.0, 0.0]}])
def test_a_calibration_that_does_not_fit_its_features_is_one_clear_error(
    tmp_path, make_engine, change
):
    cal = json.loads((MODEL_DIR / "calibration.json").read_text(encoding="utf-8"))
    (tmp_path / "calibration.json").write_text(json.dumps(cal | change), encoding="utf-8")
    engine = make_engine(HARBOUR, name="badcal")
    engine.reader = TrainedReader(tmp_path)
    with pytest.raises(QAError) as e:
        engine.answer("Who is the harbour master?")
    assert "\n" not in str(e.value) and "calibration" in str(e.value)


def test_min_confidence_moves_the_line_between_answering_and_declining(harbour):
    answered = "Who is the harbour master of Brenmouth?"
    declined = "What is the boiling point of liquid nitrogen?"
    assert harbour.answer(answered).text is not None and harbour.answer(declined).text is None
    harbour.reader = TrainedReader(min_confidence=1.0)
    assert harbour.answer(answered).text is None
    harbour.reader = TrainedReader(min_confidence="0")
    r = harbour.answer(declined)
    assert r.text is not None and r.score < TrainedReader().threshold()


@pytest.mark.parametrize("value", ["often", 1.5, -0.1, "nan"])
def test_a_bad_min_confidence_is_one_clear_error(monkeypatch, value):
    with pytest.raises(QAError) as e:
        TrainedReader(min_confidence=value)
    assert "\n" not in str(e.value) and "confidence" in str(e.value)
    monkeypatch.setattr("qa.config.MIN_CONFIDENCE", str(value))
    with pytest.raises(QAError):
        TrainedReader()


def test_an_answer_not_sure_enough_is_named_as_a_guess_and_marked_in_its_passage(harbour):
    question = "Who is the harbour master of Brenmouth?"
    confident = harbour.answer(question)
    harbour.reader = TrainedReader(min_confidence=1.0)
    r = harbour.answer(question)
    assert r.text is None and r.score < 0.5, "an answer is likelier than none"
    assert r.guess == confident.text and r.guess_confidence == confident.score
    assert r.message.startswith("Not sure enough to answer") and confident.text in r.message
    first = r.quotes[0]
    text = (harbour.seeds_dir / first.source).read_text(encoding="utf-8")
    assert text[first.answer_start : first.answer_end] == r.guess
    assert all(q.answer_start is None for q in r.quotes[1:])

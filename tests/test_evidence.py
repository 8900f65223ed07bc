"""Evidence beyond the span model (answer type, page furniture), answers that say the same
merged with every stating passage cited, and datelines kept out of "when will" answers. All
text here is our own."""

from __future__ import annotations

import pytest

from qa.reading.answers import mentions, same_answer
from qa.reading.evidence import asks_future, expected_type, fits_type, is_furniture_line


@pytest.mark.parametrize("question, kind", [
    ("How many pumps did the council buy?", "number"),
    ("How much did the bridge cost?", "number"),
    ("Which version added the flag?", "number"),
    ("When did the ferry start?", "date"),
    ("In what year was the mill built?", "date"),
    ("Who designed the lighthouse?", "agent"),
    ("What is the capital of Skerra?", None),
    ("Where does the ferry stop?", None),
])
def test_the_question_says_what_form_its_answer_takes(question, kind):
    assert expected_type(question) == kind


@pytest.mark.parametrize("kind, answer, fits", [
    ("number", "more than 500", 1.0), ("number", "twelve", 1.0), ("number", "the mayor", -1.0),
    ("date", "4 March", 1.0), ("date", "last spring", 1.0), ("date", "the harbour", -1.0),
    ("agent", "Idris Calloway", 1.0), ("agent", "the quay", -1.0), (None, "anything", 0.0),
])
def test_an_answer_fits_or_lacks_the_form_asked_for(kind, answer, fits):
    assert fits_type(kind, answer) == fits


@pytest.mark.parametrize("line, furniture", [
    ("Apr 02, 2031 - 09:15", True),
    ("Brenmouth, 4 March 2031", True),
    ("By Ada Quill | The Coast Gazette", True),
    ("Updated 14:02 GMT", True),
    ("The harbour reopened on 4 March 2031 after a rebuild.", False),
    ("Skerra will join the ferry network in 2032", False),
    ("Installation", False),
])
def test_datelines_and_bylines_are_furniture_and_prose_is_not(line, furniture):
    assert is_furniture_line(line) is furniture


def test_questions_about_the_future_are_recognised():
    assert asks_future("When will Skerra join the network?")
    assert asks_future("When is the terminal expected to open?")
    assert not asks_future("When did the harbour reopen?")


def test_answers_that_say_the_same_are_one_answer():
    assert same_answer("more than 500", "over 500") and same_answer("500", "about 500")
    assert same_answer("Harbour Master Idris Calloway", "Idris Calloway")
    assert not same_answer("500", "5,000") and not same_answer("Calloway", "Idris Calloway")


def test_mentions_find_a_number_with_its_quantifier_and_scale():
    text = "The state bought over 500 pumps for $12 million; 1,500 more follow."
    assert [text[a:b] for a, b in mentions("more than 500", text)] == ["over 500"]
    assert [text[a:b] for a, b in mentions("$12 million", text)] == ["$12 million"]
    assert mentions("12", text) == []  # too short to say anything on its own


PUMPS = {
    "gazette.txt": (
        "Coast Gazette\n\n"
        "The water board of Lowmere is buying more than 500 flood pumps from the firm "
        "Dravik, its chair Ada Quill said on Monday. The pumps arrive before the winter storms.\n"
    ),
    "herald.md": (
        "# Lowmere Herald\n\n"
        "Lowmere's water board confirmed an order of over 500 flood pumps, to be delivered "
        "by Dravik in November.\n"
    ),
}


def test_a_merged_answer_cites_and_marks_every_passage_stating_it(make_engine):
    engine = make_engine(PUMPS, name="pumps")
    r = engine.answer("How many flood pumps is the Lowmere water board buying?")
    assert r.text is not None and same_answer(r.text, "500")
    assert sorted(r.sources) == ["gazette.txt", "herald.md"]
    marked = [q for q in r.quotes if q.answer_start is not None]
    assert {q.source for q in marked} == {"gazette.txt", "herald.md"}
    for q in marked:
        text = (engine.seeds_dir / q.source).read_text(encoding="utf-8")
        assert text[q.start : q.end] == q.text
        assert same_answer(text[q.answer_start : q.answer_end], r.text)


DATELINE = {
    "skerra.txt": (
        "Skerra ferry link delayed again\n"
        "Jun 11, 2031 - 07:40\n\n"
        "The island of Skerra has asked to join the regional ferry network, but the transport "
        "board has not said when a decision will be made. Talks continue this summer.\n"
    ),
}


def test_a_dateline_is_never_the_answer_to_a_when_will_question(make_engine):
    engine = make_engine(DATELINE, name="dateline")
    for question in ("When will Skerra join the ferry network?",
                     "When will the transport board decide on Skerra?"):
        r = engine.answer(question)
        for candidate in (r.text, r.guess):
            assert candidate is None or "2031" not in candidate and "07:40" not in candidate
    # Asked about the past, the same line may well answer.
    assert engine.answer("On what date was the article on the Skerra ferry link published?")

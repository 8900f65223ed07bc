"""The rules reader (`--reader rules`) on small documents of our own: one test per answer type, offsets,
agreement across sources, and declining when the documents hold no answer."""

from __future__ import annotations

import pytest

from qa.reading.answers import normalize_answer
from qa.reading.question import analyse


@pytest.fixture
def make_engine(make_engine, rules_reader):
    """Engines over our documents, read by the rules reader."""

    def make(files, name: str = "docs"):
        engine = make_engine(files, name)
        engine.reader = rules_reader
        return engine

    return make

TOWN = {
    "bridge.txt": (
        "New Bridge Opens in Kessling\n\n"
        "The Arlow bridge in Kessling opened to traffic on 12 September after four years of "
        "work. The crossing is 1.8 kilometres long and cost €95 million, about 20 percent more "
        "than planned.\n\n"
        "Mayor Petra Lindqvist cut the ribbon. The steel deck was built by Norberg Steelworks, "
        "a company based in Gothenburg.\n\n"
        "More than 14,000 vehicles crossed the bridge on its first day, according to the city."
    ),
    "library.md": (
        "# Kessling Public Library\n\n"
        "The Kessling Public Library was founded in 1902 by the merchant Oskar Hale. "
        "It holds some 240,000 books.\n\n"
        "The library is run by the KCT, or Kessling Cultural Trust, which also manages the "
        "town museum. The reading room closed in 2019 because the roof had begun to leak."
    ),
}


@pytest.fixture
def town(make_engine):
    engine = make_engine(TOWN)
    engine.refresh()
    return engine


@pytest.mark.parametrize(
    "question, expected_type, gold",
    [
        ("How many vehicles crossed the Arlow bridge on its first day?", "COUNT", "More than 14,000"),
        ("How much did the Arlow bridge cost?", "MONEY", "€95 million"),
        ("How long is the Arlow bridge?", "MEASURE", "1.8 kilometres"),
        ("What percentage more than planned did the bridge cost?", "PERCENT", "about 20 percent"),
        ("Who cut the ribbon at the bridge opening?", "PERSON", "Petra Lindqvist"),
        ("Which company built the steel deck?", "ORG", "Norberg Steelworks"),
        ("In which city is Norberg Steelworks based?", "PLACE", "Gothenburg"),
        ("When did the Arlow bridge open to traffic?", "DATE", "12 September"),
        ("In what year was the Kessling Public Library founded?", "YEAR", "1902"),
        ("What does KCT stand for?", "ACRONYM", "Kessling Cultural Trust"),
        ("Why did the reading room close?", None, "the roof had begun to leak"),
    ],
)
def test_answer_types(town, question, expected_type, gold):
    assert analyse(question).answer_type == expected_type
    r = town.answer(question)
    assert r.text is not None, question
    assert normalize_answer(r.text) == normalize_answer(gold)


def test_every_answer_slices_back_out_of_its_source_file(town):
    for question in [
        "How many vehicles crossed the Arlow bridge on its first day?",
        "Who founded the Kessling Public Library?",
        "What does KCT stand for?",
    ]:
        r = town.answer(question)
        assert r.text and r.quotes
        q = r.quotes[0]
        text = open(town.seeds_dir / q.source, encoding="utf-8-sig", newline="").read()
        assert text[q.start : q.end] == q.text
        assert text[q.answer_start : q.answer_end] == r.text
        assert q.start <= q.answer_start < q.answer_end <= q.end
        before, answer, after = q.highlighted
        assert before + answer + after == q.text and answer == r.text


def test_never_answers_with_the_questions_own_words(town):
    r = town.answer("Who is the mayor of Kessling?")
    assert r.text == "Petra Lindqvist"
    assert "Kessling" not in r.text


def test_agreement_across_sources_cites_all_and_raises_confidence(make_engine):
    one = {"a.txt": "The Orsa festival drew about 30,000 visitors this summer, organisers said."}
    engine_one = make_engine(one, name="one")
    two = dict(
        one,
        **{"b.txt": "Organisers of the Orsa festival counted about 30,000 visitors over the summer."},
    )
    engine_two = make_engine(two, name="two")
    question = "How many visitors did the Orsa festival draw?"
    single, agreed = engine_one.answer(question), engine_two.answer(question)
    assert single.text == agreed.text == "about 30,000"
    assert agreed.sources == ["a.txt", "b.txt"]
    assert agreed.score > single.score
    marked = [q for q in agreed.quotes if q.answer_start is not None]
    assert {q.source for q in marked} == {"a.txt", "b.txt"}


@pytest.mark.parametrize(
    "question",
    [
        "How many books did the Gothenburg library lend in 2020?",
        "Who designed the Arlow bridge?",
        "What is the population of Kessling?",
    ],
)
def test_declines_when_the_documents_hold_no_answer(town, question):
    r = town.answer(question)
    assert r.text is None
    assert "do not say" in r.message
    assert r.quotes, "the closest passages are still quoted"
    assert all(q.answer_start is None for q in r.quotes)


def test_question_analysis_open_and_typed():
    assert analyse("What did the council approve on Monday?").verb == "approv"
    assert analyse("Which river flows through the town?").focus == "river"
    assert analyse("What is the RTA?").acronym == "RTA"
    assert analyse("Roughly how many people came?").answer_type == "COUNT"
    assert "roughly" not in analyse("Roughly how many people came?").terms


RIVER = {
    "arve.txt": (
        "The Arve River\n\n"
        "Rising in the hills above Kessling, the Arve river flows north for about 140 "
        "kilometres and reaches the sea at Varnholm, the largest port of Norland. The Line 4 "
        "tram crosses it at Kessling, where it carried 3,150 passengers on Sunday, 18 May.\n\n"
        "The engineer Hanna Brisk, who built the first bridge over the Arve, died in 1911. "
        "She was buried in Eastfield Cemetery."
    ),
}


@pytest.fixture
def river(make_engine):
    engine = make_engine(RIVER, name="river")
    engine.refresh()
    return engine


@pytest.mark.parametrize(
    "question, gold",
    [
        # "Varnholm, the largest port": the text calls it a port; other places stand nearer.
        ("At which port does the Arve reach the sea?", "Varnholm"),
        # "Line 4" names a tram and "18" belongs to a date: neither is a count.
        ("How many passengers did the tram carry?", "3,150"),
        # A place noun as the head of a name the tagger may call an organisation.
        ("Where was Hanna Brisk buried?", "Eastfield Cemetery"),
    ],
)
def test_context_cues_pick_the_answer(river, question, gold):
    r = river.answer(question)
    assert r.text is not None and normalize_answer(r.text) == normalize_answer(gold)


def test_label_numbers_and_descriptors():
    from qa.reading.rules import _descriptor_stems, _is_label_number

    text = "Passengers on Line 4 rose. 4 trams ran, and 12 more wait in Depot 2."
    assert _is_label_number(text, text.index("4"), 0)  # "Line 4"
    assert not _is_label_number(text, text.index("4 trams"), text.index("4 trams"))
    assert not _is_label_number(text, text.index("12"), 0)  # after "and"
    assert _is_label_number(text, text.index("2."), 0)  # "Depot 2"
    text = "It ends at Varnholm, the largest port of Norland, near the city of Osby."
    at = text.index("Varnholm")
    assert "port" in _descriptor_stems(text, at, at + len("Varnholm"))
    at = text.index("Osby")
    assert "city" in _descriptor_stems(text, at, at + len("Osby"))
    at = text.index("Norland")
    assert "port" not in _descriptor_stems(text, at, at + len("Norland"))


PIPES = {
    "pipes.txt": (
        "Pipes of Kessling\n\n"
        "The town replaced its old water mains with pipes of polyvinyl chloride (PVC) in 1978, "
        "and a coalition of engineers later set up the Kessling Water Trust Programme (KWT) "
        "to monitor them.\n\n"
        "PVC pipes are light. PVC does not rust, and PVC joints are glued rather than welded.\n\n"
        "Critics say PVC can release additives; PVC recycling remains limited, and PVC waste "
        "is often burned.\n\n"
        "The KWT publishes yearly reports. The KWT found no PVC pipe older than 40 years."
    ),
}


@pytest.mark.parametrize(
    "question, gold",
    [
        # Letters inside words ("polyvinyl" gives P and V), at a first mention that says little
        # else: retrieval ranks the paragraphs that repeat "PVC" higher.
        ("What is PVC short for?", "polyvinyl chloride"),
        # A last word the initials leave out ("Programme").
        ("What does KWT stand for?", "Kessling Water Trust Programme"),
    ],
)
def test_acronyms_defined_in_parentheses(make_engine, question, gold):
    engine = make_engine(PIPES, name="pipes")
    r = engine.answer(question)
    assert r.text == gold


def test_long_form_by_schwartz_hearst():
    from qa.reading.rules import _long_form_start

    text = "a film of polyethylene terephthalate (PET)"
    start = _long_form_start("PET", text, text.index("("))
    assert text[start : text.index("(")].strip() == "polyethylene terephthalate"
    text = "we saw a cat (PET)"
    assert _long_form_start("PET", text, text.index("(")) is None  # no word starts with P


def test_compound_and_name_of_questions():
    q = analyse("Which council member led the opposition?")
    assert (q.answer_type, q.focus) == ("PERSON", "member")
    q = analyse("What is the name of the enzyme that breaks down the plastic?")
    assert (q.answer_type, q.focus, q.required) == ("NAME", None, [])
    assert "enzym" in q.terms
    q = analyse("What is the name of the river that flows through Tartu?")
    assert (q.answer_type, q.focus) == ("PLACE", "river")


FIRM = {
    "firm.txt": (
        "Norbeck Tools opened a large warehouse in Alsby in 2019, hiring 200 people. "
        "Norbeck Tools was established in Dorvik in 1921 by two brothers.\n"
    )
}


def test_paraphrased_question_words_get_partial_credit(make_engine, monkeypatch):
    """"founded" is not in the text; "established" is, and its word vector is close."""
    import qa.reading.rules

    engine = make_engine(FIRM, name="firm")
    question = "In which town was Norbeck Tools founded?"
    assert engine.answer(question).text == "Dorvik"
    monkeypatch.setattr(qa.reading.rules, "SOFT_MATCH_CREDIT", 0.0)
    assert engine.answer(question).text != "Dorvik"


def test_word_vectors_place_synonyms_close(encoder):
    from qa.reading import wordvectors

    wv = wordvectors.for_model(encoder.model_id)
    assert wv is not None

    def sim(a, b):
        return float(wv.vector(a) @ wv.vector(b))

    assert sim("founded", "established") > 0.4 > sim("founded", "bridge")
    assert sim("killed", "died") > 0.4 > sim("killed", "budget")
    assert abs(sim("river", "river") - 1.0) < 1e-5
    assert wv.matrix([]).shape == (0, wv.dimension)


def test_models_without_a_readable_table_have_no_word_vectors(tmp_path):
    from qa.reading import wordvectors

    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert wordvectors.for_model(str(tmp_path)) is None
    assert wordvectors.for_model(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    "question, text, number, fit",
    [
        ("How many snow leopards live in Nepal?", "the 12 range countries agreed", "12", 0.25),
        ("How many members did the union have?", "a six-week stoppage", "six-week", 0.25),
        ("How many interceptors?", "sending more than 500 interceptors", "more than 500", 1.0),
        ("How many people attended?", "attendance rose to 1,200.", "1,200", 1.0),
        ("How many visitors came?", "some 4,000 visitors came", "some 4,000", 1.0),
    ],
)
def test_a_number_must_count_what_the_question_counts(question, text, number, fit):
    from qa.reading.rules import COUNTED_MISMATCH, _counted_fit

    start = text.index(number)
    expected = COUNTED_MISMATCH if fit < 1 else 1.0
    assert _counted_fit(analyse(question), text, start, start + len(number), None) == expected
    assert COUNTED_MISMATCH < 1.0


def test_counted_words_of_how_many_questions():
    assert [w for _, w in analyse("How many snow leopards live in Nepal?").counted] == [
        "snow",
        "leopards",
        "live",
    ]
    assert analyse("How many were killed?").counted == []
    assert analyse("Who built it?").counted == []

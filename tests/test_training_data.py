"""The reader's training data code on examples of our own: the validation split is disjoint by
article, labels point at the answer's tokens, and made-up negatives really hold no answer."""

from __future__ import annotations

import pytest

from training import data

CONTEXT = ("The Varnel depot opened in 1931. It was built by Ostra Mills for grain. "
           "In 1950 the depot held 4,312 crates. Its manager, Idra Lune, kept the keys.")


def example(i: int, title: str, question: str, answer: str | None, context: str = CONTEXT,
            source: str = "squadshifts_new_wiki") -> data.Example:
    answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
    return data.Example(f"q{i}", title, context, question, answers, source)


def test_validation_split_shares_no_article():
    examples = [example(i, f"t{i % 40}", "Who built the depot?", "Ostra Mills") for i in range(400)]
    train, val = data.split(examples)
    assert val and train
    assert not {data.article_of(e) for e in train} & {data.article_of(e) for e in val}


def test_window_labels_point_at_the_answer_and_misses_are_no_answer():
    from transformers import AutoTokenizer

    from training.train import base_model_path

    tokenizer = AutoTokenizer.from_pretrained(base_model_path())
    long_context = " ".join(["The depot stored sacks of rye."] * 60) + " Idra Lune kept the keys."
    exs = [example(0, "a", "Who kept the keys?", "Idra Lune", long_context)]
    w = data.windows(exs, tokenizer, max_length=64, stride=16, keep_missed=1.0)
    assert len(w["lengths"]) > 3
    labelled = [r for r in range(len(w["lengths"])) if w["start"][r] > 0]
    assert labelled and len(labelled) < len(w["lengths"])  # the other windows are "no answer"
    for r in labelled:
        ids = w["input_ids"][w["offsets"][r] : w["offsets"][r + 1]]
        assert tokenizer.decode(ids[w["start"][r] : w["end"][r] + 1]) == "idra lune"


def test_cut_sentence_and_other_paragraph_negatives_hold_no_answer():
    other = "Grain prices rose that winter. Farmers sold early. The harbour froze in January."
    exs = [example(0, "a", "Who built the depot?", "Ostra Mills"),
           example(1, "a", "When did the harbour freeze?", "January", other)]
    data_rates = (data.OTHER_PARAGRAPH_RATE, data.CUT_SENTENCE_RATE)
    try:
        data.OTHER_PARAGRAPH_RATE = data.CUT_SENTENCE_RATE = 1.0
        made = [e for e in data.add_negatives(exs) if e.kind != "original"]
    finally:
        data.OTHER_PARAGRAPH_RATE, data.CUT_SENTENCE_RATE = data_rates
    kinds = {e.kind for e in made}
    assert kinds == {"other-paragraph", "cut-sentence"}
    for e in made:
        assert not e.answers
        original = next(x for x in exs if x.question == e.question)
        assert original.answers[0]["text"].lower() not in e.context.lower()


@pytest.mark.parametrize("seed", range(5))
def test_swapped_questions_name_what_their_paragraph_never_mentions(seed):
    other = "Ostra Mills later moved to Kell. Brannock Foods bought the site in 1987."
    exs = [example(0, "a", "When did Ostra Mills build the depot in 1931?", "1931"),
           example(1, "a", "Who moved to Kell?", "Ostra Mills", other)]
    swapped = data.swap_negatives(exs, rate=1.0, seed=seed)
    assert swapped
    for e in swapped:
        original = next(x for x in exs if e.qid.startswith(x.qid + ":"))
        assert not e.answers and e.question != original.question
        new = set(e.question.split()) - set(original.question.split())
        assert new and all(w.strip("?") not in e.context for w in new)

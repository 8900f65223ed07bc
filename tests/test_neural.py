"""Plumbing of the optional transformers reader, with a tiny randomly initialised model
saved in a temporary folder (no network)."""

from __future__ import annotations

import pytest

from qa import QAError

WORDS = ["the", "a", "of", "to", "in", "and", "is", "was", "on", "for", "by", "with", "from", "at", "bridge", "river", "city", "opened", "cost", "million", "mayor", "who", "what", "when", "how", "many", "long", "built", "company", "steel", "deck", "kessling", "arlow", "petra", "lindqvist", "norberg", "gothenburg", "12", "september", "1", "8", "kilometres", "95", "years", "four"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-qa")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "€", "-"] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128,
    )
    BertForQuestionAnswering(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


CONTEXT = (
    "The Arlow bridge in Kessling opened on 12 September. It cost €95 million and is "
    "1.8 kilometres long. Mayor Petra Lindqvist opened it. The steel deck was built by Norberg, "
    "a company from Gothenburg."
)


def test_best_span_maps_tokens_back_to_characters(tiny_model):
    from qa.reading.transformers import TransformersReader

    reader = TransformersReader(tiny_model, max_length=64, stride=16)
    span = reader.best_span("Who opened the bridge?", CONTEXT)
    assert span is not None
    start, end, score, null = span
    assert 0 <= start < end <= len(CONTEXT)
    piece = CONTEXT[start:end]
    assert piece == piece.strip() and piece
    assert len(reader._load()[0].tokenize(piece)) <= reader.max_answer_tokens


def test_long_context_is_read_in_overlapping_windows(tiny_model):
    from qa.reading.transformers import TransformersReader

    reader = TransformersReader(tiny_model, max_length=48, stride=12, max_answer_tokens=5)
    long_context = " ".join([CONTEXT] * 6)
    tokenizer = reader._load()[0]
    windows = tokenizer("Who?", long_context, truncation="only_second", max_length=48,
                        stride=12, return_overflowing_tokens=True)["input_ids"]
    assert len(windows) > 3
    start, end, _, _ = reader.best_span("Who opened the bridge?", long_context)
    assert 0 <= start < end <= len(long_context)
    assert len(tokenizer.tokenize(long_context[start:end])) <= 5


def test_answer_contract_through_the_pipeline(tiny_model, make_engine, monkeypatch):
    import qa.reading.transformers

    monkeypatch.setattr(qa.reading.transformers, "MIN_CONFIDENCE", 0.0)
    engine = make_engine({"bridge.txt": CONTEXT})
    from qa.reading import make_reader

    engine.reader = make_reader(f"transformers:{tiny_model}")
    r = engine.answer("Who opened the bridge?")
    assert r.text
    q = r.quotes[0]
    stored = open(engine.seeds_dir / q.source, encoding="utf-8-sig", newline="").read()
    assert stored[q.start : q.end] == q.text
    assert stored[q.answer_start : q.answer_end] == r.text
    assert 0.0 <= r.score <= 1.0 and r.sources == ["bridge.txt"]


def test_missing_model_is_a_clear_error(tmp_path):
    from qa.reading import make_reader

    reader = make_reader(f"transformers:{tmp_path / 'no-such-model'}")
    with pytest.raises(QAError, match="cannot load reader model"):
        reader.best_span("Who?", "Nobody.")


def test_unknown_reader_spec_is_refused():
    from qa.reading import make_reader

    with pytest.raises(QAError, match="unknown reader"):
        make_reader("magic")

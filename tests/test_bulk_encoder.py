"""The build encoder: batches by token length, and bf16 vectors interchangeable with the
query encoder's fp32 ones."""

from __future__ import annotations

import numpy as np
import pytest

from qa import bulk_encoder
from qa import embedding as embedding_mod
from qa.embedding import Encoder

# Texts of our own, of very different lengths (batches of 1 to many).
SAMPLE = [
    "Ferries leave the east pier every forty minutes in summer.",
    "How many crates does the Varnel depot hold?",
    "The Varnel depot holds 4,312 crates of grain; it opened in 1931 beside the old canal.",
    "Ünïcödé naïve café — 東京, Привет мир, ¿qué tal?",
    "A " + "long sentence about harbour budgets, council votes and winter timetables " * 12,
    "The museum's archive lists 212 letters written by the first director between 1890 and "
    "1904, most of them about the cost of the new roof and the drainage of the lower rooms.",
    "x",
    "Tickets: 3.50 EUR (adults), 1.20 EUR (children under 12); the tower closes at 17:00.",
] * 5


@pytest.mark.parametrize("lengths", [[1], [5, 300, 7, 7, 256, 2, 90] * 9, [256] * 70, []])
def test_token_batches_cover_each_text_once_within_budget(lengths):
    batches = bulk_encoder.token_batches(lengths, tokens_per_batch=1024, max_batch=16)
    flat = np.concatenate(batches) if batches else np.zeros(0, int)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert len(batch) <= 16 and (padded <= 1024 or len(batch) == 1)
    # Longest first, so each batch holds texts of similar length.
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


@pytest.fixture(scope="module")
def fp32_reference():
    return Encoder(backend="torch", build_encoder="standard")


@pytest.fixture(scope="module")
def bf16_encoder(fp32_reference):
    try:
        return bulk_encoder.TorchBulkEncoder(fp32_reference.path)
    except bulk_encoder.BulkUnavailable as e:
        pytest.skip(f"no bf16 build encoder here: {e}")


def test_bf16_vectors_match_fp32(bf16_encoder, fp32_reference):
    reference = fp32_reference.encode(SAMPLE)
    got = bf16_encoder.encode(SAMPLE)
    assert got.dtype == np.float32 and got.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(got * reference, axis=1)
    assert cosine.min() >= 0.999
    # Each vector is still nearest to its own text's fp32 vector.
    distinct = reference[: len(SAMPLE) // 5]
    assert (np.argmax(got[: len(distinct)] @ distinct.T, axis=1) == np.arange(len(distinct))).all()


def test_bf16_progress_counts_every_text(bf16_encoder):
    seen = []
    bf16_encoder.encode(SAMPLE, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(SAMPLE), len(SAMPLE))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_encoder_sends_bulk_encoding_to_the_build_encoder(monkeypatch, bf16_encoder,
                                                          fp32_reference):
    monkeypatch.setattr(embedding_mod, "BULK_MIN_TEXTS", 10)
    encoder = Encoder()
    few = encoder.encode(SAMPLE[:3])
    assert encoder._bulk is None  # fewer than BULK_MIN_TEXTS: the query encoder's vectors
    many = encoder.encode(SAMPLE)
    assert encoder._bulk is not None
    single = np.stack([encoder.encode_query(t) for t in SAMPLE[:3]])
    assert np.sum(few * single, axis=1).min() > 0.99999
    assert np.sum(many * fp32_reference.encode(SAMPLE), axis=1).min() >= 0.999


def test_standard_build_encoder_never_loads_bf16(monkeypatch):
    monkeypatch.setattr(embedding_mod, "BULK_MIN_TEXTS", 10)
    encoder = Encoder(build_encoder="standard")
    encoder.encode(SAMPLE)
    assert encoder.bulk is None and encoder._bulk is None


def test_unknown_build_encoder():
    with pytest.raises(Exception, match="unknown build encoder"):
        Encoder(build_encoder="fp8")


def test_build_workers_run_below_the_callers_priority():
    """Questions asked during a build take the cores first: the encoding threads are niced,
    the calling thread is not."""
    import os
    import threading

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    from qa.bulk_encoder import encode_batched

    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    seen = []

    def run(ids, mask, types):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return np.ones((len(ids), 2), dtype=np.float32)

    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    texts = ["a b " * n for n in range(1, 40)]
    out = encode_batched(tokenizer, texts, 2, 0, run, tokens_per_batch=16, workers=2,
                         niceness=caller + 5)
    assert out.shape == (39, 2) and len(seen) > 2
    assert set(seen) == {caller + 5}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller


def test_without_native_bf16_builds_encode_in_fp32(monkeypatch, fp32_reference):
    real_init = bulk_encoder.TorchBulkEncoder.__init__

    def init(self, path, dtype="bfloat16", **kwargs):
        if dtype != "float32":
            raise bulk_encoder.NoNativeBf16("no native bf16 (pretended)")
        real_init(self, path, dtype=dtype, **kwargs)

    monkeypatch.setattr(bulk_encoder.TorchBulkEncoder, "__init__", init)
    monkeypatch.setattr(embedding_mod, "BULK_MIN_TEXTS", 10)
    encoder = Encoder()
    many = encoder.encode(SAMPLE)
    assert encoder._bulk is not None and encoder._bulk.dtype == "float32"
    assert np.sum(many * fp32_reference.encode(SAMPLE), axis=1).min() >= 0.9999

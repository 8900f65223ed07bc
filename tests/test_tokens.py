"""Index terms: the cached per-word path gives what the word-by-word definition gives."""

from __future__ import annotations

import random

from qa.tokens import STOPWORDS, stem, terms, words


def reference_terms(text: str) -> list[str]:
    """The definition: every word lower-cased, stop words dropped, stemmed; a hyphenated
    word also gives its parts."""
    out = []
    for _, _, w in words(text):
        w = w.replace("’", "'")
        if w in STOPWORDS:
            continue
        out.append(stem(w))
        if "-" in w:
            out.extend(stem(p) for p in w.split("-") if p and p not in STOPWORDS)
    return out


TEXTS = [
    "The Surface-to-Air missiles were THE ferry's cargo; the harbour-master's crates.",
    "Don’t stop: the Council's BUDGETS rose by 4.5% in 2019-2020, a well-known co-op's x-ray.",
    "İstanbul ISTANBUL Straße ǅemal ΣΑΣ naïve café — 東京 e.g. U.S. -a- ---",
    "",
    "running stopped studies churches defence centre analyse colour",
]


def test_terms_match_the_word_by_word_definition():
    rng = random.Random(3)
    alphabet = "aAeEİıß’'-._ Zz9é ΣσςǅK\u0307\n"
    texts = TEXTS + ["".join(rng.choice(alphabet) for _ in range(60)) for _ in range(500)]
    for text in texts:
        assert terms(text) == reference_terms(text), text
    assert terms(TEXTS[0])[:4] == ["surface-to-air", "surfac", "air", "missil"]

"""What every reader shares: answer normalisation and the quotes an answer cites."""

from __future__ import annotations

import re
import string

from ..types import Hit, Quote

_PUNCTUATION = frozenset(string.punctuation) | {"’", "‘", "“", "”"}


def normalize_answer(s: str) -> str:
    """SQuAD answer normalisation: lower case, no punctuation, articles or extra spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def answer_key(text: str) -> str:
    """What makes two answers the same: their numbers if they have any, else their words."""
    numbers = re.findall(r"\d+(?:[.,]\d+)*", text)
    if numbers:
        return "#" + "|".join(n.replace(",", "") for n in numbers)
    return normalize_answer(text)


def quotes_for(index, hits: list[Hit], spans: list[tuple[int, int, int]], top_k: int) -> list[Quote]:
    """The quotes of an answer: the passages stating it first, in the order given (``spans``
    holds (passage id, start, end), offsets relative to the passage), each with the answer
    marked; then the other retrieved passages by retrieval score; ``top_k`` in all."""
    quotes: list[Quote] = []
    seen: set[int] = set()
    score_of = {h.passage_id: h.score for h in hits}
    for pid, a, b in spans:
        if pid in seen:
            continue
        seen.add(pid)
        p = index.passage(pid)
        quotes.append(Quote(p.source, p.text, p.start, p.end, round(score_of.get(pid, 0.0), 4),
                            p.paragraph, p.start + a, p.start + b, location=p.location))
    for h in sorted(hits, key=lambda h: -h.score):
        if len(quotes) >= top_k:
            break
        if h.passage_id in seen:
            continue
        seen.add(h.passage_id)
        p = index.passage(h.passage_id)
        quotes.append(Quote(p.source, p.text, p.start, p.end, round(h.score, 4), p.paragraph,
                            location=p.location))
    return quotes[: max(top_k, 1)]

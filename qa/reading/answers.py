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


_QUANTIFIER = (r"(?:(?:more|fewer|less) than|over|under|about|around|nearly|almost|some|up to|"
               r"at least|at most|approximately|roughly|just over|just under|an estimated)\s+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SCALE = r"(?:million|billion|trillion|thousand|percent)"


def same_answer(a: str, b: str) -> bool:
    """Whether two answers say the same: the same numbers (so "more than 500", "over 500" and
    "500" are one answer), or the same words, or a name of two or more words that ends the
    other answer ("Lloyd Austin" and "Defense Secretary Lloyd Austin")."""
    key_a, key_b = answer_key(a), answer_key(b)
    if key_a == key_b:
        return True
    if key_a.startswith("#") or key_b.startswith("#"):
        return False
    short, long = sorted((key_a.split(), key_b.split()), key=len)
    return len(short) >= 2 and long[-len(short):] == short


def mentions(answer: str, text: str) -> list[tuple[int, int]]:
    """Where ``text`` states ``answer``: each number of a numeric answer with any quantifier
    before it (numbers of three or more characters, or with a currency or scale: a bare "12"
    says too little), else the answer's words, case aside, at word boundaries."""
    scaled = bool(re.search(rf"[$£€%]|\b{_SCALE}\b", answer, re.I))
    numbers = [n for n in _NUMBER.findall(answer) if len(n) >= 3 or scaled]
    if numbers:
        found = []
        for m in re.finditer(rf"(?<![\w.,])(?:{_QUANTIFIER})?[$£€]?{re.escape(numbers[0])}"
                             rf"(?![\d]|[.,]\d)(?:\s+{_SCALE}\b|%)?",
                             text, re.I):
            if all(re.search(rf"(?<![\d.,]){re.escape(n)}(?![\d]|[.,]\d)", text)
                   for n in numbers[1:]):
                found.append((m.start(), m.end()))
        return found
    if answer_key(answer).startswith("#") or len(normalize_answer(answer)) < 4:
        return []
    return [(m.start(), m.end())
            for m in re.finditer(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", text, re.I)]


def stating_passages(question: str, answer: str, best: tuple[int, int, int], texts: list[str],
                     spans, answers: list[str]) -> list[tuple[int, int, int]]:
    """(window, start, end) of every passage read that states ``answer``: ``best`` first, then
    the windows whose own best span says the same (``spans[i]`` holds ``answers[i]``), then
    the passages that mention it in a sentence sharing a word with the question."""
    stated = [best]
    taken = {best[0]}
    for span, text in zip(spans, answers):
        if span.window not in taken and same_answer(text, answer):
            stated.append((span.window, span.start, span.end))
            taken.add(span.window)
    asked = {w for w in normalize_answer(question).split() if len(w) > 2} - set(
        normalize_answer(answer).split())
    for w, text in enumerate(texts):
        if w in taken:
            continue
        for a, b in mentions(answer, text):
            end = text.find(".", b)
            sentence = text[text.rfind(".", 0, a) + 1 : end if end != -1 else len(text)]
            if asked & set(normalize_answer(sentence).split()):
                stated.append((w, a, b))
                taken.add(w)
                break
    return stated


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

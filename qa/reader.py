"""Readers turn retrieved passages into an answer. (Placeholder: best sentence.)"""

from __future__ import annotations

from .documents import sentence_spans
from .pipeline import Answer, Quote
from .tokens import terms


class SentenceReader:
    depth = 3

    def annotator(self):
        return None

    def read(self, question, query_vector, index, hits, top_k):
        quotes = []
        for h in hits[:top_k]:
            p = index.passage(h.passage_id)
            quotes.append(Quote(p.source, p.text, p.start, p.end, h.score, p.paragraph))
        if not quotes:
            return Answer(question, None, 0.0, quotes)
        q = set(terms(question))
        first = quotes[0]
        best = max(sentence_spans(first.text), key=lambda s: len(q & set(terms(first.text[s[0]:s[1]]))))
        first.answer_start, first.answer_end = first.start + best[0], first.start + best[1]
        return Answer(question, first.text[best[0]:best[1]], first.score, quotes, [first.source])


def make_reader(spec: str = "builtin"):
    return SentenceReader()

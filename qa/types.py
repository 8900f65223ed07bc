"""The types every part of qa shares: passages, retrieval hits, quotes and answers.

This module imports nothing of ours, so any module may import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Passage:
    source: str
    start: int
    end: int
    text: str
    paragraph: int  # 1-based position of the passage inside its document
    title: str = ""  # the document's headline, when it has one
    location: str = ""  # where in the document, when the format says: "page 3", a heading

    @property
    def search_text(self) -> str:
        """What retrieval indexes: the passage, led by its document's title for context."""
        if not self.title or self.text.startswith(self.title[:40]):
            return self.text
        return f"{self.title}\n{self.text}"


@dataclass(frozen=True)
class Hit:
    passage_id: int
    score: float  # fused score in [0, 1]
    dense_score: float | None  # cosine similarity, when the dense search found it
    sparse_score: float | None  # BM25 score, when BM25 found it


@dataclass
class Quote:
    source: str
    text: str
    start: int  # file offsets of the passage: file_text[start:end] == text
    end: int
    score: float  # retrieval relevance of the passage in [0, 1] (not a confidence)
    paragraph: int
    # File offsets of the answer inside this passage (on a decline with a guess: of the guess).
    answer_start: int | None = None
    answer_end: int | None = None
    location: str = ""  # "page 3" (PDF) or the section heading, when the format has them

    @property
    def highlighted(self) -> tuple[str, str, str] | None:
        """(before, answer, after) inside the quote, or None when it holds no answer span."""
        if self.answer_start is None or self.answer_end is None:
            return None
        a, b = self.answer_start - self.start, self.answer_end - self.start
        return self.text[:a], self.text[a:b], self.text[b:]


# An answer whose P(right) is below even odds is more likely wrong than right: it is given,
# as "Not sure: perhaps ...", with its confidence (the even-odds line, not a tuned value).
UNSURE_BELOW = 0.5


@dataclass
class Answer:
    question: str
    text: str | None  # the short answer, or None when the documents hold none
    # With an answer: the calibrated probability that it is right. On a decline: the
    # probability that the documents hold no answer.
    score: float
    quotes: list[Quote] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # every document stating the answer
    seconds: float = 0.0
    # In a conversation: the standalone question a follow-up was rewritten into and answered
    # as (None when the question stood alone and was answered as asked).
    standalone: str | None = None
    # On a decline where an answer is likelier than none, but not likely enough: the reader's
    # best candidate and the calibrated probability that it is right.
    guess: str | None = None
    guess_confidence: float | None = None

    @property
    def unsure(self) -> bool:
        """Whether the answer is given although it is more likely wrong than right."""
        return self.text is not None and self.score < UNSURE_BELOW

    @property
    def message(self) -> str:
        if self.unsure:
            return f"Not sure: perhaps “{self.text}”"
        if self.text is None and self.guess is not None:
            confidence = round(100 * (self.guess_confidence or 0.0))
            return (f"Not sure enough to answer: perhaps “{self.guess}” (confidence "
                    f"{confidence}%). The closest passages are quoted below.")
        if self.text is None:
            return "The documents do not say. The closest passages are quoted below."
        return self.text

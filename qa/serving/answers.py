"""Answers as JSON and as plain text: the one shape every interface returns."""

from __future__ import annotations

import re
from dataclasses import asdict

from ..types import Answer, Passage


def answer_to_json(answer: Answer) -> dict:
    """The answer as JSON-ready data: every field of ``Answer`` (quotes with their file
    offsets) plus ``message``, the sentence to show, and ``unsure``, whether an answer is given
    at a confidence below even odds. ``qa ask --json``, ``POST /v1/ask``, the
    OpenAI endpoint's ``qa`` field and MCP's ``ask`` tool all return exactly this."""
    data = asdict(answer)
    data["message"] = answer.message
    data["unsure"] = answer.unsure
    return data


def passage_to_json(passage: Passage, relevance: float) -> dict:
    """A retrieved passage: its file, offsets (``text[start:end]`` of the document's
    extracted text), location and retrieval relevance in [0, 1]."""
    return {
        "source": passage.source,
        "paragraph": passage.paragraph,
        "start": passage.start,
        "end": passage.end,
        "location": passage.location,
        "relevance": round(float(relevance), 4),
        "text": passage.text,
    }


# Markdown's punctuation: chat front-ends render replies as Markdown, so text from documents is
# backslash-escaped (CommonMark then shows it literally; a document cannot add an image, a
# link or HTML to the reply).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!<>|~])")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+!<>|~])")


def literal(text: str) -> str:
    """``text`` as Markdown that renders as exactly this text."""
    return _MARKDOWN.sub(r"\\\1", text)


def _citation(number: int, quote) -> str:
    where = f"{quote.source}, paragraph {quote.paragraph}, chars {quote.start}-{quote.end}"
    if quote.location:
        where += f", {' '.join(quote.location.split())}"
    body = " ".join(quote.text.split())
    return f"[{number}] {literal(where)}\n> {literal(body)}"


def answer_as_text(answer: Answer) -> str:
    """The answer as a chat reply in Markdown (document text escaped): its first line is the answer (or the
    decline), then the confidence, then the numbered quotes with file and location. A chat
    history replayed to the engine keeps only that first line (see ``reply_answer``)."""
    lines = [literal(answer.message), ""]
    if answer.text is None:
        lines.append(f"Probability that the documents hold no answer: {round(100 * answer.score)}%")
    else:
        meta = f"Confidence: {round(100 * answer.score)}%"
        if answer.sources:
            meta += " (stated in " + literal(", ".join(answer.sources)) + ")"
        lines.append(meta)
    if answer.standalone:
        lines.append(f"Answered as: {literal(answer.standalone)}")
    if answer.quotes:
        lines += ["", "Sources:" if answer.text is not None else "Closest passages:"]
        lines += [_citation(i, q) for i, q in enumerate(answer.quotes, 1)]
    return "\n".join(lines)


def reply_answer(reply: str) -> str:
    """The answer a chat reply made by ``answer_as_text`` gave: its first line, unescaped."""
    return _ESCAPED.sub(r"\1", reply.strip().split("\n", 1)[0].strip())

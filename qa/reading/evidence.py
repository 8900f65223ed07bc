"""Evidence about a candidate answer that the span model does not see: whether its form fits
what the question asks for, and whether it sits on a line of page furniture (a dateline, a
byline, a timestamp) rather than in the text.

Every rule here works on the form of the question and the answer (question words, digits,
capitals, month names), never on words of particular documents.
"""

from __future__ import annotations

import re

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december", "jan", "feb", "mar", "apr", "jun",
          "jul", "aug", "sep", "sept", "oct", "nov", "dec")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "fifteen", "twenty", "thirty", "forty", "fifty", "hundred",
                "hundreds", "thousand", "thousands", "million", "millions", "billion", "billions",
                "dozen", "dozens", "half", "once", "twice", "single", "both", "several", "no")
RELATIVE_TIMES = ("today", "yesterday", "tomorrow", "now", "recently", "soon", "later", "ago",
                  "last", "next", "early", "late", "century", "decade", "year", "years", "week",
                  "weeks", "month", "months", "spring", "summer", "autumn", "fall", "winter",
                  "morning", "evening", "night", "before", "after", "during", "since", "until")

_NUMBER_Q = re.compile(r"\b(how (many|much|long|old|far|big|large|tall|high|often|fast|deep|wide|heavy)|"
                       r"what (percentage|percent|number|proportion|share|amount|size|version)|"
                       r"which version)\b", re.I)
_DATE_Q = re.compile(r"^\W*(when|since when)\b|\b(what|which|in what|in which) "
                     r"(year|date|day|month|decade|century|time)\b", re.I)
_AGENT_Q = re.compile(r"^\W*(who|whom|whose)\b|\b(by whom|to whom)\b", re.I)
_FUTURE_Q = re.compile(r"\b(when|what year|what date|which year) (will|shall|(is|are)\b[^?]{0,60}?"
                       r"\b(going|expected|due|set|scheduled|planned|likely) to)\b", re.I)
_DIGIT = re.compile(r"\d")
_YEARISH = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_TIME = re.compile(r"\b\d{1,2}[:.]\d{2}\b")
_BYLINE = re.compile(r"^\W*(by|updated|published|posted|last (updated|modified)|written by|"
                     r"photo|image|credit|source|share|read more)\b", re.I)


def expected_type(question: str) -> str | None:
    """What the question asks for by its form: "number", "date", "agent" or None."""
    if _NUMBER_Q.search(question):
        return "number"
    if _DATE_Q.search(question):
        return "date"
    if _AGENT_Q.search(question):
        return "agent"
    return None


def asks_future(question: str) -> bool:
    """Whether the question asks when something will happen ("When will ...?")."""
    return bool(_FUTURE_Q.search(question))


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def fits_type(kind: str | None, answer: str) -> float:
    """+1 when the answer has the form ``kind`` asks for, -1 when it lacks it, 0 without a
    ``kind``."""
    if kind is None:
        return 0.0
    words = _words(answer)
    if kind == "number":
        ok = bool(_DIGIT.search(answer)) or any(w in NUMBER_WORDS for w in words)
    elif kind == "date":
        ok = (bool(_DIGIT.search(answer)) or any(w in MONTHS or w in DAYS for w in words)
              or any(w in RELATIVE_TIMES for w in words))
    else:  # an agent: a name is capitalised
        ok = any(t[:1].isupper() for t in answer.split())
    return 1.0 if ok else -1.0


def line_around(text: str, start: int, end: int) -> str:
    """The line of ``text`` holding ``text[start:end]`` (its first line when it spans more)."""
    a = text.rfind("\n", 0, start) + 1
    b = text.find("\n", start)
    return text[a : b if b != -1 else len(text)]


def is_furniture_line(line: str) -> bool:
    """Whether ``line`` reads as page furniture rather than text: a dateline or timestamp
    ("Mar 29, 2024 - 07:01"), a byline ("By Jane Doe | Reuters"), a credit or share line. A
    line of prose (a sentence with lower-case words beyond dates) is not."""
    stripped = line.strip()
    if not stripped or len(stripped) > 120:
        return False
    if _BYLINE.match(stripped):
        return True
    words = _words(stripped)
    # Prose has lower-case words; furniture is names, dates and times.
    prose = [w for w in _WORD.findall(stripped) if w.islower() and len(w) > 3
             and w not in MONTHS and w not in DAYS and w not in ("updated", "published", "posted")]
    dated = bool(_TIME.search(stripped) or _YEARISH.search(stripped)
                 or any(w in MONTHS for w in words))
    return dated and not prose and not stripped.endswith((".", "?", "!"))

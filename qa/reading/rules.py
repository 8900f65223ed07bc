"""The rule-based reader (`--reader rules`): picks the short answer by hand-written rules.

No trained reading-comprehension model is needed. Candidates (entities, noun phrases, number
expressions) are found when the index is built; at query time each is scored by how well its
sentence matches the question (IDF-weighted term coverage), how close it sits to the matched
question terms, whether its type fits the question, and how well its passage was retrieved.
Answers stated by several documents are merged and their agreement raises the confidence.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..tokens import STOPWORDS, stem, words
from ..types import Answer, Hit, Quote
from .annotations import TYPES, Annotator
from .answers import answer_key, quotes_for
from .question import COMPATIBLE, FORM_WORDS, HEAD_TYPES, QuestionAnalysis, analyse

# Scoring weights (sum to 1) and the no-answer threshold, set on our own question sets under
# tests/data (never on the seeds' dev questions).
W_SENTENCE = 0.50
W_PASSAGE = 0.10
W_PROXIMITY = 0.20
W_RETRIEVAL = 0.20
TYPE_FLOOR = 0.4
REQUIRED_PENALTY = 0.6
HEADLINE_FACTOR = 0.6  # sentence match kept by a document's opening headline  # share of sentence match lost when all of the question's names are absent  # a candidate of the wrong type keeps this share of its score
COUNTED_MISMATCH = 0.25  # fit kept by a number that counts something other than "how many X"
FOCUS_BONUS = 1.25  # fit of a name the text calls an X, for "which X" (may exceed 1)
MIN_CONFIDENCE = 0.45
MIN_SENTENCE_COVERAGE = 0.45
AGREEMENT_BONUS = 0.08
MAX_OPEN_ANSWER_WORDS = 14
MAX_CANDIDATES = 60  # best candidates kept for grouping
TOKEN_CACHE_PASSAGES = 2048  # at most ~200 MB with their word matrices
# A question word the passage does not contain gets this share of its weight from the most
# similar word of a sentence (static word vectors, see wordvectors.py) when their cosine
# reaches SOFT_MATCH_MIN_COSINE. Chosen on our own question sets (0.3-0.5 all gave the same).
SOFT_MATCH_CREDIT = 0.5
SOFT_MATCH_MIN_COSINE = 0.4
ACRONYM_MENTIONS = 50  # passages mentioning an acronym searched for its expansion


_DATE_TYPES = frozenset({"DATE", "TIME", "DATE_PATTERN"})
_BARE_NUMBER_TYPES = frozenset({"NUM", "CARDINAL"})
_COUNT_TYPES = frozenset({"NUM", "CARDINAL", "NUM_UNIT", "QUANTITY"})
# Words of number expressions that name no counted thing ("more than", "million", "-strong").
_QUANTITY_WORDS = frozenset(
    "more fewer less than over under about around approximately roughly nearly almost some up "
    "least most as many much few estimated just well close upwards only exactly precisely "
    "hundred hundreds thousand thousands million millions billion billions trillion dozen "
    "dozens strong one two three four five six seven eight nine ten eleven twelve fifteen "
    "twenty thirty forty fifty sixty seventy eighty ninety".split()
)
_NUMERIC_ANSWERS = frozenset({"COUNT", "AMOUNT", "MEASURE", "MONEY", "PERCENT"})


@dataclass
class PassageTokens:
    text: str
    title: list[tuple[int, int, str]]  # (start, end, stem) of the document title's words
    sentences: list[list[int]]  # [start, end] per sentence, passage-relative
    sentence_tokens: list[list[tuple[int, int, str]]]
    rows: list[list[int]]  # candidate rows (see analysis.CANDIDATE_COLUMNS)
    candidate_terms: list[list[str]]  # each candidate's stems
    # Per-row features that do not depend on the question, computed on first use.
    _names: dict[int, bool] = field(default_factory=dict)
    _descriptors: dict[int, frozenset[str]] = field(default_factory=dict)
    _place_cues: dict[int, float] = field(default_factory=dict)
    _words: tuple[list[str], list[np.ndarray]] | None = None
    _word_matrix: np.ndarray | None = None

    def sentence_words(self) -> tuple[list[str], list[np.ndarray]]:
        """The passage's distinct alphabetic content words, and for each sentence the indices
        of its words among them (for soft matching)."""
        if self._words is None:
            position: dict[str, int] = {}
            per_sentence = []
            for toks in self.sentence_tokens:
                idx = []
                for a, b, _ in toks:
                    w = self.text[a:b].lower()
                    if len(w) > 2 and w.isalpha():
                        idx.append(position.setdefault(w, len(position)))
                per_sentence.append(np.array(sorted(set(idx)), dtype=np.int64))
            self._words = (list(position), per_sentence)
        return self._words

    def word_matrix(self, wordvectors) -> np.ndarray:
        """Vectors of ``sentence_words`` as rows (~80 KB for a passage of 50 distinct words)."""
        if self._word_matrix is None:
            self._word_matrix = wordvectors.matrix(self.sentence_words()[0])
        return self._word_matrix

    def is_name(self, i: int) -> bool:
        if i not in self._names:
            r = self.rows[i]
            self._names[i] = _is_name(self.text, r[0], r[1], self.sentences[r[5]][0])
        return self._names[i]

    def descriptors(self, i: int) -> frozenset[str]:
        if i not in self._descriptors:
            self._descriptors[i] = _descriptor_stems(self.text, self.rows[i][0], self.rows[i][1])
        return self._descriptors[i]

    def place_cue(self, i: int) -> float:
        if i not in self._place_cues:
            self._place_cues[i] = _place_cue(self.text, self.rows[i][0], self.rows[i][1])
        return self._place_cues[i]

    @functools.cached_property
    def inside_dates(self) -> frozenset[int]:
        """Rows of bare numbers that are part of a date or time ("18" in "Sunday, 18 May")."""
        spans = [(r[0], r[1]) for r in self.rows if TYPES[r[2]] in _DATE_TYPES]
        return frozenset(
            i
            for i, r in enumerate(self.rows)
            if TYPES[r[2]] in _BARE_NUMBER_TYPES
            and any(a <= r[0] and r[1] <= b and (a, b) != (r[0], r[1]) for a, b in spans)
        )

    @functools.cached_property
    def title_stems(self) -> frozenset[str]:
        return frozenset(t for _, _, t in self.title)

    @functools.cached_property
    def sentence_stems(self) -> list[frozenset[str]]:
        return [frozenset(t for _, _, t in toks) for toks in self.sentence_tokens]


@dataclass
class Candidate:
    hit_rank: int
    passage_id: int
    start: int  # passage-relative
    end: int
    text: str
    score: float
    coverage: float  # IDF-weighted share of the question's terms around this candidate
    plain_coverage: float = 0.0  # unweighted share, for agreement between sources
    key: str = ""
    sources: set[str] = field(default_factory=set)


def _same_term(a: str, b: str) -> bool:
    if a == b:
        return True
    n = min(len(a), len(b))
    return n >= 5 and abs(len(a) - len(b)) <= 2 and a[: n - 1] == b[: n - 1]


class TermWeights:
    """IDF of question terms (BM25's), from the index's document frequencies."""

    def __init__(self, index):
        self.index = index

    def __call__(self, term: str) -> float:
        n = len(self.index)
        df = self.index.document_frequency(term)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))


class RulesReader:
    """The rule-based reader: typed candidates found at index time, scored by rules."""

    depth = 8  # fused passages the reader looks into (plus each retriever's own best)

    def __init__(self, use_spacy: bool = True):
        self.name = "rules" if use_spacy else "rules:fast"
        self._annotator = Annotator(use_spacy=use_spacy)
        self._token_cache: dict[tuple[str, int], PassageTokens] = {}

    def annotator(self):
        return self._annotator

    def read(self, question: str, query_vector, index, hits, top_k: int) -> Answer:
        qa = analyse(question)
        weights = TermWeights(index)
        q_weight = {t: weights(t) for t in _question_terms(qa)}
        matcher = TermMatcher([*q_weight, *qa.terms, *qa.required])
        soft = SoftMatcher.for_question(qa, q_weight, index.model_id)
        candidates: list[Candidate] = []
        if qa.answer_type == "ACRONYM":
            hits = hits + _other_mentions(index, qa, hits)
        for rank, hit in enumerate(hits):
            candidates.extend(
                self._passage_candidates(qa, index, hit, rank, q_weight, matcher, soft)
            )
        best = _merge(candidates, index)
        if best is None:
            return Answer(question, None, 0.0, _quotes(index, hits, None, top_k))
        confidence = min(1.0, best.score + AGREEMENT_BONUS * (len(best.sources) - 1))
        confidence *= min(1.0, best.coverage / MIN_SENTENCE_COVERAGE)
        if confidence < MIN_CONFIDENCE:
            return Answer(question, None, round(1 - confidence, 3), _quotes(index, hits, None, top_k))
        quotes = _quotes(index, hits, best, top_k)
        return Answer(question, best.text, round(confidence, 3), quotes, sorted(best.sources))

    # -- candidates ------------------------------------------------------------------

    def _passage_tokens(self, index, passage_id: int, passage) -> PassageTokens:
        """The passage's sentences, candidates and stemmed tokens, cached per index version:
        only the question changes between calls, so this work is done once per passage."""
        key = (index.version, passage_id)
        cached = self._token_cache.get(key)
        if cached is not None:
            return cached
        text = passage.text
        has_tables = "sentences" in index.tables and "candidates" in index.tables
        sentences = index.rows("sentences", passage_id).tolist() if has_tables else []
        rows = index.rows("candidates", passage_id).tolist() if has_tables else []
        sent_toks = [_stems(text[a:b], offset=a) for a, b in sentences]
        cand_terms = [[t for _, _, t in _stems(text[r[0] : r[1]])] for r in rows]
        cached = PassageTokens(text, _stems(passage.title), sentences, sent_toks, rows, cand_terms)
        if len(self._token_cache) >= TOKEN_CACHE_PASSAGES:
            self._token_cache.clear()
        self._token_cache[key] = cached
        return cached

    def _passage_candidates(self, qa, index, hit, rank, q_weight, matcher, soft=None):
        passage = index.passage(hit.passage_id)
        text = passage.text
        tokens = self._passage_tokens(index, hit.passage_id, passage)
        sentences, rows, sent_toks = tokens.sentences, tokens.rows, tokens.sentence_tokens
        title_found = matcher.found(tokens.title_stems)
        sent_found = [matcher.found(stems) for stems in tokens.sentence_stems]
        total = sum(q_weight.values()) or 1.0
        found_anywhere = title_found.union(*sent_found)
        sent_soft = soft.found(tokens, found_anywhere) if soft else [set()] * len(sent_found)
        passage_cov = _weighted(found_anywhere, q_weight, total) + SOFT_MATCH_CREDIT * _weighted(
            set().union(*sent_soft), q_weight, total
        )
        headline_end = _headline_end(passage) if passage.paragraph == 1 else 0
        sent_info = []
        for i, toks in enumerate(sent_toks):
            near = title_found.union(*sent_found[max(0, i - 1) : i], *sent_found[i + 1 : i + 2])
            inside = sent_found[i]
            window = inside | near
            soft_inside = sent_soft[i] - window
            soft_near = set().union(*sent_soft[max(0, i - 1) : i + 2]) - window - soft_inside
            cov = (
                _weighted(inside, q_weight, total)
                + 0.5 * _weighted(near - inside, q_weight, total)
                + SOFT_MATCH_CREDIT * _weighted(soft_inside, q_weight, total)
                + 0.5 * SOFT_MATCH_CREDIT * _weighted(soft_near, q_weight, total)
            )
            missing = sum(r not in window for r in qa.required)
            cov *= 1.0 - REQUIRED_PENALTY * missing / max(1, len(qa.required))
            if headline_end and sentences[i][0] < headline_end:
                cov *= HEADLINE_FACTOR  # telegraphic headline grammar misleads extraction
            plain = sum(q in window for q in q_weight) / max(1, len(q_weight))
            matched = [(a, b) for a, b, t in toks if matcher(t) in q_weight] if inside else []
            sent_info.append((sentences[i][0], sentences[i][1], toks, matched, cov, plain))
        retrieval = hit.score
        out = []

        def emit(start, end, type_fit, sentence_idx, cand_terms=None):
            a, b, toks, matched, cov, plain = sent_info[sentence_idx]
            prox = _proximity(start, end, matched)
            if cand_terms is None:
                cand_terms = [t for _, _, t in _stems(text[start:end])]
            echo = sum(matcher(t) is not None for t in cand_terms)
            echo_factor = 1.0 - 0.5 * echo / max(1, len(cand_terms))
            context = (
                W_SENTENCE * cov
                + W_PASSAGE * passage_cov
                + W_PROXIMITY * prox
                + W_RETRIEVAL * retrieval
            )
            type_factor = TYPE_FLOOR + (1 - TYPE_FLOOR) * type_fit  # > 1 for a named focus
            score = context * type_factor * echo_factor
            out.append(
                Candidate(rank, hit.passage_id, start, end, text[start:end], score, cov, plain)
            )

        if not sentences:
            return out
        if qa.answer_type == "ACRONYM":
            for start, end in _acronym_expansions(text, qa.acronym or ""):
                emit(start, end, 1.0, _sentence_of(sentences, start))
            return out
        if qa.answer_type is None:
            for i, (a, b, toks, _, cov, _) in enumerate(sent_info):
                if cov <= 0:
                    continue
                span = _open_answer(qa, text, a, b, toks)
                if span:
                    emit(span[0], span[1], 0.6, i)
            return out
        fits = COMPATIBLE.get(qa.answer_type, {})
        numeric = qa.answer_type in _NUMERIC_ANSWERS
        for i, (row, cand_terms) in enumerate(zip(rows, tokens.candidate_terms)):
            start, end, code, head_start, head_end, sentence_idx = row
            ctype = TYPES[code]
            fit = fits.get(ctype, 0.0)
            sentence_start = sentences[sentence_idx][0]
            if numeric and ctype in _BARE_NUMBER_TYPES and (
                i in tokens.inside_dates or _is_label_number(text, start, sentence_start)
            ):
                continue  # "18" of "18 May", "1" of "Line 1": not a quantity
            if fit <= 0 and ctype != "NP" and not (qa.focus or qa.answer_type == "PLACE"):
                continue
            name = tokens.is_name(i)
            if ctype == "NP" and name:
                fit = max(fit, fits.get("PROPN", 0.0))
            head_is_focus = qa.focus and ctype in ("NP", "PROPN") and _same_term(
                stem(text[head_start:head_end].lower()), qa.focus
            )
            if head_is_focus:
                fit = max(fit, 0.9)
            if name and qa.answer_type == "PLACE" and fit < 1.0:
                fit = max(fit, tokens.place_cue(i))
            if name and (
                head_is_focus
                or qa.focus
                and any(_same_term(d, qa.focus) for d in tokens.descriptors(i))
            ):
                fit = max(fit, 0.9) * FOCUS_BONUS
            if fit <= 0 or sentence_idx >= len(sent_info):
                continue
            if not cand_terms or all(matcher(t) is not None for t in cand_terms):
                continue  # never answer with the question's own words
            if qa.counted and ctype in _COUNT_TYPES:
                fit *= _counted_fit(qa, text, start, end, soft)
            emit(start, end, fit, sentence_idx, cand_terms)
        return out


def _headline_end(passage) -> int:
    """Where the headline-like blocks that open a document end inside its first passage."""
    if not passage.title:
        return 0
    end = 0
    remaining = passage.title.split()
    for m in re.finditer(r"\S+", passage.text):
        if not remaining:
            break
        if m.group().lstrip("#") == remaining[0]:
            remaining.pop(0)
            end = m.end()
        elif m.group().strip("#"):
            break
    return end


class TermMatcher:
    """Which question term (if any) a passage token matches, memoised per question."""

    def __init__(self, question_terms: list[str]):
        self.terms = list(dict.fromkeys(question_terms))
        self.exact = set(self.terms)
        # _same_term only pairs words of 5+ letters sharing their first 4: bucket by those.
        self.by_prefix: dict[str, list[str]] = {}
        for q in self.terms:
            if len(q) >= 5:
                self.by_prefix.setdefault(q[:4], []).append(q)
        self.cache: dict[str, str | None] = {}

    def __call__(self, token: str) -> str | None:
        if token in self.exact:
            return token
        hit = self.cache.get(token, "")
        if hit == "":
            near = self.by_prefix.get(token[:4], ()) if len(token) >= 5 else ()
            hit = next((q for q in near if _same_term(token, q)), None)
            self.cache[token] = hit
        return hit

    def found(self, stems: frozenset[str]) -> set[str]:
        """The question terms matched by a set of stems."""
        hits = self.exact & stems
        if self.by_prefix:
            hits |= {m for t in stems if t[:4] in self.by_prefix and (m := self(t)) is not None}
        return hits


class SoftMatcher:
    """Which question terms a sentence says in other words: for every term the passage does
    not contain, the most similar word of each sentence by static word vectors."""

    def __init__(self, wordvectors, terms: list[str], surfaces: list[str], counted: list[str]):
        self.wv = wordvectors
        self.terms = terms
        self.vectors = wordvectors.matrix(surfaces)  # (terms, dimension)
        self.counted = wordvectors.matrix(counted)  # what "how many" counts, once a question

    @classmethod
    def for_question(cls, qa: QuestionAnalysis, q_weight: dict[str, float], model_id: str):
        from . import wordvectors

        wv = wordvectors.for_model(model_id)
        if wv is None:
            return None
        surface: dict[str, str] = {}
        for _, _, w in words(qa.text):
            w = w.replace("’", "'")
            if w.isalpha() and len(w) > 2 and w not in STOPWORDS:
                surface.setdefault(stem(w), w)
        terms = [t for t in q_weight if t in surface]
        if not terms and not qa.counted:
            return None
        return cls(wv, terms, [surface[t] for t in terms], [w for _, w in qa.counted])

    def close_to_counted(self, words: list[str]) -> bool:
        """Whether any of the words is close to what the question counts."""
        if not len(self.counted) or not words:
            return False
        return float((self.wv.matrix(words) @ self.counted.T).max()) >= SOFT_MATCH_MIN_COSINE

    def found(self, tokens: PassageTokens, exact: set[str]) -> list[set[str]]:
        """Per sentence, the terms (absent from ``exact``) that it matches softly."""
        todo = [i for i, t in enumerate(self.terms) if t not in exact]
        n = len(tokens.sentence_tokens)
        if not todo:
            return [set()] * n
        vocabulary, per_sentence = tokens.sentence_words()
        if not vocabulary:
            return [set()] * n
        sims = tokens.word_matrix(self.wv) @ self.vectors[todo].T  # (words, terms)
        hit = sims >= SOFT_MATCH_MIN_COSINE
        out = []
        for idx in per_sentence:
            rows = hit[idx].any(axis=0) if len(idx) else ()
            out.append({self.terms[todo[j]] for j, h in enumerate(rows) if h})
        return out


def _weighted(found: set[str], q_weight: dict[str, float], total: float) -> float:
    return sum(w for q, w in q_weight.items() if q in found) / total


_LOCATIVE = re.compile(
    r"\b(?:in|at|near|into|from|across|through|outside|inside|towards?|along|beside|"
    r"around|throughout)\s+(?:the\s+)?$",
    re.IGNORECASE,
)


def _is_label_number(text: str, start: int, sentence_start: int) -> bool:
    """A number that names rather than counts: right after a capitalised word ("Line 1",
    "Terminal 2", "Apollo 11") that does not open the sentence."""
    m = re.search(r"\b([A-Z][\w’'-]*)\s+$", text[max(sentence_start, start - 30) : start])
    return m is not None and start - len(m.group()) > sentence_start


def _counted_fit(qa: QuestionAnalysis, text: str, start: int, end: int, soft) -> float:
    """For "how many X": 1 when the words a number counts are X ("1,200 passengers" for
    "how many passengers", also "riders" by word vectors), COUNTED_MISMATCH when they are
    something else ("12 range countries" for "how many snow leopards", "six-week" for "how
    many members"), and 1 when nothing follows the number ("... rose to 1,200.")."""
    inner = [w for w in re.findall(r"[A-Za-z][\w’'-]*", text[start:end]) if not w[0].isdigit()]
    unit = [w for w in inner[-1:] if w.lower() not in _QUANTITY_WORDS]  # "six-week": "six-week"
    clause = re.split(r"[.,;:()!?]", text[end : end + 60], maxsplit=1)[0]
    after = re.findall(r"[A-Za-z][\w’'-]*", clause)[:3]
    after = after[: next((i for i, w in enumerate(after) if w.lower() in STOPWORDS), 3)]
    words = [p for w in unit + after for p in w.lower().split("-") if p and not p.isdigit()]
    words = [w for w in words if w not in _QUANTITY_WORDS and w not in STOPWORDS]
    if not words:
        return 1.0
    counted = {stem for stem, _ in qa.counted}
    for w in words:
        t = stem(w)
        if t in counted or any(_same_term(t, c) for c in counted):
            return 1.0
    if soft is not None and soft.close_to_counted(words):
        return 1.0
    return COUNTED_MISMATCH


def _descriptor_stems(text: str, start: int, end: int) -> frozenset[str]:
    """Words the text uses to say what a name is: in apposition ("Porto, the second-largest
    city") or before it ("the city of Porto", "the river Douro"), stemmed. A name described
    by a question's focus noun answers "which X"."""
    after = re.match(r"\s*,\s*(?:the|a|an)\s+((?:[\w’'-]+\s+){0,3}[\w’'-]+)", text[end : end + 80])
    before = re.search(
        r"\b(?:the|a|an)\s+([\w’'-]+)\s+(?:of\s+)?$", text[max(0, start - 40) : start]
    )
    words = (after.group(1).split() if after else []) + ([before.group(1)] if before else [])
    return frozenset(stem(w.lower()) for w in words)


def _place_cue(text: str, start: int, end: int) -> float:
    """How much a name looks like a place from its words: a place noun as its head
    ("Highgate Cemetery") or a locative preposition before it ("buried in ...")."""
    words = text[start:end].split()
    head = words[-1].lower() if words else ""
    if HEAD_TYPES.get(head) == "PLACE" or HEAD_TYPES.get(head.rstrip("s")) == "PLACE":
        return 0.9
    return 0.8 if _LOCATIVE.search(text[max(0, start - 20) : start]) else 0.0


def _is_name(text: str, start: int, end: int, sentence_start: int) -> bool:
    """A capitalised phrase that does not merely open its sentence: likely a proper name."""
    words = text[start:end].split()
    if words and words[0].lower() in ("the", "a", "an"):
        words = words[1:]
    if not words or not words[0][:1].isupper():
        return False
    return start > sentence_start or any(w[:1].isupper() for w in words[1:])


def _question_terms(qa: QuestionAnalysis) -> list[str]:
    """Terms an answer's sentence should match: not the question's form words, and not the
    type noun of "which X" (the answer is an X; the word itself rarely appears)."""
    skip = set(FORM_WORDS)
    if qa.focus and qa.focus not in qa.required:
        skip.add(qa.focus)
    return list(dict.fromkeys(t for t in qa.terms if t not in skip))


def _stems(text: str, offset: int = 0) -> list[tuple[int, int, str]]:
    return [
        (offset + s, offset + e, stem(w.replace("’", "'")))
        for s, e, w in words(text)
        if w not in STOPWORDS
    ]


def _proximity(start: int, end: int, matched: list[tuple[int, int]]) -> float:
    outside = [m for m in matched if m[1] <= start or m[0] >= end]
    if not outside:
        return 0.0
    gap = min(start - e if e <= start else s - end for s, e in outside)
    return 1.0 / (1.0 + max(gap, 0) / 25.0)


def _sentence_of(sentences, pos: int) -> int:
    for i, (a, b) in enumerate(sentences):
        if a <= pos < b:
            return i
    return max(0, len(sentences) - 1)


def _other_mentions(index, qa: QuestionAnalysis, hits: list[Hit]) -> list[Hit]:
    """Passages mentioning an acronym that retrieval ranked lower: its definition is often
    at a first mention that says little else about the question."""
    seen = {h.passage_id for h in hits}
    ids, scores = index.sparse_search(qa.terms, ACRONYM_MENTIONS)
    return [Hit(p, 0.0, None, float(sc)) for p, sc in zip(ids.tolist(), scores) if p not in seen]


def _acronym_expansions(text: str, acronym: str) -> list[tuple[int, int]]:
    """Spans in text whose words' initials spell the acronym, next to the acronym itself."""
    letters = [c.lower() for c in acronym if c.isalnum()]
    found = []
    for m in re.finditer(rf"(?<![\w-]){re.escape(acronym)}s?(?![\w-])", text):
        # Look at the words before the acronym ("... System, or NASAMS" / "... System (NASAMS)")
        # and after it ("NASAMS (National ...)").
        before = text[max(0, m.start() - 200) : m.start()]
        tokens = list(re.finditer(r"[\w’']+", before))
        span = _match_initials(tokens[::-1], letters[::-1], reverse=True)
        if span:
            found.append((max(0, m.start() - 200) + span[0], max(0, m.start() - 200) + span[1]))
        elif text[m.start() - 1 : m.start()] == "(" and text[m.end() : m.end() + 1] == ")":
            # "polyethylene terephthalate (PET)": letters inside words count too.
            start = _long_form_start(acronym, text, m.start() - 1)
            if start is not None:
                found.append((start, len(text[: m.start() - 1].rstrip())))
        after = text[m.end() : m.end() + 200]
        tokens = list(re.finditer(r"[\w’']+", after))
        span = _match_initials(tokens, letters, reverse=False)
        if span:
            found.append((m.end() + span[0], m.end() + span[1]))
    return found


def _long_form_start(short: str, text: str, end: int) -> int | None:
    """Where the long form of ``short`` that ends at ``end`` begins, by Schwartz and Hearst's
    algorithm ("A simple algorithm for identifying abbreviation definitions in biomedical
    text", 2003): the short form's characters appear in order, right to left, in the long
    form, its first at the start of a word; at most min(len + 5, 2 * len) words back."""
    letters = [c.lower() for c in short if c.isalnum()]
    if len(letters) < 2:
        return None
    words = list(re.finditer(r"\S+", text[max(0, end - 300) : end]))
    words = words[-min(len(letters) + 5, 2 * len(letters)) :]
    if not words:
        return None
    base = max(0, end - 300) + words[0].start()
    window = text[base:end].rstrip().lower()
    i = len(window) - 1
    for n, c in enumerate(reversed(letters)):
        first = n == len(letters) - 1
        while i >= 0 and (
            window[i] != c or (first and i > 0 and window[i - 1].isalnum())
        ):
            i -= 1
        if i < 0:
            return None
        i -= 1
    return base + i + 1


_MINOR = {"of", "the", "and", "for", "to", "in", "on", "de", "du", "des", "la", "le", "a", "&"}


def _match_initials(tokens, letters, reverse: bool):
    """Match acronym letters to word initials (hyphenated parts count), skipping minor words."""
    parts = []  # (initial, token index) for every hyphen part
    for i, tok in enumerate(tokens):
        pieces = re.split(r"[-]", tok.group())
        if reverse:
            pieces = pieces[::-1]
        for p in pieces:
            if p:
                parts.append((p, i))
    li = 0
    first = last = None
    for p, i in parts:
        if li == len(letters):
            break
        if p.lower()[0] == letters[li]:
            li += 1
            first = i if first is None else first
            last = i
        elif p.lower() in _MINOR and first is not None or first is None and li == 0 and p.lower() in {"or", "and", "the", "a", "an"}:
            continue
        else:
            return None
    if li < len(letters) or first is None:
        return None
    a, b = (tokens[last], tokens[first]) if reverse else (tokens[first], tokens[last])
    return a.start(), b.end()


_CLAUSE_END = re.compile(r"[,;:.!?(—–]|\s-\s|\b(?:which|who|because|while|whereas|although)\b")
_REASON = re.compile(
    r"\b(?:because(?: of)?|due to|owing to|thanks to|as a result of|caused by|in order to|"
    r"so that|so as to|since|as)\s+",
    re.IGNORECASE,
)
_MANNER = re.compile(r"\b(?:by|through|via|using)\s+", re.IGNORECASE)


def _open_answer(qa: QuestionAnalysis, text: str, a: int, b: int, toks) -> tuple[int, int] | None:
    """The shortest clause answering an open question inside sentence [a, b)."""
    sentence = text[a:b]
    start = None
    if qa.wh == "why":
        m = _REASON.search(sentence)
        start = a + m.end() if m else None
    elif qa.wh == "how":
        m = _MANNER.search(sentence)
        start = a + m.end() if m else None
    elif qa.verb:
        verb_hits = [e for s, e, t in toks if _same_term(t, qa.verb)]
        start = verb_hits[0] if verb_hits else None
    if start is None:
        return None
    q_terms = set(qa.terms)
    # Skip what the question already says ("received, in secrecy, ...").
    pos = start
    while True:
        m = re.match(r"[\s,;:]+|[\w’'-]+", text[pos:b])
        if not m:
            break
        piece = m.group()
        if piece.strip(" ,;:") == "" or piece.lower() in STOPWORDS and piece.lower() in (
            "in", "on", "at", "by", "to", "from", "that", "has", "have", "had", "was", "were",
            "been", "is", "are", "be",
        ) or stem(piece.lower()) in q_terms:
            pos += m.end()
            continue
        break
    end_match = _CLAUSE_END.search(text, pos, b)
    end = end_match.start() if end_match else b
    span_words = list(re.finditer(r"\S+", text[pos:end]))
    if not span_words:
        return None
    if len(span_words) > MAX_OPEN_ANSWER_WORDS:
        end = pos + span_words[MAX_OPEN_ANSWER_WORDS - 1].end()
    end = pos + len(text[pos:end].rstrip(" ,;:.")) if end > pos else end
    return (pos, end) if end > pos else None


def _merge(candidates: list[Candidate], index) -> Candidate | None:
    """Group candidates that state the same answer; the best group wins, its agreement counts."""
    if not candidates:
        return None
    candidates = sorted(candidates, key=lambda c: -c.score)[:MAX_CANDIDATES]
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        c.key = answer_key(c.text)
        groups.setdefault(c.key, []).append(c)
    # A short answer contained in a longer one of the same group family ("Umerov" inside
    # "Rustem Umerov") supports it.
    keys = sorted((k for k in groups if not k.startswith("#")), key=len, reverse=True)
    for short in keys:
        padded = f" {short} "
        for long in keys:
            if len(long) > len(short) and long in groups and padded in f" {long} ":
                groups[long].extend(groups.pop(short))
                break
    best_group = None
    best_score = -1.0
    for members in groups.values():
        top = max(members, key=lambda c: c.score)
        sources = {index.passage(c.passage_id).source for c in members}
        strong = {index.passage(c.passage_id).source for c in members if _supports(c, top)}
        score = top.score + AGREEMENT_BONUS * (len(strong) - 1) * 0.5
        if score > best_score:
            best_score, best_group = score, (top, members, strong or sources)
    top, members, sources = best_group
    top.sources = set(sources)
    top.members = [c for c in members if _supports(c, top)]  # type: ignore[attr-defined]
    return top


def _supports(c: Candidate, top: Candidate) -> bool:
    """A candidate backs the group's best one when its own context also matches well."""
    return c is top or (c.score >= 0.4 * top.score and c.plain_coverage >= 0.5)


def _quotes(index, hits, best: Candidate | None, top_k: int) -> list[Quote]:
    """Passages stating the answer first (answer span marked), then the rest by retrieval."""
    spans = []
    if best is not None:
        members = sorted(getattr(best, "members", [best]), key=lambda c: -c.score)
        spans = [(c.passage_id, c.start, c.end) for c in [best] + members]
    return quotes_for(index, hits, spans, top_k)

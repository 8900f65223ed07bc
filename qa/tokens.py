"""Word tokens for BM25 and term matching: lower-cased, stop words dropped, lightly stemmed."""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import chain

_TOKEN = re.compile(r"[^\W_]+(?:[-'’.][^\W_]+)*", re.UNICODE)

STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "s", "t", "don", "shall", "may", "might", "must", "also"]
)


# Irregular past forms of common English verbs, mapped to their base form.
_IRREGULAR = dict(
    pair.split(":")
    for pair in ["arose:arise", "awoke:awake", "was:be", "were:be", "been:be", "became:become", "began:begin", "begun:begin", "bent:bend", "bitten:bite", "bled:bleed", "blew:blow", "blown:blow", "broke:break", "broken:break", "bred:breed", "brought:bring", "built:build", "burnt:burn", "bought:buy", "caught:catch", "chose:choose", "chosen:choose", "came:come", "crept:creep", "dealt:deal", "dug:dig", "did:do", "done:do", "drew:draw", "drawn:draw", "dreamt:dream", "drank:drink", "drunk:drink", "drove:drive", "driven:drive", "ate:eat", "eaten:eat", "fallen:fall", "fed:feed", "fought:fight", "fled:flee", "flew:fly", "flown:fly", "forbade:forbid", "forgot:forget", "forgotten:forget", "forgave:forgive", "froze:freeze", "frozen:freeze", "got:get", "gotten:get", "gave:give", "given:give", "went:go", "gone:go", "grew:grow", "grown:grow", "had:have", "heard:hear", "hid:hide", "hidden:hide", "held:hold", "kept:keep", "knelt:kneel", "knew:know", "known:know", "laid:lay", "led:lead", "leapt:leap", "learnt:learn", "lent:lend", "lost:lose", "made:make", "meant:mean", "met:meet", "paid:pay", "rode:ride", "ridden:ride", "rang:ring", "risen:rise", "ran:run", "said:say", "seen:see", "sought:seek", "sold:sell", "sent:send", "shook:shake", "shaken:shake", "shone:shine", "shot:shoot", "sang:sing", "sung:sing", "sunk:sink", "sat:sit", "slept:sleep", "slid:slide", "spoken:speak", "spent:spend", "spun:spin", "sprang:spring", "stood:stand", "stole:steal", "stolen:steal", "stuck:stick", "stung:sting", "struck:strike", "strove:strive", "swore:swear", "sworn:swear", "swept:sweep", "swam:swim", "swum:swim", "swung:swing", "took:take", "taken:take", "taught:teach", "tore:tear", "torn:tear", "told:tell", "thought:think", "threw:throw", "thrown:throw", "understood:understand", "undertook:undertake", "woke:wake", "woken:wake", "wore:wear", "worn:wear", "won:win", "withdrew:withdraw", "withdrawn:withdraw", "wrote:write", "written:write", "overtook:overtake", "overtaken:overtake", "oversaw:oversee", "overseen:oversee", "rebuilt:rebuild"]
)

_SPELLING = (("ence", "ense"), ("ise", "ize"), ("yse", "yze"), ("our", "or"), ("tre", "ter"))


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """A deliberately light English stemmer: possessives, plurals, -ing/-ed, a final -e, and
    British spellings folded to American ones (defence/defense, centre/center)."""
    w = word
    for apostrophe in ("'s", "’s"):
        w = w.removesuffix(apostrophe)
    if not w.isalpha():
        return w
    w = _IRREGULAR.get(w, w)
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("sses", "shes", "ches", "xes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "lsz" and word.endswith(("ing", "ed")):
        w = w[:-1]  # running -> run, stopped -> stop
    if len(w) >= 5 and w.endswith(("ian", "ia")):
        w = w[: -3 if w.endswith("ian") else -2]  # Russia/Russian, India/Indian
    for british, american in _SPELLING:
        if len(w) > 5 and w.endswith(british):
            w = w[: -len(british)] + american
            break
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    return w


def words(text: str) -> list[tuple[int, int, str]]:
    """(start, end, lower-cased word) for every word in text."""
    return [(m.start(), m.end(), m.group().lower()) for m in _TOKEN.finditer(text)]


def terms(text: str) -> list[str]:
    """Index terms of text: stemmed content words."""
    return list(chain.from_iterable(map(_word_terms, _TOKEN.findall(text))))


@lru_cache(maxsize=200_000)
def _word_terms(word: str) -> tuple[str, ...]:
    """The index terms of one word as matched (before lower-casing); cached, because a
    build meets the same words again and again (this made BM25 terms 5x faster)."""
    w = word.lower().replace("’", "'")
    if w in STOPWORDS:
        return ()
    if "-" not in w:
        return (stem(w),)
    # "surface-to-air" also matches "air"
    return (stem(w), *(stem(p) for p in w.split("-") if p and p not in STOPWORDS))

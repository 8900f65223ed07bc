"""The default reader: our own extractive QA model (MiniLM-L6 fine-tuned by ``training/``),
int8, run by onnxruntime with no torch.

Each retrieved passage is read as one window, ``[CLS] question [SEP] passage [SEP]``, of at
most ``MAX_LENGTH`` tokens; a longer passage is cut to the window holding most of the
question's words. All windows go through the model in one batch. In each window the model
scores every span (start + end logit) against "no answer" (the [CLS] token); the best span
over all windows is the answer, and a calibrator fitted on the training data's validation
split, read as the pipeline reads (``model/calibration.json``, ``training/calibrate.py``),
turns its features (``span_features``) into the probability that it is right.
Below the calibrated threshold the reader declines. Spans that say the same thing in several
documents are merged into one answer citing them all.

The model folder holds ``reader.onnx`` (int8), ``tokenizer.json``, ``calibration.json`` and
the model card (MODEL_CARD.md), which says how they were made.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config
from ..errors import QAError
from ..tokens import STOPWORDS
from ..types import Answer, Hit
from .answers import answer_key, normalize_answer, quotes_for, stating_passages
from .evidence import asks_future, expected_type, fits_type, is_furniture_line, line_around

MODEL_DIR = Path(__file__).resolve().parent / "model"
MAX_LENGTH = 256  # tokens per window, question included
MAX_ANSWER_TOKENS = 30
TOP_SPANS = 20  # best starts and ends combined per window
WINDOW_STEP = 16  # tokens between the candidate windows of a long passage
ENCODING_CACHE = 4096  # passages whose tokens are kept between questions


@dataclass(frozen=True)
class Span:
    """The best span of one window: passage-relative character offsets and its scores."""

    window: int
    start: int
    end: int
    margin: float  # span logit minus no-answer logit
    log_prob: float  # log P(span) under the window's start and end softmaxes


FEATURES = ("margin", "log_prob", "agree", "rival", "rank", "answer_words", "repeats_question",
            "windows_answering", "relevance", "type_fit", "furniture")
FLOOR = -30.0  # a margin's value where there is none


def span_features(question: str, i: int, spans: list[Span], answers: list[str],
                  texts: list[str] | None = None,
                  relevance: list[float] | None = None) -> dict[str, float]:
    """What the calibrator knows of ``spans[i]`` among the best spans of all the windows read
    (``answers[j]`` is the text of ``spans[j]``, ``texts[w]`` window ``w``'s passage and
    ``relevance[w]`` its retrieval score): its own scores, how many other windows say the
    same (``agree``), the best margin of a window saying something else (``rival``), the rank
    of its passage among those read and its relevance, its length, the share of its words
    the question already says (an answer that repeats the question is rarely the answer), how
    many windows prefer a span to "no answer", whether its form fits what the question asks
    for (``type_fit``: a number for "how many", a date for "when", a name for "who") and
    whether it stands on a dateline, byline or other furniture line (``furniture``)."""
    span, key = spans[i], answer_key(answers[i])
    line = line_around(texts[span.window], span.start, span.end) if texts else ""
    keys = [answer_key(a) for a in answers]
    words = normalize_answer(answers[i]).split()
    asked = set(normalize_answer(question).split())
    return {
        "margin": max(FLOOR, span.margin),
        "log_prob": max(FLOOR, span.log_prob),
        "agree": math.log1p(sum(1 for j, k in enumerate(keys) if j != i and k == key)),
        "rival": max([FLOOR] + [s.margin for s, k in zip(spans, keys) if k != key]),
        "rank": float(span.window),
        "answer_words": math.log1p(len(words)),
        "repeats_question": sum(w in asked for w in words) / max(1, len(words)),
        "windows_answering": float(sum(1 for s in spans if s.margin > 0)),
        "relevance": float(relevance[span.window]) if relevance else 0.0,
        "type_fit": fits_type(expected_type(question), answers[i]),
        "furniture": float(is_furniture_line(line)),
    }


@dataclass(frozen=True)
class Calibration:
    """Logistic models over a span's features (``span_features``): P(answer right) and
    P(no answer), each weights for ``features`` then a bias."""

    features: tuple[str, ...]
    right: tuple[float, ...]
    none: tuple[float, ...]
    threshold: float  # answer when P(right) reaches it
    guess_floor: float  # below the threshold, name the best span as a guess from this P(right)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        d = json.loads(path.read_text(encoding="utf-8"))
        features = tuple(d["features"])
        unknown = set(features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}")
        if not len(d["right"]) == len(d["none"]) == len(features) + 1:
            raise ValueError("the weights do not match the features")
        threshold = float(d["threshold"])
        return cls(features, tuple(d["right"]), tuple(d["none"]), threshold,
                   float(d.get("guess_floor", threshold)))

    def _logistic(self, w: tuple[float, ...], x: dict[str, float]) -> float:
        z = sum(wi * x[f] for wi, f in zip(w, self.features)) + w[-1]
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def p_right(self, x: dict[str, float]) -> float:
        return self._logistic(self.right, x)

    def p_none(self, x: dict[str, float]) -> float:
        return self._logistic(self.none, x)


class SpanModel:
    """The ONNX model and its tokenizer: (question, texts) -> each text's best span."""

    def __init__(self, model_dir: Path = MODEL_DIR, model_file: str = "reader.onnx",
                 max_length: int = MAX_LENGTH):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = Path(model_dir) / model_file
        if not path.is_file():
            raise QAError(f"reader model {path} is missing; reinstall qa or run `make train`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(4, os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        except Exception as e:  # noqa: BLE001 - any load failure is one message
            raise QAError(f"cannot load reader model {path}: {e}".splitlines()[0]) from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        vocab = self.tokenizer.get_vocab()
        self.cls, self.sep = vocab["[CLS]"], vocab["[SEP]"]
        self._common = {vocab[w] for w in STOPWORDS if w in vocab}
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._encodings: dict[str, tuple[list[int], np.ndarray]] = {}
        self._encodings_lock = threading.Lock()

    def _encode(self, text: str) -> tuple[list[int], np.ndarray]:
        """A passage's token ids and character offsets, kept for the next questions."""
        found = self._encodings.get(text)
        if found is None:
            enc = self.tokenizer.encode(text, add_special_tokens=False)
            found = (enc.ids, np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2))
            with self._encodings_lock:
                if len(self._encodings) >= ENCODING_CACHE:
                    self._encodings.pop(next(iter(self._encodings)))
                self._encodings[text] = found
        return found

    def _window(self, q_ids: list[int], text: str) -> tuple[list[int], np.ndarray]:
        """Context token ids and their character offsets, cut to the best window."""
        ids, offsets = self._encode(text)
        budget = max(16, self.max_length - len(q_ids) - 3)
        if len(ids) <= budget:
            return ids, offsets
        wanted = {t for t in q_ids if t not in self._common}
        hits = np.array([t in wanted for t in ids], dtype=np.int32)
        sums = np.concatenate([[0], np.cumsum(hits)])
        where = float(np.flatnonzero(hits).mean()) if hits.any() else 0.0
        starts = list(range(0, len(ids) - budget + 1, WINDOW_STEP)) + [len(ids) - budget]
        # Most question words; among equals, the window centred nearest to them.
        best = max(starts, key=lambda s: (sums[s + budget] - sums[s],
                                          -abs(s + budget / 2 - where)))
        return ids[best : best + budget], offsets[best : best + budget]

    def best_spans(self, question: str, texts: list[str]) -> list[Span | None]:
        """The best answer span of each text (None where no span fits)."""
        if not texts:
            return []
        q_ids = self.tokenizer.encode(question, add_special_tokens=False).ids
        q_ids = q_ids[: self.max_length // 2]
        rows, offsets = [], []
        for text in texts:
            ctx, off = self._window(q_ids, text)
            rows.append([self.cls, *q_ids, self.sep, *ctx, self.sep])
            offsets.append(off)
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        first = len(q_ids) + 2  # position of the first context token
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
            types[i, first : len(r)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        start_logits, end_logits = self.session.run(
            None, {k: v for k, v in feeds.items() if k in self._inputs})
        return [
            _best_span(w, start_logits[w], end_logits[w], first, len(offsets[w]), offsets[w])
            for w in range(len(rows))
        ]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - m - math.log(float(np.exp(x - m).sum()))


def _best_span(window: int, start: np.ndarray, end: np.ndarray, first: int, n_ctx: int,
               offsets: np.ndarray) -> Span | None:
    if n_ctx == 0:
        return None
    length = first + n_ctx + 1  # [CLS] question [SEP] context [SEP]
    start, end = start[:length].astype(np.float64), end[:length].astype(np.float64)
    null = start[0] + end[0]
    log_s, log_e = _log_softmax(start), _log_softmax(end)
    ctx_s, ctx_e = start[first : first + n_ctx], end[first : first + n_ctx]
    top_s = np.argsort(-ctx_s)[:TOP_SPANS]
    top_e = np.argsort(-ctx_e)[:TOP_SPANS]
    pair = ctx_s[top_s][:, None] + ctx_e[top_e][None, :]
    gap = top_e[None, :] - top_s[:, None]
    pair = np.where((gap >= 0) & (gap < MAX_ANSWER_TOKENS), pair, -np.inf)
    k = int(np.argmax(pair))
    if not np.isfinite(pair.flat[k]):
        return None
    i, j = int(top_s[k // pair.shape[1]]), int(top_e[k % pair.shape[1]])
    a, b = int(offsets[i, 0]), int(offsets[j, 1])
    if b <= a:
        return None
    return Span(window, a, b, float(pair.flat[k] - null),
                float(log_s[first + i] + log_e[first + j]))


@dataclass(frozen=True)
class Reading:
    """The windows' best spans and their texts, their order by margin, and the best one's
    features."""

    spans: list[Span]
    answers: list[str]
    order: list[int]
    features: dict[str, float]

    @property
    def text(self) -> str:
        return self.answers[self.order[0]]


class TrainedReader:
    """The default reader (``--reader trained``); see the module's docstring."""

    name = "trained"
    depth = 4  # fused passages read, besides each retriever's own best two

    def __init__(self, model_dir: str | Path = MODEL_DIR, min_confidence: float | str | None = None):
        """``min_confidence``: answer when P(right) reaches it (default ``QA_MIN_CONFIDENCE``,
        else the calibrated threshold)."""
        self.model_dir = Path(model_dir)
        self.min_confidence = _probability(
            (config.MIN_CONFIDENCE or None) if min_confidence is None else min_confidence)
        self._model: SpanModel | None = None
        self._calibration: Calibration | None = None
        self._lock = threading.Lock()

    def annotator(self):
        return None  # reads passage texts only

    def span_model(self) -> SpanModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = SpanModel(self.model_dir)
        return self._model

    def calibration(self) -> Calibration:
        if self._calibration is None:
            with self._lock:
                if self._calibration is None:
                    try:
                        self._calibration = Calibration.load(self.model_dir / "calibration.json")
                    except (OSError, ValueError, KeyError, TypeError) as e:
                        raise QAError(f"reader calibration in {self.model_dir} is unreadable: "
                                      f"{e}".splitlines()[0]) from None
        return self._calibration

    def threshold(self) -> float:
        """The P(right) an answer needs: ``min_confidence``, else the calibrated threshold."""
        if self.min_confidence is not None:
            return self.min_confidence
        return self.calibration().threshold

    def judge(self, question: str, texts: list[str],
              relevance: list[float] | None = None) -> Reading | None:
        """The best span over ``texts`` (their retrieval scores in ``relevance``) and its
        features; None where no text has a span. A span on a dateline or byline is never the
        answer to a question about the future ("When will ...?"): that date says when the
        page was written."""
        spans = [s for s in self.span_model().best_spans(question, texts) if s is not None]
        if asks_future(question):
            spans = [s for s in spans
                     if not is_furniture_line(line_around(texts[s.window], s.start, s.end))]
        if not spans:
            return None
        answers = [texts[s.window][s.start : s.end] for s in spans]
        order = sorted(range(len(spans)), key=lambda i: -spans[i].margin)
        return Reading(spans, answers, order,
                       span_features(question, order[0], spans, answers, texts, relevance))

    def read(self, question: str, query_vector, index, hits: list[Hit], top_k: int) -> Answer:
        texts = [index.text(h.passage_id) for h in hits]
        reading = self.judge(question, texts, [h.score for h in hits])
        calibration, threshold = self.calibration(), self.threshold()
        if reading is None:
            return Answer(question, None, 1.0, quotes_for(index, hits, [], top_k))
        p_right = calibration.p_right(reading.features)
        if p_right < min(threshold, calibration.guess_floor):
            p_none = round(calibration.p_none(reading.features), 3)
            return Answer(question, None, p_none, quotes_for(index, hits, [], top_k))
        best = reading.spans[reading.order[0]]
        stated = stating_passages(question, reading.text, (best.window, best.start, best.end),
                                  texts, reading.spans, reading.answers)
        located = [(hits[w].passage_id, a, b) for w, a, b in stated]
        if p_right < threshold:
            p_none = round(calibration.p_none(reading.features), 3)
            return Answer(question, None, p_none, quotes_for(index, hits, located, top_k),
                          guess=reading.text, guess_confidence=round(p_right, 3))
        sources = []
        for pid, _, _ in located:
            source = index.passage(pid).source
            if source not in sources:
                sources.append(source)
        return Answer(question, reading.text, round(p_right, 3),
                      quotes_for(index, hits, located, top_k), sources)


def _probability(value: float | str | None) -> float | None:
    """``value`` as a probability (None stays None); anything else is a one-line QAError."""
    if value is None:
        return None
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if not 0.0 <= p <= 1.0:
        raise QAError(f"minimum confidence must be a number from 0 to 1, not {value!r}")
    return p

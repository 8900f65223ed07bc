"""Optional neural reader: a transformers extractive question-answering model.

``QA(..., reader="transformers:MODEL")`` with a hub id (already cached) or a local folder.
Long passages are read in overlapping windows; answer spans are mapped from tokens back to
character offsets in the source file, so answers keep the same contract as the built-in reader.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from ..errors import QAError
from ..types import Answer
from .answers import quotes_for

MAX_LENGTH = 384
STRIDE = 128
MAX_ANSWER_TOKENS = 30
MIN_CONFIDENCE = 0.5


class TransformersReader:
    depth = 4

    def __init__(self, model: str, max_length: int = MAX_LENGTH, stride: int = STRIDE,
                 max_answer_tokens: int = MAX_ANSWER_TOKENS):
        self.model_id = model
        self.max_length = max_length
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        self.name = f"transformers:{model}"
        self._loaded = None
        self._lock = threading.Lock()

    def annotator(self):
        return None  # reads passage texts only

    def _load(self):
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    try:
                        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

                        tokenizer = AutoTokenizer.from_pretrained(self.model_id)
                        model = AutoModelForQuestionAnswering.from_pretrained(self.model_id)
                    except Exception as e:  # noqa: BLE001 - any load failure is one message
                        raise QAError(
                            f"cannot load reader model {self.model_id!r}: {e}".splitlines()[0]
                        ) from None
                    if not getattr(tokenizer, "is_fast", False):
                        raise QAError(f"reader model {self.model_id!r} needs a fast tokenizer")
                    model.eval()
                    self._loaded = (tokenizer, model)
        return self._loaded

    def best_span(self, question: str, context: str) -> tuple[int, int, float, float] | None:
        """(start, end, span logit, no-answer logit) of the best answer in context, in chars."""
        import torch

        tokenizer, model = self._load()
        enc = tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping").numpy()
        enc.pop("overflow_to_sample_mapping", None)
        with torch.no_grad():
            out = model(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
        starts, ends = out.start_logits.numpy(), out.end_logits.numpy()
        best = None
        null = -math.inf
        for w in range(starts.shape[0]):
            seq = enc.sequence_ids(w)
            ctx = np.array([s == 1 for s in seq])
            null = max(null, float(starts[w, 0] + ends[w, 0]))
            s_logits = np.where(ctx, starts[w], -np.inf)
            e_logits = np.where(ctx, ends[w], -np.inf)
            top_s = np.argsort(-s_logits)[:20]
            top_e = np.argsort(-e_logits)[:20]
            for i in top_s:
                for j in top_e:
                    if j < i or j - i + 1 > self.max_answer_tokens or not (ctx[i] and ctx[j]):
                        continue
                    score = float(s_logits[i] + e_logits[j])
                    if best is None or score > best[2]:
                        best = (int(offsets[w, i, 0]), int(offsets[w, j, 1]), score)
        if best is None or best[1] <= best[0]:
            return None
        return best[0], best[1], best[2], null

    def read(self, question: str, query_vector, index, hits, top_k: int) -> Answer:
        found = []
        for hit in hits[: self.depth]:
            p = index.passage(hit.passage_id)
            span = self.best_span(question, p.text)
            if span is not None:
                found.append((span, hit, p))
        if not found:
            return Answer(question, None, 0.0, quotes_for(index, hits, [], top_k))
        (start, end, score, null), hit, p = max(found, key=lambda f: f[0][2] - f[0][3])
        confidence = 1.0 / (1.0 + math.exp(-(score - null)))
        if confidence < MIN_CONFIDENCE:
            return Answer(question, None, round(1 - confidence, 3),
                          quotes_for(index, hits, [], top_k))
        return Answer(question, p.text[start:end], round(confidence, 3),
                      quotes_for(index, hits, [(hit.passage_id, start, end)], top_k), [p.source])

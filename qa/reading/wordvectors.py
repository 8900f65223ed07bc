"""Word similarity from the embedding model's own input layer, for paraphrased questions.

A sentence-transformers model starts with a table of static vectors, one per word piece. Mean-
centred and averaged over a word's pieces, they place near-synonyms close ("founded" and
"established" 0.55, "sales" and "revenue" 0.34) and unrelated words near zero ("sales" and
"bridge" -0.01), which is enough for the reader to give partial credit to a question word the
passage says differently. The table is memory-mapped straight from the model's
``model.safetensors`` (read without torch); models stored otherwise get no word vectors.
"""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import numpy as np

MAX_CACHED_WORDS = 50_000
_TABLE = "embeddings.word_embeddings.weight"


class WordVectors:
    """Unit vectors of words, from a model folder with model.safetensors and tokenizer.json."""

    def __init__(self, model_dir: str | Path):
        from tokenizers import Tokenizer

        folder = Path(model_dir)
        self.table = _safetensors_array(folder / "model.safetensors", _TABLE)
        self.mean = self.table.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.dimension = int(self.table.shape[1])
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def vector(self, word: str) -> np.ndarray:
        """The mean-centred, L2-normalised average of the word's piece vectors."""
        return self.matrix([word])[0]

    def matrix(self, words: list[str]) -> np.ndarray:
        """Vectors of words as rows, shape (len(words), dimension)."""
        if not words:
            return np.zeros((0, self.dimension), dtype=np.float32)
        new = [w for w in dict.fromkeys(words) if w not in self._cache]
        if new:  # one batch through the tokenizer, not a call per word
            pieces = self.tokenizer.encode_batch(new, add_special_tokens=False)
            with self._lock:
                if len(self._cache) + len(new) > MAX_CACHED_WORDS:
                    self._cache.clear()
                for word, encoding in zip(new, pieces):
                    v = np.asarray(self.table[encoding.ids], dtype=np.float32).mean(axis=0)
                    v -= self.mean
                    self._cache[word] = v / (np.linalg.norm(v) or 1.0)
        cache = self._cache
        return np.stack([cache[w] if w in cache else self.vector(w) for w in words])


def _safetensors_array(path: Path, name: str) -> np.ndarray:
    """One float32 tensor of a safetensors file, memory-mapped (the format: an 8-byte header
    length, a JSON header of dtypes, shapes and byte ranges, then the raw data)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    meta = header[name]
    if meta["dtype"] != "F32":
        raise ValueError(f"{path}: {name} is {meta['dtype']}, not F32")
    start, end = meta["data_offsets"]
    rows, cols = meta["shape"]
    if end - start != rows * cols * 4:
        raise ValueError(f"{path}: {name} has {end - start} bytes for shape {rows}x{cols}")
    return np.memmap(path, dtype="<f4", mode="r", offset=8 + length + start, shape=(rows, cols))


_loaded: dict[str, WordVectors | None] = {}
_loaded_lock = threading.Lock()


def for_model(model_id: str) -> WordVectors | None:
    """The word vectors of an embedding model, loaded once per process; None where the model's
    files hold none that can be read."""
    if model_id not in _loaded:
        with _loaded_lock:
            if model_id not in _loaded:
                from ..embedding import resolve_model

                try:
                    _loaded[model_id] = WordVectors(resolve_model(model_id))
                except Exception:  # noqa: BLE001 - any unreadable model simply has no vectors
                    _loaded[model_id] = None
    return _loaded[model_id]

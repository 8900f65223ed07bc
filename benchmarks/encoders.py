"""Passage encoders side by side: speed and agreement with sentence-transformers fp32.

    .venv/bin/python -m benchmarks.encoders                      # 400 paragraphs, 300 questions
    .venv/bin/python -m benchmarks.encoders --passages 300 --runs 3 --only st-fp32,onnx-int8
    .venv/bin/python -m benchmarks.encoders --build 1000 --base e5fdce2   # whole builds

Every candidate encodes the same fixed sample of paragraphs (distinct
contexts of ../shared/training/spans-mixed.jsonl.gz drawn with a fixed seed) in one process, taking
turns, ``--runs`` times; the table gives the median passages/s and its ratio to the
sentence-transformers fp32 reference measured in the same run (the machine is shared, so
ratios are what compare). Quality: the cosine of each candidate's vectors to the reference's
(mean, min), and recall@10 of an exact inner-product index of the candidate's vectors against
one of the reference's, for questions of the same file (query vectors from the ONNX query
encoder, as when answering).

``--build N`` times whole builds instead: N sampled paragraphs written 20 to a file, indexed
by the file store in fresh processes, taking turns: this tree's build (the build encoder),
with ``--standard`` the same with ``QA_BUILD_ENCODER=standard``, the tree of git revision ``--base`` (the code
before), and, as the reference, sentence-transformers fp32 encoding the built passages'
texts. Reported: seconds, peak RSS, and each build's ratio to the reference encode.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPANS = ROOT.parent / "shared" / "training" / "spans-mixed.jsonl.gz"

EncodeFn = Callable[[Sequence[str]], np.ndarray]


def load_sample(path: Path, passages: int, questions: int,
                seed: int = 0) -> tuple[list[str], list[str]]:
    """``passages`` distinct contexts of a spans file drawn with a fixed seed, and up to
    ``questions`` questions asked about them (one per context, cycling, so they spread
    over the sample)."""
    contexts: dict[str, list[str]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            contexts.setdefault(row["context"], []).append(row["question"])
    chosen = random.Random(seed).sample(sorted(contexts), passages)
    asked: list[str] = []
    for depth in range(max(len(contexts[c]) for c in chosen)):
        for c in chosen:
            if depth < len(contexts[c]) and len(asked) < questions:
                asked.append(contexts[c][depth])
    return chosen, asked


class OnnxInt8Encoder:
    """The ONNX export with its MatMul weights quantised to int8 (dynamic quantisation,
    VNNI kernels), run in the build encoder's token-length batches."""

    def __init__(self, folder: Path):
        import onnxruntime as ort
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from qa import bulk_encoder as be
        from qa.onnx_encoder import MODEL_FILE, read_meta

        meta = read_meta(folder)
        self.dimension, self.pad_id = int(meta["dimension"]), int(meta["pad_id"])
        self.input_names = list(meta["input_names"])
        self.tokenizer = be.unpadded_tokenizer(folder, int(meta["max_seq_length"]))
        model = Path(tempfile.mkdtemp(prefix="qa-int8-")) / "model-int8.onnx"
        quantize_dynamic(folder / MODEL_FILE, model, weight_type=QuantType.QInt8,
                         per_channel=True, extra_options={"DefaultTensorType": TensorProto.FLOAT})
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model), options,
                                            providers=["CPUExecutionProvider"])

    def _run(self, ids, mask, types) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(None, {n: feed[n] for n in self.input_names})[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from qa import bulk_encoder as be

        return be.encode_batched(self.tokenizer, texts, self.dimension, self.pad_id, self._run)


def _bf16_1x2(path: str, tokens: int) -> Callable[[], EncodeFn]:
    from qa import bulk_encoder as be

    return lambda: be.TorchBulkEncoder(path, threads=1, workers=2,
                                       tokens_per_batch=tokens).encode


def candidates(encoder, only: set[str] | None) -> dict[str, EncodeFn]:
    """Name -> a function encoding texts into normalised float32 vectors."""
    from qa import bulk_encoder as be

    st = encoder.model

    def st_fp32(texts):
        return st.encode(list(texts), batch_size=32, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)

    makers: dict[str, Callable[[], EncodeFn]] = {
        "st-fp32": lambda: st_fp32,
        "onnx-fp32": lambda: encoder.onnx.encode,
        "onnx-int8": lambda: OnnxInt8Encoder(encoder.onnx.folder).encode,
        # T x W: T torch threads per batch, W batches at once; "8k": at most 8,192 padded
        # tokens a batch, "2k" 2,048 (the default), "1k" 1,024, "512" 512
        "torch-fp32-1x2-8k": lambda: be.TorchBulkEncoder(encoder.path, dtype="float32",
                                                         threads=1, workers=2,
                                                         tokens_per_batch=8192).encode,
        "torch-fp32-1x2-2k": lambda: be.TorchBulkEncoder(encoder.path, dtype="float32",
                                                         threads=1, workers=2,
                                                         tokens_per_batch=2048).encode,
        "torch-fp32-2x1-2k": lambda: be.TorchBulkEncoder(encoder.path, dtype="float32",
                                                         threads=2, workers=1,
                                                         tokens_per_batch=2048).encode,
        "torch-bf16-2x1-8k": lambda: be.TorchBulkEncoder(encoder.path, threads=2, workers=1,
                                                         tokens_per_batch=8192).encode,
        "torch-bf16-1x1-8k": lambda: be.TorchBulkEncoder(encoder.path, threads=1, workers=1,
                                                         tokens_per_batch=8192).encode,
        "torch-autocast-1x2-8k": lambda: be.TorchBulkEncoder(encoder.path, dtype="autocast",
                                                             threads=1, workers=2,
                                                             tokens_per_batch=8192).encode,
        **{f"torch-bf16-1x2-{name}": _bf16_1x2(encoder.path, tokens)
           for name, tokens in (("8k", 8192), ("2k", 2048), ("1k", 1024), ("512", 512))},
    }
    return {name: make() for name, make in makers.items()
            if only is None or name in only or name == "st-fp32"}


def recall_at_10(reference: np.ndarray, candidate: np.ndarray, queries: np.ndarray) -> float:
    """Mean overlap of the top 10 passages by inner product, candidate index vs reference."""
    import faiss

    def top10(vectors: np.ndarray) -> np.ndarray:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index.search(np.ascontiguousarray(queries, dtype=np.float32), 10)[1]

    ref, got = top10(reference), top10(candidate)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, got)]))


BUILD_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from qa.embedding import Encoder
from qa.index import files
docs, index = Path(sys.argv[2]), Path(sys.argv[3])
encoder = Encoder(cache_dir=index.parent / "encoders")
encoder.dimension
encoder.encode(["warm"])  # the ONNX export exists already: this only loads it
t0 = time.perf_counter()
getattr(encoder, "bulk", None)  # the build encoder, where the tree has one: loaded untimed,
load = time.perf_counter() - t0  # like the models of the reference and the ONNX encoder
t0 = time.perf_counter()
manifest, report = files.build(docs, index, encoder)
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "passages": report.passages, "peak_rss_mb": rss,
                  "encoder_load_seconds": load}))
"""

REFERENCE_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from qa.embedding import Encoder
from qa.index import files
texts = [p.search_text for p in map(files.load(sys.argv[2]).passage, range(int(sys.argv[3])))]
model = Encoder(backend="torch").model
model.encode(texts[:8])
t0 = time.perf_counter()
model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "passages": len(texts), "peak_rss_mb": rss}))
"""


def run_child(code: str, *args: str, env: dict | None = None) -> dict:
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                         text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def whole_builds(paragraphs: int, runs: int, base: str | None, standard: bool) -> None:
    """Time whole builds of the same corpus against the reference encode (see the doc)."""
    import shutil
    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="qa-builds-"))
    texts, _ = load_sample(SPANS, paragraphs, 0)
    docs = tmp / "docs"
    docs.mkdir()
    for i in range(0, len(texts), 20):
        (docs / f"doc{i:05d}.txt").write_text("\n\n".join(texts[i : i + 20]), encoding="utf-8")
    trees = {"this tree": str(ROOT)}
    if base:
        trees["base " + base] = str(tmp / "base")
        (tmp / "base").mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", base, "qa"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp / "base")], input=archive, check=True)
    from qa.embedding import Encoder

    Encoder(cache_dir=tmp / "encoders").encode(["export once"])
    setups = [("this tree", {})]
    if standard:
        setups.append(("this tree, standard encoder", {"QA_BUILD_ENCODER": "standard"}))
    if base:
        setups.append(("base " + base, {}))
    results: dict[str, list[dict]] = {name: [] for name, _ in [*setups, ("reference", {})]}
    for run in range(runs):
        for name, env in setups:
            shutil.rmtree(tmp / "index", ignore_errors=True)
            tree = trees[name] if name in trees else str(ROOT)
            results[name].append(run_child(BUILD_CHILD, tree, docs, tmp / "index", env=env))
            print(f"run {run + 1} {name}: {results[name][-1]}", flush=True)
        n = results["this tree"][-1]["passages"]
        results["reference"].append(run_child(REFERENCE_CHILD, str(ROOT), tmp / "index", n))
        print(f"run {run + 1} reference: {results['reference'][-1]}", flush=True)
    ref = statistics.median(r["seconds"] for r in results["reference"])
    print(f"\n{len(texts)} paragraphs, {n} passages, {runs} runs (medians)\n")
    print("| build | seconds | passages/s | reference encode / build | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        sec = statistics.median(r["seconds"] for r in rows)
        rss = max(r["peak_rss_mb"] for r in rows)
        print(f"| {name} | {sec:.1f} | {n / sec:.1f} | {ref / sec:.2f} | {rss:.0f} |")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=400)
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated candidate names (+ st-fp32)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--build", type=int, default=0, help="time whole builds of N paragraphs")
    ap.add_argument("--base", default=None, help="git revision whose build is timed beside")
    ap.add_argument("--standard", action="store_true",
                    help="also time this tree's build with QA_BUILD_ENCODER=standard")
    args = ap.parse_args()
    if args.build:
        whole_builds(args.build, args.runs, args.base, args.standard)
        return

    import torch

    from qa.embedding import Encoder

    torch.set_num_threads(2)
    texts, questions = load_sample(SPANS, args.passages, args.questions)
    encoder = Encoder(cache_dir=Path(tempfile.mkdtemp(prefix="qa-enc-")))
    tokens = [sum(e.attention_mask) for e in encoder.onnx.tokenizer.encode_batch(texts)]
    print(f"{len(texts)} paragraphs ({np.mean(tokens):.0f} tokens on average, "
          f"{sum(t >= encoder.onnx.max_seq_length for t in tokens)} truncated), "
          f"{len(questions)} questions; torch threads {torch.get_num_threads()}", flush=True)
    fns = candidates(encoder, set(args.only.split(",")) if args.only else None)
    for fn in fns.values():  # warm-up: first calls allocate and pick kernels
        fn(texts[:16])
    rates: dict[str, list[float]] = {name: [] for name in fns}
    vectors: dict[str, np.ndarray] = {}
    for run in range(args.runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            vectors[name] = np.asarray(fn(texts), dtype=np.float32)
            rates[name].append(len(texts) / (time.perf_counter() - t0))
            print(f"run {run + 1} {name:22s} {rates[name][-1]:7.1f} passages/s", flush=True)
    queries = np.stack([encoder.encode_query(q) for q in questions])
    reference = vectors["st-fp32"]
    ref_rate = statistics.median(rates["st-fp32"])
    rows = []
    for name in fns:
        cos = np.sum(vectors[name] * reference, axis=1)
        norms = np.linalg.norm(vectors[name], axis=1)
        rows.append({
            "candidate": name,
            "passages_per_s": statistics.median(rates[name]),
            "runs": rates[name],
            "ratio": statistics.median(rates[name]) / ref_rate,
            "ratio_per_run": [r / s for r, s in zip(rates[name], rates["st-fp32"])],
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "norm_max_error": float(np.abs(norms - 1).max()),
            "recall_at_10": recall_at_10(reference, vectors[name], queries),
        })
    print(f"\n| candidate | passages/s (median of {args.runs}) | ratio to st-fp32 "
          "| cosine mean / min | recall@10 |")
    print("|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['candidate']} | {r['passages_per_s']:.1f} | {r['ratio']:.2f} "
              f"| {r['cosine_mean']:.6f} / {r['cosine_min']:.6f} | {r['recall_at_10']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps({"passages": len(texts), "questions": len(questions),
                                        "mean_tokens": float(np.mean(tokens)), "rows": rows},
                                       indent=1))


if __name__ == "__main__":
    main()

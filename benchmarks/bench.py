"""Scale benchmark: build and query synthetic corpora of 1k .. 1M passages, with references.

    .venv/bin/python -m benchmarks.bench                       # 1k, 10k, 100k + seeds + cold start
    .venv/bin/python -m benchmarks.bench --sizes 1000,10000 --out benchmarks/out

For every size, in one run:

* a corpus is generated (``<out>/corpora/<n>``, 20 passages per file): sentences from a
  bigram Markov chain over the words of ``seeds/*.txt``, with random names and numbers, and
  planted facts ("The Varnel depot holds 4,312 crates.") whose questions have known answers;
* the index is built in a subprocess (build time, passages/s, index size, peak RSS);
* a second subprocess loads it and answers 50 planted questions through ``QA.answer()``
  (warm latency median / p95, accuracy, peak RSS while serving), measures recall@10 of the
  dense index against exact numpy search, and times plain references side by side:
  an exact numpy scan, a rank_bm25-style Python BM25 scan, and raw sentence-transformers
  (torch) encoding of the same passages against the ONNX encoder.

Above ``--real-encode-max`` passages (default 5,000) encoding everything is too slow on 2 cores: the
planted passages and a sample of 2,000 others are encoded for real, every other vector is a
sampled real vector plus Gaussian noise (cosine ~0.85 to it), and the build time is
extrapolated as (build time without encoding) + passages / (measured encode rate). Such
figures are marked "extrapolated" in the tables.

A "seeds" row builds ./seeds with the default reader (spaCy annotations) and times the
development questions; a cold-start section times ``qa ask`` in fresh processes beside a bare
``python`` and ``python -c "import numpy"``, and lists the biggest imports (-X importtime).

Outputs: ``<out>/results.md``, ``<out>/results.json``, ``<out>/bench.png`` (also copied to
``docs/bench.png``). Timings on a shared machine are noisy: compare the ratios to the
references measured in the same run rather than absolute figures between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
DEV_QUESTIONS = ROOT.parent / "shared" / "eval" / "seed_questions.jsonl"
GENERATOR_VERSION = 3
PASSAGES_PER_FILE = 20
FILES_PER_FOLDER = 1000
N_QUESTIONS = 50
SAMPLE_REAL = 2000  # passages encoded for real above --real-encode-max
NOISE_SIGMA = 0.62  # cosine(base, base + noise) ~ 1 / sqrt(1 + sigma^2) ~ 0.85
PYTHON_BM25_MAX = 100_000  # the pure-Python reference scan runs on at most this many passages
ENCODE_REF_PASSAGES = 192

# -- corpus generation ------------------------------------------------------------------------

FILLER_SYLLABLES = [
    "ar",
    "bel",
    "cor",
    "dan",
    "el",
    "fa",
    "gor",
    "hem",
    "is",
    "jor",
    "ka",
    "lem",
    "mo",
    "nor",
    "ost",
    "pa",
    "ril",
    "sen",
    "tor",
    "ul",
    "vi",
    "wen",
]
FACT_SYLLABLES = [
    "vax",
    "quel",
    "zin",
    "threx",
    "brol",
    "ysk",
    "plon",
    "druv",
    "kesh",
    "mav",
    "trel",
    "gwin",
    "yorv",
    "snel",
    "pex",
    "blar",
]
TITLE_NOUNS = ["bulletin", "report", "digest", "review", "notes", "dispatch", "survey", "briefing"]
FACTS = [
    # (fact sentence, question, value kind)
    ("The {n} depot holds {v} crates.", "How many crates does the {n} depot hold?", "count"),
    ("The {n} bridge is {v} metres long.", "How long is the {n} bridge?", "length"),
    ("The {n} archive was founded in {v}.", "When was the {n} archive founded?", "year"),
    ("The {n} festival drew {v} visitors last year.",
     "How many visitors did the {n} festival draw last year?", "count"),
    ("The {n} reservoir holds {v} million litres of water.",
     "How much water does the {n} reservoir hold?", "small"),
]  # fmt: skip
DECOYS = [
    "Inspectors visited the {n} depot on Tuesday.",
    "Traffic on the {n} bridge was slow again.",
    "Researchers at the {n} archive declined to comment.",
    "Tickets for the {n} festival went on sale.",
    "Engineers checked the {n} reservoir after the storm.",
]
FACT_RE = re.compile(
    r"\b(?:depot holds|bridge is \d|archive was founded in|festival drew|reservoir holds)\b"
)


class CorpusGenerator:
    """Seeded generator of seeds-like passages with planted, checkable facts."""

    def __init__(self, seed: int = 0, pool_sentences: int = 20_000):
        from qa.documents import load_document, scan_documents, sentence_spans, split_document

        self.rng = np.random.default_rng(seed)
        sentences: list[list[str]] = []
        lengths: list[int] = []
        for found in scan_documents(SEEDS):
            doc = load_document(SEEDS, found.source, found.path)
            for p in split_document(doc):
                lengths.append(len(p.text))
                for a, b in sentence_spans(p.text):
                    toks = p.text[a:b].replace("{", "").replace("}", "").split()
                    if len(toks) >= 4:
                        sentences.append(toks)
        self.passage_lengths = np.array(lengths)
        self.sentence_lengths = np.array([len(s) for s in sentences])
        starts: list[str] = [s[0] for s in sentences]
        follow: dict[str, list[str]] = {}
        for s in sentences:
            for a, b in zip(s, s[1:] + ["\x00"]):
                follow.setdefault(a, []).append(b)
        self.filler_names = self._names(FILLER_SYLLABLES, 5000, set())
        self.pool = [self._sentence(starts, follow) for _ in range(pool_sentences)]

    def _names(self, syllables: list[str], n: int, avoid: set[str]) -> list[str]:
        out: dict[str, None] = {}
        while len(out) < n:
            k = int(self.rng.integers(2, 4))
            name = "".join(syllables[int(i)] for i in self.rng.integers(0, len(syllables), k))
            name = name.capitalize()
            if name not in avoid:
                out[name] = None
        return list(out)

    def _sentence(self, starts, follow) -> list[str]:
        """A Markov sentence as static parts with placeholders: [text, kind, text, ...]."""
        target = int(self.rng.choice(self.sentence_lengths))
        while True:
            toks = [starts[int(self.rng.integers(len(starts)))]]
            while len(toks) < 2 * target + 10:
                nxt = follow.get(toks[-1])
                if not nxt:
                    break
                t = nxt[int(self.rng.integers(len(nxt)))]
                if t == "\x00":
                    break
                toks.append(t)
            if len(toks) >= 5:
                break
        if toks[-1][-1] not in ".!?":
            toks[-1] = toks[-1].rstrip(",;:") + "."
        parts: list[str] = [""]
        for i, t in enumerate(toks):
            core = t.strip(".,;:!?\"'“”‘’()")
            if i and core[:1].isupper() and core.isalpha() and self.rng.random() < 0.6:
                kind = "N"
            elif core.replace(",", "").isdigit() and self.rng.random() < 0.8:
                kind = "D"
            else:
                parts[-1] += t + " "
                continue
            pre, post = t.split(core, 1) if core else ("", t)
            parts[-1] += pre
            parts += [kind, post + " "]
        parts[-1] = parts[-1].rstrip()
        return parts

    def _fill(self, parts: list[str]) -> str:
        if len(parts) == 1:
            return parts[0]
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            if parts[i] == "N":
                # Zipf-like: a few names are everywhere, most are rare.
                j = min(int(self.rng.zipf(1.3)) - 1, len(self.filler_names) - 1)
                out.append(self.filler_names[j])
            else:
                out.append(str(int(self.rng.integers(2, 2000))))
            out.append(parts[i + 1])
        return "".join(out)

    def passage(self, extra: list[str] = ()) -> str:
        target = int(self.rng.choice(self.passage_lengths))
        sentences: list[str] = []
        size = 0
        while size < 0.9 * target or len(sentences) < 2:
            s = self._fill(self.pool[int(self.rng.integers(len(self.pool)))])
            sentences.append(s)
            size += len(s) + 1
        for e in extra:
            sentences.insert(int(self.rng.integers(0, len(sentences) + 1)), e)
        return " ".join(sentences)

    def write(self, n: int, folder: Path) -> dict:
        """Write n passages as documents of 20 passages; returns facts and questions."""
        n_facts = min(max(N_QUESTIONS, n // 20), 2000)
        fact_names = self._names(FACT_SYLLABLES, n_facts, set(self.filler_names))
        hosts = self.rng.choice(n, size=n_facts, replace=False)
        extra: dict[int, list[str]] = {}
        facts = []
        for name, host in zip(fact_names, hosts):
            t = int(self.rng.integers(len(FACTS)))
            sentence, question, kind = FACTS[t]
            x = {
                "count": lambda: f"{int(self.rng.integers(1000, 500_000)):,}",
                "length": lambda: str(int(self.rng.integers(40, 3000))),
                "year": lambda: str(int(self.rng.integers(1820, 2016))),
                "small": lambda: str(int(self.rng.integers(2, 900))),
            }[kind]()
            extra.setdefault(int(host), []).append(sentence.format(n=name, v=x))
            if self.rng.random() < 0.3:  # the name again, elsewhere, without the answer
                other = int(self.rng.integers(n))
                extra.setdefault(other, []).append(DECOYS[t].format(n=name))
            facts.append({"question": question.format(n=name), "answers": [x], "template": t})
        if folder.exists():
            shutil.rmtree(folder)
        chars = 0
        for f in range((n + PASSAGES_PER_FILE - 1) // PASSAGES_PER_FILE):
            sub = folder / f"part{f // FILES_PER_FOLDER:04d}"
            sub.mkdir(parents=True, exist_ok=True)
            title_name = self.filler_names[int(self.rng.integers(len(self.filler_names)))]
            noun = TITLE_NOUNS[int(self.rng.integers(len(TITLE_NOUNS)))]
            paragraphs = [
                self.passage(extra.get(i, []))
                for i in range(f * PASSAGES_PER_FILE, min(n, (f + 1) * PASSAGES_PER_FILE))
            ]
            text = f"{title_name} {noun}\n\n" + "\n\n".join(paragraphs) + "\n"
            chars += len(text)
            (sub / f"doc{f:07d}.txt").write_text(text, encoding="utf-8")
        order = self.rng.permutation(len(facts))[:N_QUESTIONS]
        return {
            "passages": n,
            "facts": len(facts),
            "chars": chars,
            "questions": [facts[int(i)] for i in order],
        }


# -- encoders for the build ---------------------------------------------------------------------


class TimedEncoder:
    """The real encoder, timed."""

    def __init__(self, real):
        self.real = real
        self.model_id = real.model_id
        self.dimension = real.dimension
        self.seconds = 0.0
        self.encoded = 0
        self.fake_seconds = 0.0

    def encode(self, texts, batch_size=32, progress=None):
        t = time.perf_counter()
        out = self.real.encode(texts, batch_size=batch_size, progress=progress)
        self.seconds += time.perf_counter() - t
        self.encoded += len(texts)
        return out


class SampledEncoder(TimedEncoder):
    """Encodes planted passages and a sample for real; the rest are perturbed real vectors."""

    def __init__(self, real, sample: int, seed: int = 0):
        super().__init__(real)
        self.sample = sample
        self.rng = np.random.default_rng(seed)

    def encode(self, texts, batch_size=32, progress=None):
        n = len(texts)
        planted = [i for i, t in enumerate(texts) if FACT_RE.search(t)]
        rest = np.setdiff1d(np.arange(n), planted)
        sample = self.rng.choice(rest, size=min(self.sample, len(rest)), replace=False)
        real_idx = np.concatenate([np.array(planted, dtype=np.int64), sample]).astype(np.int64)
        real_vecs = super().encode([texts[int(i)] for i in real_idx], batch_size=batch_size)
        t = time.perf_counter()
        out = np.empty((n, self.dimension), dtype=np.float32)
        out[real_idx] = real_vecs
        bases = real_vecs[len(planted) :]
        fill = np.setdiff1d(rest, sample)
        d = self.dimension
        for a in range(0, len(fill), 100_000):
            idx = fill[a : a + 100_000]
            v = bases[self.rng.integers(0, len(bases), len(idx))]
            v = v + self.rng.standard_normal((len(idx), d), dtype=np.float32) * (
                NOISE_SIGMA / np.sqrt(d)
            )
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            out[idx] = v
            if progress:
                progress(min(a + 100_000, len(fill)), len(fill))
        self.fake_seconds += time.perf_counter() - t
        return out


class TimedAnnotator:
    def __init__(self, annotator):
        self.annotator = annotator
        self.seconds = 0.0

    def __getattr__(self, name):  # the annotator's other attributes (its table names, ...)
        return getattr(self.annotator, name)

    def __call__(self, texts):
        t = time.perf_counter()
        out = self.annotator(texts)
        self.seconds += time.perf_counter() - t
        return out


# -- workers (run in subprocesses, so that each has its own peak RSS) -------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def worker_gen(args) -> dict:
    t = time.perf_counter()
    gen = CorpusGenerator(seed=args.seed)
    info = gen.write(args.size, Path(args.corpus))
    info.update(seconds=time.perf_counter() - t, generator=GENERATOR_VERSION, seed=args.seed)
    return info


def worker_build(args) -> dict:
    from qa import index as index_mod
    from qa.embedding import Encoder
    from qa.reading import make_reader

    index_dir = Path(args.index)
    if index_dir.exists():
        shutil.rmtree(index_dir)
    real = Encoder(cache_dir=args.encoders)
    t = time.perf_counter()
    _ = real.onnx  # open the session outside the timed build (it is ~0.1-0.3 s, once)
    load_s = time.perf_counter() - t
    sampled = args.size > args.real_encode_max
    encoder = SampledEncoder(real, SAMPLE_REAL, args.seed) if sampled else TimedEncoder(real)
    reader = make_reader(args.reader)
    annotator = reader.annotator() if args.annotate else None
    timed_annotator = TimedAnnotator(annotator) if annotator is not None else None
    t0 = time.perf_counter()
    manifest, report = index_mod.build(
        Path(args.corpus), index_dir, encoder, annotator=timed_annotator
    )
    total = time.perf_counter() - t0
    n = report.passages
    encode_s = encoder.seconds
    annotate_s = timed_annotator.seconds if timed_annotator else 0.0
    rate = encoder.encoded / encode_s if encode_s else None
    other_s = total - encode_s - encoder.fake_seconds - annotate_s
    extrapolated = other_s + annotate_s + n / rate if sampled else total
    vdir = index_dir / manifest["version_dir"]
    files = {p.name: p.stat().st_size for p in vdir.iterdir() if p.is_file()}
    files["bm25/"] = _dir_bytes(vdir / "bm25")
    return {
        "passages": report.passages,
        "documents": report.documents,
        "sampled_encoding": sampled,
        "really_encoded": encoder.encoded,
        "encoder_load_s": load_s,
        "build_s": total,
        "build_s_extrapolated": extrapolated,
        "encode_s": encode_s,
        "fake_encode_s": encoder.fake_seconds,
        "annotate_s": annotate_s,
        "other_s": other_s,
        "encode_rate": rate,
        "passages_per_s": n / extrapolated,
        "index_bytes": _dir_bytes(vdir),
        "index_files": files,
        "dense": manifest["dense"]["type"],
        "annotator": args.reader if args.annotate else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _is_correct(answer: str | None, golds: list[str], impossible: bool = False) -> bool:
    if impossible or not golds:
        return answer is None
    if answer is None:
        return False
    from qa.reading.answers import normalize_answer

    digits = re.sub(r"\D", "", answer)
    for g in golds:
        g_digits = re.sub(r"\D", "", g)
        if g_digits and digits == g_digits:
            return True
        if normalize_answer(g) and normalize_answer(g) == normalize_answer(answer):
            return True
    return False


def _load_questions(path: Path) -> list[dict]:
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return [
        {
            "question": r["question"],
            "answers": r.get("answers", []),
            "impossible": r.get("impossible", False),
        }
        for r in rows
    ]


def _median_ms(xs) -> float:
    return 1e3 * float(np.median(xs)) if len(xs) else float("nan")


def _p95_ms(xs) -> float:
    return 1e3 * float(np.percentile(xs, 95)) if len(xs) else float("nan")


def worker_query(args) -> dict:
    t0 = time.perf_counter()
    from qa import QA
    from qa.embedding import Encoder
    from qa.reading import make_reader
    from qa.reading.question import analyse

    questions = (
        json.loads(Path(args.questions).read_text())["questions"]
        if args.questions.endswith(".json")
        else _load_questions(Path(args.questions))
    )
    encoder = Encoder(cache_dir=args.encoders)
    engine = QA(
        args.corpus,
        args.index,
        encoder=encoder,
        reader=make_reader(args.reader),
        check_interval=1e9,
    )
    engine.refresh()
    idx = engine.index
    _ = encoder.onnx
    load_s = time.perf_counter() - t0
    n = len(idx)
    fresh = []
    for _ in range(3):
        t = time.perf_counter()
        engine.stale_reasons()
        fresh.append(time.perf_counter() - t)

    texts = [q["question"] for q in questions]
    for q in texts[:5]:
        engine.answer(q)  # warm-up
    lat, results = [], []
    for rep in range(args.repeats):
        for q in questions:
            t = time.perf_counter()
            a = engine.answer(q["question"])
            lat.append(time.perf_counter() - t)
            if rep == 0:
                results.append(_is_correct(a.text, q["answers"], q.get("impossible", False)))
    enc_t, dense_t, sparse_t = [], [], []
    qvecs = []
    for q in texts:
        t = time.perf_counter()
        v = encoder.encode_query(q)
        enc_t.append(time.perf_counter() - t)
        qvecs.append(v)
        t = time.perf_counter()
        idx.dense_search(v, 50)
        dense_t.append(time.perf_counter() - t)
        terms = analyse(q).search_terms
        t = time.perf_counter()
        idx.sparse_search(terms, 50)
        sparse_t.append(time.perf_counter() - t)
    serve_rss = _peak_rss_mb()

    out = {
        "passages": n,
        "load_s": load_s,
        "freshness_check_ms": _median_ms(fresh),
        "questions": len(questions),
        "answer_median_ms": _median_ms(lat),
        "answer_p95_ms": _p95_ms(lat),
        "accuracy": float(np.mean(results)) if results else None,
        "encode_query_ms": _median_ms(enc_t),
        "dense_ms": _median_ms(dense_t),
        "sparse_ms": _median_ms(sparse_t),
        "serve_peak_rss_mb": serve_rss,
        "dense_type": idx.manifest["dense"]["type"],
    }

    # Exact search with numpy: recall of the dense index, and the brute-force reference.
    vectors = np.load(Path(idx.dir) / idx.version / "vectors.npy")
    rng = np.random.default_rng(1)
    probe = np.concatenate([np.stack(qvecs), vectors[rng.integers(0, n, 100)]])
    recall10, recall50, scan_t = [], [], []
    for q in probe:
        t = time.perf_counter()
        scores = vectors @ q
        k = min(50, n)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        scan_t.append(time.perf_counter() - t)
        got, _ = idx.dense_search(q, 50)
        recall10.append(len(set(top[:10].tolist()) & set(got[:10].tolist())) / min(10, n))
        recall50.append(len(set(top.tolist()) & set(got.tolist())) / k)
    out.update(
        recall_at_10=float(np.mean(recall10)),
        recall_at_50=float(np.mean(recall50)),
        numpy_scan_ms=_median_ms(scan_t[: len(qvecs)]),
        dense_vs_numpy=_median_ms(dense_t) / _median_ms(scan_t[: len(qvecs)]),
    )
    del vectors

    # Plain BM25 (rank_bm25-style: per-passage term counters, scanned in Python).
    from qa.tokens import terms as index_terms

    m = min(n, PYTHON_BM25_MAX)
    docs = [Counter(index_terms(idx.passage(i).search_text)) for i in range(m)]
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    avg = lengths.mean()
    df = Counter()
    for d in docs:
        df.update(d.keys())
    k1, b = 1.5, 0.75
    py_t = []
    for q in texts[:5]:
        qterms = analyse(q).search_terms
        t = time.perf_counter()
        scores = np.zeros(m)
        for term in qterms:
            idf = np.log(1 + (m - df[term] + 0.5) / (df[term] + 0.5))
            tf = np.array([d.get(term, 0) for d in docs], dtype=np.float64)
            scores += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / avg))
        np.argpartition(-scores, min(50, m) - 1)[:50]
        py_t.append(time.perf_counter() - t)
    del docs
    py_ms = _median_ms(py_t) * n / m
    out.update(
        python_bm25_ms=py_ms,
        python_bm25_extrapolated=m < n,
        sparse_vs_python=out["sparse_ms"] / py_ms,
    )

    # Encoders: ONNX (what the index uses) against raw sentence-transformers on torch.
    if args.encode_refs:
        sample_ids = rng.choice(n, size=min(ENCODE_REF_PASSAGES, n), replace=False)
        passages = [idx.passage(int(i)).search_text for i in sample_ids]
        torch_enc = Encoder(backend="torch")
        _ = torch_enc.model
        encoder.encode(passages[:16])
        torch_enc.encode(passages[:16])
        onnx_rates, torch_rates = [], []
        for _ in range(3):  # interleaved, so both see the same machine load
            t = time.perf_counter()
            a = encoder.encode(passages)
            onnx_rates.append(len(passages) / (time.perf_counter() - t))
            t = time.perf_counter()
            bvec = torch_enc.encode(passages)
            torch_rates.append(len(passages) / (time.perf_counter() - t))
        tq = []
        for q in texts[:20]:
            t = time.perf_counter()
            torch_enc.encode_query(q)
            tq.append(time.perf_counter() - t)
        out.update(
            onnx_encode_rate=float(np.median(onnx_rates)),
            torch_encode_rate=float(np.median(torch_rates)),
            onnx_vs_torch_encode=float(np.median(np.array(onnx_rates) / np.array(torch_rates))),
            onnx_torch_min_cosine=float(np.min(np.sum(a * bvec, axis=1))),
            torch_encode_query_ms=_median_ms(tq),
        )
    return out


# -- cold start -------------------------------------------------------------------------------


def _wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - t


def cold_start(index_dir: Path, encoders: Path, runs: int, torch_runs: int) -> dict:
    env = dict(os.environ, QA_ENCODER_CACHE=str(encoders))
    qa_script = Path(sys.executable).parent / "qa"
    ask = [str(qa_script)] if qa_script.exists() else [sys.executable, "-m", "qa.cli"]
    ask += [
        "ask",
        "--seeds",
        str(SEEDS),
        "--index",
        str(index_dir),
        "How many interceptors is the Pentagon sending to Ukraine?",
    ]
    refs = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
        "qa ask": ask,
    }
    _wall(ask, env)  # page cache warm
    times: dict[str, list[float]] = {k: [] for k in refs}
    for _ in range(runs):
        for name, cmd in refs.items():
            times[name].append(_wall(cmd, env))
    out = {name: {"median_s": statistics.median(v), "runs": v} for name, v in times.items()}
    if torch_runs:
        tenv = dict(env, QA_ENCODER_BACKEND="torch")
        v = [_wall(ask, tenv) for _ in range(torch_runs)]
        out["qa ask (torch encoder, before)"] = {"median_s": statistics.median(v), "runs": v}
    # Where the time goes: -X importtime of one `qa ask`.
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qa.cli", *ask[-6:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    top: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if m and len(m.group(3)) <= 2:  # top-level and first-level imports
            name = m.group(4)
            top[name] = max(top.get(name, 0), int(m.group(2)))
    out["imports_ms"] = {k: v / 1000 for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:15]}
    # Phases inside one process.
    code = r"""
import time, json, sys
t = [time.perf_counter()]
def mark(): t.append(time.perf_counter())
import numpy; mark()
import qa.pipeline, qa.index, qa.reading.rules; mark()
import faiss; mark()
import bm25s; mark()
import onnxruntime, tokenizers; mark()
from qa import QA
e = QA(sys.argv[1], sys.argv[2]); e.refresh(); mark()
e.encoder.onnx; mark()
e.answer("How many interceptors is the Pentagon sending to Ukraine?"); mark()
names = ["numpy", "qa modules", "faiss", "bm25s (+scipy)", "onnxruntime+tokenizers",
         "QA() + index load + freshness check", "ONNX session (mmap) + probe", "first answer"]
print(json.dumps({n: 1e3 * (b - a) for n, a, b in zip(names, t, t[1:])}))
"""
    phases = []
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(SEEDS), str(index_dir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        phases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out["phases_ms"] = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    return out


# -- orchestration ----------------------------------------------------------------------------


def run_worker(module: str, mode: str, result: Path, **opts) -> dict:
    """Run ``python -m module --worker mode`` in a fresh process and read its JSON result
    (with the wall time added). Options become flags; a False one becomes ``--no-NAME``."""
    cmd = [sys.executable, "-m", module, "--worker", mode, "--result", str(result)]
    for k, v in opts.items():
        flag = k.replace("_", "-")
        if isinstance(v, bool):
            cmd += [] if v else [f"--no-{flag}"]
        else:
            cmd += [f"--{flag}", str(v)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker {mode} failed ({proc.returncode})")
    out = json.loads(Path(result).read_text())
    out["wall_s"] = time.perf_counter() - t
    return out


def _run_worker(mode: str, args: argparse.Namespace, **extra) -> dict:
    return run_worker("benchmarks.bench", mode, Path(extra.pop("result")), **extra)


def _fmt(x, spec=".1f", dash="–") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return dash
    return format(x, spec)


def _label(n: int | str) -> str:
    if isinstance(n, str):
        return n
    return (
        f"{n // 1_000_000}M"
        if n >= 1_000_000 and n % 1_000_000 == 0
        else (f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))
    )


def write_report(results: dict, out: Path) -> None:
    rows = results["sizes"]
    lines = [
        "# Benchmark results",
        "",
        (
            f"Run {results['started']} on {results['machine']}; total {results['total_s']:.0f} s. "
            "Machine shared with other work: compare ratios to the references measured alongside."
        ),
        "",
        "## Build",
        "",
        (
            "| corpus | passages | build s | passages/s | encode (ONNX) p/s | raw ST torch p/s | "
            "build / raw ST | index MB | peak RSS MB | annotator | figures |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        b, q = r["build"], r["query"]
        lines.append(
            f"| {r['label']} | {b['passages']:,} | {_fmt(b['build_s_extrapolated'])} | "
            f"{_fmt(b['passages_per_s'])} | {_fmt(b['encode_rate'])} | "
            f"{_fmt(q.get('torch_encode_rate'))} | "
            f"{_fmt(b['passages_per_s'] / q['torch_encode_rate'] if q.get('torch_encode_rate') else None, '.2f')} | "
            f"{b['index_bytes'] / 1e6:.1f} | {b['peak_rss_mb']:.0f} | {b['annotator'] or 'none'} | "
            f"{'extrapolated (sampled encoding: ' + format(b['really_encoded'], ',') + ' real)' if b['sampled_encoding'] else 'measured'} |"
        )
    lines += [
        "",
        (
            "Build stages (s): encode = real encoding, fake = perturbed vectors, annotate = reader "
            "annotations, other = reading, splitting, BM25, FAISS, writing and checksums."
        ),
        "",
        "| corpus | encode | fake | annotate | other | measured total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = r["build"]
        lines.append(
            f"| {r['label']} | {b['encode_s']:.1f} | {b['fake_encode_s']:.1f} | "
            f"{b['annotate_s']:.1f} | {b['other_s']:.1f} | {b['build_s']:.1f} |"
        )
    lines += [
        "",
        "## Query (warm `QA.answer()`, check_interval large; freshness check timed apart)",
        "",
        (
            "| corpus | dense index | answer median ms | p95 ms | accuracy | encode_query ms | "
            "dense ms | sparse ms | freshness check ms | serve peak RSS MB | load s |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        q = r["query"]
        lines.append(
            f"| {r['label']} | {q['dense_type']} | {q['answer_median_ms']:.1f} | "
            f"{q['answer_p95_ms']:.1f} | {_fmt(q['accuracy'], '.0%')} ({q['questions']} q) | "
            f"{q['encode_query_ms']:.2f} | {q['dense_ms']:.2f} | {q['sparse_ms']:.2f} | "
            f"{q['freshness_check_ms']:.1f} | {q['serve_peak_rss_mb']:.0f} | {q['load_s']:.2f} |"
        )
    lines += [
        "",
        "## References (same process, same queries)",
        "",
        "| corpus | recall@10 | recall@50 | dense ms | numpy exact scan ms | dense / numpy | "
        "sparse ms | Python BM25 scan ms | sparse / Python | encode_query ONNX / torch ms | "
        "encode ONNX / torch (rate ratio) | min cosine ONNX-torch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        q = r["query"]
        lines.append(
            f"| {r['label']} | {q['recall_at_10']:.3f} | {q['recall_at_50']:.3f} | "
            f"{q['dense_ms']:.2f} | {q['numpy_scan_ms']:.2f} | {q['dense_vs_numpy']:.2f} | "
            f"{q['sparse_ms']:.2f} | {q['python_bm25_ms']:.1f}"
            f"{' (extrap.)' if q['python_bm25_extrapolated'] else ''} | "
            f"{q['sparse_vs_python']:.4f} | {q['encode_query_ms']:.2f} / "
            f"{_fmt(q.get('torch_encode_query_ms'), '.2f')} | "
            f"{_fmt(q.get('onnx_vs_torch_encode'), '.2f')} | "
            f"{_fmt(q.get('onnx_torch_min_cosine'), '.5f')} |"
        )
    cold = results.get("cold_start")
    if cold:
        lines += [
            "",
            "## Cold start (fresh process, existing seeds index, median of runs)",
            "",
            "| command | median s | runs |",
            "|---|---:|---|",
        ]
        for name, v in cold.items():
            if isinstance(v, dict) and "median_s" in v:
                lines.append(
                    f"| {name} | {v['median_s']:.2f} | {', '.join(f'{x:.2f}' for x in v['runs'])} |"
                )
        lines += [
            "",
            "Phases inside one process (ms, median of 3):",
            "",
            "| phase | ms |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:.0f} |" for k, v in cold["phases_ms"].items()]
        lines += [
            "",
            "Biggest imports of `qa ask` (-X importtime, cumulative ms):",
            "",
            "| module | ms |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:.0f} |" for k, v in cold["imports_ms"].items()]
    lines += ["", "![latency and memory against corpus size](bench.png)", ""]
    (out / "results.md").write_text("\n".join(lines), encoding="utf-8")


def _log_axes(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("passages")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["sizes"] if isinstance(r["size"], int)]
    if not rows:
        return
    n = [r["build"]["passages"] for r in rows]
    q = [r["query"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(n, [x["answer_median_ms"] for x in q], "o-", label="answer() median")
    ax1.plot(n, [x["answer_p95_ms"] for x in q], "o--", label="answer() p95")
    ax1.plot(n, [x["dense_ms"] for x in q], "s-", label="dense search")
    ax1.plot(n, [x["numpy_scan_ms"] for x in q], "s:", label="numpy exact scan (ref.)")
    ax1.plot(n, [x["sparse_ms"] for x in q], "^-", label="BM25 (bm25s)")
    ax1.plot(n, [x["python_bm25_ms"] for x in q], "^:", label="Python BM25 scan (ref.)")
    _log_axes(ax1, "ms per question", "Query latency (warm)")
    ax2.plot(n, [r["build"]["peak_rss_mb"] for r in rows], "o-", label="build peak RSS")
    ax2.plot(n, [x["serve_peak_rss_mb"] for x in q], "s-", label="serving peak RSS")
    ax2.plot(n, [r["build"]["index_bytes"] / 1e6 for r in rows], "^--", label="index on disk")
    _log_axes(ax2, "MB", "Memory and disk")
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=120)
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(out / "bench.png", docs / "bench.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="comma-separated passage counts")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    p.add_argument(
        "--reader",
        default="rules:fast",
        help="reader for the synthetic corpora (rules:fast = regex annotations)",
    )
    p.add_argument(
        "--no-annotate",
        dest="annotate",
        action="store_false",
        help="build without reader annotations (annotator=None)",
    )
    p.add_argument(
        "--real-encode-max",
        type=int,
        default=5_000,
        help="above this many passages, encode a sample and perturb the rest (default 5000: "
        "real encoding runs at ~20 passages/s on the shared 2 cores)",
    )
    p.add_argument("--repeats", type=int, default=2, help="passes over the questions")
    p.add_argument("--no-seeds", dest="seeds", action="store_false", help="skip the seeds row")
    p.add_argument("--no-cold", dest="cold", action="store_false", help="skip cold start")
    p.add_argument("--cold-runs", type=int, default=5)
    p.add_argument("--torch-cold-runs", type=int, default=2)
    p.add_argument("--no-encode-refs", dest="encode_refs", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    # worker mode (internal)
    p.add_argument("--worker", choices=["gen", "build", "query"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    p.add_argument("--encoders", help=argparse.SUPPRESS)
    p.add_argument("--questions", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        fn = {"gen": worker_gen, "build": worker_build, "query": worker_query}[args.worker]
        result = fn(args)
        Path(args.result).write_text(json.dumps(result, indent=1))
        return 0

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    encoders = out / "encoders"
    started = time.time()
    # Export the ONNX encoder once (needs torch); every worker then loads it without torch.
    from qa.embedding import Encoder

    _ = Encoder(cache_dir=encoders).onnx
    results = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
        "sizes": [],
    }
    plan: list[int | str] = (["seeds"] if args.seeds else []) + [
        int(float(s)) for s in args.sizes.split(",") if s.strip()
    ]
    for size in plan:
        t = time.perf_counter()
        label = _label(size)
        work = out / "runs" / label
        work.mkdir(parents=True, exist_ok=True)
        if size == "seeds":
            corpus, reader = SEEDS, "rules"
            questions = str(DEV_QUESTIONS) if DEV_QUESTIONS.exists() else None
            gen = {"passages": None}
        else:
            corpus, reader = out / "corpora" / label, args.reader
            stamp = corpus / ".generated.json"
            gen = json.loads(stamp.read_text()) if stamp.exists() else {}
            if gen.get("generator") != GENERATOR_VERSION or gen.get("seed") != args.seed:
                print(f"[{label}] generating corpus ...", flush=True)
                gen = _run_worker(
                    "gen", args, result=work / "gen.json", size=size, corpus=corpus, seed=args.seed
                )
                stamp.write_text(json.dumps(gen))
            questions = str(work / "questions.json")
            Path(questions).write_text(json.dumps({"questions": gen["questions"]}))
        if questions is None:
            print("[seeds] no question file; skipped", flush=True)
            continue
        n = size if isinstance(size, int) else 0
        print(f"[{label}] building ...", flush=True)
        build = _run_worker(
            "build",
            args,
            result=work / "build.json",
            size=n,
            corpus=corpus,
            index=work / "index",
            encoders=encoders,
            reader=reader,
            seed=args.seed,
            real_encode_max=args.real_encode_max,
            annotate=args.annotate or not n,
        )
        print(
            f"[{label}] {build['passages']:,} passages in {build['build_s_extrapolated']:.1f} s; "
            "querying ...",
            flush=True,
        )
        query = _run_worker(
            "query",
            args,
            result=work / "query.json",
            corpus=corpus,
            index=work / "index",
            encoders=encoders,
            reader=reader,
            questions=questions,
            repeats=args.repeats,
            encode_refs=args.encode_refs,
            seed=args.seed,
        )
        print(
            f"[{label}] answer median {query['answer_median_ms']:.1f} ms, accuracy "
            f"{query['accuracy']:.0%}, recall@10 {query['recall_at_10']:.3f} "
            f"({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
        results["sizes"].append(
            {
                "size": size,
                "label": label,
                "generate": gen,
                "build": build,
                "query": query,
                "seconds": time.perf_counter() - t,
            }
        )
        results["total_s"] = time.time() - started
        (out / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, out)
    if args.cold:
        seeds_index = out / "runs" / "seeds" / "index"
        if not (seeds_index / "manifest.json").exists():
            _run_worker(
                "build",
                args,
                result=out / "runs" / "seeds-build.json",
                size=0,
                corpus=SEEDS,
                index=seeds_index,
                encoders=encoders,
                reader="rules",
                seed=args.seed,
                real_encode_max=args.real_encode_max,
                annotate=True,
            )
        print("[cold start] timing fresh processes ...", flush=True)
        results["cold_start"] = cold_start(
            seeds_index, encoders, args.cold_runs, args.torch_cold_runs
        )
    results["total_s"] = time.time() - started
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    plot(results, out)
    shutil.copyfile(out / "results.md", ROOT / "docs" / "bench-results.md")
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

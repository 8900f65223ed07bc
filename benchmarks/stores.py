"""The file store and the Milvus store side by side: the same answers, and how they scale.

    python -m benchmarks.stores answers [--sets dev,news,...] [--readers trained,rules]
    python -m benchmarks.stores scale [--sizes 100000,1000000]

``answers`` runs every question set in tests/data and the seeds' dev set through the file
store and through Milvus Lite: the default Milvus store (our BM25 terms, fused here), Milvus's
own BM25 analyzer over the raw text (``bm25=milvus``), and fusion inside Milvus by
``hybrid_search`` (``fusion=rrf``, ``fusion=weighted``). For each it counts the answers that
are the file store's exactly (text, confidence, every quote's offsets), scores EM / F1 /
no-answer, and lists where answers differ, with whether retrieval already differed. Writes
``<out>/stores-answers.md`` and ``.json``.

``scale`` generates the synthetic corpora of ``benchmarks.bench`` (the same generator and
seed), builds the file store (``benchmarks.bench``'s own build worker, sampled encoding above
5,000 passages) and then Milvus Lite from the same folder, taking the file store's vectors
(``qa migrate``'s path, so both hold the same vectors), and answers the 50 planted questions
in a fresh process per store: build time (encoding extrapolated at the measured rate, as
``benchmarks.bench`` does), ``answer()`` median / p95, planted answers right, dense recall@10
against exact search, BM25 top-10 agreement with the file store, peak RSS, disk. Writes
``<out>/stores.md`` and ``stores.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench import (
    GENERATOR_VERSION,
    ROOT,
    _dir_bytes,
    _is_correct,
    _label,
    _median_ms,
    _p95_ms,
    run_worker,
)
from .quality import SETS

OUT = ROOT / "benchmarks" / "out"
VARIANTS = {
    "milvus": "",
    "milvus bm25=milvus": "bm25=milvus",
    "milvus fusion=rrf": "fusion=rrf",
    "milvus fusion=weighted": "fusion=weighted",
}


# -- same answers -----------------------------------------------------------------------------


def _key(r) -> tuple:
    return (r.text, r.score, [(q.source, q.start, q.end, q.answer_start, q.answer_end, q.score)
                              for q in r.quotes])


def _quoted(r) -> list[tuple]:
    """The passages quoted and the answer's offsets in them, without the numbers."""
    return [(q.source, q.start, q.end, q.answer_start, q.answer_end) for q in r.quotes]


def _hits(engine, question: str) -> list[tuple]:
    from qa import config
    from qa.retrieval import retrieve

    index = engine.index
    hits = retrieve(index, engine.encoder.encode_query(question), question,
                    k=max(config.TOP_K, engine.reader.depth),
                    keep_each=config.KEEP_EACH_RETRIEVER)
    return [(index.passage(h.passage_id).source, index.passage(h.passage_id).start)
            for h in hits]


def _scores(questions, answers) -> dict:
    from qa.evaluate import exact_match, f1_score

    em, f1, declined = [], [], []
    for q, r in zip(questions, answers):
        if q.impossible:
            declined.append(r.text is None)
        else:
            em.append(max(exact_match(r.text, g) for g in q.answers) if r.text else 0.0)
            f1.append(max(f1_score(r.text, g) for g in q.answers) if r.text else 0.0)

    def pct(xs):
        return round(100 * sum(xs) / len(xs), 1) if xs else None

    return {"em": pct(em), "f1": pct(f1), "no_answer": pct(declined)}


def answers(args) -> None:
    from qa import QA
    from qa.embedding import Encoder
    from qa.evaluate import load_questions
    from qa.reading import make_reader

    encoder = Encoder()
    out = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "sets": {}}
    earlier = args.out / "stores-answers.json"
    if earlier.exists():  # sets from earlier runs stay in the table; this run's replace theirs
        out["sets"] = json.loads(earlier.read_text())["sets"]
    with tempfile.TemporaryDirectory() as tmp:
        for reader_name in args.readers.split(","):
            reader = make_reader(reader_name)
            for name in args.sets.split(","):
                docs, path = SETS[name]
                if not path.exists():
                    print(f"[{name}] {path} missing; skipped", flush=True)
                    continue
                questions = load_questions(path)
                work = Path(tmp) / f"{reader_name}-{name}"
                shutil.copytree(docs, work / "docs")
                files = QA(work / "docs", work / "files", encoder=encoder, reader=reader)
                t = time.perf_counter()
                files.refresh()
                row = {"questions": len(questions), "variants": {}}
                base = [files.answer(q.question) for q in questions]
                row["files"] = _scores(questions, base)
                files_s = time.perf_counter() - t
                for variant, options in VARIANTS.items():
                    db = work / ("raw.db" if "bm25" in options else "qa.db")
                    uri = f"milvus://{db}" + (f"?{options}" if options else "")
                    engine = QA(work / "docs", encoder=encoder, reader=reader, store=uri)
                    if engine.backend.read_manifest() is None:  # the file store's vectors
                        engine.backend.build(engine.seeds_dir, encoder, reader.annotator(),
                                             previous=files.index)
                    t = time.perf_counter()
                    got = [engine.answer(q.question) for q in questions]
                    differ = []
                    for q, a, b in zip(questions, base, got):
                        if _key(a) != _key(b):
                            differ.append({
                                "question": q.question, "files": a.text, "milvus": b.text,
                                "same_text": a.text == b.text,
                                "same_quotes": _quoted(a) == _quoted(b),
                                "retrieval_differs": _hits(files, q.question)
                                != _hits(engine, q.question)})
                    row["variants"][variant] = {
                        **_scores(questions, got),
                        "identical": len(questions) - len(differ),
                        "same_text": sum(d["same_text"] for d in differ)
                        + len(questions) - len(differ),
                        "same_quotes": sum(d["same_quotes"] for d in differ)
                        + len(questions) - len(differ),
                        "retrieval_differs": sum(d["retrieval_differs"] for d in differ),
                        "seconds": round(time.perf_counter() - t, 1),
                        "differences": differ,
                    }
                    print(f"[{reader_name} {name}] {variant}: {len(questions) - len(differ)}/"
                          f"{len(questions)} identical", flush=True)
                row["files_seconds"] = round(files_s, 1)
                out["sets"][f"{reader_name} {name}"] = row
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "stores-answers.json").write_text(json.dumps(out, indent=1))
                _write_answers(out, args.out / "stores-answers.md")
    print(f"wrote {args.out / 'stores-answers.md'}")


def _write_answers(out: dict, path: Path) -> None:
    lines = [
        "# Same answers: the file store against Milvus Lite",
        "",
        f"Run {out['started']}. \"identical\": the answer's text, confidence and every "
        "quote's file offsets and relevance are the file store's; \"same quotes\": the "
        "same passages quoted in the same order with the answer at the same offsets (the "
        "numbers aside); \"same answer\": the short answer is the same. EM / F1 / "
        "no-answer % as in benchmarks/quality.py; the last column: of the answers not "
        "identical, how many had other passages retrieved.",
        "",
        "| reader, set | questions | files EM / F1 / no-answer | variant | identical | "
        "same quotes | same answer | EM / F1 / no-answer | retrieved otherwise |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]

    def f(s):
        return " / ".join("–" if s[k] is None else f"{s[k]:.1f}" for k in ("em", "f1",
                                                                          "no_answer"))

    for name, row in out["sets"].items():
        for i, (variant, v) in enumerate(row["variants"].items()):
            first = (f"| {name} | {row['questions']} | {f(row['files'])} " if i == 0
                     else "| | | ")
            lines.append(f"{first}| {variant} | {v['identical']} | {v['same_quotes']} | "
                         f"{v['same_text']} | {f(v)} | {v['retrieval_differs']} of "
                         f"{row['questions'] - v['identical']} |")
    lines += ["", "## Where the short answers differ", ""]
    for name, row in out["sets"].items():
        for variant, v in row["variants"].items():
            for d in [d for d in v["differences"] if not d["same_text"]][:6]:
                lines.append(f"- {name}, {variant}: {d['question']!r}: files {d['files']!r}, "
                             f"milvus {d['milvus']!r}"
                             + ("" if d["retrieval_differs"] else " (same passages retrieved)"))
    path.write_text("\n".join(lines) + "\n")


# -- scale -------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    process that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_build_milvus(args) -> dict:
    """Milvus Lite from the corpus folder, vectors from the file store (nothing encoded)."""
    from qa import index as index_mod
    from qa.embedding import Encoder

    db = Path(args.db)
    if db.exists():
        shutil.rmtree(db)
    files_index = index_mod.load(Path(args.files_index), checksums=False)
    encoder = Encoder(cache_dir=args.encoders)
    backend = index_mod.open_store(f"milvus://{db}", Path(args.corpus))
    t = time.perf_counter()
    manifest, report = backend.build(Path(args.corpus), encoder, previous=files_index)
    total = time.perf_counter() - t
    return {"passages": report.passages, "embedded": report.embedded, "build_s": total,
            "db_bytes": _dir_bytes(db), "peak_rss_mb": _peak_rss_mb(),
            "dense": manifest["dense"]}


def _stable_ids(files_index) -> np.ndarray:
    """The Milvus id of each file store row (see qa.index.protocol.stable_id)."""
    from collections import Counter

    from qa.index import stable_id

    keys = np.ascontiguousarray(files_index.passage_keys).tobytes()
    out = np.empty(len(files_index), dtype=np.int64)
    for source in files_index.sources:
        seen: Counter = Counter()
        for row in files_index.source_passages(source).tolist():
            key = keys[16 * row : 16 * row + 16]
            out[row] = stable_id(key, source, seen[key])
            seen[key] += 1
    return out


def worker_query_store(args) -> dict:
    t0 = time.perf_counter()
    from qa import QA
    from qa import index as index_mod
    from qa.embedding import Encoder
    from qa.reading import make_reader
    from qa.reading.question import analyse

    questions = json.loads(Path(args.questions).read_text())["questions"]
    encoder = Encoder(cache_dir=args.encoders)
    milvus = args.store != "files"
    engine = QA(args.corpus, None if milvus else args.files_index, encoder=encoder,
                reader=make_reader("trained"), check_interval=1e9,
                store=f"milvus://{args.db}" if milvus else "")
    engine.refresh()
    idx = engine.index
    _ = encoder.onnx
    load_s = time.perf_counter() - t0
    texts = [q["question"] for q in questions]
    for q in texts[:5]:
        engine.answer(q)  # warm-up
    lat, right = [], []
    for rep in range(args.repeats):
        for q in questions:
            t = time.perf_counter()
            a = engine.answer(q["question"])
            lat.append(time.perf_counter() - t)
            if rep == 0:
                right.append(_is_correct(a.text, q["answers"]))
    serve_rss = _peak_rss_mb()
    dense_t, sparse_t, vecs, sparse_top = [], [], [], []
    for q in texts:
        v = encoder.encode_query(q)
        vecs.append(v)
        t = time.perf_counter()
        idx.dense_search(v, 50)
        dense_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        ids, _ = idx.sparse_search(analyse(q).search_terms, 50, text=q)
        sparse_t.append(time.perf_counter() - t)
        sparse_top.append(ids[:10].tolist())
    # Recall@10 against exact search over the file store's vectors (the same vectors), and
    # BM25 top-10 against the file store's BM25, compared as file rows.
    files_index = index_mod.load(Path(args.files_index), checksums=False)
    vectors = np.load(Path(files_index.dir) / files_index.version / "vectors.npy")
    to_row = {int(s): r for r, s in enumerate(_stable_ids(files_index))} if milvus else None
    rng = np.random.default_rng(1)
    probe = np.concatenate([np.stack(vecs), vectors[rng.integers(0, len(vectors), 50)]])
    recall = []
    for q in probe:
        exact = np.argsort(-(vectors @ q))[:10]
        got, _ = idx.dense_search(q, 10)
        rows = [to_row[int(i)] for i in got] if milvus else got.tolist()
        recall.append(len(set(exact.tolist()) & set(rows)) / 10)
    agree = []
    for q, top in zip(texts, sparse_top):
        ref = files_index.sparse_search(analyse(q).search_terms, 50)[0][:10]
        rows = [to_row[int(i)] for i in top] if milvus else top
        agree.append(len(set(ref.tolist()) & set(rows)) / max(1, min(10, len(ref))))
    return {
        "store": args.store, "passages": len(idx), "load_s": load_s,
        "answer_median_ms": _median_ms(lat), "answer_p95_ms": _p95_ms(lat),
        "accuracy": float(np.mean(right)), "dense_ms": _median_ms(dense_t),
        "sparse_ms": _median_ms(sparse_t), "recall_at_10": float(np.mean(recall)),
        "bm25_top10_agreement": float(np.mean(agree)), "serve_peak_rss_mb": serve_rss,
    }


def _run(mode: str, result: Path, module: str = "benchmarks.stores", **opts) -> dict:
    return run_worker(module, mode, result, **opts)


def scale(args) -> None:
    out = args.out.resolve()
    encoders = out / "encoders"
    # The ONNX encoder, exported once in a process of its own: this one stays small, so the
    # workers it starts measure their own memory.
    subprocess.run([sys.executable, "-c", "import sys; from qa.embedding import Encoder; "
                    "Encoder(cache_dir=sys.argv[1]).onnx", str(encoders)], cwd=ROOT, check=True)
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
               "sizes": []}
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    earlier = out / "stores.json"
    if earlier.exists():  # rows of other sizes from earlier runs stay in the table
        results["sizes"] = [r for r in json.loads(earlier.read_text())["sizes"]
                            if r["size"] not in sizes]
    for size in sizes:
        label = _label(size)
        work = out / "stores" / label
        work.mkdir(parents=True, exist_ok=True)
        corpus = out / "corpora" / label
        stamp = corpus / ".generated.json"
        gen = json.loads(stamp.read_text()) if stamp.exists() else {}
        if gen.get("generator") != GENERATOR_VERSION or gen.get("seed") != 0:
            print(f"[{label}] generating corpus ...", flush=True)
            gen = _run("gen", work / "gen.json", module="benchmarks.bench", size=size,
                       corpus=corpus, seed=0)
            stamp.write_text(json.dumps(gen))
        questions = work / "questions.json"
        questions.write_text(json.dumps({"questions": gen["questions"]}))
        row = {"size": size, "label": label}
        files_index = work / "files"
        kept = work / "files-build.json"
        if args.reuse_files and kept.exists() and (files_index / "manifest.json").exists():
            row["files_build"] = json.loads(kept.read_text())  # from an earlier run
        else:
            print(f"[{label}] building the file store ...", flush=True)
            row["files_build"] = _run(
                "build", kept, module="benchmarks.bench", size=size, corpus=corpus,
                index=files_index, encoders=encoders, reader="trained", seed=0,
                real_encode_max=args.real_encode_max, annotate=False)
        print(f"[{label}] building Milvus Lite from the same folder ...", flush=True)
        row["milvus_build"] = _run("build-milvus", work / "milvus-build.json", corpus=corpus,
                                   db=work / "milvus.db", files_index=files_index,
                                   encoders=encoders)
        for store in ("files", "milvus"):
            kept = work / f"{store}-query.json"
            if store == "files" and args.reuse_files and kept.exists():
                row["files_query"] = json.loads(kept.read_text())
                continue
            print(f"[{label}] answering from {store} ...", flush=True)
            row[f"{store}_query"] = _run(
                "query", work / f"{store}-query.json", store=store, corpus=corpus,
                db=work / "milvus.db", files_index=files_index, encoders=encoders,
                questions=questions, repeats=args.repeats)
        row["started"] = results["started"]
        results["sizes"] = sorted([*results["sizes"], row], key=lambda r: r["size"])
        results["total_s"] = time.time() - time.mktime(
            time.strptime(results["started"], "%Y-%m-%d %H:%M:%S"))
        (out / "stores.json").write_text(json.dumps(results, indent=1))
        _write_scale(results, out / "stores.md")
        print(f"[{label}] done", flush=True)
    print(f"wrote {out / 'stores.md'}")


def _write_scale(results: dict, path: Path) -> None:
    lines = [
        "# The file store and Milvus Lite side by side",
        "",
        f"Runs from {results['started']}, {results['machine']}, the trained reader. Build: the "
        "whole build, with encoding extrapolated at the measured rate above 5,000 passages "
        "(both stores get the same encoding time: Milvus is built from the file store's "
        "vectors); in brackets, the build without encoding. Answers: 50 planted questions, "
        "median / p95 of every pass.",
        "",
        "| passages | store | build (indexing alone) | answer() median / p95 | planted right | "
        "dense search | BM25 search | recall@10 vs exact | BM25 top-10 = file store's | "
        "serving peak RSS | build peak RSS | disk |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["sizes"]:
        fb, mb = row["files_build"], row["milvus_build"]
        encode = fb["build_s_extrapolated"] - fb["other_s"] - fb["annotate_s"]
        builds = {"files": (fb["build_s_extrapolated"], fb["build_s_extrapolated"] - encode,
                            fb["peak_rss_mb"], fb["index_bytes"]),
                  "milvus": (mb["build_s"] + encode, mb["build_s"], mb["peak_rss_mb"],
                             mb["db_bytes"])}
        for store in ("files", "milvus"):
            q = row.get(f"{store}_query")
            if q is None:
                continue
            build_s, indexing_s, rss, disk = builds[store]
            name = "file store" if store == "files" else "Milvus Lite"
            lines.append(
                f"| {row['size']:,} | {name} | {build_s:,.0f} s ({indexing_s:,.0f} s) | "
                f"{q['answer_median_ms']:.1f} / "
                f"{q['answer_p95_ms']:.1f} ms | {q['accuracy']:.0%} | {q['dense_ms']:.1f} ms | "
                f"{q['sparse_ms']:.1f} ms | {q['recall_at_10']:.3f} | "
                f"{q['bm25_top10_agreement']:.3f} | {q['serve_peak_rss_mb']:,.0f} MB | "
                f"{rss:,.0f} MB | {disk / 1e6:,.0f} MB |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.stores", description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", choices=["answers", "scale"])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--readers", default="trained")
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--reuse-files", action="store_true",
                   help="keep the file store's build and answers from an earlier run")
    p.add_argument("--real-encode-max", type=int, default=5000,
                   help="above this many passages encode a sample (as benchmarks.bench)")
    p.add_argument("--worker", choices=["build-milvus", "query"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--files-index", help=argparse.SUPPRESS)
    p.add_argument("--encoders", help=argparse.SUPPRESS)
    p.add_argument("--questions", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        fn = {"build-milvus": worker_build_milvus, "query": worker_query_store}[args.worker]
        Path(args.result).write_text(json.dumps(fn(args), indent=1))
        return 0
    if args.command == "answers":
        answers(args)
    elif args.command == "scale":
        scale(args)
    else:
        p.error("name a command: answers or scale")
    return 0


if __name__ == "__main__":
    sys.exit(main())

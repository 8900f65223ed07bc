"""Answer quality of every reader on every question set, side by side in one run.

    python -m benchmarks.quality [--sets dev,news,...] [--readers trained,rules]

For each set: the trained reader, the rules reader, and retrieval alone (the first retrieved
passage as the answer, never declining). Writes ``benchmarks/out/quality.md`` and
``quality.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SETS = {
    "dev": (ROOT / "seeds", ROOT.parent / "shared" / "eval" / "seed_questions.jsonl"),
    "news": (DATA / "news", DATA / "news_questions.jsonl"),
    "encyclopedia": (DATA / "encyclopedia", DATA / "encyclopedia_questions.jsonl"),
    "heldout": (DATA / "heldout", DATA / "heldout_questions.jsonl"),
    "blind": (DATA / "blind", DATA / "blind_questions.jsonl"),
    "squad-heldout": (DATA / "squad_heldout", DATA / "squad_heldout_questions.jsonl"),
    "documentation": (DATA / "documentation", DATA / "documentation_questions.jsonl"),
}


def retrieval_only(engine, questions) -> dict:
    """EM/F1 of the first retrieved passage taken as the answer."""
    from qa.evaluate import exact_match, f1_score
    from qa.retrieval import retrieve

    em, f1 = [], []
    for q in questions:
        if q.impossible:
            continue
        vec = engine.encoder.encode_query(q.question)
        top = retrieve(engine.index, vec, q.question, k=1)
        text = engine.index.text(top[0].passage_id) if top else ""
        em.append(max(exact_match(text, g) for g in q.answers))
        f1.append(max(f1_score(text, g) for g in q.answers))
    return {"exact_match": round(100 * sum(em) / len(em), 1),
            "f1": round(100 * sum(f1) / len(f1), 1), "no_answer_accuracy": 0.0}


def answered_calibration(rows: list[dict]) -> dict:
    """Over the answered questions: mean confidence against the share right (F1 >= 0.5 on an
    answerable question), and the expected calibration error in 10 bins."""
    import numpy as np

    answered = [r for r in rows if r["prediction"] is not None]
    if not answered:
        return {}
    p = np.array([r["score"] for r in answered])
    y = np.array([not r["impossible"] and r.get("f1", 0) >= 0.5 for r in answered], dtype=float)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())
    return {"answered": len(answered), "mean_confidence": round(float(p.mean()), 3),
            "share_right": round(float(y.mean()), 3), "ece": round(float(ece), 3)}


def overall_f1(rows: list[dict]) -> float:
    """SQuAD 2.0's overall F1: an answer scores its F1 (0 on an unanswerable question), a
    decline 1 on an unanswerable question and 0 on an answerable one."""
    scores = [(1.0 if r["prediction"] is None else 0.0) if r["impossible"] else r["f1"]
              for r in rows]
    return round(100 * sum(scores) / len(scores), 1)


def shown_f1(rows: list[dict]) -> float:
    """Answerable F1 counting a guess as the answer (what a reader of the reply sees)."""
    answerable = [r for r in rows if not r["impossible"]]
    scores = [r["f1"] if r["prediction"] is not None else r.get("guess_f1", 0.0)
              for r in answerable]
    return round(100 * sum(scores) / len(scores), 1)


def guesses(rows: list[dict]) -> dict:
    """Over the declines that name a likeliest candidate: how many, their mean confidence, and
    the share right (F1 >= 0.5 on an answerable question; a guess on an unanswerable one is
    wrong)."""
    declined = [r for r in rows if r["prediction"] is None]
    guessed = [r for r in declined if r.get("guess") is not None]
    if not guessed:
        return {"declined": len(declined), "guessed": 0}
    right = [not r["impossible"] and r.get("guess_f1", 0) >= 0.5 for r in guessed]
    return {"declined": len(declined), "guessed": len(guessed),
            "guessed_unanswerable": sum(r["impossible"] for r in guessed),
            "mean_confidence": round(sum(r["guess_confidence"] for r in guessed) / len(guessed), 3),
            "share_right": round(sum(right) / len(right), 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--readers", default="trained,rules")
    args = ap.parse_args(argv)
    from qa import QA
    from qa.embedding import Encoder
    from qa.evaluate import evaluate, load_questions

    encoder = Encoder()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            docs, path = SETS[name]
            questions = load_questions(path)
            results[name] = {"questions": len(questions),
                             "answerable": sum(not q.impossible for q in questions)}
            for reader in args.readers.split(","):
                engine = QA(docs, Path(tmp) / f"{name}-{reader}", encoder=encoder, reader=reader)
                t0 = time.perf_counter()
                report = evaluate(engine, questions, retrieval_modes=("hybrid",))
                results[name][reader] = {
                    "exact_match": report.exact_match, "f1": report.f1,
                    "no_answer_accuracy": report.no_answer_accuracy,
                    "overall_f1": overall_f1(report.rows),
                    "answer_or_guess_f1": shown_f1(report.rows),
                    "first_quote_hit": report.first_quote_hit,
                    "latency_ms_median": report.latency_ms_median,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "calibration": answered_calibration(report.rows),
                    "guesses": guesses(report.rows),
                }
                results[name]["retrieval_top1_hit"] = report.retrieval_first_hit["hybrid"]
                if "retrieval" not in results[name]:
                    results[name]["retrieval"] = retrieval_only(engine, questions)
                print(name, reader, results[name][reader], flush=True)
    readers = args.readers.split(",")
    head = "| set | questions (answerable) | " + " | ".join(
        f"{r} F1 / no-answer % / overall F1" for r in readers) + " | retrieval only EM / F1 | top-1 passage holds answer % |"
    lines = [head, "|---|---:|" + "---:|" * (len(readers) + 2)]
    for name, r in results.items():
        cells = [f"{r[x]['f1']:.1f} / {r[x]['no_answer_accuracy']:.0f} / {r[x]['overall_f1']:.1f}"
                 for x in readers]
        lines.append(f"| {name} | {r['questions']} ({r['answerable']}) | " + " | ".join(cells)
                     + f" | {r['retrieval']['exact_match']:.1f} / {r['retrieval']['f1']:.1f}"
                     f" | {r['retrieval_top1_hit']:.0f} |")
    table = "\n".join(lines)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(table + "\n")
    (out / "quality.json").write_text(json.dumps(results, indent=1))
    print(table)


if __name__ == "__main__":
    main()

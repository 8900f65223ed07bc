"""Evaluation on a question file: exact match, F1, no-answer accuracy, retrieval hit rate, latency.

Question files are JSON lines: {"id", "question", "answers": [...], "sources": [...],
"impossible": bool}.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import QAError
from .reading.answers import normalize_answer


@dataclass
class Question:
    id: str
    question: str
    answers: list[str]
    sources: list[str]
    impossible: bool


@dataclass
class Report:
    questions: int
    answerable: int
    exact_match: float  # percent, over answerable questions
    f1: float  # percent, over answerable questions
    no_answer_accuracy: float  # percent of unanswerable questions declined
    answered_rate: float  # percent of answerable questions given an answer
    first_quote_hit: float  # percent of answerable questions whose first quote holds a gold answer
    latency_ms_median: float
    latency_ms_p95: float
    retrieval_first_hit: dict[str, float] = field(default_factory=dict)  # mode -> percent
    rows: list[dict] = field(default_factory=list)


def load_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    if not path.is_file():
        raise QAError(f"question file {path} does not exist")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append(
                    Question(
                        str(d.get("id", n)),
                        d["question"],
                        list(d.get("answers", [])),
                        list(d.get("sources", [])),
                        bool(d.get("impossible", not d.get("answers"))),
                    )
                )
            except (ValueError, KeyError, TypeError) as e:
                raise QAError(f"{path}:{n}: not a question record ({e})") from None
    if not out:
        raise QAError(f"question file {path} holds no questions")
    return out


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _holds_gold(text: str, answers: list[str]) -> bool:
    norm = normalize_answer(text)
    return any(normalize_answer(a) and normalize_answer(a) in norm for a in answers)


def evaluate(engine, questions: list[Question], retrieval_modes=("sparse", "dense", "hybrid")) -> Report:
    from .retrieval import retrieve

    engine.refresh()
    engine.answer(questions[0].question)  # warm-up: not timed
    rows, latencies = [], []
    for q in questions:
        t0 = time.perf_counter()
        r = engine.answer(q.question)
        latencies.append((time.perf_counter() - t0) * 1000)
        row = {"id": q.id, "question": q.question, "prediction": r.text, "gold": q.answers,
               "impossible": q.impossible, "score": r.score, "guess": r.guess,
               "guess_confidence": r.guess_confidence}
        if not q.impossible:
            if row["guess"] is not None:
                row["guess_f1"] = max(f1_score(row["guess"], g) for g in q.answers)
            pred = r.text or ""
            row["em"] = max(exact_match(pred, g) for g in q.answers) if r.text else 0.0
            row["f1"] = max(f1_score(pred, g) for g in q.answers) if r.text else 0.0
            row["first_quote_hit"] = bool(r.quotes) and _holds_gold(r.quotes[0].text, q.answers)
        rows.append(row)
    answerable = [r for r in rows if not r["impossible"]]
    impossible = [r for r in rows if r["impossible"]]

    def pct(values) -> float:
        values = list(values)
        return round(100 * sum(values) / len(values), 1) if values else float("nan")

    modes = {}
    index = engine.index
    for mode in retrieval_modes:
        hits = []
        for q in questions:
            if q.impossible:
                continue
            vec = engine.encoder.encode_query(q.question) if mode != "sparse" else None
            top = retrieve(index, vec, q.question, k=1, mode=mode)
            hits.append(bool(top) and _holds_gold(index.text(top[0].passage_id), q.answers))
        modes[mode] = pct(hits)
    latencies.sort()
    return Report(
        questions=len(rows),
        answerable=len(answerable),
        exact_match=pct(r["em"] for r in answerable),
        f1=pct(r["f1"] for r in answerable),
        no_answer_accuracy=pct(r["prediction"] is None for r in impossible),
        answered_rate=pct(r["prediction"] is not None for r in answerable),
        first_quote_hit=pct(r["first_quote_hit"] for r in answerable),
        latency_ms_median=round(statistics.median(latencies), 2),
        latency_ms_p95=round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
        retrieval_first_hit=modes,
        rows=rows,
    )


def format_report(report: Report, details: bool = False) -> str:
    lines = [
        f"{'questions':<34}{report.questions} ({report.answerable} answerable)",
        f"{'exact match (answerable)':<34}{report.exact_match:.1f}",
        f"{'F1 (answerable)':<34}{report.f1:.1f}",
        f"{'answered (answerable)':<34}{report.answered_rate:.1f}%",
        f"{'declined (unanswerable)':<34}{report.no_answer_accuracy:.1f}%",
        f"{'first quote holds the answer':<34}{report.first_quote_hit:.1f}%",
    ]
    for mode, value in report.retrieval_first_hit.items():
        lines.append(f"{'retrieval top-1 hit, ' + mode:<34}{value:.1f}%")
    lines.append(
        f"{'latency median / p95':<34}{report.latency_ms_median:.1f} / "
        f"{report.latency_ms_p95:.1f} ms"
    )
    if details:
        lines.append("")
        for r in report.rows:
            mark = "ok " if (r["impossible"] and r["prediction"] is None) or r.get("f1", 0) >= 0.5 else "XX "
            lines.append(f"{mark}{r['id']}: {r['question']} -> {r['prediction']!r} (gold {r['gold'][:2]})")
    return "\n".join(lines)

"""Calibrate the shipped reader on the validation split and measure it there.

    python -m training.calibrate [--per-source 150]

The validation questions (split off the training files by article, never trained on) are
read as the pipeline reads them: the question's own paragraph among three other paragraphs
of its article (or, where the article has no others, of its source). A quarter of the
answerable questions lose their own paragraph, as when retrieval misses it: those have no
answer. For each question the reader's best span gives two features, its margin over "no
answer" and its log-probability; two logistic models are fitted on them, P(the answer is
right) and P(the passages hold no answer). "Right" means token F1 >= 0.5 against a gold
answer. The threshold maximises the mean of answerable F1 (a decline scores 0) and no-answer
accuracy. Calibration error is measured on half the articles with models fitted on the other
half; the shipped models are then fitted on all of them.

Writes ``qa/reading/model/calibration.json`` and ``docs/reliability.png``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from training import data as data_mod

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE.parent / "qa" / "reading" / "model"
PLOT = HERE.parent / "docs" / "reliability.png"
DISTRACTORS = 3
MISSING_SHARE = 0.25
RIGHT_F1 = 0.5
BINS = 10


def f1(prediction: str, golds: list[str]) -> float:
    from qa.evaluate import f1_score

    return max((f1_score(prediction, g) for g in golds), default=0.0)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weights (w1, w2, bias) by Newton's method with a small L2 penalty."""
    X = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -50, 50)))
        grad = X.T @ (p - y) + l2 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x @ w[:2] + w[2], -50, 50)))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = BINS):
    """(expected calibration error, [(mean confidence, accuracy, count)] per bin)."""
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for i in range(bins):
        sel = (p >= edges[i]) & ((p < edges[i + 1]) if i < bins - 1 else (p <= 1))
        if sel.any():
            rows.append((float(p[sel].mean()), float(y[sel].mean()), int(sel.sum())))
            ece += sel.sum() / len(p) * abs(p[sel].mean() - y[sel].mean())
    return float(ece), rows


def cases(per_source: int, seed: int = 0):
    """The validation questions, each with the paragraphs it is read among."""
    _, val = data_mod.split(data_mod.read_all(check=False))
    rng = random.Random(seed)
    by_article, by_source = defaultdict(list), defaultdict(list)
    for ex in val:
        for pool in (by_article[data_mod.article_of(ex)], by_source[ex.source]):
            if ex.context not in pool:
                pool.append(ex.context)
    picked = []
    groups = defaultdict(list)
    for ex in val:
        if ex.source != "covidqa":
            groups[ex.source].append(ex)
    for source in sorted(groups):
        items = groups[source]
        picked.extend(rng.sample(items, min(per_source, len(items))))
    out = []
    for ex in picked:
        golds = [a["text"] for a in ex.answers]
        lowered = [g.lower() for g in golds]
        pool = [c for c in by_article[data_mod.article_of(ex)] if c != ex.context]
        if len(pool) < DISTRACTORS:
            pool += rng.sample(by_source[ex.source], min(len(by_source[ex.source]), 20))
        pool = [c for c in dict.fromkeys(pool)
                if c != ex.context and not any(g in c.lower() for g in lowered)]
        texts = rng.sample(pool, min(DISTRACTORS, len(pool)))
        missing = bool(golds) and rng.random() < MISSING_SHARE
        if not missing:
            texts.insert(rng.randrange(len(texts) + 1), ex.context)
        out.append({"article": data_mod.article_of(ex), "source": ex.source,
                    "question": ex.question, "texts": texts,
                    "golds": [] if missing else golds, "kind": ex.kind if not missing else "missing"})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-source", type=int, default=150)
    args = ap.parse_args(argv)
    from qa.reading.trained import SpanModel

    model = SpanModel(MODEL_DIR)
    rows = []
    for case in cases(args.per_source):
        spans = [s for s in model.best_spans(case["question"], case["texts"]) if s is not None]
        best = max(spans, key=lambda s: s.margin) if spans else None
        text = case["texts"][best.window][best.start : best.end] if best else ""
        score = f1(text, case["golds"]) if case["golds"] else 0.0
        rows.append({**{k: case[k] for k in ("article", "source", "kind")},
                     "has_answer": bool(case["golds"]), "f1": score,
                     "margin": best.margin if best else -30.0,
                     "log_prob": best.log_prob if best else -30.0})
    work = HERE / "work"
    work.mkdir(exist_ok=True)
    (work / "calibration_rows.json").write_text(json.dumps(rows))
    x = np.array([[r["margin"], r["log_prob"]] for r in rows])
    right = np.array([r["has_answer"] and r["f1"] >= RIGHT_F1 for r in rows], dtype=float)
    none = np.array([not r["has_answer"] for r in rows], dtype=float)
    articles = sorted({r["article"] for r in rows})
    random.Random(1).shuffle(articles)
    half = set(articles[: len(articles) // 2])
    a = np.array([r["article"] in half for r in rows])
    held = predict(fit_logistic(x[a], right[a]), x[~a])
    ece, bins = reliability(held, right[~a])
    w_right, w_none = fit_logistic(x, right), fit_logistic(x, none)
    p = predict(w_right, x)
    f1s = np.array([r["f1"] for r in rows])
    has = none == 0

    def outcome(t: float) -> tuple[float, float]:
        answered = p >= t
        return (float(np.where(answered, f1s, 0)[has].mean()),
                float((~answered)[~has].mean()) if (~has).any() else 1.0)

    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    threshold = float(max(grid, key=lambda t: (sum(outcome(t)), -t)))
    ans_f1, no_acc = outcome(threshold)
    per_source = {}
    for source in sorted({r["source"] for r in rows}):
        sel = np.array([r["source"] == source for r in rows])
        answered = p >= threshold
        per_source[source] = {
            "questions": int(sel.sum()),
            "answerable_f1": round(100 * float(np.where(answered, f1s, 0)[sel & has].mean()), 1)
            if (sel & has).any() else None,
            "no_answer_accuracy": round(100 * float((~answered)[sel & ~has].mean()), 1)
            if (sel & ~has).any() else None,
        }
    result = {
        "right": [float(v) for v in w_right], "none": [float(v) for v in w_none],
        "threshold": threshold, "features": ["margin", "log_prob"],
        "right_means": f"token F1 >= {RIGHT_F1} against a gold answer",
        "validation": {
            "questions": len(rows), "answerable": int(has.sum()),
            "answerable_f1": round(100 * ans_f1, 1), "no_answer_accuracy": round(100 * no_acc, 1),
            "gold_in_reach_f1": round(100 * float(f1s[has].mean()), 1),
            "ece_held_half": round(ece, 4), "reliability_bins": bins, "per_source": per_source,
        },
    }
    tmp = MODEL_DIR / "calibration.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(MODEL_DIR / "calibration.json")
    plot(bins, ece)
    print(json.dumps(result["validation"], indent=1))


def plot(bins, ece: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="perfect calibration")
    conf = [b[0] for b in bins]
    acc = [b[1] for b in bins]
    ax.plot(conf, acc, marker="o", color="#1f5fa8", label="trained reader")
    for c, a_, n in bins:
        ax.annotate(str(n), (c, a_), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("confidence P(answer right)")
    ax.set_ylabel("share right")
    ax.set_title(f"Reliability on held-out validation articles\nECE {ece:.3f}", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT)


if __name__ == "__main__":
    main()

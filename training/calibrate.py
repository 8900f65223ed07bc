"""Calibrate the shipped reader on the validation split and measure it there.

    python -m training.calibrate [--per-source 300]

The validation questions (split off the training files by article, never trained on) are
read as the pipeline reads them: each source's validation articles are indexed as a folder
of documents, and each question is answered from its source's folder by ``QA.retrieve``
(hybrid retrieval, the reader's depth, each retriever's own best) and the reader's windows,
so the features below are what the reader sees at question time, distractors and all. A
fifth of the answerable questions have the passages holding their answer dropped from what is
read (a near miss), a fifth every passage of their own article (a question the documents do
not cover), and perturbed near misses are made from the SQuAD-style ones (names swapped,
opposites, negations); questions whose answer retrieval misses stay among the answerable
ones, where declining scores 0. For each question the reader's best span gives its features
(``qa.reading.trained.span_features``); two logistic models are fitted on them, P(the answer
is right) (token F1 >= 0.5 against a gold answer) and P(the passages hold no answer).

The threshold maximises SQuAD 2.0's overall F1 (an answer scores its F1, a decline 1 where
there is no answer, else 0) on the mixture people bring (``MIXTURE``: 70% answerable, 15% not
covered, 15% near misses, by weighting); the guess floor below it maximises right guesses
less ``WRONG_GUESS_COST`` per wrong one. Calibration error, AUROC of P(right) and the
figures are also measured held out: on each half of the questions (split by article within
each source) with models and threshold fitted on the other half. The shipped models are
then fitted on all of them.

Writes ``qa/reading/model/calibration.json`` and ``docs/reliability.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from qa.reading.trained import FEATURES, FLOOR, MAX_LENGTH
from training import data as data_mod

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE.parent / "qa" / "reading" / "model"
PLOT = HERE.parent / "docs" / "reliability.png"
MISSING_SHARE = 0.2  # answerable questions read without the passages holding their answer
NOT_COVERED_SHARE = 0.2  # answerable questions read without any passage of their article
# The mixture of questions the decision rule is chosen for, as people ask them: mostly about
# what the documents say, some about what they do not cover, some near misses.
MIXTURE = {"answerable": 0.70, "not covered": 0.15, "near miss": 0.15}
NEAR_MISS_RATE = 0.15  # validation questions of SQuAD-style sources that yield a perturbed one
# A guess is labelled as one, so a wrong guess costs less than a wrong answer: it is shown
# where right guesses outnumber wrong ones by this weight.
WRONG_GUESS_COST = 0.5
READ_PAST_MISSING = 8  # passages retrieved beyond the usual, to read when the answer's are dropped
RIGHT_F1 = 0.5
# The features of a question where no window has a span (the reader then declines).
NO_SPAN = {"margin": FLOOR, "log_prob": FLOOR, "agree": 0.0, "rival": FLOOR, "rank": 8.0,
           "answer_words": 0.0, "repeats_question": 0.0, "windows_answering": 0.0,
           "relevance": 0.0, "type_fit": 0.0, "furniture": 0.0}
BINS = 10


def f1(prediction: str, golds: list[str]) -> float:
    from qa.evaluate import f1_score

    return max((f1_score(prediction, g) for g in golds), default=0.0)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weights (one per column of ``x``, then the bias) by Newton's method with a small L2
    penalty."""
    X = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -50, 50)))
        grad = X.T @ (p - y) + l2 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x @ w[:-1] + w[-1], -50, 50)))


def outcome(p: np.ndarray, threshold: float, f1s: np.ndarray, has: np.ndarray) -> tuple[float, float]:
    """(answerable F1, a decline scoring 0; no-answer accuracy) when answering at P(right) >=
    ``threshold``."""
    answered = p >= threshold
    return (float(np.where(answered, f1s, 0)[has].mean()) if has.any() else 0.0,
            float((~answered)[~has].mean()) if (~has).any() else 1.0)


# The features of the shipped calibration: "furniture" was measured and adds nothing on
# validation (docs/reader.md), so it is a rule in the reader rather than a feature.
SHIPPED_FEATURES = tuple(f for f in FEATURES if f != "furniture")
GRID = np.round(np.arange(0.05, 0.96, 0.01), 2)


def halves(rows: list[dict], seed: int = 1) -> np.ndarray:
    """Two halves of the validation questions, each source split by article (by question
    where a source has fewer than four articles, as the released SQuAD dev articles)."""
    rng = random.Random(seed)
    first = np.zeros(len(rows), dtype=bool)
    by_source = defaultdict(list)
    for i, r in enumerate(rows):
        by_source[r["source"]].append(i)
    for source in sorted(by_source):
        idx = by_source[source]
        articles = sorted({rows[i]["article"] for i in idx})
        if len(articles) >= 4:
            rng.shuffle(articles)
            chosen = set(articles[: len(articles) // 2])
            for i in idx:
                first[i] = rows[i]["article"] in chosen
        else:
            for i in idx:
                first[i] = rng.random() < 0.5
    return first


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


def file_name(ex) -> str:
    """The documents-folder file holding ``ex``'s article."""
    return hashlib.sha1(data_mod.article_of(ex).encode()).hexdigest()[:16] + ".txt"


def corpora(val, root: Path) -> dict[str, Path]:
    """One documents folder per source: each validation article a file, its paragraphs
    separated by blank lines (a paragraph's own blank lines become line breaks)."""
    folders = {}
    by_file: dict[tuple[str, str], list[str]] = defaultdict(list)
    for ex in val:
        name = file_name(ex)
        paragraph = re.sub(r"\n\s*\n", "\n", ex.context.strip())
        if paragraph not in by_file[ex.source, name]:
            by_file[ex.source, name].append(paragraph)
    for (source, name), paragraphs in by_file.items():
        folder = root / source
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        text = "\n\n".join(paragraphs) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        folders[source] = folder
    return folders


def cases(per_source: int, work: Path, seed: int = 0):
    """The validation questions, each with the passages the pipeline reads for it: every
    source's validation articles are indexed as a documents folder and each question is
    retrieved from its source's folder, as ``QA.answer`` retrieves. For a share of the
    answerable questions the answer is taken out of reach (the passages holding a gold answer
    are dropped from the retrieved ones and the next are read instead), as for a question
    whose answer is not in the documents."""
    from qa import QA
    from qa.embedding import Encoder

    _, val = data_mod.split(data_mod.read_all(check=False))
    val = [ex for ex in val if ex.source != "covidqa"]
    # Near misses as SQuAD 2.0's writers made them, from the validation questions themselves.
    squad_like = [ex for ex in val if ex.answers and ex.source in data_mod.HARD_SOURCES]
    val += (data_mod.swap_negatives(squad_like, rate=NEAR_MISS_RATE, seed=seed)
            + data_mod.perturbed_negatives(squad_like, rate=NEAR_MISS_RATE, seed=seed))
    rng = random.Random(seed)
    groups = defaultdict(list)
    for ex in val:
        groups[ex.source].append(ex)
    folders = corpora(val, work / "calibration-docs")
    file_names = {source: {data_mod.article_of(ex): file_name(ex) for ex in items}
                  for source, items in groups.items()}
    encoder = Encoder()
    out = []
    for source in sorted(groups):
        engine = QA(folders[source], work / "calibration-index" / source, encoder=encoder,
                    reader="trained")
        items = groups[source]
        for ex in rng.sample(items, min(per_source, len(items))):
            golds = [a["text"] for a in ex.answers]
            lowered = [g.lower() for g in golds]
            draw = rng.random()
            missing = bool(golds) and draw < MISSING_SHARE
            not_covered = bool(golds) and MISSING_SHARE <= draw < MISSING_SHARE + NOT_COVERED_SHARE
            index, _, hits = engine.retrieve(ex.question)
            if missing or not_covered:
                wanted = len(hits)
                _, _, more = engine.retrieve(ex.question, top_k=wanted + READ_PAST_MISSING)
                own = file_names[source][data_mod.article_of(ex)]
                hits = [h for h in more
                        if not (index.passage(h.passage_id).source == own if not_covered
                                else any(g in index.text(h.passage_id).lower() for g in lowered))]
                hits = hits[:wanted]
            texts = [index.text(h.passage_id) for h in hits]
            in_reach = any(g in t.lower() for g in lowered for t in texts)
            kind = ("not covered" if not_covered else "missing" if missing
                    else ex.kind if in_reach or not golds else "not retrieved")
            out.append({"article": data_mod.article_of(ex), "source": source,
                        "question": ex.question, "texts": texts,
                        "relevance": [h.score for h in hits],
                        "golds": golds if in_reach else [], "kind": kind})
    return out


def group_of(row: dict) -> str:
    """Which part of the use-like mixture (``MIXTURE``) a validation question stands for."""
    if row["kind"] == "not covered":
        return "not covered"
    if row["has_answer"] or row["kind"] == "not retrieved":
        return "answerable"
    return "near miss"


def mixture_weights(groups: list[str]) -> np.ndarray:
    """Per-question weights that give each group its share of ``MIXTURE``."""
    counts = {g: groups.count(g) for g in MIXTURE}
    return np.array([MIXTURE[g] / counts[g] for g in groups])


def overall_scores(p: np.ndarray, threshold: float, f1s: np.ndarray,
                   declinable: np.ndarray) -> np.ndarray:
    """SQuAD 2.0's overall score of each question when answering at P(right) >= ``threshold``:
    an answer scores its F1, a decline 1 where the documents hold no answer, else 0."""
    return np.where(p >= threshold, f1s, declinable.astype(float))


def best_threshold(p: np.ndarray, f1s: np.ndarray, declinable: np.ndarray,
                   weights: np.ndarray) -> float:
    """The threshold maximising the weighted overall score (the lower on ties)."""
    return float(max(GRID, key=lambda t: (
        float(weights @ overall_scores(p, t, f1s, declinable)), -t)))


def guess_value(p: np.ndarray, floor: float, threshold: float, right: np.ndarray,
                weights: np.ndarray) -> float:
    """Right guesses less ``WRONG_GUESS_COST`` for each wrong one, guesses being shown where
    ``floor <= P(right) < threshold``."""
    shown = (p >= floor) & (p < threshold)
    return float(weights[shown] @ np.where(right[shown] > 0, 1.0, -WRONG_GUESS_COST))


def best_guess_floor(p, threshold, right, weights) -> float:
    return float(max([t for t in GRID if t <= threshold] or [threshold],
                     key=lambda t: (guess_value(p, t, threshold, right, weights), t)))


def auroc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of ``p`` separating ``y`` = 1 from 0 (ties count half)."""
    pos, neg = p[y > 0], p[y <= 0]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def summary(p, threshold, f1s, has, declinable, weights) -> dict:
    """Answerable F1 (a decline scores 0), no-answer accuracy and the weighted overall F1."""
    ans_f1, no_acc = outcome(p, threshold, f1s, has)
    overall = float(weights @ overall_scores(p, threshold, f1s, declinable)) / float(weights.sum())
    return {"answerable_f1": round(100 * ans_f1, 1), "no_answer_accuracy": round(100 * no_acc, 1),
            "overall_f1": round(100 * overall, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-source", type=int, default=300)
    ap.add_argument("--features", default=",".join(SHIPPED_FEATURES),
                    help="comma-separated, from: " + ", ".join(FEATURES))
    ap.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    ap.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                    help="the reader to calibrate (a candidate's folder: reader.onnx, tokenizer.json)")
    args = ap.parse_args(argv)
    features = args.features.split(",")
    if set(features) - set(FEATURES):
        raise SystemExit(f"unknown features: {sorted(set(features) - set(FEATURES))}")
    work = HERE / "work"
    rows = feature_rows(args.per_source, work, args.model_dir)
    x = np.array([[r["features"].get(f, 0.0) for f in features] for r in rows])
    right = np.array([r["has_answer"] and r["f1"] >= RIGHT_F1 for r in rows], dtype=float)
    has = np.array([r["has_answer"] for r in rows])
    f1s = np.array([r["f1"] for r in rows])
    groups = [group_of(r) for r in rows]
    declinable = np.array([g != "answerable" for g in groups])
    weights = mixture_weights(groups)
    # Held-out figures: models and thresholds fitted on one half, measured on the other.
    first = halves(rows)
    held_p = np.zeros(len(rows))
    held = []
    for fit_on in (first, ~first):
        w = fit_logistic(x[fit_on], right[fit_on])
        t = best_threshold(predict(w, x[fit_on]), f1s[fit_on], declinable[fit_on],
                           weights[fit_on])
        held_p[~fit_on] = predict(w, x[~fit_on])
        held.append(summary(held_p[~fit_on], t, f1s[~fit_on], has[~fit_on], declinable[~fit_on],
                            weights[~fit_on]))
    ece, bins = reliability(held_p, right)
    w_right, w_none = fit_logistic(x, right), fit_logistic(x, (~has).astype(float))
    p = predict(w_right, x)
    threshold = best_threshold(p, f1s, declinable, weights)
    guess_floor = best_guess_floor(p, threshold, right, weights)
    per_source = {}
    for source in sorted({r["source"] for r in rows}):
        sel = np.array([r["source"] == source for r in rows])
        per_source[source] = {"questions": int(sel.sum()),
                              **summary(p[sel], threshold, f1s[sel], has[sel], declinable[sel],
                                        weights[sel])}
    curve = [{"threshold": float(t), **summary(held_p, t, f1s, has, declinable, weights)}
             for t in GRID[::5]]
    result = {
        "features": features,
        "right": [float(v) for v in w_right], "none": [float(v) for v in w_none],
        "threshold": threshold, "guess_floor": guess_floor,
        "right_means": f"token F1 >= {RIGHT_F1} against a gold answer",
        "mixture": MIXTURE,
        "validation": {
            "questions": len(rows), "answerable": int(has.sum()),
            "by_group": {g: groups.count(g) for g in MIXTURE},
            **summary(p, threshold, f1s, has, declinable, weights),
            "best_span_f1": round(100 * float(f1s[has].mean()), 1),
            "auroc_held_half": round(auroc(held_p, right), 4),
            "held_half": {k: round(float(np.mean([h[k] for h in held])), 1) for k in held[0]},
            "ece_held_half": round(ece, 4), "reliability_bins": bins,
            "curve_held_half": curve, "per_source": per_source,
        },
    }
    print(json.dumps({k: v for k, v in result["validation"].items()
                      if k not in ("reliability_bins", "per_source")}, indent=1))
    print("threshold", threshold, "guess floor", guess_floor)
    if args.dry_run:
        return
    tmp = args.model_dir / "calibration.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.model_dir / "calibration.json")
    if args.model_dir == MODEL_DIR:
        plot(bins, ece)


def feature_rows(per_source: int, work: Path, model_dir: Path = MODEL_DIR) -> list[dict]:
    """Each validation question read by the model: its best span's features and F1. Kept in
    ``work/calibration_rows.<sha>.json`` for the model's file, so that another ``--features``
    choice reads nothing again."""
    from qa.reading.trained import TrainedReader

    model_file = model_dir / "reader.onnx"
    stamp = {"model_sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
             "max_length": MAX_LENGTH, "per_source": per_source, "features": list(FEATURES),
             "mixture": [MISSING_SHARE, NOT_COVERED_SHARE]}
    saved = work / f"calibration_rows.{stamp['model_sha256'][:12]}.json"
    if saved.is_file():
        kept = json.loads(saved.read_text(encoding="utf-8"))
        if kept.get("stamp") == stamp:
            return kept["rows"]
    reader = TrainedReader(model_dir)
    rows = []
    for case in cases(per_source, work):
        reading = reader.judge(case["question"], case["texts"], case["relevance"])
        x, text = (reading.features, reading.text) if reading else (dict(NO_SPAN), "")
        rows.append({**{k: case[k] for k in ("article", "source", "kind")},
                     "has_answer": bool(case["golds"]),
                     "f1": f1(text, case["golds"]) if case["golds"] else 0.0, "features": x})
    work.mkdir(exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "rows": rows}))
    tmp.replace(saved)
    return rows


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
    ax.set_title(f"Reliability on held-out validation halves,\nread as the pipeline reads: ECE {ece:.3f}",
                 fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT)


if __name__ == "__main__":
    main()

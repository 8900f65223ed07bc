"""What the trained reader's threshold trades: answerable F1 against no-answer accuracy at
several thresholds on P(right), each question read once.

    python -m benchmarks.tradeoff [--sets squad-heldout,blind] [--thresholds 0.3,0.4,...]
                                  [--declined 55,70]

The shipped threshold was chosen on the training data's validation split
(``training/calibrate.py``); this shows what another one would give on the evaluation sets,
without choosing anything. Writes ``benchmarks/out/tradeoff.md`` and prints it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.quality import ROOT, SETS


def read_once(engine, questions) -> list[tuple[float, float, bool]]:
    """(P(right), F1 of the best span, unanswerable) for each question."""
    from qa.evaluate import f1_score

    reader = engine.reader
    calibration = reader.calibration()
    out = []
    for q in questions:
        index, _, hits = engine.retrieve(q.question)
        reading = reader.judge(q.question, [index.text(h.passage_id) for h in hits],
                               [h.score for h in hits])
        if reading is None:
            out.append((0.0, 0.0, q.impossible))
            continue
        f1 = 0.0 if q.impossible else max(f1_score(reading.text, g) for g in q.answers)
        out.append((calibration.p_right(reading.features), f1, q.impossible))
    return out


def trade(rows: list[tuple[float, float, bool]], threshold: float) -> tuple[float, float]:
    """(answerable F1, a decline scoring 0; no-answer accuracy), in percent, as the
    calibration measures them (``training.calibrate.outcome``)."""
    import numpy as np

    from training.calibrate import outcome

    p, f1s, impossible = (np.array(column) for column in zip(*rows))
    answerable_f1, no_answer = outcome(p, threshold, f1s, ~impossible.astype(bool))
    return 100 * answerable_f1, 100 * no_answer


def at_declined(rows: list[tuple[float, float, bool]], share: float) -> tuple[float, float, float]:
    """The curve where at least ``share`` percent of the unanswerable questions are declined:
    (the lowest threshold in steps of 0.01 that gets there, answerable F1, no-answer %)."""
    for t in [i / 100 for i in range(101)]:
        f1, no_answer = trade(rows, t)
        if no_answer >= share:
            return t, f1, no_answer
    return 1.0, *trade(rows, 1.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="squad-heldout")
    ap.add_argument("--thresholds", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--declined", default="55,70",
                    help="also show the curve where these percentages are declined")
    ap.add_argument("--calibration", type=Path,
                    help="another calibration.json to read with (e.g. an earlier one, to compare)")
    args = ap.parse_args(argv)
    from qa import QA
    from qa.embedding import Encoder
    from qa.evaluate import load_questions

    encoder = Encoder()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            docs, path = SETS[name]
            engine = QA(docs, Path(tmp) / name, encoder=encoder, reader="trained")
            if args.calibration:
                from qa.reading.trained import Calibration

                engine.reader._calibration = Calibration.load(args.calibration)
            shipped = engine.reader.calibration().threshold
            rows = read_once(engine, load_questions(path))
            points = sorted({*thresholds, shipped})
            lines += [f"**{name}** ({len(rows)} questions), answerable F1 / no-answer % by "
                      "threshold on P(right):", "",
                      "| threshold | " + " | ".join(
                          f"{t:.2f}" + (" (shipped)" if t == shipped else "") for t in points)
                      + " |",
                      "|---|" + "---:|" * len(points),
                      "| F1 / no-answer | " + " | ".join(
                          "{:.1f} / {:.0f}".format(*trade(rows, t)) for t in points) + " |", ""]
            lines += ["At {:.0f}% or more declined: threshold {:.2f}, F1 {:.1f} / no-answer {:.0f}"
                      .format(float(d), *at_declined(rows, float(d))) + "  "
                      for d in args.declined.split(",") if d]
            lines.append("")
    table = "\n".join(lines)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tradeoff.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

"""How long a question waits while the index is updated in the same process.

    python -m benchmarks.answer_during_update [--passages 1000] [--rounds 2]

Builds the seeds, then times ``QA.answer()`` on the seeds' dev questions three ways, taking
turns: with nothing else running, and while a background update indexes ``--passages`` new
synthetic passages (``benchmarks.bench``'s generator) with the build encoder's threads at
niceness 0 and at ``config.BUILD_NICENESS``. Prints medians and p95s, their ratios to the
quiet run, and each update's duration.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.bench import DEV_QUESTIONS, SEEDS, CorpusGenerator


def _timed(engine, questions: list[str], until=None, minimum: int = 0) -> list[float]:
    """Milliseconds per answer, asking in a loop while ``until()`` holds (else one pass)."""
    out, i = [], 0
    while (until() if until else i < len(questions)) or len(out) < minimum:
        t = time.perf_counter()
        engine.answer(questions[i % len(questions)])
        out.append(1000 * (time.perf_counter() - t))
        i += 1
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    from qa import QA, config
    from qa.evaluate import load_questions

    questions = [q.question for q in load_questions(DEV_QUESTIONS)]
    niceness = config.BUILD_NICENESS or 10
    runs: dict[str, list[float]] = {"quiet": [], "update, niceness 0": [],
                                    f"update, niceness {niceness}": []}
    durations: dict[str, list[float]] = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        shutil.copytree(SEEDS, docs)
        engine = QA(docs, Path(tmp) / "index", check_interval=3600.0)
        engine.refresh()
        _timed(engine, questions)  # warm-up
        for r in range(args.rounds):
            for label in runs:
                if label == "quiet":
                    runs[label] += _timed(engine, questions)
                    continue
                config.BUILD_NICENESS = int(label.rsplit(" ", 1)[1])
                extra = docs / f"extra-{r}-{config.BUILD_NICENESS}"
                CorpusGenerator(seed=100 * r + config.BUILD_NICENESS).write(args.passages, extra)
                t = time.perf_counter()
                worker = engine.update_in_background()
                runs[label] += _timed(engine, questions, worker.is_alive, minimum=5)
                worker.join()
                durations[label].append(time.perf_counter() - t)
                shutil.rmtree(extra)
                engine.refresh(force=True)
    quiet = statistics.median(runs["quiet"])
    print(f"{args.passages} passages per update, {args.rounds} rounds taking turns\n")
    print("| condition | answers | median ms | p95 ms | median / quiet | update s |")
    print("|---|---:|---:|---:|---:|---|")
    for label, ms in runs.items():
        ms.sort()
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        med = statistics.median(ms)
        spent = ", ".join(f"{d:.0f}" for d in durations[label]) or "-"
        print(f"| {label} | {len(ms)} | {med:.0f} | {p95:.0f} | {med / quiet:.2f} | {spent} |")


if __name__ == "__main__":
    main()

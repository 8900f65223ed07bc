"""Time an incremental update: one edited file in a corpus of N files (default 10,000).

    .venv/bin/python -m benchmarks.incremental [--files 10000] [--runs 5]

Builds the corpus once, then edits one file per run and times ``QA.refresh(force=True)``:
what ``answer()`` does when the folder changed (scan it, see what changed, update the index,
load the new version). Reports the median and each run; a full build of the same corpus is
timed once as the reference.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

WORDS = ["council", "harbour", "station", "bridge", "library", "museum", "river", "festival", "company", "minister", "report", "budget", "project", "plan", "vote", "season", "winter", "summer", "market", "school", "hospital", "road", "railway", "district", "mayor", "director", "trust", "fund", "visitors", "crates", "ferry", "depot", "tower", "garden", "archive"]


def make_corpus(folder: Path, files: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(files):
        sub = folder / f"part{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        words = " ".join(rng.choice(WORDS) for _ in range(40))
        (sub / f"doc{i:05d}.txt").write_text(
            f"Record {i}\n\nThe {rng.choice(WORDS)} of Varnel {i} holds {rng.randint(10, 9999):,} "
            f"items, officials said on {rng.randint(1, 28)} March. {words.capitalize()}.\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reader", default="rules", help="trained, rules or rules:fast")
    args = parser.parse_args()
    from qa import QA

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "docs", args.files)
        engine = QA(tmp / "docs", tmp / "index", reader=args.reader)
        t0 = time.perf_counter()
        first = engine.rebuild()
        full = time.perf_counter() - t0
        print(f"full build: {args.files} files, {first.passages} passages in {full:.1f} s")
        times, embedded = [], []
        for run in range(args.runs):
            path = tmp / "docs" / "part00" / f"doc{run:05d}.txt"
            path.write_text(path.read_text() + f"\nEdited in run {run}: the depot holds {run} crates.\n")
            t0 = time.perf_counter()
            report = engine.refresh(force=True)
            times.append(time.perf_counter() - t0)
            assert report is not None and engine.stale_reasons() == []
            embedded.append(report.embedded)
        print(
            f"incremental update after editing 1 file: median {statistics.median(times):.3f} s "
            f"(runs: {', '.join(f'{t:.3f}' for t in times)}), passages embedded per run: {embedded}; "
            f"full build reference {full:.1f} s (ratio {statistics.median(times) / full:.4f})"
        )


if __name__ == "__main__":
    main()

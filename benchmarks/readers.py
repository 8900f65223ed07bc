"""Speed of each reader on the seeds, side by side: warm ``answer()`` and a cold ``qa ask``.

    python -m benchmarks.readers [--runs 3] [--passes 5] [--cold-runs 5]

Warm: one process, both engines built first; then, alternating readers, ``--runs`` runs of
``--passes`` passes over the dev questions, each run's median reported. Cold: ``qa ask`` in a
fresh process on an index already built, ``--cold-runs`` times per reader, alternating, with
``python -c 'import numpy'`` timed beside it as the machine's reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT.parent / "shared" / "eval" / "seed_questions.jsonl"
READERS = ("trained", "rules")


def warm(runs: int, passes: int, index_root: Path) -> dict:
    from qa import QA
    from qa.embedding import Encoder
    from qa.evaluate import load_questions

    questions = [q.question for q in load_questions(QUESTIONS)]
    encoder = Encoder()
    engines = {r: QA(ROOT / "seeds", index_root / r, encoder=encoder, reader=r) for r in READERS}
    for engine in engines.values():
        engine.answer(questions[0])
    medians: dict[str, list[float]] = {r: [] for r in READERS}
    for _ in range(runs):
        for reader, engine in engines.items():
            times = []
            for _ in range(passes):
                for q in questions:
                    t0 = time.perf_counter()
                    engine.answer(q)
                    times.append((time.perf_counter() - t0) * 1000)
            medians[reader].append(round(statistics.median(times), 2))
    return medians


def cold(runs: int, index_root: Path) -> dict:
    env = dict(os.environ)
    qa = str(Path(sys.executable).parent / "qa")
    out: dict[str, list[float]] = {r: [] for r in (*READERS, "import numpy")}
    for _ in range(runs):
        for reader in READERS:
            cmd = [qa, "ask", "How much is the new tranche of military aid worth?",
                   "--seeds", str(ROOT / "seeds"), "--index", str(index_root / reader),
                   "--reader", reader]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            out[reader].append(round(time.perf_counter() - t0, 3))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy"], check=True, env=env)
        out["import numpy"].append(round(time.perf_counter() - t0, 3))
    return {k: {"median_s": statistics.median(v), "runs": v} for k, v in out.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"warm_answer_ms_medians": warm(args.runs, args.passes, Path(tmp)),
                  "cold_qa_ask": cold(args.cold_runs, Path(tmp))}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

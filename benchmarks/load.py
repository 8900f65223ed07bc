"""Load on the chat server as users make it: ``app.py`` started as a process of its own (with a
login) over a copy of the seeds, N clients asking the seed questions in a loop for M minutes
while another thread keeps adding, editing and removing an extra document (so the index keeps
updating), and the server's memory read once a minute.

    .venv/bin/python -m benchmarks.load [--clients 8] [--minutes 5] [--change-every 5]

Writes benchmarks/out/load-<time>.json and .md (a Markdown table, printed too): questions
answered, errors, changed answers, and the server's RSS (the process and its children, from
/proc) at the start of the load (after the baseline below: models loaded, every question
answered) and after each minute.

A *changed answer* is a reply to a seed question whose answer (the answer as shown, "Not sure:
perhaps" included, or the decline) and the files it says the answer is stated in (not its
confidence or relevance figures) are not among those the same server gave to that
question, asked one at a time, before the load, with the extra document absent and present.
So what the changing document may legitimately change is in the baseline, and what is left is
a wrong answer caused by load or by an update racing a question. A reply that quotes the extra
document as where its answer is stated is counted apart (``cited_extra``), not as changed.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT.parent / "shared" / "eval" / "seed_questions.jsonl"
OUT = ROOT / "benchmarks" / "out"
EXTRA = "zz_load_extra.txt"  # the document the changer adds, edits and removes
EXTRA_TEXT = ("Warehouse log. The Varnel depot on the Orrin coast holds {n} crates of spare "
              "parts for the harbour cranes, counted by the quartermaster on Monday.\n")
PROBE = "How many crates of spare parts does the Varnel depot hold?"
USER = "loadtest"
READY = "qa chat is ready: open "

_ANSWER = re.compile(r'<p class="qa-answer[^"]*">(.*?)</p>', re.S)
_STATED = re.compile(r'<p class="qa-meta">[^<]*?· stated in (.*?)</p>', re.S)
_ERROR = re.compile(r'<p class="qa-error">(.*?)</p>', re.S)
_TAG = re.compile(r"<[^>]*>")


def _text(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", fragment)).split())


def reply_key(reply: str) -> tuple[str, tuple[str, ...]]:
    """What identifies an answer: its text (or the decline) and the files it is stated in;
    not its confidence or quotes' relevance, which move with the corpus statistics."""
    m = _ANSWER.search(reply)
    if m is None:
        error = _ERROR.search(reply)
        raise RuntimeError(_text(error.group(1)) if error else f"no answer in {reply[:200]!r}")
    stated = _STATED.search(reply)
    sources = tuple(sorted(_text(s) for s in stated.group(1).split(","))) if stated else ()
    return _text(m.group(1)), sources


def last_reply(history) -> str:
    content = history[-1]["content"]
    if isinstance(content, list):
        content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content)


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(docs: Path, index: Path, password: str, store: str | None,
                 log_path: Path) -> tuple[subprocess.Popen, str]:
    """``python app.py`` as a user starts it (a login through $QA_AUTH); (process, URL)."""
    args = [sys.executable, str(ROOT / "app.py"), "--seeds", str(docs), "--index", str(index),
            "--port", str(free_port())]
    if store:
        args += ["--store", store]
    env = dict(os.environ, QA_AUTH=f"{USER}:{password}", PYTHONUNBUFFERED="1")
    log = open(log_path, "w")  # noqa: SIM115 - kept open for the server's life
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
                            text=True)
    for line in proc.stdout:
        if line.startswith(READY):
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc, line[len(READY):].split()[0]
    raise SystemExit(f"the chat server did not start (exit {proc.wait()}); see {log_path}")


def _drain(stream) -> None:
    for _ in stream:
        pass


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it, in MB (VmRSS in /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


# -- the load --------------------------------------------------------------------------------


@dataclass
class Tally:
    answered: int = 0
    errors: int = 0
    changed: int = 0
    cited_extra: int = 0
    seconds: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    changed_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, sample: str = "") -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            samples = {"errors": self.error_samples, "changed": self.changed_samples}.get(kind)
            if samples is not None and len(samples) < 5:
                samples.append(sample[:300])


def connect(url: str, password: str):
    from gradio_client import Client

    return Client(url, auth=(USER, password), verbose=False, download_files=False)


def ask(client, question: str) -> str:
    _, history, _ = client.predict(question, [], api_name="/ask")
    return last_reply(history)


def set_extra(docs: Path, n: int | None) -> None:
    """The extra document with ``n`` crates (written atomically), or removed (None)."""
    path = docs / EXTRA
    if n is None:
        path.unlink(missing_ok=True)
        return
    tmp = docs / f".{EXTRA}.tmp"  # hidden: never indexed
    tmp.write_text(EXTRA_TEXT.format(n=f"{n:,}"), encoding="utf-8")
    os.replace(tmp, path)


def wait_until_served(client, n: int | None, timeout: float = 300) -> None:
    """Ask the probe question until the answer reflects the extra document's state."""
    want = f"{n:,}" if n is not None else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text, sources = reply_key(ask(client, PROBE))
        if (EXTRA in sources) == (want is not None) and (want is None or want in text):
            return
        time.sleep(0.5)
    raise SystemExit(f"the server did not take up the extra document's change in {timeout} s")


def baseline(client, docs: Path, questions: list[str]) -> dict[str, set]:
    """Each question's answers asked alone, with the extra document absent and present."""
    known: dict[str, set] = {q: set() for q in questions}
    for n in (None, 1234, 98765, None):
        set_extra(docs, n)
        wait_until_served(client, n)
        for q in questions:
            known[q].add(reply_key(ask(client, q)))
    return known


def client_loop(url: str, password: str, questions: list[str], known: dict[str, set],
                offset: int, stop: threading.Event, tally: Tally) -> None:
    try:
        client = connect(url, password)
    except Exception as e:  # noqa: BLE001 - a failed login is an error like any other
        tally.note("errors", f"connect: {e}")
        return
    i = offset
    while not stop.is_set():
        q = questions[i % len(questions)]
        i += 1
        t0 = time.perf_counter()
        try:
            key = reply_key(ask(client, q))
        except Exception as e:  # noqa: BLE001 - every failure is counted
            tally.note("errors", f"{q}: {' '.join(str(e).split())}")
            continue
        tally.seconds.append(time.perf_counter() - t0)
        tally.note("answered")
        if EXTRA in key[1]:
            tally.note("cited_extra")
        elif key not in known[q]:
            tally.note("changed", f"{q} -> {key}")


def changer_loop(docs: Path, every: float, stop: threading.Event, counts: dict) -> None:
    """Add, edit, remove the extra document in turn, one step every ``every`` seconds."""
    step = 0
    while not stop.wait(every):
        n = None if step % 3 == 2 else 1000 + step
        set_extra(docs, n)
        counts[("removed", "added", "edited")[(step + 1) % 3]] += 1
        step += 1


def run(args) -> dict:
    questions = [json.loads(line)["question"] for line in
                 args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    base = Path(tempfile.mkdtemp(prefix="qa-load-"))
    password = secrets.token_urlsafe(12)
    docs = base / "docs"
    shutil.copytree(args.seeds, docs, ignore=shutil.ignore_patterns(".*"))
    os.chmod(docs, 0o755)
    for f in docs.iterdir():
        os.chmod(f, 0o644)
    proc, url = start_server(docs, base / "index", password, args.store, base / "server.log")
    try:
        probe = connect(url, password)
        t0 = time.monotonic()
        known = baseline(probe, docs, questions)
        warm = time.monotonic() - t0
        return load(args, proc, url, password, docs, questions, known) | {
            "baseline_seconds": round(warm, 1), "server_log": str(base / "server.log")}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def load(args, proc, url, password, docs, questions, known) -> dict:
    tally, stop = Tally(), threading.Event()
    counts = {"added": 0, "edited": 0, "removed": 0}
    rss = [tree_rss_mb(proc.pid)]
    threads = [threading.Thread(target=client_loop, daemon=True,
                                args=(url, password, questions, known, i, stop, tally))
               for i in range(args.clients)]
    threads.append(threading.Thread(target=changer_loop, daemon=True,
                                    args=(docs, args.change_every, stop, counts)))
    started = time.monotonic()
    for t in threads:
        t.start()
    for minute in range(1, int(args.minutes) + 1):
        time.sleep(max(0.0, started + 60 * minute - time.monotonic()))
        rss.append(tree_rss_mb(proc.pid))
        print(f"minute {minute}: {tally.answered} answered, {tally.errors} errors, "
              f"{tally.changed} changed, RSS {rss[-1]} MB", flush=True)
        if proc.poll() is not None:
            tally.note("errors", f"the server exited ({proc.returncode})")
            break
    stop.set()
    for t in threads:
        t.join(timeout=120)
    seconds = sorted(tally.seconds)
    return {
        "clients": args.clients, "minutes": args.minutes, "change_every": args.change_every,
        "store": args.store or "files", "questions": len(questions),
        "answered": tally.answered, "errors": tally.errors, "changed": tally.changed,
        "cited_extra": tally.cited_extra, "document_changes": counts,
        "median_seconds": round(statistics.median(seconds), 3) if seconds else None,
        "p95_seconds": round(seconds[int(0.95 * (len(seconds) - 1))], 3) if seconds else None,
        "rss_mb_per_minute": rss, "error_samples": tally.error_samples,
        "changed_samples": tally.changed_samples,
    }


def markdown(result: dict) -> str:
    rss = " → ".join(f"{r:.0f}" for r in result["rss_mb_per_minute"])
    changes = result["document_changes"]
    rows = [
        ("clients × minutes", f"{result['clients']} × {result['minutes']:g}"),
        ("document changes", f"{changes['added']} added, {changes['edited']} edited, "
                             f"{changes['removed']} removed (every {result['change_every']:g} s)"),
        ("questions answered", f"{result['answered']:,}"),
        ("errors", str(result["errors"])),
        ("changed answers", str(result["changed"])),
        ("answers citing the changing document", str(result["cited_extra"])),
        ("seconds per question, median / p95",
         f"{result['median_seconds']} / {result['p95_seconds']}"),
        ("server RSS MB, start then each minute", rss),
    ]
    return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--change-every", type=float, default=5.0,
                   help="seconds between changes of the extra document (default 5)")
    p.add_argument("--seeds", type=Path, default=ROOT / "seeds")
    p.add_argument("--questions", type=Path, default=QUESTIONS,
                   help="JSON lines with a 'question' each (default: the shared seed questions)")
    p.add_argument("--store", default=None, help="the app's --store (default: the file store)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and its log")
    args = p.parse_args(argv)
    if not args.questions.is_file():
        print(f"error: no questions file at {args.questions} (use --questions)", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = {"started": started} | run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / time.strftime("load-%Y%m%d-%H%M%S")
    table = markdown(result)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"\nwritten: {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

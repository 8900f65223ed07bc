"""The `qa` command line: build, ask, chat, status, eval, watch, migrate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import config
from .errors import QAError


def _engine(args):
    from .pipeline import QA
    from .reading import make_reader

    reader = getattr(args, "reader", config.READER)
    if getattr(args, "min_confidence", None) is not None:
        reader = make_reader(reader, min_confidence=args.min_confidence)
    return QA(args.seeds, args.index, model=args.model, reader=reader, store=args.store)


def _progress_bar():
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage, unit="passage", file=sys.stderr,
                               disable=total == 0)
        bar = bars[stage]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def cmd_build(args) -> int:
    engine = _engine(args)
    report = engine.rebuild(progress=_progress_bar(), full=args.full)
    _print_report("indexed", report, engine.backend.location)
    return 0


def _print_report(done: str, report, location: str) -> None:
    print(
        f"{done} {report.documents} documents, {report.passages} passages "
        f"({report.embedded} embedded, {report.reused} reused) in {report.seconds:.1f} s "
        f"-> {location}"
    )
    for reason in report.skipped.values():
        print(f"skipped: {reason}", file=sys.stderr)


def cmd_migrate(args) -> int:
    """Move the folder's file store index into another store: the documents are read again
    (the store records what it indexed), the vectors and annotations are taken from the file
    index, so nothing is embedded again."""
    from .index import IndexCorrupt
    from .pipeline import QA

    target = args.store if args.store is not None else config.STORE
    if not target or "://" not in target:
        raise QAError("name the store to move the index into: qa migrate --store "
                      "milvus:///path/to/file.db (or milvus://host:19530)")
    engine = QA(args.seeds, model=args.model, reader=args.reader, store=target)
    source = QA(args.seeds, args.index, model=args.model, reader=engine.reader, store="",
                encoder=engine.encoder)
    try:
        previous = source.backend.load()
    except IndexCorrupt as e:
        raise QAError(f"the file index cannot be read ({e}); rebuild it or run qa build "
                      f"--store {target}") from None
    if previous is None:
        print(f"no file index in {source.backend.location}: building from the documents",
              file=sys.stderr)
    _, report = engine.backend.build(engine.seeds_dir, engine.encoder,
                                     annotator=engine.reader.annotator(),
                                     progress=_progress_bar(), previous=previous)
    _print_report("moved", report, engine.backend.location)
    return 0


def _marked(quote, tty: bool) -> str:
    parts = quote.highlighted
    if parts is None:
        return quote.text
    before, answer, after = parts
    if tty:
        return f"{before}\033[1;7m{answer}\033[0m{after}"
    return f"{before}[[{answer}]]{after}"


def _print_answer(result, tty: bool) -> None:
    if result.standalone:
        print(f"(answered as: {result.standalone})")
    if result.text is None:
        print(f"{result.message}  (probability of no answer {result.score:.2f})")
    else:
        sources = ", ".join(result.sources)
        print(f"{result.text}  (confidence {result.score:.2f}; {sources})")
    for i, q in enumerate(result.quotes, 1):
        where = q.source + (f", {q.location}" if q.location else "")
        where += f", paragraph {q.paragraph}, chars {q.start}-{q.end}"
        if q.answer_start is not None:
            where += f", answer at {q.answer_start}-{q.answer_end}"
        print(f"\n[{i}] {where} (relevance {q.score:.2f})")
        print("    " + _marked(q, tty).replace("\n", "\n    "))


def cmd_ask(args) -> int:
    engine = _engine(args)
    result = engine.answer(args.question, top_k=args.k)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2), flush=True)
    else:
        _print_answer(result, sys.stdout.isatty())
        sys.stdout.flush()
    # Answered from the current version; an update the question started finishes before the
    # command ends (it would be lost with this process otherwise).
    engine.wait_for_update()
    return 0


def cmd_chat(args) -> int:
    """Questions from standard input, one per line, each answered in the light of the ones
    before; an empty line or "/new" starts a new conversation, "/quit" or end of input ends."""
    engine = _engine(args)
    conversation = engine.conversation(top_k=args.k)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    if tty:
        print("Ask about the documents; follow-ups refer to the answers before them. "
              "/new starts over, /quit ends.")
    while True:
        try:
            line = input("? " if tty else "")
        except EOFError:
            return 0
        question = line.strip()
        if question in ("/quit", "/exit"):
            return 0
        if not question or question == "/new":
            conversation.clear()
            continue
        try:
            result = conversation.ask(question)
        except QAError as e:  # a bad question ends nothing: say why and go on
            print(f"qa: error: {e}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)
        else:
            _print_answer(result, tty)
            print(flush=True)


def cmd_status(args) -> int:
    engine = _engine(args)
    status = engine.status()
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
        return 0
    if status["built"] is None:
        print(f"no index in {status['index_dir']} yet (run: qa build)")
    else:
        print(f"index {status['index_dir']}: built {status['built']}, "
              f"{status['documents']} documents, {status['passages']} passages, "
              f"model {status['model']}, dense {status['dense']}")
        for source, n in status["sources"].items():
            print(f"  {source}: {n} passages")
        for reason in status["skipped"].values():
            print(f"  skipped {reason}")
    if status["stale"]:
        print("stale: " + "; ".join(status["stale"][:10]))
    else:
        print("up to date with " + status["seeds_dir"])
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate, format_report, load_questions

    questions = load_questions(args.questions)
    report = evaluate(_engine(args), questions)
    if args.json:
        from dataclasses import asdict

        data = asdict(report)
        if not args.details:
            data.pop("rows")
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(format_report(report, details=args.details))
    return 0


def cmd_watch(args) -> int:
    from .watch import watch

    watch(_engine(args), interval=args.interval)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qa", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seeds", type=Path, default=config.DEFAULT_SEEDS,
                        help="documents folder (default: %(default)s)")
    common.add_argument("--index", type=Path, default=None,
                        help="index folder (default: ./vectorstore for ./seeds)")
    common.add_argument("--model", default=config.EMBEDDING_MODEL,
                        help="sentence-transformers model name or folder")
    common.add_argument("--store", default=None, metavar="URI",
                        help="where the index lives: milvus:///path/to/file.db (Milvus Lite), "
                             "milvus://host:19530 (a Milvus server) or a folder (default: "
                             "$QA_STORE, else the file store in --index)")
    common.add_argument("--reader", default=config.READER,
                        help="trained (default: our own model), rules, rules:fast (no spaCy), "
                             "or transformers:MODEL")
    common.add_argument("--min-confidence", default=None, metavar="P",
                        help="the trained reader answers when P(right) reaches P, from 0 to 1 "
                             "(default: $QA_MIN_CONFIDENCE, else its calibrated threshold)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", parents=[common], help="index the documents folder")
    p.add_argument("--full", action="store_true",
                   help="a new version from the documents alone (no vector reused)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("ask", parents=[common], help="answer a question")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=config.TOP_K, help="quotes to show")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", parents=[common],
                       help="a conversation: questions from standard input, follow-ups resolved")
    p.add_argument("-k", type=int, default=config.TOP_K, help="quotes to show")
    p.add_argument("--json", action="store_true", help="one JSON answer per line")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("status", parents=[common], help="what is indexed, and is it stale")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("eval", parents=[common], help="score answers against a question file")
    p.add_argument("questions", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--details", action="store_true", help="list every question")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("watch", parents=[common], help="keep the index fresh as files change")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("migrate", parents=[common],
                       help="move the folder's file index into --store (nothing re-embedded)")
    p.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="qa: %(message)s",
    )
    for noisy in ("faiss", "sentence_transformers", "transformers", "httpx", "milvus_lite"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if getattr(args, "k", 1) < 1:
        print("qa: error: -k must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except QAError as e:
        print(f"qa: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

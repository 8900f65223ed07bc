"""The `qa` command line: build, ask, chat, status, eval, watch, serve, mcp, migrate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import config
from .display import json_printable, printable
from .errors import QAError
from .serving.answers import answer_to_json


def _json(data) -> str:
    """JSON for the terminal: every control character escaped."""
    return json_printable(json.dumps(data, ensure_ascii=False, indent=2))


def _err(message: str) -> None:
    print(printable(message, newlines=False), file=sys.stderr)


def _engine(args):
    from .serving import open_engine

    return open_engine(args.seeds, args.index, model=args.model,
                       reader=getattr(args, "reader", config.READER), store=args.store,
                       min_confidence=getattr(args, "min_confidence", None))


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
    report = engine.rebuild(progress=_progress_bar(), full=args.full)  # logs what it skipped
    _print_report("indexed", report, engine.backend.location, list_skipped=False)
    return 0


def _print_report(done: str, report, location: str, list_skipped: bool = True) -> None:
    print(printable(
        f"{done} {report.documents} documents, {report.passages} passages "
        f"({report.embedded} embedded, {report.reused} reused) in {report.seconds:.1f} s "
        f"-> {location}"
    ))
    if list_skipped:
        for reason in report.skipped.values():
            _err(reason)


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
        _err(f"no file index in {source.backend.location}: building from the documents")
    with engine.backend.building():  # another process building there: wait for it
        _, report = engine.backend.build(engine.seeds_dir, engine.encoder,
                                         annotator=engine.reader.annotator(),
                                         progress=_progress_bar(), previous=previous)
    _print_report("moved", report, engine.backend.location)
    return 0


def _marked(quote, tty: bool) -> str:
    """A quote's text, control characters escaped, its answer span marked (in reverse video
    on a terminal, else [[like this]])."""
    parts = quote.highlighted
    if parts is None:
        return printable(quote.text)
    before, answer, after = (printable(p) for p in parts)
    if tty:
        return f"{before}\033[1;7m{answer}\033[0m{after}"
    return f"{before}[[{answer}]]{after}"


def _print_answer(result, tty: bool) -> None:
    """An answer and its quotes; everything that came from a document or a question is
    printed with its control characters escaped (a document cannot drive the terminal)."""
    if result.standalone:
        print(f"(answered as: {printable(result.standalone, newlines=False)})")
    if result.text is None:
        print(f"{printable(result.message, newlines=False)}  "
              f"(probability of no answer {result.score:.2f})")
    else:
        sources = printable(", ".join(result.sources), newlines=False)
        lead = "Not sure: perhaps " if result.unsure else ""
        print(f"{lead}{printable(result.text, newlines=False)}  "
              f"(confidence {result.score:.2f}; {sources})")
    for i, q in enumerate(result.quotes, 1):
        where = q.source + (f", {q.location}" if q.location else "")
        where = printable(where, newlines=False) + f", paragraph {q.paragraph}, chars {q.start}-{q.end}"
        if q.answer_start is not None:
            where += f", answer at {q.answer_start}-{q.answer_end}"
        print(f"\n[{i}] {where} (relevance {q.score:.2f})")
        print("    " + _marked(q, tty).replace("\n", "\n    "))


def cmd_ask(args) -> int:
    engine = _engine(args)
    result = engine.answer(args.question, top_k=args.k)
    if args.json:
        print(_json(answer_to_json(result)), flush=True)
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
    if hasattr(sys.stdin, "reconfigure"):  # a line that is not UTF-8 is refused, not fatal
        sys.stdin.reconfigure(errors="surrogateescape")
    if tty:
        print("Ask about the documents; follow-ups refer to the answers before them. "
              "/new starts over, /quit ends.")
    try:
        return _chat_loop(conversation, tty, args.json)
    finally:
        engine.wait_for_update()  # an update a question started would die with this process


def _chat_loop(conversation, tty: bool, as_json: bool) -> int:
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
        if "\udc80" <= max(question) and any("\udc80" <= c <= "\udcff" for c in question):
            _err("qa: error: the line is not UTF-8 text; skipped")
            continue
        try:
            result = conversation.ask(question)
        except QAError as e:  # a bad question ends nothing: say why and go on
            _err(f"qa: error: {e}")
            continue
        if as_json:
            data = json.dumps(answer_to_json(result), ensure_ascii=False)
            print(json_printable(data), flush=True)
        else:
            _print_answer(result, tty)
            print(flush=True)


def cmd_status(args) -> int:
    engine = _engine(args)
    status = engine.status()
    if args.json:
        print(_json(status))
        return 0
    lines = []
    if status["built"] is None:
        lines.append(f"no index in {status['index_dir']} yet (run: qa build)")
    else:
        lines.append(f"index {status['index_dir']}: built {status['built']}, "
                     f"{status['documents']} documents, {status['passages']} passages, "
                     f"model {status['model']}, dense {status['dense']}")
        lines += [f"  {source}: {n} passages" for source, n in status["sources"].items()]
        lines += [f"  skipped {reason}" for reason in status["skipped"].values()]
    if status["stale"]:
        lines.append("stale: " + "; ".join(status["stale"][:10]))
    else:
        lines.append("up to date with " + status["seeds_dir"])
    for line in lines:
        print(printable(line, newlines=False))
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
        print(_json(data))
    else:
        print(printable(format_report(report, details=args.details)))
    return 0


def cmd_watch(args) -> int:
    from .watch import watch

    watch(_engine(args), interval=args.interval)
    return 0


def _exposure(args, what: str):
    """(host, token) to serve on, or QAError when the sharing rule refuses them."""
    from .serving import exposure_error, token_from

    token = token_from(args.token)
    problem = exposure_error(args.host, token, getattr(args, "read_only", None), what)
    if problem:
        raise QAError(problem)
    return args.host, token


def _warm_up(engine) -> None:
    """Load the models and bring the index up to date in the background, before the first
    question (which would otherwise wait for both)."""
    import threading

    def run():
        try:
            engine.refresh()
        except Exception as e:  # noqa: BLE001 - the first question reports it
            logging.getLogger("qa").warning("could not prepare the index: %s", e)

    threading.Thread(target=run, name="qa-warm-up", daemon=True).start()


def cmd_serve(args) -> int:
    from .serving.api import serve

    host, token = _exposure(args, "the API (its uploads included)")
    engine = _engine(args)
    _warm_up(engine)
    mode = "; bearer token required" if token else ""
    mode += "; read-only" if args.read_only else ""
    print(f"qa API on http://{_url_host(host)}:{args.port}/v1 (docs: /docs{mode}); Ctrl+C stops it",
          file=sys.stderr, flush=True)
    serve(engine, host, args.port, token, args.read_only)
    return 0


def cmd_mcp(args) -> int:
    from .serving.mcp_server import build_server, serve_http

    host, token = _exposure(args, "the MCP server") if args.http else (None, None)
    engine = _engine(args)
    _warm_up(engine)
    server = build_server(engine)
    if not args.http:
        server.run("stdio")
        return 0
    mode = "; bearer token required" if token else ""
    print(f"qa MCP server on http://{_url_host(host)}:{args.port}/mcp{mode}; Ctrl+C stops it",
          file=sys.stderr, flush=True)
    serve_http(server, host, args.port, token)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _add_sharing(p: argparse.ArgumentParser, port: int, read_only: bool = True) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s); beyond loopback a token "
                        "is required" + (" or --read-only" if read_only else ""))
    p.add_argument("--port", type=int, default=port, help="port (default: %(default)s)")
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on every request "
                        "(default: $QA_TOKEN)")
    if read_only:
        p.add_argument("--read-only", action="store_true",
                       help="no uploads: POST /v1/documents does not exist")


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

    p = sub.add_parser("serve", parents=[common],
                       help="a JSON HTTP API (/v1) and an OpenAI-compatible chat endpoint")
    _add_sharing(p, 8000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("mcp", parents=[common],
                       help="an MCP server (stdio; --http for streamable HTTP)")
    p.add_argument("--http", action="store_true",
                   help="serve streamable HTTP at /mcp instead of stdio")
    _add_sharing(p, 8001, read_only=False)
    p.set_defaults(func=cmd_mcp)

    p = sub.add_parser("migrate", parents=[common],
                       help="move the folder's file index into --store (nothing re-embedded)")
    p.set_defaults(func=cmd_migrate)
    return parser


class _PrintableFormatter(logging.Formatter):
    """Log lines with their control characters escaped: they name files and quote errors."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), newlines=False)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status: 0 done, 2 a one-line error, 130 interrupted, 141
    the reader of its output went away (``qa status | head -2``)."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can be caught, not at exit
        return status
    except BrokenPipeError:
        # Whatever is still buffered must not be flushed into the closed pipe at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("qa: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        handlers=[handler])
    for noisy in ("faiss", "sentence_transformers", "transformers", "httpx", "milvus_lite"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if getattr(args, "k", 1) < 1:
        _err("qa: error: -k must be at least 1")
        return 2
    try:
        return args.func(args)
    except QAError as e:
        _err(f"qa: error: {e}")
        return 2
    except KeyboardInterrupt:
        _err("qa: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

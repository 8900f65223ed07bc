"""Chat with the documents: a Gradio web app over one QA engine.

    python app.py                         # http://127.0.0.1:7860, ./seeds indexed in ./vectorstore
    python app.py --seeds docs --port 8080
    GRADIO_SERVER_NAME=0.0.0.0 python app.py   # listen beyond loopback only when asked to

Replies are HTML built here with every piece of document text escaped, and the Chatbot renders
them without Markdown or LaTeX, so a document can never inject markup, scripts or layout.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import sys
import threading
from datetime import datetime
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server

import gradio as gr

from qa import QA, QAError, config
from qa.uploads import UploadError, read_upload, save_upload

log = logging.getLogger("qa.app")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXAMPLES_FILE = ".examples.txt"  # in the documents folder: one example question a line
MAX_EXAMPLES = 8
MAX_STALE_SHOWN = 6
MAX_SOURCES_LISTED = 200

CSS = """
#chat .qa-reply { line-height: 1.5; }
#chat .qa-answer { font-size: 1.08em; margin: 0 0 .35em 0; }
#chat .qa-none { font-style: italic; }
#chat .qa-meta { color: var(--body-text-color-subdued); font-size: .88em; margin: 0 0 .5em 0; }
#chat .qa-error { color: var(--error-text-color, #b91c1c); margin: 0; }
#chat details.qa-sources { margin-top: .25em; }
#chat details.qa-sources > summary { cursor: pointer; font-size: .92em; font-weight: 600; }
#chat ol.qa-quotes { margin: .5em 0 0 0; padding-left: 1.4em; list-style: decimal; }
#chat li.qa-quote { margin: 0 0 .8em 0; }
#chat .qa-cite { font-size: .85em; color: var(--body-text-color-subdued); margin-bottom: .2em; }
#chat .qa-source { font-family: var(--font-mono); color: var(--body-text-color); }
#chat blockquote.qa-text {
  margin: 0; padding: .35em .75em; border-left: 3px solid var(--color-accent, #f97316);
  background: var(--background-fill-secondary); border-radius: 4px; white-space: normal;
}
#chat mark { background: #fde047; color: #111827; padding: 0 .15em; border-radius: 3px; }
#corpus-status p, #corpus-notice p { margin: .2em 0; }
#corpus-status .qa-stale { color: var(--error-text-color, #b45309); }
#corpus-status .qa-fresh { color: var(--body-text-color-subdued); }
#corpus-status ul, #corpus-notice ul { margin: .2em 0 .2em 1.1em; list-style: disc; }
#corpus-status code { font-size: .85em; }
"""

# ---------------------------------------------------------------------------------------------
# Formatting: everything that comes from a document or a user goes through esc().

# Beyond HTML's own, the characters that Markdown, tables or LaTeX would act on become
# numeric entities too, so the text stays literal even if Markdown rendering were switched on.
# One translation table, applied in one pass (html.escape's entities for & < > " ' included).
_ESCAPES = str.maketrans(
    {**{c: f"&#{ord(c)};" for c in "\\`*_[]|#~$"}, **{c: html.escape(c) for c in "&<>\"'"}}
)


def esc(text: object) -> str:
    """Text as inert HTML: entities for markup and Markdown characters, <br> for newlines."""
    s = str(text).translate(_ESCAPES)
    return s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


_BLANK_LINES = re.compile(r"[ \t]*(?:\r\n|\r|\n)(?:[ \t\f\v]*(?:\r\n|\r|\n))+")


def _compact(text: str) -> str:
    """Blank lines inside a quote shown as one line break (HTML drops other runs of space)."""
    return _BLANK_LINES.sub("\n", text)


def _highlighted(quote) -> str:
    parts = quote.highlighted
    if parts is None:
        return esc(_compact(quote.text))
    before, answer, after = parts
    return f"{esc(_compact(before))}<mark>{esc(answer)}</mark>{esc(_compact(after))}"


def format_quote(quote) -> str:
    cite = (
        f'<span class="qa-source">{esc(quote.source)}</span>'
        f" · paragraph {int(quote.paragraph)}"
        f" · chars {int(quote.start)}–{int(quote.end)}"
        f" · relevance {float(quote.score):.2f}"
    )
    return (
        f'<li class="qa-quote"><div class="qa-cite">{cite}</div>'
        f'<blockquote class="qa-text">{_highlighted(quote)}</blockquote></li>'
    )


def format_reply(answer) -> str:
    """One chat reply as HTML: the answer in bold, then its quotes under Sources, in the
    answer's own order (the passages stating the answer first, then by relevance)."""
    parts = ['<div class="qa-reply">']
    quotes = answer.quotes
    if answer.text is None:
        parts.append(f'<p class="qa-answer qa-none">{esc(answer.message)}</p>')
        parts.append(f'<p class="qa-meta">probability that the documents hold no answer '
                     f'{round(float(answer.score) * 100)}%</p>')
        summary = f"Closest passages ({len(quotes)})"
    else:
        parts.append(f'<p class="qa-answer"><strong>{esc(answer.text)}</strong></p>')
        meta = f"confidence {round(float(answer.score) * 100)}%"
        if answer.sources:
            meta += " · stated in " + ", ".join(esc(s) for s in answer.sources)
        parts.append(f'<p class="qa-meta">{meta}</p>')
        summary = f"Sources ({len(quotes)})"
    if quotes:
        parts.append(f'<details class="qa-sources"><summary>{summary}</summary>')
        parts.append('<ol class="qa-quotes">')
        parts.extend(format_quote(q) for q in quotes)
        parts.append("</ol></details>")
    parts.append("</div>")
    return "".join(parts)


def format_error(message: str) -> str:
    return f'<p class="qa-error">{esc(message)}</p>'


def format_question(question: str, limit: int = 500) -> str:
    if len(question) > limit:
        question = question[:limit] + "…"
    return f'<span class="qa-question">{esc(question)}</span>'


def _when(stamp: str | None) -> str:
    if not stamp:
        return "never"
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").strftime("%Y-%m-%d %H:%M %Z")
    except ValueError:
        return stamp


def format_status(status: dict) -> str:
    """The corpus panel: counts, when built, whether the folder changed since, skipped files."""
    docs, passages = int(status.get("documents", 0)), int(status.get("passages", 0))
    out = [
        (
            f"<p><b>{docs:,}</b> document{'s' if docs != 1 else ''} · "
            f"<b>{passages:,}</b> passage{'s' if passages != 1 else ''} indexed</p>"
        ),
        f"<p>Built: {esc(_when(status.get('built')))}</p>",
        f"<p>Folder: <code>{esc(status.get('seeds_dir', ''))}</code></p>",
    ]
    stale = list(status.get("stale") or [])
    if stale:
        items = "".join(f"<li>{esc(r)}</li>" for r in stale[:MAX_STALE_SHOWN])
        more = len(stale) - MAX_STALE_SHOWN
        if more > 0:
            items += f"<li>and {more} more</li>"
        out.append(
            '<p class="qa-stale">The documents changed since the index was built '
            "(it updates before the next answer, or rebuild now):</p>"
            f"<ul>{items}</ul>"
        )
    else:
        out.append('<p class="qa-fresh">Up to date with the documents folder.</p>')
    skipped = status.get("skipped") or {}
    if skipped:
        items = "".join(f"<li>{esc(reason)}</li>" for reason in list(skipped.values())[:20])
        out.append(f"<p>Skipped {len(skipped)} file(s):</p><ul>{items}</ul>")
    sources = status.get("sources") or {}
    if sources:
        shown = list(sources.items())[:MAX_SOURCES_LISTED]
        items = "".join(
            f"<li><code>{esc(name)}</code> — {int(n)} passage{'s' if n != 1 else ''}</li>"
            for name, n in shown
        )
        if len(sources) > len(shown):
            items += f"<li>and {len(sources) - len(shown)} more</li>"
        out.append(
            f"<details><summary>Documents ({len(sources)})</summary><ul>{items}</ul></details>"
        )
    return "".join(out)


def format_notice(lines: list[str], ok: bool = True) -> str:
    if not lines:
        return ""
    cls = "qa-fresh" if ok else "qa-stale"
    if len(lines) == 1:
        return f'<p class="{cls}">{esc(lines[0])}</p>'
    return "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


def _build_summary(report) -> str:
    s = (
        f"Indexed {report.documents} documents, {report.passages} passages "
        f"({report.embedded} embedded, {report.reused} reused) in {report.seconds:.1f} s"
    )
    if report.skipped:
        s += f"; skipped {len(report.skipped)}"
    return s


def _progress_callback(progress):
    def callback(stage: str, done: int, total: int) -> None:
        try:
            if total:
                progress((min(done, total), total), desc=f"{stage}…", unit="passages")
            else:
                progress(0, desc=f"{stage}…")
        except Exception as e:  # noqa: BLE001 - a progress display must never break a rebuild
            log.debug("progress update failed: %s", e)

    return callback


# ---------------------------------------------------------------------------------------------
# The app.


def load_examples(seeds_dir: Path) -> list[str]:
    """Example questions kept with the documents (``.examples.txt``, hidden, so never indexed):
    a folder of other documents brings its own, or shows none."""
    try:
        lines = (Path(seeds_dir) / EXAMPLES_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    questions = [" ".join(line.split()) for line in lines]
    return [q for q in questions if 0 < len(q) <= config.MAX_QUESTION_CHARS][:MAX_EXAMPLES]


def build_app(engine: QA, examples: list[str] | None = None, title: str = "Ask the documents"):
    """The Gradio Blocks for ``engine`` (shared by every session); queue enabled, not launched."""

    def status_html() -> str:
        try:
            return format_status(engine.status())
        except Exception as e:  # the panel reports, never crashes
            log.exception("status failed")
            return format_error(f"status unavailable: {e}")

    def ask(question, history):
        history = list(history or [])
        question = question if isinstance(question, str) else ""
        if not question.strip():
            return "", history, gr.skip()
        try:
            reply = format_reply(engine.answer(question))
        except QAError as e:
            reply = format_error(str(e).splitlines()[0] if str(e) else "cannot answer that")
        except Exception:  # never show a traceback to the user
            log.exception("answering %r failed", question[:200])
            reply = format_error("Something went wrong while answering; the error was logged.")
        history.append({"role": "user", "content": format_question(question)})
        history.append({"role": "assistant", "content": reply})
        return "", history, status_html()

    def rebuild(progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        try:
            report = engine.rebuild(progress=_progress_callback(progress))
        except QAError as e:
            return status_html(), format_notice([f"Rebuild failed: {e}"], ok=False)
        except Exception as e:
            log.exception("rebuild failed")
            return status_html(), format_notice([f"Rebuild failed: {type(e).__name__}"], ok=False)
        return status_html(), format_notice([_build_summary(report)])

    def add_files(files, progress=gr.Progress()):  # noqa: B008
        if not files:
            return gr.skip(), gr.skip(), gr.skip()
        if not isinstance(files, list):
            files = [files]
        lines, ok, added = [], True, 0
        for f in files:
            path = Path(f if isinstance(f, str) else getattr(f, "name", str(f)))
            name = path.name  # Gradio keeps the uploaded name as the temp file's name
            try:
                saved = save_upload(read_upload(path, name), name, engine.seeds_dir)
            except UploadError as e:
                ok = False
                lines.append(f"Not added: {e}")
                continue
            added += 0 if saved.duplicate else 1
            lines.append(saved.message[:1].upper() + saved.message[1:])
        if added:
            try:
                report = engine.rebuild(progress=_progress_callback(progress))
                lines.append(_build_summary(report))
            except Exception as e:
                log.exception("rebuild after upload failed")
                ok = False
                lines.append(f"Saved, but indexing failed: {e}")
        return None, status_html(), format_notice(lines, ok)

    with gr.Blocks(title=title, fill_height=True, analytics_enabled=False) as demo:
        with gr.Sidebar(label="Corpus", open=True, width=360, elem_id="corpus"):
            gr.Markdown("### Corpus")
            status = gr.HTML(elem_id="corpus-status", label="Index status", show_label=False)
            rebuild_btn = gr.Button("Rebuild index", elem_id="rebuild", size="sm")
            uploader = gr.File(
                label=f"Add .txt or .md documents (up to {config.MAX_UPLOAD_BYTES / 2**20:g} MB each)",
                file_count="multiple",
                file_types=[".txt", ".md"],
                type="filepath",
                elem_id="upload",
            )
            notice = gr.HTML(elem_id="corpus-notice", label="Notice", show_label=False)
        gr.Markdown(
            f"## {title}\nAnswers are quoted word for word from the documents; "
            "open **Sources** under a reply to see where each one comes from."
        )
        chatbot = gr.Chatbot(
            elem_id="chat",
            label="Conversation",
            show_label=False,
            scale=1,
            height="max(420px, calc(100vh - 330px))",
            render_markdown=False,  # replies are HTML built by format_reply
            sanitize_html=True,  # and still sanitised in the browser
            latex_delimiters=[],
            allow_tags=False,
            feedback_options=None,
            buttons=[],
            layout="bubble",
            placeholder="Ask a question about the documents below.",
        )
        question = gr.Textbox(
            elem_id="question",
            label="Question",
            placeholder="Ask a question about the documents…",
            show_label=False,
            lines=1,
            max_lines=4,
            submit_btn="Ask",
            autofocus=True,
        )
        if examples is None:
            examples = load_examples(engine.seeds_dir)
        if examples:
            gr.Examples(examples=[[q] for q in examples], inputs=[question], label="Try asking")

        question.submit(
            ask,
            [question, chatbot],
            [question, chatbot, status],
            api_name="ask",
            concurrency_limit=4,
        )
        rebuild_btn.click(
            rebuild,
            None,
            [status, notice],
            api_name="rebuild",
            concurrency_id="index",
            concurrency_limit=1,
        )
        uploader.upload(
            add_files,
            [uploader],
            [uploader, status, notice],
            api_name="upload",
            concurrency_id="index",
            concurrency_limit=1,
        )
        demo.load(status_html, None, status, api_name=False)
        timer = gr.Timer(30)
        timer.tick(
            status_html,
            None,
            status,
            api_name=False,
            concurrency_id="status",
            concurrency_limit=1,
            show_progress="hidden",
        )

    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo


def launch(demo, host: str | None = None, port: int | None = None, **kwargs):
    """Launch with the app's CSS; host and port as given, else $GRADIO_SERVER_NAME/PORT,
    else 127.0.0.1:7860."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    kwargs.setdefault("max_file_size", config.MAX_UPLOAD_BYTES * 4)  # ours gives a clearer note
    kwargs.setdefault("ssr_mode", False)
    kwargs.setdefault("footer_links", ["api"])
    return demo.launch(server_name=host, server_port=port, share=False, css=CSS, **kwargs)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Chat with the documents in a folder.")
    p.add_argument(
        "--seeds",
        type=Path,
        default=config.DEFAULT_SEEDS,
        help="documents folder (default: $QA_SEEDS or ./seeds)",
    )
    p.add_argument(
        "--index", type=Path, default=None, help="index folder (default: ./vectorstore for ./seeds)"
    )
    p.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default: $GRADIO_SERVER_NAME or {DEFAULT_HOST})",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default: $GRADIO_SERVER_PORT or {DEFAULT_PORT})",
    )
    p.add_argument("--open", action="store_true", help="open the chat in a browser")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.seeds.is_dir():
        print(f"error: documents folder {args.seeds} does not exist (use --seeds)", file=sys.stderr)
        return 2
    engine = QA(args.seeds, args.index)

    def warm_up():  # load the model and bring the index up to date before the first question
        try:
            engine.refresh()
        except Exception as e:  # noqa: BLE001 - the app reports it on the first question
            log.warning("could not prepare the index: %s", e)

    threading.Thread(target=warm_up, name="qa-warm-up", daemon=True).start()
    try:
        demo = build_app(engine)
        launch(demo, args.host, args.port, quiet=True, prevent_thread_lock=True,
               inbrowser=args.open)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"qa chat is ready: open {demo.local_url} (Ctrl+C stops it)", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())

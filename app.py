"""Chat with the documents: a Gradio web app over one QA engine.

    python app.py                         # http://127.0.0.1:7860, ./seeds indexed in ./vectorstore
    python app.py --seeds docs --port 8080
    python app.py --host 0.0.0.0 --auth user:password   # shared: a login first (or $QA_AUTH)
    python app.py --host 0.0.0.0 --read-only            # shared: no uploads, no rebuilds

Beyond loopback the app refuses to start without a login or --read-only. Replies are HTML
built here with every piece of document text escaped, and the Chatbot renders them without
Markdown or LaTeX, so a document can never inject markup, scripts or layout.
"""

from __future__ import annotations

import argparse
import atexit
import html
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from datetime import datetime
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server

import gradio as gr

from qa import QA, QAError, config
from qa.display import format_bytes
from qa.serving import open_engine
from qa.serving.auth import LoginLimiter, check_password, is_loopback, refusal_message
from qa.serving.limits import MAX_HISTORY_MESSAGES  # the earlier turns a follow-up is read with
from qa.uploads import (
    UploadError,
    allowed_suffixes,
    directory_bytes,
    read_upload,
    save_upload,
    upload_room,
)

log = logging.getLogger("qa.app")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXAMPLES_FILE = ".examples.txt"  # in the documents folder: one example question a line
MAX_EXAMPLES = 8
MAX_STALE_SHOWN = 6
MAX_SOURCES_LISTED = 200
TEMP_SWEEP_SECONDS = 300  # how often Gradio's temporary files are swept ...
TEMP_MAX_AGE_SECONDS = 900  # ... and how old they may grow before they go
MAX_SESSIONS_KEPT = 64  # visitors' Gradio sessions held in memory (see launch)
STATUS_SECONDS = 10  # how often the corpus panel refreshes itself (progress of an update)
SEARCHING = "Searching the documents"  # CSS adds animated dots
COPY_LABEL = "Copy citations"
EMPTY_QUESTION = "Type a question first: the box is empty."

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
#chat .qa-citation { user-select: text; }
#chat .qa-source { font-family: var(--font-mono); color: var(--body-text-color); }
#chat .qa-standalone { color: var(--body-text-color-subdued); font-size: .8em; margin: 0 0 .3em 0; }
#chat .qa-searching { margin: 0; font-style: italic; color: var(--body-text-color-subdued); }
#chat .qa-searching::after { content: ""; animation: qa-dots 1.2s steps(4) infinite; }
@keyframes qa-dots { 0% { content: ""; } 25% { content: "."; } 50% { content: ".."; }
  75% { content: "..."; } }
#chat button.qa-copy {
  margin: 0; padding: .15em .6em; font-size: .85em; cursor: pointer; border-radius: 4px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-primary);
  color: var(--body-text-color);
}
#chat .qa-reply, #chat .qa-cite, #chat blockquote.qa-text, #chat .qa-meta {
  overflow-wrap: anywhere; word-break: break-word; max-width: 100%;
}
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
/* A phone (390 px): the chat takes the width (narrower page margins: see HEAD), the panel
   starts closed (HEAD), nothing is wider than the screen. */
@media (max-width: 768px) {
  #title { padding-left: 24px; }
  #chat .message-row.bubble { max-width: calc(100% - 12px) !important; margin-left: 6px !important;
    margin-right: 6px !important; }
  #chat ol.qa-quotes { padding-left: 1.1em; }
}
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


def _location(quote) -> str:
    """Where in its document a quote sits ("page 3", a heading), on one line; "" if unknown."""
    return " ".join(str(getattr(quote, "location", "") or "").split())


def citation(quote) -> str:
    """A quote's citation as plain text: "file, paragraph N, chars a–b" and its location
    ("page 3", a heading) when the document's format gives one."""
    text = f"{quote.source}, paragraph {int(quote.paragraph)}, chars {int(quote.start)}"
    text += f"–{int(quote.end)}"
    location = _location(quote)
    return f"{text}, {location}" if location else text


def format_quote(quote) -> str:
    # The citation is a span of its own whose text is exactly citation(quote): selecting it,
    # or the reply's "Copy citations" button, copies plain text.
    location = _location(quote)
    cite = (
        f'<span class="qa-citation"><span class="qa-source">{esc(quote.source)}</span>'
        f", paragraph {int(quote.paragraph)}, chars {int(quote.start)}–{int(quote.end)}"
        + (f", {esc(location)}" if location else "")
        + f"</span> · relevance {float(quote.score):.2f}"
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
    standalone = getattr(answer, "standalone", None)
    if standalone:
        parts.append(f'<p class="qa-standalone">Answered as: {esc(standalone)}</p>')
    if answer.text is None:
        parts.append(f'<p class="qa-answer qa-none">{esc(answer.message)}</p>')
        parts.append(f'<p class="qa-meta">probability that the documents hold no answer '
                     f'{round(float(answer.score) * 100)}%</p>')
        summary = f"Closest passages ({len(quotes)})"
    else:
        lead = "Not sure: perhaps " if answer.unsure else ""
        parts.append(f'<p class="qa-answer">{lead}<strong>{esc(answer.text)}</strong></p>')
        meta = f"confidence {round(float(answer.score) * 100)}%"
        if answer.sources:
            meta += " · stated in " + ", ".join(esc(s) for s in answer.sources)
        parts.append(f'<p class="qa-meta">{meta}</p>')
        summary = f"Sources ({len(quotes)})"
    if quotes:
        parts.append(f'<details class="qa-sources"><summary>{summary}</summary>')
        parts.append('<ol class="qa-quotes">')
        parts.extend(format_quote(q) for q in quotes)
        parts.append(
            f'</ol><p class="qa-copy-row"><button type="button" class="qa-copy">{COPY_LABEL}'
            "</button></p></details>"
        )
    parts.append("</div>")
    return "".join(parts)


def format_error(message: str) -> str:
    return f'<p class="qa-error">{esc(message)}</p>'


def format_question(question: str, limit: int = 500) -> str:
    if len(question) > limit:
        question = question[:limit] + "…"
    return f'<span class="qa-question">{esc(question)}</span>'


def format_searching() -> str:
    """The placeholder reply shown while the answer is being found."""
    return f'<p class="qa-searching">{esc(SEARCHING)}</p>'


# -- the conversation as plain text, for follow-up questions --------------------------------

_TAG = re.compile(r"<[^>]*>")
_ANSWER_P = re.compile(r'<p class="qa-answer[^"]*">(.*?)</p>', re.S)


def _html_text(fragment: str) -> str:
    text = _TAG.sub("", re.sub(r"<br\s*/?>", "\n", fragment))
    return html.unescape(text).strip()


def _message_text(content) -> str:
    """The text of a chat message's content (a string, or Gradio's list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, (list, tuple)):
        return "".join(
            str(c.get("text") or c.get("content") or "") if isinstance(c, dict) else str(c)
            for c in content
            if isinstance(c, (dict, str))
        )
    return ""


def plain_history(history, limit: int = MAX_HISTORY_MESSAGES) -> list[dict]:
    """The chat so far as {"role", "content"} messages of plain text: each question as asked,
    each reply as its short answer (or the decline), no markup. Errors and placeholders are
    left out, with the question they answered; at most the last ``limit`` messages."""
    out: list[dict] = []
    for message in history or []:
        if isinstance(message, dict):
            role, content = message.get("role"), message.get("content")
        else:
            role, content = getattr(message, "role", None), getattr(message, "content", None)
        text = _message_text(content)
        if role == "user":
            plain = _html_text(text)
        elif role == "assistant":
            m = _ANSWER_P.search(text)
            plain = _html_text(m.group(1)) if m else ""
            if not plain:  # an error or a placeholder: drop it and the question it answered
                if out and out[-1]["role"] == "user":
                    out.pop()
                continue
        else:
            continue
        if plain:
            out.append({"role": role, "content": plain[: config.MAX_QUESTION_CHARS]})
    return out[-limit:] if limit else []


def _when(stamp: str | None) -> str:
    if not stamp:
        return "never"
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").strftime("%Y-%m-%d %H:%M %Z")
    except ValueError:
        return stamp


def format_status(status: dict, read_only: bool = False) -> str:
    """The corpus panel: counts, when built, whether the folder changed since, skipped files
    (each with its one-line reason)."""
    docs, passages = int(status.get("documents", 0)), int(status.get("passages", 0))
    out = [
        (
            f"<p><b>{docs:,}</b> document{'s' if docs != 1 else ''} · "
            f"<b>{passages:,}</b> passage{'s' if passages != 1 else ''} indexed</p>"
        ),
        f"<p>Built: {esc(_when(status.get('built')))}</p>",
        f"<p>Folder: <code>{esc(status.get('seeds_dir', ''))}</code></p>",
    ]
    updating = status.get("updating")
    if updating is not None:
        out.append(f'<p class="qa-stale qa-updating">{esc(updating_line(updating))}</p>')
    stale = list(status.get("stale") or [])
    if stale:
        items = "".join(f"<li>{esc(r)}</li>" for r in stale[:MAX_STALE_SHOWN])
        more = len(stale) - MAX_STALE_SHOWN
        if more > 0:
            items += f"<li>and {more} more</li>"
        when = "" if read_only else ", or rebuild now"
        out.append(
            '<p class="qa-stale">The documents changed since the index was built (it updates '
            f"in the background; answers come from the current index until then{when}):</p>"
            f"<ul>{items}</ul>"
        )
    else:
        out.append('<p class="qa-fresh">Up to date with the documents folder.</p>')
    skipped = status.get("skipped") or {}
    if skipped:
        items = "".join(
            f"<li>{esc(_skip_reason(name, reason))}</li>"
            for name, reason in list(skipped.items())[:20]
        )
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


def updating_line(updating) -> str:
    """The update under way, for people: what it does and how far it has come."""
    stage, done, total = updating["stage"], int(updating["done"]), int(updating["total"])
    where = f"{stage} {done:,} of {total:,} passages" if total else f"{stage} the documents"
    return (f"Indexing new documents ({where}); answers come from the current index until "
            "the new one is ready.")


def _skip_reason(name: str, reason: object) -> str:
    """ "file: why", naming the file even when the reason does not."""
    reason = " ".join(str(reason or "unreadable").split())
    return reason if str(name) in reason else f"{name}: {reason}"


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


def build_app(
    engine: QA,
    examples: list[str] | None = None,
    title: str = "Ask the documents",
    read_only: bool = False,
):
    """The Gradio Blocks for ``engine`` (shared by every session); queue enabled, not launched.

    ``read_only`` leaves out uploading and rebuilding altogether: neither the controls nor
    their API endpoints exist (the index still follows the folder before each answer)."""

    shown = {"status": ""}  # the corpus panel as last rendered, for any session

    def status_html() -> str:
        try:
            shown["status"] = format_status(engine.status(), read_only=read_only)
        except Exception as e:  # the panel reports, never crashes
            log.exception("status failed")
            shown["status"] = format_error(f"status unavailable: {e}")
        return shown["status"]

    # Gradio (6.31) keeps a new component in the session for every update it is given
    # (gr.skip() included), so a session held a copy of the panel per question; a value
    # keeps the session's one. The panel is the same for everyone: the last one rendered.
    def status_unchanged() -> str:
        return shown["status"] or status_html()

    def ask(question, history):
        """The question shows at once with a "searching" reply, which the answer replaces."""
        history = list(history or [])
        question = question if isinstance(question, str) else ""
        if not question.strip():
            gr.Warning(EMPTY_QUESTION)
            yield "", history, status_unchanged()
            return
        earlier = plain_history(history)  # before this turn is added
        history.append({"role": "user", "content": format_question(question)})
        history.append({"role": "assistant", "content": format_searching()})
        yield "", history, status_unchanged()
        try:
            reply = format_reply(engine.answer(question, history=earlier))
        except QAError as e:
            reply = format_error(str(e).splitlines()[0] if str(e) else "cannot answer that")
        except Exception:  # never show a traceback to the user
            log.exception("answering %r failed", question[:200])
            reply = format_error("Something went wrong while answering; the error was logged.")
        history[-1] = {"role": "assistant", "content": reply}
        yield "", history, status_html()

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
            finally:
                _discard_upload(path)
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

    # Uploads that never reach add_files (Gradio's raw route used alone) are removed too.
    with gr.Blocks(title=title, fill_height=True, analytics_enabled=False,
                   delete_cache=(TEMP_SWEEP_SECONDS, TEMP_MAX_AGE_SECONDS)) as demo:
        with gr.Sidebar(label="Corpus", open=True, width=360, elem_id="corpus"):
            gr.Markdown("### Corpus")
            status = gr.HTML(elem_id="corpus-status", label="Index status", show_label=False)
            if read_only:
                gr.Markdown(
                    "Read-only: documents cannot be added or the index rebuilt here.",
                    elem_id="read-only-note",
                )
            else:
                suffixes = list(allowed_suffixes())
                rebuild_btn = gr.Button("Rebuild index", elem_id="rebuild", size="sm")
                uploader = gr.File(
                    label=(
                        f"Add {_kinds(suffixes)} documents "
                        f"(up to {format_bytes(config.MAX_UPLOAD_BYTES)} each)"
                    ),
                    file_count="multiple",
                    file_types=suffixes,
                    type="filepath",
                    elem_id="upload",
                )
                notice = gr.HTML(elem_id="corpus-notice", label="Notice", show_label=False)
        gr.Markdown(
            f"## {title}\nAnswers are quoted word for word from the documents; "
            "open **Sources** under a reply to see where each one comes from.",
            elem_id="title",
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
            show_progress="minimal",
        )
        if not read_only:
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
        timer = gr.Timer(STATUS_SECONDS)
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
    demo.qa_read_only = read_only
    demo.qa_seeds_dir = Path(engine.seeds_dir)
    return demo


def _discard_upload(path: Path) -> None:
    """Remove Gradio's temporary copy of an upload (and its folder, when emptied): the
    documents folder holds what was kept, nothing else may pile up outside its quota."""
    try:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
    except OSError:
        pass


def _kinds(suffixes) -> str:
    """".txt, .md or .pdf" for a label."""
    names = [str(s) for s in suffixes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# ---------------------------------------------------------------------------------------------
# Serving: who may reach the app.

# The reply's "Copy citations" button: one delegated listener (sanitised replies carry no
# script), copying each quote's citation line and its quoted text ("> ...") as plain text,
# quotes separated by a blank line. And the corpus panel
# starts closed on a phone, with narrower page margins there.
HEAD = """<style>
/* Outside the app's own container, so not in CSS (which Gradio scopes to it). */
@media (max-width: 768px) {
  .gradio-container .main.app { padding-left: 10px !important; padding-right: 10px !important; }
}
</style>
<script>
document.addEventListener("click", async (event) => {
  const button = event.target.closest && event.target.closest("button.qa-copy");
  if (!button) return;
  event.preventDefault();
  const reply = button.closest(".qa-reply");
  if (!reply) return;
  const text = Array.from(reply.querySelectorAll(".qa-quote"), (quote) => {
    const cite = quote.querySelector(".qa-citation");
    const body = quote.querySelector(".qa-text");
    const one = (e) => (e ? (e.innerText || e.textContent).replace(/\\s+/g, " ").trim() : "");
    return one(cite) + "\\n> " + one(body);
  }).join("\\n\\n");
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch (e) {  // not a secure context (plain http beyond localhost): the old way
    const area = document.createElement("textarea");
    area.value = text;
    area.style.position = "fixed";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    try { copied = document.execCommand("copy"); } catch (e2) { copied = false; }
    area.remove();
  }
  button.textContent = copied ? "Copied" : "Select the lines above to copy them";
  setTimeout(() => { button.textContent = "__COPY_LABEL__"; }, 2000);
});
// On a phone the open corpus panel would cover the chat: start with it closed there (its
// toggle stays at the edge).
(function () {
  if (!window.matchMedia("(max-width: 768px)").matches) return;
  const started = Date.now();
  const timer = setInterval(() => {
    const panel = document.querySelector("#corpus.sidebar");
    if (panel || Date.now() - started > 30000) clearInterval(timer);
    const toggle = panel && panel.querySelector(".toggle-button");
    if (toggle && panel.classList.contains("open")) toggle.click();
  }, 100);
})();
</script>""".replace("__COPY_LABEL__", COPY_LABEL)


_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)


class ServerGuard:
    """ASGI middleware in front of Gradio: failed logins limited per client address
    (``qa.serving.auth``), Gradio's raw upload route kept within the documents folder's quota, and
    the login page served without the API's description."""

    def __init__(self, app, limiter: LoginLimiter, upload_room, temp_dir):
        self.app = app
        self.limiter = limiter
        self.upload_room = upload_room  # (bytes waiting in temp_dir) -> bytes allowed now
        self.temp_dir = temp_dir  # () -> Gradio's upload folder

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"].rstrip("/"), scope["method"]
        if method == "POST" and path.endswith("/login"):
            return await self._login(scope, receive, send)
        if method == "POST" and path.endswith("/gradio_api/upload"):
            refusal = self._upload_refusal(scope)
            if refusal:
                return await _plain(send, *refusal)
        if method in ("GET", "HEAD") and path == "":
            return await self.app(scope, receive, _without_api_info(send))
        return await self.app(scope, receive, send)

    async def _login(self, scope, receive, send):
        client = (scope.get("client") or ("unknown",))[0]
        wait = self.limiter.retry_after(client)
        if wait > 0:
            return await _plain(send, 429, refusal_message(wait),
                                [(b"retry-after", str(max(1, round(wait))).encode())])
        outcome = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if outcome.get("status") == 200:
            self.limiter.succeeded(client)
        elif outcome.get("status") in (400, 401, 403):
            self.limiter.failed(client)

    def _upload_refusal(self, scope) -> tuple[int, str] | None:
        length = dict(scope["headers"]).get(b"content-length")
        if length is None or not length.isdigit():
            return 411, "An upload must state its size (Content-Length)."
        room = self.upload_room(directory_bytes(self.temp_dir()))
        if int(length) > room:
            return 413, ("The upload is larger than the documents folder's quota leaves room "
                         f"for ({room:,} bytes now).")
        return None


async def _plain(send, status: int, text: str, headers=()) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": body})


def _without_api_info(send):
    """``send`` for the home page: when it is the login form, its embedded description of
    the API (every endpoint, /upload and /rebuild too) is left out."""
    held: dict = {}

    async def rewrite(message):
        if message["type"] == "http.response.start":
            held["start"], held["body"] = message, b""
            return
        if "start" not in held:
            return await send(message)
        held["body"] += message.get("body", b"")
        if message.get("more_body"):
            return
        body, start = held.pop("body"), held.pop("start")
        if b'"auth_required":true' in body.replace(b" ", b""):
            body = _API_INFO.sub(b"window.gradio_api_info = {};</script>", body)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return rewrite


def private_temp_dir() -> Path:
    """A temporary folder of this process's own for Gradio's uploads and caches (unless
    $GRADIO_TEMP_DIR names one), removed when the process ends."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return Path(os.environ["GRADIO_TEMP_DIR"])
    folder = Path(tempfile.mkdtemp(prefix="qa-chat-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def end_on_sigterm() -> None:
    """A polite stop (SIGTERM) ends the process as Ctrl+C does, running its exit handlers
    (the temporary folder's removal among them)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def resolve_host(host: str | None = None) -> str:
    """The address to listen on: as given, else $GRADIO_SERVER_NAME, else 127.0.0.1."""
    return host or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST


def exposure_error(host: str, auth, read_only: bool) -> str | None:
    """Why the app must not listen on ``host`` as configured, or None when it may: beyond
    loopback it needs a login (auth) or read-only mode."""
    if is_loopback(host) or auth or read_only:
        return None
    shown = host if host else '""'
    return (
        f"listening on {shown} lets other machines reach the chat, its uploads and rebuilds; "
        "add --auth USER:PASSWORD (or set QA_AUTH), or --read-only to share it without them"
    )


def parse_auth(value: str, where: str = "--auth") -> tuple[str, str]:
    """ "user:password" as (user, password); QAError (one line, never echoing the value)
    when the colon, the user or the password is missing. The password may hold colons."""
    if ":" not in value:
        raise QAError(f"{where} must be USER:PASSWORD (no ':' found)")
    user, password = value.split(":", 1)
    user = user.strip()
    if not user:
        raise QAError(f"{where} must be USER:PASSWORD (the user name is empty)")
    if not password:
        raise QAError(f"{where} must be USER:PASSWORD (the password is empty)")
    check_password(password, where)
    return user, password


def auth_from(flag: str | None) -> tuple[str, str] | None:
    """The login to require: --auth, else $QA_AUTH (empty counts as unset), else None."""
    if flag is not None:
        return parse_auth(flag, "--auth")
    env = os.environ.get("QA_AUTH", "")
    return parse_auth(env, "QA_AUTH") if env else None


def launch(
    demo,
    host: str | None = None,
    port: int | None = None,
    auth=None,
    read_only: bool | None = None,
    **kwargs,
):
    """Launch with the app's CSS; host and port as given, else $GRADIO_SERVER_NAME/PORT,
    else 127.0.0.1:7860. ``auth`` is a (user, password) pair (or Gradio's list of pairs or
    check function): every page and API call then needs the login. Beyond loopback, launching
    without auth refuses (QAError) unless the app was built read-only."""
    host = resolve_host(host)
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    if read_only is None:
        read_only = bool(getattr(demo, "qa_read_only", False))
    problem = exposure_error(host, auth, read_only)
    if problem:
        raise QAError(problem)
    if isinstance(auth, tuple):
        auth = [auth]
    for _, password in auth if isinstance(auth, list) else []:
        check_password(password)
    # Read-only: Gradio's own upload route stays, but takes nothing; the app's gives a clearer
    # note than Gradio's limit, so that limit sits above it.
    # Gradio's own upload route takes no file over the app's limit (read-only: none at all).
    kwargs.setdefault("max_file_size", 0 if read_only else config.MAX_UPLOAD_BYTES)
    # Gradio keeps each visitor's session (a copy of the app's config among it, ~0.4 MB) until
    # 10,000 are held: memory grew by that much with every new visitor. The app keeps nothing
    # in a session (the conversation comes with each question), so few are kept.
    kwargs.setdefault("state_session_capacity", MAX_SESSIONS_KEPT)
    kwargs.setdefault("ssr_mode", False)
    kwargs.setdefault("footer_links", ["api"])
    if auth:
        kwargs.setdefault("auth_message", "Log in to ask the documents.")
    seeds_dir = getattr(demo, "qa_seeds_dir", None)
    if seeds_dir is not None:  # a real app (tests also launch stand-ins)
        from starlette.middleware import Middleware

        guard = Middleware(
            ServerGuard, limiter=LoginLimiter(),
            upload_room=lambda waiting: upload_room(seeds_dir, waiting),
            temp_dir=lambda: getattr(demo.server_app, "uploaded_file_dir", None) or
            os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), guard]
        kwargs["app_kwargs"] = app_kwargs
    return demo.launch(
        server_name=host, server_port=port, share=False, css=CSS, head=HEAD, auth=auth, **kwargs
    )


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
        "--store",
        default=None,
        metavar="URI",
        help="where the index lives: milvus:///path/to/file.db (Milvus Lite) or "
        "milvus://host:19530 (a Milvus server) (default: $QA_STORE, else the file store)",
    )
    p.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default: $GRADIO_SERVER_NAME or {DEFAULT_HOST}); beyond "
        "loopback, --auth or --read-only is required",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default: $GRADIO_SERVER_PORT or {DEFAULT_PORT})",
    )
    p.add_argument(
        "--auth",
        default=None,
        metavar="USER:PASSWORD",
        help="require this login for every page and API call (default: $QA_AUTH)",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="no uploads and no rebuilds: neither the controls nor their API endpoints",
    )
    p.add_argument("--open", action="store_true", help="open the chat in a browser")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        auth = auth_from(args.auth)
    except QAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host = resolve_host(args.host)
    problem = exposure_error(host, auth, args.read_only)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not args.seeds.is_dir():
        print(f"error: documents folder {args.seeds} does not exist (use --seeds)", file=sys.stderr)
        return 2
    try:
        engine = open_engine(args.seeds, args.index, store=args.store or None)
    except QAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def warm_up():  # load the model and bring the index up to date before the first question
        try:
            engine.refresh()
        except Exception as e:  # noqa: BLE001 - the app reports it on the first question
            log.warning("could not prepare the index: %s", e)

    threading.Thread(target=warm_up, name="qa-warm-up", daemon=True).start()
    private_temp_dir()  # before the app is built: Gradio reads it then
    end_on_sigterm()
    try:
        demo = build_app(engine, read_only=args.read_only)
        launch(demo, host, args.port, auth=auth, read_only=args.read_only, quiet=True,
               prevent_thread_lock=True, inbrowser=args.open)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    mode = []
    if auth:
        mode.append(f"login required (user {auth[0]})")
    if args.read_only:
        mode.append("read-only")
    extra = f"; {', '.join(mode)}" if mode else ""
    print(f"qa chat is ready: open {demo.local_url} (Ctrl+C stops it{extra})", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())

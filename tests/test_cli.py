"""The `qa` command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from qa.cli import main

from .conftest import ROOT, SEEDS

INTERCEPTORS = "How many interceptors is the Pentagon sending to Ukraine?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    shutil.copytree(SEEDS, base / "seeds")
    return base


def run(corpus, *args):
    return ["--seeds", str(corpus / "seeds"), "--index", str(corpus / "index"), *args]


def test_build_ask_status(corpus, capsys):
    assert main(["build", *run(corpus)]) == 0
    out = capsys.readouterr()
    assert "indexed 5 documents" in out.out
    assert "embedding" in out.err  # the progress bar

    assert main(["ask", INTERCEPTORS, *run(corpus)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "500" in first
    assert "[[more than 500]]" in out or "[[over 500]]" in out  # the span marked in the quote
    assert "001_d68ff4131b3e9101.txt" in out or "003_a99a2610f205991f.txt" in out
    assert "chars " in out

    assert main(["ask", INTERCEPTORS, "--json", "-k", "2", *run(corpus)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "500" in data["text"] and len(data["quotes"]) == 2
    q = data["quotes"][0]
    stored = open(corpus / "seeds" / q["source"], encoding="utf-8-sig", newline="").read()
    assert stored[q["start"] : q["end"]] == q["text"]

    assert main(["status", *run(corpus)]) == 0
    out = capsys.readouterr().out
    assert "5 documents" in out and "up to date" in out
    (corpus / "seeds" / "new.txt").write_text("The depot holds 4,312 crates of spare parts.")
    assert main(["status", *run(corpus)]) == 0
    assert "stale: added: new.txt" in capsys.readouterr().out


def test_min_confidence_decides_when_the_trained_reader_answers(corpus, capsys):
    assert main(["ask", INTERCEPTORS, "--json", "--min-confidence", "1", *run(corpus)]) == 0
    assert json.loads(capsys.readouterr().out)["text"] is None
    assert main(["ask", "What is the population of Kyiv?", "--json", "--min-confidence", "0",
                 *run(corpus)]) == 0
    assert json.loads(capsys.readouterr().out)["text"] is not None
    for bad in (["--min-confidence", "high"], ["--min-confidence", "0.5", "--reader", "rules"]):
        assert main(["ask", INTERCEPTORS, *bad, *run(corpus)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("qa: error:") and "confidence" in err and "\n" not in err


def test_no_answer_is_said_plainly(corpus, capsys):
    assert main(["ask", "What is the population of Kyiv?", *run(corpus)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The documents do not say.")
    assert "[1]" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", "   "], "the question is empty"),
        (["ask", "x" * 100_000], "limit"),
        (["ask", "Why?", "--seeds", "/nonexistent/folder"], "does not exist"),
        (["eval", "/nonexistent/questions.jsonl"], "does not exist"),
        (["ask", "Why?", "-k", "0"], "-k must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, message, capsys, tmp_path):
    code = main(args + ["--index", str(tmp_path / "index")])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_empty_seeds_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["build", "--seeds", str(tmp_path / "empty"), "--index", str(tmp_path / "i")]) == 2
    assert "no readable" in capsys.readouterr().err


def test_eval_prints_a_table_and_json(corpus, capsys, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "a", "question": INTERCEPTORS, "answers": ["more than 500"],
                    "sources": [], "impossible": False}) + "\n"
        + json.dumps({"id": "b", "question": "What is the population of Kyiv?", "answers": [],
                      "sources": [], "impossible": True}) + "\n"
    )
    assert main(["eval", str(questions), *run(corpus)]) == 0
    out = capsys.readouterr().out
    assert "F1 (answerable)" in out and "100.0" in out
    assert main(["eval", str(questions), "--json", *run(corpus)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["f1"] == 100.0 and data["no_answer_accuracy"] == 100.0
    assert data["latency_ms_median"] > 0


def test_console_script_end_to_end(corpus):
    """The installed `qa` command, in a fresh process, as a user runs it."""
    exe = shutil.which("qa", path=os.path.dirname(sys.executable)) or "qa"
    proc = subprocess.run(
        [exe, "ask", INTERCEPTORS, *run(corpus)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "500" in proc.stdout.splitlines()[0]
    assert "001_d68ff4131b3e9101.txt" in proc.stdout or "003_a99a2610f205991f.txt" in proc.stdout


def test_chat_resolves_follow_ups_and_survives_bad_lines(corpus, capsys, monkeypatch):
    import io

    lines = ["Who is sending interceptors for the Patriot system to Ukraine?", "How many?",
             "x" * 5000, "/new", "How many?", "/quit", "never asked"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", "--json", *run(corpus)]) == 0
    out = capsys.readouterr()
    answers = [json.loads(line) for line in out.out.splitlines() if line.strip()]
    assert len(answers) == 3  # the over-long line is refused, "/quit" ends before the last
    follow, restarted = answers[1], answers[2]
    assert follow["standalone"] and "500" in (follow["text"] or "")
    assert restarted["standalone"] is None  # "/new" forgot the conversation
    assert out.err.count("qa: error:") == 1 and "5,000 characters" in out.err


def test_pdf_html_and_docx_dropped_into_the_seeds_are_cited_by_page_or_heading(tmp_path, capsys):
    from .document_files import HTML_PAGE, LIGHTHOUSE, docx_bytes, pdf_bytes

    shutil.copytree(SEEDS, tmp_path / "seeds")
    seeds = tmp_path / "seeds"
    (seeds / "report.pdf").write_bytes(pdf_bytes([["The harbour opened in June."], [LIGHTHOUSE]]))
    (seeds / "notes.html").write_bytes(HTML_PAGE.encode())
    (seeds / "memo.docx").write_bytes(docx_bytes([
        ("Title", "Ferry Memo"), ("Heading 1", "Fares"),
        ("Normal", "A return ticket on the Skerry ferry costs 14 euros for adults.")]))
    args = ["--seeds", str(seeds), "--index", str(tmp_path / "index")]
    for question, answer, cited in [
        ("When was the Skerry lighthouse built?", "1871", "report.pdf, page 2,"),
        ("How many rooms does the keeper's house have?", "four", "notes.html, The keeper's house,"),
        ("How much does a return ticket on the Skerry ferry cost for adults?", "14 euros",
         "memo.docx, Fares,"),
    ]:
        assert main(["ask", question, *args]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].startswith(answer), out
        assert f"] {cited}" in out  # the quote stating it names its page or heading
    assert main(["status", *args]) == 0
    status = capsys.readouterr().out
    for name in ("report.pdf", "notes.html", "memo.docx"):
        assert f"  {name}: " in status
    assert "8 documents" in status


# -- hostile text (issue 24) ------------------------------------------------------------------

RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x9b", "\u202e")
BEACON = "The beacon on Carrow Point was first lit in 1862 by the keeper Ada Frane."


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A folder whose document and file names carry terminal commands."""
    base = tmp_path_factory.mktemp("hostile-cli")
    docs = base / "docs"
    docs.mkdir()
    (docs / "beacon\x1b]0;owned\x07.txt").write_text(
        BEACON + "\x1b]0;owned\x07\x1b[2J\r\x9b31m(confidence 1.00)\u202e more words follow.")
    (docs / "bad\x1b[31m.pdf").write_bytes(b"%PDF-1.4 \x1b[2J not a pdf")
    return ["--seeds", str(docs), "--index", str(base / "index")]


def _no_raw_controls(text: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in text, repr(char)


def test_the_terminal_shows_text_not_commands(hostile, capsys, caplog):
    assert main(["build", *hostile]) == 0
    out = capsys.readouterr()
    _no_raw_controls(out.out + caplog.text)
    _no_raw_controls(out.err.replace("\r", ""))  # the progress bar redraws its line with CR
    # Each skipped file once, not three times.
    assert (out.err + caplog.text).count("bad\\x1b[31m.pdf: not a readable PDF") == 1

    assert main(["ask", "Who first lit the beacon on Carrow Point?", *hostile]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "Ada Frane" in out.splitlines()[0]
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x9b31m(confidence 1.00)\\u202e" in out
    assert "beacon\\x1b]0;owned\\x07.txt" in out

    assert main(["ask", "Who first lit the beacon on Carrow Point?", "--json", *hostile]) == 0
    raw = capsys.readouterr().out
    _no_raw_controls(raw)
    assert "\x9b31m" in json.loads(raw)["quotes"][0]["text"]  # the same text, escaped

    assert main(["status", *hostile]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "  skipped bad\\x1b[31m.pdf: not a readable PDF" in out
    assert main(["status", "--json", *hostile]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "bad\\x1b[31m.pdf" in json.loads(out)["skipped"]


def test_a_closed_pipe_ends_quietly(hostile):
    """``qa status | head`` where head has gone: no traceback, the shell's exit status."""
    command = f"{sys.executable} -m qa.cli status {' '.join(map(repr, hostile))} | true"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode in (0, 141) and proc.stderr == "", proc.stderr


def test_chat_refuses_a_line_that_is_not_utf8_and_goes_on(corpus, capsys, monkeypatch):
    import io

    data = b"caf\xe9 au lait?\n" + INTERCEPTORS.encode() + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    assert main(["chat", "--json", *run(corpus)]) == 0
    out = capsys.readouterr()
    answers = [json.loads(line) for line in out.out.splitlines() if line.strip()]
    assert len(answers) == 1 and "500" in answers[0]["text"]
    assert out.err == "qa: error: the line is not UTF-8 text; skipped\n"


def test_an_index_path_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(BEACON)
    (tmp_path / "index").write_text("not a folder")
    code = main(["ask", "Who lit the beacon?", "--seeds", str(tmp_path / "docs"),
                 "--index", str(tmp_path / "index")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"qa: error: the index folder {tmp_path / 'index'} is a file, not a folder\n"


def test_a_lone_surrogate_in_a_question_is_one_line(corpus, capsys):
    assert main(["ask", "Why\ud800?", *run(corpus)]) == 2
    err = capsys.readouterr().err
    assert err == ("qa: error: the question holds U+D800 at character 4, half of a character "
                   "pair, not text\n")


def test_chat_finishes_the_update_its_questions_started(tmp_path, capsys):
    shutil.copytree(SEEDS, tmp_path / "seeds")
    assert main(["build", *run(tmp_path)]) == 0
    # Long enough that indexing it outlasts the question.
    (tmp_path / "seeds" / "new.txt").write_text("\n\n".join(
        f"Depot {i} holds {i * 37} crates of spare parts for the northern fleet's radar "
        f"stations, logged by clerk number {i * 11} in ledger {i % 17}." for i in range(600)))
    # Its own process: an update still running when it ends would die with it.
    proc = subprocess.run([sys.executable, "-m", "qa.cli", "chat", "--json", *run(tmp_path)],
                          input=INTERCEPTORS + "\n/quit\n", capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "500" in proc.stdout
    capsys.readouterr()
    assert main(["status", *run(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "new.txt:" in out and "up to date" in out

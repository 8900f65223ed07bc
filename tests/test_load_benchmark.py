"""The load test's reading of the chat's replies (benchmarks/load.py): what it counts as the
same answer, and the memory it reads from /proc."""

from __future__ import annotations

import os

import pytest

import app
from benchmarks import load
from qa import Answer

from .test_app import quote


def test_an_answer_is_its_text_and_the_files_stating_it():
    q = quote("The depot holds 4,312 crates & more.", "b & c.txt", answer="4,312 crates")
    reply = app.format_reply(Answer("How many?", "4,312 crates", 0.9, [q], ["b & c.txt", "a.txt"]))
    assert load.reply_key(reply) == ("4,312 crates", ("a.txt", "b & c.txt"))
    # Confidence and relevance move with the corpus; they are not part of the answer.
    other = app.format_reply(Answer("How many?", "4,312 crates", 0.85, [q], ["a.txt", "b & c.txt"]))
    assert load.reply_key(other) == load.reply_key(reply)


def test_a_decline_is_its_message_and_an_error_raises():
    decline = Answer("Who?", None, 0.8, [], [])
    assert load.reply_key(app.format_reply(decline)) == (decline.message, ())
    with pytest.raises(RuntimeError, match="^the question is empty$"):
        load.reply_key(app.format_error("the question is empty"))


def test_server_memory_counts_the_process_and_its_children():
    own = load.tree_rss_mb(os.getpid())
    assert own > 0
    assert load.tree_rss_mb(2**22 + 1) == 0  # no such process

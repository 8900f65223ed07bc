"""Shared fixtures: one embedding model and one reader for the whole session (loading them
takes seconds), and engines over temporary copies of document folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
DATA = Path(__file__).resolve().parent / "data"
DEV_QUESTIONS = ROOT.parent / "shared" / "eval" / "seed_questions.jsonl"


_ENVIRONMENT_AT_START = dict(os.environ)


@pytest.fixture(autouse=True)
def _freshness_checked_before_every_answer(monkeypatch):
    """A busy test machine can make a folder check take over 10 ms, which would space checks
    out (see QA._interval) and let an answer miss an edit a test just made. Only checks over
    a second are spaced in the tests; the spacing itself is tested on a simulated clock.

    Likewise an answer here waits for the update it starts, so that tests which edit a folder
    and ask at once see the edit; tests/test_serving.py sets the default (0: never wait) back
    and checks that answers come from the previous version while an update runs."""
    from qa import config

    monkeypatch.setattr(config, "FRESHNESS_SLOW_CHECK_SECONDS", 1.0)
    monkeypatch.setattr(config, "ANSWER_WAITS_FOR_UPDATE_SECONDS", float("inf"))
    # app.main() points Gradio at a temporary folder of its own through the environment; a
    # test that runs it must not move the uploads of the servers other tests started.
    monkeypatch.setenv("GRADIO_TEMP_DIR", "restored after the test")
    if "GRADIO_TEMP_DIR" in _ENVIRONMENT_AT_START:
        monkeypatch.setenv("GRADIO_TEMP_DIR", _ENVIRONMENT_AT_START["GRADIO_TEMP_DIR"])
    else:
        monkeypatch.delenv("GRADIO_TEMP_DIR")


@pytest.fixture(scope="session")
def encoder():
    from qa.embedding import Encoder

    return Encoder()


@pytest.fixture(scope="session")
def reader():
    """The default reader: the trained model shipped in qa/reading/model."""
    from qa.reading import make_reader

    return make_reader("trained")


@pytest.fixture(scope="session")
def rules_reader():
    from qa.reading import make_reader

    return make_reader("rules")


@pytest.fixture(scope="session")
def seed_engine(tmp_path_factory, encoder, reader):
    """An engine over an untouched copy of seeds/ (shared: do not modify its folder)."""
    from qa import QA

    base = tmp_path_factory.mktemp("seed_engine")
    shutil.copytree(SEEDS, base / "seeds")
    engine = QA(base / "seeds", base / "index", encoder=encoder, reader=reader)
    engine.refresh()
    return engine


@pytest.fixture
def make_engine(tmp_path, encoder, reader):
    """make_engine({"a.txt": "text", ...}) -> QA over those files in a fresh folder."""
    from qa import QA

    def make(files: dict[str, str | bytes], name: str = "docs"):
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8", newline="")
        return QA(folder, tmp_path / f"{name}-index", encoder=encoder, reader=reader)

    return make


# -- the web app (app.py) ----------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(engine):
    """Launch app.py's Blocks for ``engine`` on a free loopback port; returns (demo, url)."""
    import app

    demo = app.build_app(engine)
    for attempt in range(3):
        port = free_port()
        try:
            app.launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
            return demo, f"http://127.0.0.1:{port}/"
        except OSError:
            if attempt == 2:
                raise


@pytest.fixture(scope="session")
def app_url(seed_engine):
    """The chat app over the shared, untouched seeds copy (ask only; do not upload)."""
    demo, url = serve_app(seed_engine)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def scratch_engine(tmp_path_factory, seed_engine, encoder, reader):
    """An engine over a private copy of the seeds and their built index: tests may add files."""
    from qa import QA

    base = tmp_path_factory.mktemp("scratch_engine")
    shutil.copytree(seed_engine.seeds_dir, base / "seeds")
    shutil.copytree(seed_engine.index_dir, base / "index")
    engine = QA(base / "seeds", base / "index", encoder=encoder, reader=reader)
    engine.refresh()
    return engine


@pytest.fixture(scope="session")
def scratch_app_url(scratch_engine):
    """The chat app over ``scratch_engine`` (uploads allowed)."""
    demo, url = serve_app(scratch_engine)
    yield url
    demo.close()

"""The pipeline behind ``answer()``: keep the index fresh, retrieve, read, and explain."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import config
from . import index as index_mod
from .documents import FileState, scan_documents
from .errors import QAError
from .reading import Reader, make_reader
from .retrieval import retrieve
from .types import Answer

log = logging.getLogger("qa")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_question(question: str) -> str:
    """Validate a question; raises QAError with a one-line reason."""
    if not isinstance(question, str):
        raise QAError("the question must be text")
    if len(question) > config.MAX_QUESTION_CHARS:
        raise QAError(
            f"the question is {len(question):,} characters long; the limit is "
            f"{config.MAX_QUESTION_CHARS:,}"
        )
    surrogate = _SURROGATE.search(question)
    if surrogate:
        raise QAError(f"the question holds U+{ord(surrogate.group()):04X} at character "
                      f"{surrogate.start() + 1}, half of a character pair, not text")
    question = " ".join(_CONTROL.sub(" ", question).split())
    if not question:
        raise QAError("the question is empty")
    return question


@dataclass(frozen=True)
class UpdateProgress:
    """How far the index update under way has come: ``done`` of ``total`` at ``stage``
    ("reading", "embedding", "analysing", "writing")."""

    stage: str
    done: int
    total: int
    started: float  # time.time() when the update began


class QA:
    """Question answering over one folder of documents, with its index in a store (local
    files by default, or Milvus: see ``qa.index.open_store``).

    The index is built on first use and kept in step with the folder: a cheap check of file
    names, sizes and times (confirmed by content hashes) triggers an incremental update when
    documents were added, edited or removed. Where that check is slow (many thousands of
    files) it runs at most every ``FRESHNESS_SHARE``-th of the time.

    Answers never wait for an update: the check and the update run in a background thread
    (one at a time per engine, and one builder per index across processes), and questions are
    answered from the version already loaded until the new one is committed and swapped in
    whole. Only the first build of an index with no version yet is waited for.
    """

    def __init__(
        self,
        seeds_dir: str | Path = config.DEFAULT_SEEDS,
        index_dir: str | Path | None = None,
        model: str = config.EMBEDDING_MODEL,
        reader: str | Reader = config.READER,
        check_interval: float = 0.0,
        encoder=None,
        store: str | None = None,
    ):
        """``reader`` is a spec ("trained", "rules", "rules:fast", "transformers:MODEL") or a
        ``Reader``; ``encoder`` an Encoder to share between engines (default: a new one);
        ``store`` where the index lives: "" for the file store in ``index_dir`` (the default,
        or ``QA_STORE``), ``milvus:///path/to/file.db`` or ``milvus://host:19530``."""
        from .embedding import Encoder

        if seeds_dir is None:
            seeds_dir = config.DEFAULT_SEEDS
        if not isinstance(seeds_dir, (str, Path)):
            raise QAError(f"the documents folder must be a path, not {type(seeds_dir).__name__}")
        self.seeds_dir = Path(seeds_dir)
        self.backend: index_mod.Backend = index_mod.open_store(
            config.STORE if store is None else store, self.seeds_dir,
            Path(index_dir) if index_dir else None)
        # The index folder of the file store (None for another store).
        self.index_dir: Path | None = getattr(self.backend, "index_dir", None)
        self.encoder = encoder if encoder is not None else Encoder(model)
        self.reader = make_reader(reader) if isinstance(reader, str) else reader
        self.check_interval = check_interval
        self._index: index_mod.Store | None = None
        self._manifest_stamp: tuple | None = None
        self._checked_at = float("-inf")
        self._last_check_seconds = 0.0
        self._lock = threading.RLock()
        self._updater: threading.Thread | None = None
        self._updater_lock = threading.Lock()
        self.updating: UpdateProgress | None = None  # the update under way, if any
        self.last_update_error: str | None = None  # why the last background update failed

    # -- index lifecycle ---------------------------------------------------------------

    @property
    def index(self) -> index_mod.Store:
        """The version to answer from, without waiting for an update (see the class)."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._reload_if_replaced()
                if self._index is None:  # no version yet: the first build is waited for
                    self.refresh(force=True)
                    assert self._index is not None
                    return self._index
        if time.monotonic() - self._checked_at >= self._interval():
            self._checked_at = time.monotonic()  # one check per interval, however many ask
            worker = self.update_in_background()
            wait = config.ANSWER_WAITS_FOR_UPDATE_SECONDS
            if wait > 0:
                worker.join(None if wait == float("inf") else wait)
        return self._index

    def update_in_background(self) -> threading.Thread:
        """Check the folder and update the index in a background thread (the one already
        running, if any); answers go on from the loaded version meanwhile."""
        with self._updater_lock:
            if self._updater is None or not self._updater.is_alive():
                self._updater = threading.Thread(
                    target=self._update_quietly, name="qa-index-update", daemon=True)
                self._updater.start()
            return self._updater

    def wait_for_update(self, timeout: float | None = None) -> bool:
        """Wait for the background update under way, if any; True when none is left."""
        worker = self._updater
        if worker is not None:
            worker.join(timeout)
        return worker is None or not worker.is_alive()

    def _update_quietly(self) -> None:
        try:
            self.refresh(force=True)
            self.last_update_error = None
        except Exception as e:  # noqa: BLE001 - a background update reports, never crashes
            self.last_update_error = " ".join(str(e).split()) or type(e).__name__
            log.warning("index update failed (%s); answering from the previous index",
                        self.last_update_error)

    def stale_reasons(self, found: list[FileState] | None = None) -> list[str]:
        """Why the index no longer matches the documents (empty when it does). ``found``: a
        scan of the folder just taken, to look at it only once before ``rebuild(found=...)``."""
        if not self.seeds_dir.is_dir():
            raise QAError(f"documents folder {self.seeds_dir} does not exist")
        manifest = self._index.manifest if self._index is not None else self._read_manifest()
        return index_mod.stale_reasons(self.seeds_dir, manifest, self.encoder.model_id, found,
                                       self._annotator_id())

    def _annotator_id(self) -> str | None:
        annotator = self.reader.annotator()
        return annotator.id if annotator is not None else None

    def refresh(self, force: bool = False) -> index_mod.BuildReport | None:
        """Load the current index, updating it first when the documents changed; returns the
        update's report, if one was made."""
        now = time.monotonic()
        if not force and self._index is not None and now - self._checked_at < self._interval():
            return None
        with self._lock:
            started = time.monotonic()
            self._reload_if_replaced()
            found = scan_documents(self.seeds_dir)
            reasons = self.stale_reasons(found)
            report = None
            if reasons:
                log.info("index is stale (%s); updating", "; ".join(reasons[:3]))
                try:
                    report = self.rebuild(found=found)
                except Exception as e:  # noqa: BLE001 - whatever failed, the old index serves
                    if self._index is None:
                        raise
                    # The previous version is intact: keep serving it, say why it is old.
                    log.warning("index update failed (%s); answering from the previous index", e)
            self._last_check_seconds = 0.0 if reasons else time.monotonic() - started
            self._checked_at = time.monotonic()
            return report

    def _interval(self) -> float:
        """Seconds between freshness checks: ``check_interval``, or longer where one check is
        slow (a folder of many thousands of files), so that checking takes at most
        FRESHNESS_SHARE of the time spent answering."""
        slow = self._last_check_seconds
        if slow < config.FRESHNESS_SLOW_CHECK_SECONDS:
            return self.check_interval
        spacing = slow * (1 - config.FRESHNESS_SHARE) / config.FRESHNESS_SHARE
        return max(self.check_interval, spacing)

    def status(self) -> dict:
        """What is indexed and whether the documents changed since. Never rebuilds, and never
        waits for a rebuild in progress: it reads the committed manifest."""
        damage = None
        try:
            manifest = self.backend.read_manifest()
        except index_mod.IndexCorrupt as e:
            manifest, damage = None, str(e)
        try:
            if not self.seeds_dir.is_dir():
                raise QAError(f"documents folder {self.seeds_dir} does not exist")
            stale = index_mod.stale_reasons(self.seeds_dir, manifest, self.encoder.model_id,
                                            annotator_id=self._annotator_id())
        except QAError as e:
            stale = [str(e)]
        if damage:
            stale = [damage]
        if manifest is None:
            return {"updating": self._updating_dict(), "built": None, "documents": 0,
                    "passages": 0, "sources": {}, "skipped": {}, "stale": stale,
                    "index_dir": self.backend.location, "store": self.backend.kind,
                    "seeds_dir": str(self.seeds_dir)}
        return {
            "updating": self._updating_dict(),
            "built": manifest["created"],
            "documents": manifest["counts"]["documents"],
            "passages": manifest["counts"]["passages"],
            "model": manifest["model"]["id"],
            "dense": manifest["dense"]["type"],
            "reader": self.reader.name,
            "annotations": manifest.get("annotator"),
            "sources": {s: m["passages"] for s, m in manifest["sources"].items()},
            "skipped": {s: m["error"] for s, m in manifest.get("skipped_files", {}).items()},
            "stale": stale,
            "index_dir": self.backend.location,
            "store": self.backend.kind,
            "seeds_dir": str(self.seeds_dir),
        }

    def _updating_dict(self) -> dict | None:
        """The update under way as plain data (stage, done, total, started), or None."""
        updating = self.updating
        return asdict(updating) if updating is not None else None

    def rebuild(self, progress=None, found: list[FileState] | None = None,
                full: bool = False) -> index_mod.BuildReport:
        """Bring the index up to date with the documents (only changed passages re-embedded).
        ``found``: the scan ``stale_reasons`` was given, when it was just taken; ``full``: a
        new version from the documents alone, nothing reused. Answers go on from the loaded
        version meanwhile; the new one replaces it whole once committed."""
        with self._lock, self.backend.building():
            previous = self._index
            if previous is None and not full:
                previous = self._try_load()
            started = time.time()
            self.updating = UpdateProgress("reading", 0, 0, started)

            def note(stage: str, done: int, total: int) -> None:
                self.updating = UpdateProgress(stage, done, total, started)
                if progress:
                    progress(stage, done, total)

            try:
                built, report = self.backend.build(
                    self.seeds_dir,
                    self.encoder,
                    annotator=self.reader.annotator(),
                    progress=note,
                    previous=previous,
                    found=found,
                    full=full,
                )
                self._reload_if_replaced(trusted=built.get("version_dir"), force=True)
            finally:
                self.updating = None
            for reason in report.skipped.values():
                log.warning("%s", reason)
            return report

    def _read_manifest(self) -> dict | None:
        try:
            return self.backend.read_manifest()
        except index_mod.IndexCorrupt:
            return None

    def _manifest_state(self):
        return self.backend.stamp()

    def _try_load(self, trusted: str | None = None) -> index_mod.Store | None:
        try:
            return self.backend.load(trusted=trusted)
        except index_mod.IndexCorrupt as e:
            log.warning("%s; rebuilding", e)
            return None

    def _reload_if_replaced(self, trusted: str | None = None, force: bool = False) -> None:
        """Load the committed version when it is not the one loaded (``force``: anyway);
        the loaded one keeps serving until the new one is ready, then is replaced whole."""
        stamp = self._manifest_state()
        if not force and self._index is not None and stamp == self._manifest_stamp:
            return
        loaded = self._try_load(trusted)
        if loaded is None and stamp is not None:
            # A corrupt or unreadable index: rebuild from scratch.
            _, _ = self.backend.build(
                self.seeds_dir, self.encoder, annotator=self.reader.annotator(), full=True
            )
            stamp = self._manifest_state()
            loaded = self.backend.load()
        self._index = loaded
        self._manifest_stamp = stamp

    # -- answering -------------------------------------------------------------------

    def answer(self, question: str, top_k: int = config.TOP_K, history=None) -> Answer:
        """Answer ``question`` from the documents. ``history``: the conversation so far, as
        ``{"role": "user" | "assistant", "content": ...}`` messages (an assistant's content
        may be an ``Answer``); a follow-up is answered as the standalone question it stands
        for, which the answer names in ``standalone``."""
        t0 = time.perf_counter()
        question = clean_question(question)
        if not isinstance(top_k, int) or top_k < 1:
            raise QAError("top_k must be a positive whole number")
        standalone = self.standalone_question(question, history)
        if len(standalone) > config.MAX_QUESTION_CHARS:  # a long turn before: ask it as it is
            standalone = question
        asked = clean_question(standalone) if standalone != question else question
        result = self._read(asked, top_k)
        if asked != question:
            from .conversation import has_own_content

            # A rewrite may never make a question that says enough on its own worse: read it
            # as asked too and keep the rewrite only when it is the better supported.
            if has_own_content(question):
                alone = self._read(question, top_k)
                if _support(alone) >= _support(result):
                    result, asked = alone, question
        if asked != question:
            result.question, result.standalone = question, asked
        result.seconds = time.perf_counter() - t0
        return result

    def _read(self, question: str, top_k: int) -> Answer:
        idx, query_vector, hits = self.retrieve(question, top_k)
        return self.reader.read(question, query_vector, idx, hits, top_k)

    def retrieve(self, question: str, top_k: int = config.TOP_K):
        """(index, question vector, hits): the passages the reader reads for ``question``."""
        idx = self.index
        query_vector = self.encoder.encode_query(question)
        try:
            hits = retrieve(idx, query_vector, question, k=max(top_k, self.reader.depth),
                            keep_each=config.KEEP_EACH_RETRIEVER)
        except index_mod.IndexCorrupt as e:  # a file read on first use was damaged since
            log.warning("%s; rebuilding", e)
            self._manifest_stamp = None  # the next check reloads, finds the damage, rebuilds
            self._checked_at = float("-inf")
            self.update_in_background()
            raise QAError(f"{e}; the index is being rebuilt, ask again in a moment") from None
        return idx, query_vector, hits

    def standalone_question(self, question: str, history=None) -> str:
        """``question`` rewritten to stand alone after ``history`` (itself when it does)."""
        from .conversation import standalone_question, turns_from_history

        if not history:
            return question
        try:
            turns = turns_from_history(history, self._similarity)
        except ValueError as e:
            raise QAError(str(e)) from None
        return standalone_question(question, turns[-1] if turns else None, self._similarity)

    def _similarity(self, phrase: str, candidates: list[str]) -> list[float]:
        query = self.encoder.encode_query(phrase)
        return [float(np.dot(query, self.encoder.encode_query(c))) for c in candidates]

    def conversation(self, top_k: int = config.TOP_K) -> Conversation:
        """A conversation over these documents: ``conversation().ask(...)`` remembers."""
        return Conversation(self, top_k)


def _support(answer: Answer) -> float:
    """How well the documents support a reply: its confidence, a guess's, else 0."""
    if answer.text is not None:
        return answer.score
    return answer.guess_confidence or 0.0


class Conversation:
    """The turns of one conversation: each question is answered in the light of the ones
    before it (``qa.conversation().ask("Who ...?")``, then ``.ask("When?")``)."""

    def __init__(self, engine: QA, top_k: int = config.TOP_K):
        self.engine = engine
        self.top_k = top_k
        self.history: list[dict] = []

    def ask(self, question: str) -> Answer:
        result = self.engine.answer(question, top_k=self.top_k, history=self.history)
        self.history += [{"role": "user", "content": question},
                         {"role": "assistant", "content": result}]
        return result

    def clear(self) -> None:
        self.history = []


_default: QA | None = None
_default_lock = threading.Lock()


def answer(question: str, top_k: int = config.TOP_K, history=None) -> Answer:
    """Answer from ./seeds with the index in ./vectorstore (both made on first use);
    ``history`` as for ``QA.answer``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = QA()
    return _default.answer(question, top_k=top_k, history=history)

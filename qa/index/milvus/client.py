"""Reaching Milvus: store URIs, one shared client per address, one-line errors, and the limits
the store keeps to."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from ...errors import QAError

INSTALL_HINT = "install the milvus extra: pip install -e '.[milvus]'"
SCHEME = "milvus://"
DEFAULT_PORT = 19530
CONNECT_TIMEOUT = 5.0  # seconds to reach a server
READ_TIMEOUT = 30.0
WRITE_TIMEOUT = 300.0
LITE_RELEASE_SECONDS = 60.0  # a builder that waited gives the last one this long to let go
BATCH_ROWS = 1000  # rows per insert, upsert or get
QUERY_LIMIT = 16_384  # Milvus's most rows for one query
MAX_VARCHAR = 65535  # bytes, Milvus's limit for a VARCHAR field
MAX_KEY_BYTES = 2048
BM25_MODES = ("qa", "milvus")
FUSIONS = ("qa", "rrf", "weighted")


class StoreUnavailable(QAError):
    """Milvus cannot be reached, or refused what was asked (the message names the URI)."""


# -- addresses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MilvusURI:
    uri: str  # as given, for messages
    address: str  # what MilvusClient takes: a .db path (Milvus Lite) or http://host:port
    lite: bool
    corpus: str | None
    bm25: str
    fusion: str


def parse_uri(uri: str) -> MilvusURI:
    """Read a ``milvus://`` store URI; a bad one is a QAError saying what is wrong."""
    if not uri.startswith(SCHEME):
        raise QAError(f"not a Milvus store URI: {uri!r}")
    rest, _, query = uri[len(SCHEME):].partition("?")
    try:
        options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    except ValueError:
        raise QAError(f"{uri}: unreadable options after '?'") from None
    unknown = sorted(set(options) - {"corpus", "bm25", "fusion"})
    if unknown:
        raise QAError(f"{uri}: unknown option {unknown[0]!r} (use corpus, bm25 or fusion)")
    corpus = options.get("corpus")
    if corpus is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,60}", corpus):
        raise QAError(f"{uri}: corpus must be 1 to 60 letters, digits or underscores")
    bm25, fusion = options.get("bm25", "qa"), options.get("fusion", "qa")
    if bm25 not in BM25_MODES:
        raise QAError(f"{uri}: bm25 must be one of {', '.join(BM25_MODES)}")
    if fusion not in FUSIONS:
        raise QAError(f"{uri}: fusion must be one of {', '.join(FUSIONS)}")
    if rest.endswith(".db"):  # a Milvus Lite file
        path = Path(rest).expanduser().resolve()
        return MilvusURI(uri, str(path), True, corpus, bm25, fusion)
    host, _, port = rest.rstrip("/").partition(":")
    if not host or "/" in host or (port and not port.isdigit()):
        raise QAError(f"{uri}: use milvus:///path/to/file.db (Milvus Lite) or "
                      "milvus://host:19530 (a Milvus server)")
    return MilvusURI(uri, f"http://{host}:{port or DEFAULT_PORT}", False, corpus, bm25, fusion)


def corpus_name(seeds_dir: Path) -> str:
    """The default corpus name of a folder: its name and a hash of its path, as the file
    store names its folders under ./vectorstore/corpora."""
    resolved = Path(seeds_dir).resolve()
    name = re.sub(r"[^A-Za-z0-9]+", "_", resolved.name).strip("_")[:40] or "docs"
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    return f"{name}_{digest}"


# -- connecting -----------------------------------------------------------------------------

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def import_pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise QAError(f"the Milvus store needs pymilvus: {INSTALL_HINT}") from None
    # pymilvus and Milvus Lite log every failed call with its traceback; each failure reaches
    # the user once, as the one-line QAError it is turned into here.
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer", "milvus_lite",
                 "grpc._server"):  # the last: an in-process Milvus Lite server's own log
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    return pymilvus


def reason(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())[:300]


def is_connection_error(error: BaseException) -> bool:
    text = reason(error).lower()
    return getattr(error, "code", None) == 2 or "connect" in text or "unavailable" in text


def connect(target: MilvusURI, patience: float = 0.0):
    """The shared client for ``target``. ``patience``: seconds to keep trying to open a Milvus
    Lite file that another process still holds (one that just finished building in it and is
    letting go); 0 fails at once."""
    pymilvus = import_pymilvus()
    with _clients_lock:
        client = _clients.get(target.address)
        if client is not None:
            return client
        if target.lite:
            try:
                import milvus_lite  # noqa: F401 - pymilvus opens .db files through it
            except ImportError:
                raise QAError(f"a Milvus Lite store ({target.uri}) needs milvus-lite: "
                              f"{INSTALL_HINT}") from None
            Path(target.address).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + patience
        while True:
            try:
                client = _open(pymilvus, target)
                break
            except StoreUnavailable:
                if not target.lite or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        _clients[target.address] = client
        return client


def _open(pymilvus, target: MilvusURI):
    try:
        # A connection of our own (pymilvus shares them by address otherwise): when the
        # server goes away, it is dropped and the next call opens a fresh one.
        return pymilvus.MilvusClient(uri=target.address, timeout=CONNECT_TIMEOUT,
                                     dedicated=True, **_client_options(target))
    except Exception as e:  # noqa: BLE001 - any failure to connect is one message
        if target.lite:
            raise StoreUnavailable(
                f"cannot open Milvus Lite file {target.address} ({reason(e)}; Milvus Lite "
                "serves one process per file: is another process using it?)") from None
        raise StoreUnavailable(f"cannot reach Milvus at {target.uri} ({reason(e)})") from None


def lite_lock_path(target: MilvusURI) -> Path:
    """The builders' lock file of a Milvus Lite database: beside it (the database is a
    folder that Milvus Lite owns)."""
    path = Path(target.address)
    return path.with_name(f".{path.name}.build.lock")


def _client_options(target: MilvusURI) -> dict:
    if target.lite:
        # An in-process server: no login, and no keepalive pings (pymilvus pings every 10 s
        # even between calls; Milvus Lite's gRPC server answers that with GOAWAY
        # "too_many_pings" and drops the connection).
        return {"grpc_options": {"grpc.keepalive_time_ms": 2**31 - 1,
                                 "grpc.keepalive_permit_without_calls": 0}}
    return {"token": os.environ.get("QA_MILVUS_TOKEN", "")}


def literal(text: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forget_client(address: str, client) -> None:
    """Drop ``client`` as the shared one for ``address`` (it broke); the next ``connect`` opens
    a fresh one."""
    with _clients_lock:
        if _clients.get(address) is client:
            del _clients[address]

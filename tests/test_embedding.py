"""The ONNX encoder: same vectors as sentence-transformers, no torch on the query path, and
a broken or missing export is rebuilt or replaced by the sentence-transformers fallback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qa import onnx_encoder as ox
from qa.embedding import Encoder
from qa.errors import QAError

ROOT = Path(__file__).resolve().parent.parent

TEXTS = [
    "hi",
    "",
    "   \n\t ",
    "?",
    "How many crates does the Varnel depot hold?",
    "The Varnel depot holds 4,312 crates.",
    "Ünïcödé naïve café — 東京 🚀 Привет мир, ¿qué tal? العربية",
    "Pentagon Chief Urges Air Defense Aid for Ukraine Ahead of Winter",
    "word " * 400,  # far past the 256-token limit: truncated the same way
    (ROOT / "seeds" / "000_0b0359710c94c5e5.txt").read_text(encoding="utf-8"),
    "x" * 3000,  # one enormous word piece sequence
    (
        "The defense secretary's latest outreach centers on securing air defense capabilities "
        "for Ukraine as the country braces for another harsh winter amid ongoing hostilities."
    ),
    "1 2 3 4 5 6 7 8 9 10 — 3.14159 % $ € £ ¥ @#&*",
]


@pytest.fixture(scope="module")
def torch_encoder():
    return Encoder(backend="torch")


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory, torch_encoder):
    """A cache folder holding one fresh export of the default model."""
    cache = tmp_path_factory.mktemp("encoders")
    ox.export(torch_encoder.model_id, torch_encoder.path, cache, st_model=torch_encoder.model)
    return cache


@pytest.fixture(scope="module")
def onnx_encoder(export_cache):
    return Encoder(cache_dir=export_cache, backend="onnx")


def _export_folder(cache: Path) -> Path:
    (folder,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return folder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_matches_sentence_transformers(onnx_encoder, torch_encoder):
    reference = torch_encoder.encode(TEXTS)
    bulk = onnx_encoder.encode(TEXTS, batch_size=4)  # mixed lengths padded inside a batch
    single = np.stack([onnx_encoder.encode_query(t) for t in TEXTS])
    for got in (bulk, single):
        assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert _cosines(got, reference).min() >= 0.999
    assert onnx_encoder._model is None  # never loaded sentence-transformers


def test_truncates_like_sentence_transformers(onnx_encoder):
    # Text beyond max_seq_length (256 tokens) does not change the vector.
    base = "word " * 300
    a, b = onnx_encoder.encode([base, base + "completely different ending " * 20])
    assert float(a @ b) > 0.99999
    assert onnx_encoder.onnx.max_seq_length == 256


def test_empty_and_dimension(export_cache):
    enc = Encoder(cache_dir=export_cache)
    assert enc.dimension == 384  # read off the model's files: nothing loaded
    assert enc._onnx is None and enc._model is None
    out = enc.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_progress_is_reported(onnx_encoder):
    seen = []
    onnx_encoder.encode(
        TEXTS, batch_size=5, progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(5, 13), (10, 13), (13, 13)]


def test_query_path_does_not_import_torch(export_cache, onnx_encoder):
    code = f"""
import json, sys
from qa.embedding import Encoder
enc = Encoder(cache_dir={str(export_cache)!r})
vec = enc.encode_query("How many crates does the Varnel depot hold?")
heavy = [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules]
print(json.dumps({{"heavy": heavy, "vec": vec.tolist()}}))
"""
    env = dict(os.environ, QA_ENCODER_BACKEND="auto")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    expected = onnx_encoder.encode_query("How many crates does the Varnel depot hold?")
    assert float(np.dot(result["vec"], expected)) > 0.99999


def test_full_query_pipeline_does_not_import_torch(tmp_path, export_cache):
    """Answering from an existing index, in a fresh process, with the export in place."""
    from qa import QA

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "depot.txt").write_text(
        "Depots\n\nThe Varnel depot holds 4,312 crates of grain. It opened in 1931.\n",
        encoding="utf-8",
    )
    engine = QA(
        docs, tmp_path / "index", encoder=Encoder(cache_dir=export_cache), reader="rules:fast"
    )
    engine.refresh()
    code = f"""
import json, sys
from qa import QA
from qa.embedding import Encoder
engine = QA({str(docs)!r}, {str(tmp_path / "index")!r},
            encoder=Encoder(cache_dir={str(export_cache)!r}), reader="rules:fast")
engine.answer("How many crates does the Varnel depot hold?")
print(json.dumps(sorted(m for m in ("torch", "sentence_transformers", "transformers", "spacy")
                        if m in sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "damage", ["garbage", "weights", "truncated", "missing", "meta", "probe", "tokenizer"]
)
def test_broken_export_is_made_again(tmp_path, export_cache, onnx_encoder, damage, caplog):
    cache = tmp_path / "encoders"
    shutil.copytree(export_cache, cache)
    folder = _export_folder(cache)
    model = folder / ox.MODEL_FILE
    if damage == "garbage":  # same size, unreadable
        size = model.stat().st_size
        with open(model, "r+b") as f:
            f.write(b"\xff" * 4096)  # wire type 7: never valid protobuf
            f.seek(size // 2)
            f.write(b"\xff" * 4096)
    elif damage == "weights":  # same size, loads fine, wrong numbers: the probe catches it
        data = folder / ox.DATA_FILE
        with open(data, "r+b") as f:
            f.seek(data.stat().st_size // 2)
            f.write(np.full(4096, 1e30, dtype=np.float32).tobytes())
    elif damage == "probe":
        meta = json.loads((folder / ox.META_FILE).read_text())
        meta["probe"]["vector"] = [0.0] * len(meta["probe"]["vector"])
        (folder / ox.META_FILE).write_text(json.dumps(meta))
    elif damage == "truncated":
        data = folder / ox.DATA_FILE
        with open(data, "r+b") as f:
            f.truncate(data.stat().st_size // 3)
    elif damage == "missing":
        model.unlink()
    elif damage == "meta":
        (folder / ox.META_FILE).write_text("{not json", encoding="utf-8")
    elif damage == "tokenizer":
        (folder / ox.TOKENIZER_FILE).write_text("[]", encoding="utf-8")
    enc = Encoder(cache_dir=cache)
    with caplog.at_level(logging.WARNING, logger="qa"):
        vec = enc.encode_query("The Varnel depot holds 4,312 crates.")
    expected = onnx_encoder.encode_query("The Varnel depot holds 4,312 crates.")
    assert float(vec @ expected) > 0.99999
    assert enc._onnx is not None  # exported again, not fallen back
    ox.verify(_export_folder(cache))
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_falls_back_to_sentence_transformers(tmp_path, monkeypatch, onnx_encoder, caplog):
    def unavailable(*args, **kwargs):
        raise ox.ExportUnavailable("exporting to ONNX needs torch and onnx (test)")

    monkeypatch.setattr(ox, "export", unavailable)
    enc = Encoder(cache_dir=tmp_path / "encoders")
    with caplog.at_level(logging.WARNING, logger="qa"):
        vecs = enc.encode(TEXTS[:5])
        query = enc.encode_query(TEXTS[4])
    assert enc._onnx is None and enc._model is not None
    assert "using sentence-transformers" in caplog.text
    assert _cosines(vecs, onnx_encoder.encode(TEXTS[:5])).min() >= 0.999
    assert float(query @ onnx_encoder.encode_query(TEXTS[4])) >= 0.999

    strict = Encoder(cache_dir=tmp_path / "encoders", backend="onnx")
    with pytest.raises(QAError, match="ONNX encoder"):
        strict.encode_query("x")


def test_unknown_backend():
    with pytest.raises(QAError, match="backend"):
        Encoder(backend="tensorflow")


def test_export_is_atomic_and_reused(tmp_path, export_cache, torch_encoder):
    cache = tmp_path / "encoders"
    shutil.copytree(export_cache, cache)
    folder = _export_folder(cache)
    before = (folder / ox.MODEL_FILE).stat().st_mtime_ns
    # A second export finds the finished one and leaves it alone.
    again = ox.export(torch_encoder.model_id, torch_encoder.path, cache)
    assert again == folder and (folder / ox.MODEL_FILE).stat().st_mtime_ns == before
    meta = json.loads((folder / ox.META_FILE).read_text())
    assert meta["max_seq_length"] == 256 and meta["dimension"] == 384
    assert meta["input_names"][:2] == ["input_ids", "attention_mask"]


def test_cache_dir_default(monkeypatch, tmp_path):
    from qa import config

    monkeypatch.delenv("QA_ENCODER_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # One export per user, whatever the working directory (not ./vectorstore/encoders).
    assert Encoder().cache_dir == tmp_path / "home" / ".cache" / "qa" / "encoders"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Encoder().cache_dir == tmp_path / "xdg" / "qa" / "encoders"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the spec says
    assert Encoder().cache_dir == tmp_path / "home" / ".cache" / "qa" / "encoders"
    assert config.DEFAULT_INDEX / "encoders" != Encoder().cache_dir
    monkeypatch.setenv("QA_ENCODER_CACHE", str(tmp_path))
    assert Encoder().cache_dir == tmp_path
    assert Encoder(cache_dir=tmp_path / "x").cache_dir == tmp_path / "x"


def test_copied_export_is_accepted_without_exporting(tmp_path, export_cache, monkeypatch):
    cache = tmp_path / "encoders"
    shutil.copytree(export_cache, cache, copy_function=shutil.copy)  # new modification times
    monkeypatch.setattr(ox, "export", lambda *a, **k: pytest.fail("exported again"))
    enc = Encoder(cache_dir=cache)
    enc.encode_query("x")
    assert enc._onnx is not None
    folder = _export_folder(cache)
    meta = json.loads((folder / ox.META_FILE).read_text())  # the new times were recorded
    assert meta["files"][ox.DATA_FILE]["mtime_ns"] == (folder / ox.DATA_FILE).stat().st_mtime_ns


def test_a_shared_cache_keeps_the_exports_other_installs_use(tmp_path):
    """Every install of a user shares the cache, each with its own fingerprint: another
    install's export is removed only after a month unused, and loading one marks it used."""
    import os
    import time

    keep = tmp_path / "model-aaaaaaaaaaaaaaaa"
    in_use = tmp_path / "model-bbbbbbbbbbbbbbbb"
    abandoned = tmp_path / "model-cccccccccccccccc"
    for folder in (keep, in_use, abandoned):
        folder.mkdir()
    month = ox.UNUSED_EXPORT_SECONDS
    os.utime(abandoned, (time.time() - month - 60,) * 2)
    os.utime(in_use, (time.time() - month - 60,) * 2)
    ox.mark_used(in_use)  # another install loaded it just now
    ox._collect_garbage(tmp_path, keep=keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == [keep.name, in_use.name]

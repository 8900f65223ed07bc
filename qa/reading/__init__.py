"""Readers: find the short answer inside retrieved passages (see ``protocol.Reader``).

- ``trained``: our own extractive model (MiniLM-L6 fine-tuned here), run by onnxruntime;
- ``rules`` / ``rules:fast``: hand-written rules over candidates found at index time
  (``rules:fast`` finds them by patterns alone, without spaCy);
- ``transformers:MODEL``: any transformers extractive QA model (local folder or cached id).
"""

from __future__ import annotations

from .. import config
from ..errors import QAError
from .protocol import Annotator, Reader

DEFAULT_READER = config.READER
READERS = ("trained", "rules", "rules:fast", "transformers:MODEL")


def make_reader(spec: str | None = None, min_confidence: float | str | None = None) -> Reader:
    """A reader from its spec (see ``READERS``). ``min_confidence``: the P(right) the trained
    reader needs to answer (default: its calibrated threshold); other readers take none."""
    spec = spec or DEFAULT_READER
    if min_confidence is not None and spec != "trained":
        raise QAError(f"a minimum confidence applies to the trained reader only, not {spec!r}")
    if spec == "trained":
        from .trained import TrainedReader

        return TrainedReader(min_confidence=min_confidence)
    if spec in ("rules", "rules:fast"):
        from .rules import RulesReader

        return RulesReader(use_spacy=spec == "rules")
    if isinstance(spec, str) and spec.startswith("transformers:"):
        from .transformers import TransformersReader

        return TransformersReader(spec.split(":", 1)[1])
    raise QAError(f"unknown reader {spec!r}; use one of {', '.join(READERS)}")


__all__ = ["Annotator", "DEFAULT_READER", "READERS", "Reader", "make_reader"]

"""The evaluation harness: attribute classifier, metrics, prompts, anchors and verdicts, and
the reports built on them.

- :mod:`~armani.evaluation.generation`: FID, IS, CLIPScore, MaskCLIP score and part accuracy
  of a generation checkpoint, with floors and ceilings (``python -m armani.evaluate``);
- :mod:`~armani.evaluation.alignment_report`: word-part alignment, MaskCLIP retrieval and
  segmenter IoU (``python -m armani.evaluation.alignment_report``);
- :mod:`~armani.evaluation.codebook_report`: several image codebooks side by side
  (``python -m armani.evaluation.codebook_report``), built on
  :mod:`~armani.evaluation.codebook_health` (usage, perplexity, dead codes, words per code).

Checkpoints of every kind are opened with :func:`armani.load_pipeline`.
``part_verdict(image, text)`` and ``requested_attributes(text)``
(:mod:`armani.evaluation.verdict`, the demo's part-accuracy verdict) are imported on first
use, so importing this package stays cheap.
"""

from __future__ import annotations

_LAZY = {"part_verdict": "armani.evaluation.verdict", "requested_attributes": "armani.evaluation.verdict"}


def __getattr__(name: str):
    """``part_verdict`` / ``requested_attributes``, imported from their module on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["part_verdict", "requested_attributes"]

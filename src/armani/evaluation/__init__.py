"""The evaluation harness: attribute classifier, metrics, prompts and pipeline loading.

``load_any_pipeline(path)`` is the one way the evaluator, the demo and the research
scripts open a checkpoint of any kind. ``part_verdict(image, text)`` and
``requested_attributes(text)`` (:mod:`armani.evaluation.verdict`, the demo's part-accuracy
verdict) are imported on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

PIPELINE_FORMATS: tuple[str, ...] = ("armani-pipeline", "armani-diffusion")


def is_training_run(path: str | Path) -> bool:
    """A training run directory: has ``tokenizer/`` and at least one finished ``<stage>/final``."""
    path = Path(path)
    return (path / "tokenizer").is_dir() and any(path.glob("*/final/DONE"))


def load_any_pipeline(path: str | Path | None = None, **settings):
    """Open a generation pipeline with the ``__call__(text=..., sketch=..., partial=...,
    partial_keep_mask=..., num_images=..., seed=...) -> PipelineOutput`` interface.

    - None: the ARMANI checkpoint shipped in the repo (``ArmaniPipeline.from_pretrained()``).
    - A folder with ``pipeline.json``: dispatched on its ``"format"``: ``armani-pipeline``
      (ARMANI and its ablations / baselines built from the same parts) or
      ``armani-diffusion`` (``armani.baselines.diffusion.DiffusionBaselinePipeline``).
    - A training run directory (``RUN/<stage>/final``): ``ArmaniPipeline.from_run``.

    ``settings`` are passed to the loader (e.g. ``guidance_scale=2.0``).
    """
    from armani.pipeline import ArmaniPipeline

    if path is None:
        return ArmaniPipeline.from_pretrained(**settings)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    meta_file = path / "pipeline.json"
    if meta_file.is_file():
        try:
            fmt = json.loads(meta_file.read_text()).get("format")
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_file} is corrupt: {err}") from err
        if fmt == "armani-pipeline":
            return ArmaniPipeline.from_pretrained(path, **settings)
        if fmt == "armani-diffusion":
            try:
                from armani.baselines.diffusion import DiffusionBaselinePipeline
            except ImportError as err:
                raise ImportError(
                    f"{path} is a diffusion-baseline pipeline but armani.baselines.diffusion cannot be imported "
                    f"({err}); install the project with its diffusers dependency"
                ) from err
            return DiffusionBaselinePipeline.from_pretrained(path, **settings)
        raise ValueError(f"{meta_file}: unknown pipeline format {fmt!r}; expected one of {PIPELINE_FORMATS}")
    if is_training_run(path):
        return ArmaniPipeline.from_run(path, **settings)
    raise FileNotFoundError(
        f"{path} is neither a saved pipeline (no pipeline.json) nor a training run (no tokenizer/ and "
        "<stage>/final/DONE)"
    )


_LAZY = {"part_verdict": "armani.evaluation.verdict", "requested_attributes": "armani.evaluation.verdict"}


def __getattr__(name: str):
    """``part_verdict`` / ``requested_attributes``, imported from their module on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PIPELINE_FORMATS", "is_training_run", "load_any_pipeline", "part_verdict", "requested_attributes"]

"""One way to open any generation pipeline: :func:`load_pipeline`.

    import armani
    pipe = armani.load_pipeline()                        # the shipped checkpoint
    pipe = armani.load_pipeline("checkpoints/dalle")     # a saved pipeline (any format)
    pipe = armani.load_pipeline("runs/default")          # a training run, assembled on the fly

What a folder can be:

- a **saved pipeline**: ``pipeline.json`` whose ``"format"`` names the class
  (``armani-pipeline``: ARMANI and the token baselines / ablations built from its parts;
  ``armani-diffusion``: the diffusion baseline);
- a **training run**: ``tokenizer/`` plus finished stages ``<stage>/final/DONE``; a run
  whose ``transformer`` finished opens as ARMANI, one that trained only the ``diffusion``
  stage opens as the diffusion baseline;
- a Hugging Face Hub repo id (from the local hub cache when offline).

Anything else raises ``FileNotFoundError`` (nothing there, or an unfinished run) or
:class:`~armani.models.vqgan.CheckpointError` (a corrupt or unknown ``pipeline.json``), each
saying what the folder is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from armani.models.vqgan import CheckpointError
from armani.pipeline import ArmaniPipeline, component_folder, hub_snapshot
from armani.pipeline_protocol import (
    ARMANI_FORMAT,
    CHECKPOINT_ENV,
    DIFFUSION_FORMAT,
    PIPELINE_FORMATS,
    GarmentPipeline,
    checkpoints_dir,
    read_pipeline_json,
    shipped_checkpoint,
)


def finished_stages(run_dir: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in Path(run_dir).glob("*/final/DONE"))


def is_training_run(path: str | Path) -> bool:
    """A training run directory: has ``tokenizer/`` and at least one finished ``<stage>/final``."""
    path = Path(path)
    return (path / "tokenizer").is_dir() and bool(finished_stages(path))


def pipeline_kind(path: str | Path) -> str:
    """``armani-pipeline`` / ``armani-diffusion`` (saved), ``armani-run`` / ``diffusion-run``
    (training runs). Raises FileNotFoundError / CheckpointError for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder; give a saved pipeline or a training run")
    if (path / "pipeline.json").is_file():
        fmt = read_pipeline_json(path).get("format")
        if fmt not in PIPELINE_FORMATS:
            raise CheckpointError(f"{path / 'pipeline.json'}: unknown pipeline format {fmt!r}; "
                                  f"expected one of {PIPELINE_FORMATS}")
        return fmt
    if is_training_run(path):
        done = finished_stages(path)
        if "transformer" in done:
            return "armani-run"
        if "diffusion" in done:
            return "diffusion-run"
        raise FileNotFoundError(
            f"{path}: a training run whose transformer (or diffusion) stage has not finished yet "
            f"(finished: {', '.join(done)}); continue it with `train.py --output {path} --resume`")
    raise FileNotFoundError(
        f"{path}: neither a saved pipeline (no pipeline.json) nor a training run (no tokenizer/ and "
        "<stage>/final/DONE)")


def component_path(path: str | Path, name: str) -> Path | None:
    """Where a saved pipeline or a training run keeps component ``name`` (e.g. ``vqgan``):
    its own folder, one shared with a sibling pipeline, or ``RUN/<name>/final``; None when
    it has none. For callers that need one part without the whole pipeline (the codebook
    report opens only the codebook and what encoding with it needs)."""
    path = Path(path)
    if (path / "pipeline.json").is_file():
        folder = component_folder(path, name, read_pipeline_json(path))
        return folder if (folder / "config.json").is_file() else None
    if is_training_run(path) or (path / name / "final" / "DONE").is_file():
        folder = path / name / "final"
        return folder if (folder / "DONE").is_file() else None
    raise FileNotFoundError(
        f"{path}: neither a saved pipeline (pipeline.json) nor a training run (<stage>/final/DONE)")


def load_pipeline(path: str | Path | None = None, **settings: Any) -> GarmentPipeline:
    """Open any saved pipeline or training run (see the module docstring); ``settings``
    override the stored defaults (e.g. ``guidance_scale=2.0``)."""
    if path is None:
        folder = shipped_checkpoint()
        if not (folder / "pipeline.json").is_file():
            raise FileNotFoundError(
                f"the shipped checkpoint is missing at {folder} (set ${CHECKPOINT_ENV} to another folder); "
                "train one with `accelerate launch src/armani/train.py --config default --stage all` and "
                "assemble it with `python -m armani.assemble --run runs/default --out checkpoints/armani`")
    else:
        folder = Path(path)
        if not folder.exists() and _looks_like_hub_id(str(path)):
            folder = hub_snapshot(str(path))
    kind = pipeline_kind(folder)
    if kind == ARMANI_FORMAT:
        return ArmaniPipeline.from_pretrained(folder, **settings)
    if kind == "armani-run":
        return ArmaniPipeline.from_run(folder, **settings)
    diffusion = _diffusion_pipeline_class(folder)
    if kind == DIFFUSION_FORMAT:
        return diffusion.from_pretrained(folder, **settings)
    return diffusion.from_run(folder, **settings)


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def _diffusion_pipeline_class(folder: Path):
    try:  # imported on demand: diffusers is a heavy import the token pipelines never need
        from armani.baselines.diffusion import DiffusionBaselinePipeline
    except ImportError as err:
        raise ImportError(f"{folder} is a diffusion-baseline pipeline but armani.baselines.diffusion cannot be "
                          f"imported ({err}); install the project with its diffusers dependency") from err
    return DiffusionBaselinePipeline


__all__ = ["CHECKPOINT_ENV", "checkpoints_dir", "component_path", "finished_stages", "is_training_run", "load_pipeline",
           "pipeline_kind", "shipped_checkpoint"]

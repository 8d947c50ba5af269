"""What every research notebook does first: choose the model it looks at.

Three ways, read from the environment so the same notebook runs in CI and on the shipped
checkpoints without edits:

- ``ARMANI_NOTEBOOK_CHECKPOINT=DIR``: a saved pipeline folder or a training run directory
  (the tests pass their tiny run this way);
- ``ARMANI_NOTEBOOK_MODE=shipped``: the checkpoints committed in ``checkpoints/``
  (``armani``, and for the codebook notebook ``dalle``, ``m6``, ``no_fusion`` and ``no_sem1`` where present);
- neither: the ``tiny`` config, trained here once into a temporary folder (~15 s of CPU
  time; a second run of the notebook reuses it). Tiny models are barely trained: their
  numbers sit near chance. The notebooks show *how* to read the measurements; the shipped
  checkpoints give the ones worth reading.

``ARMANI_NOTEBOOK_NUM`` overrides how many validation garments the measurements use
(default 48 for tiny models, 500 otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints"
TINY_RUN = Path(tempfile.gettempdir()) / "armani-notebooks" / "tiny-run"

for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_key, "1")
try:  # without ipywidgets tqdm.auto warns once per kernel and falls back to text bars: fine here
    import warnings

    from tqdm import TqdmExperimentalWarning, TqdmWarning

    warnings.filterwarnings("ignore", category=TqdmWarning)
    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
except ImportError:
    pass


@dataclass
class NotebookModel:
    mode: str  # "tiny", "checkpoint" or "shipped"
    path: Path  # the ARMANI pipeline folder or run directory
    num_eval: int  # validation garments for the measurements
    codebooks: dict[str, Path] = field(default_factory=dict)  # name -> folder, for the codebook notebook

    def pipeline(self):
        """The ARMANI pipeline (a run dir or a saved folder), opened with :func:`armani.load_pipeline`."""
        from armani.loading import load_pipeline

        return load_pipeline(self.path)

    def __str__(self) -> str:
        books = ", ".join(f"{k}={v}" for k, v in self.codebooks.items())
        return f"mode={self.mode}  model={self.path}  validation garments={self.num_eval}  codebooks: {books}"


def train_tiny_run(out: Path = TINY_RUN) -> Path:
    """``train.py --config tiny --stage all`` into ``out`` (finished stages are skipped)."""
    if not (out / "transformer" / "final" / "DONE").is_file():
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(ROOT / "src" / "armani" / "train.py"), "--config", "tiny", "--stage", "all",
               "--output", str(out), f"data.cache_dir={out / 'data'}"]
        print("training the tiny config once:", " ".join(cmd[1:]))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tiny training failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return out


def pick_model() -> NotebookModel:
    """The model the notebook studies, from the environment (see the module docstring)."""
    mode = os.environ.get("ARMANI_NOTEBOOK_MODE", "").strip().lower()
    given = os.environ.get("ARMANI_NOTEBOOK_CHECKPOINT", "").strip()
    if given:
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = (ROOT / path) if (ROOT / path).exists() else path.resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"ARMANI_NOTEBOOK_CHECKPOINT={given} is not a folder")
        model = NotebookModel("checkpoint", path, 500, {"armani": path})
    elif mode == "shipped":
        path = SHIPPED / "armani"
        if not path.is_dir():
            raise FileNotFoundError(f"ARMANI_NOTEBOOK_MODE=shipped but {path} is missing; assemble it with "
                                    "`python -m armani.assemble --run runs/default --out checkpoints/armani`")
        from armani.evaluation.codebook_report import SHIPPED_NAMES

        books = {name: SHIPPED / name for name in SHIPPED_NAMES if (SHIPPED / name).is_dir()}
        model = NotebookModel("shipped", path, 500, books)
    elif mode in ("", "tiny"):
        path = train_tiny_run()
        model = NotebookModel("tiny", path, 48, {"armani": path})
    else:
        raise ValueError(f"ARMANI_NOTEBOOK_MODE must be 'tiny' or 'shipped', got {mode!r}")
    if _is_tiny(model.path):
        model.num_eval = 48
    if os.environ.get("ARMANI_NOTEBOOK_NUM"):
        model.num_eval = int(os.environ["ARMANI_NOTEBOOK_NUM"])
    return model


def _is_tiny(path: Path) -> bool:
    """A run or pipeline of the ``tiny`` preset (32 px): keep the measurements small."""
    import json

    for config in (path / "vqgan" / "final" / "config.json", path / "vqgan" / "config.json"):
        if config.is_file():
            return json.loads(config.read_text()).get("image_size", 64) <= 32
    return False

"""Where the shipped checkpoint lives, in one place for every layer of the package.

The library never assumes the repository layout: ``$ARMANI_CHECKPOINT`` overrides the lookup,
and otherwise ``checkpoints/armani`` is searched in the current folder, then in the source
checkout this package was installed from with ``pip install -e .``.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_ENV = "ARMANI_CHECKPOINT"


def shipped_checkpoint() -> Path:
    """The checkpoint opened when no path is given.

    ``$ARMANI_CHECKPOINT`` when set; otherwise ``checkpoints/armani`` in the current folder,
    then in the source checkout this package was installed from (``pip install -e .``). The
    first that holds a ``pipeline.json`` wins; if none does, the last candidate is returned so
    the error can name it.
    """
    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return Path(env)
    candidates = [Path.cwd() / "checkpoints" / "armani"]
    source_checkout = Path(__file__).resolve().parents[2]  # src/armani/<this file> -> the checkout
    if (source_checkout / "pyproject.toml").is_file():
        candidates.append(source_checkout / "checkpoints" / "armani")
    for folder in candidates:
        if (folder / "pipeline.json").is_file():
            return folder
    return candidates[-1]


def checkpoints_dir() -> Path:
    """The folder holding the shipped checkpoint and its baselines (``checkpoints/``)."""
    return shipped_checkpoint().parent


__all__ = ["CHECKPOINT_ENV", "checkpoints_dir", "shipped_checkpoint"]

"""``python -m armani.evaluate``: the documented command that evaluates a generation checkpoint.

The code lives in :mod:`armani.evaluation.generation` (FID, IS, CLIPScore, MaskCLIP score,
part-level accuracy, anchors, the command line); this module only re-exports its public
names and runs its :func:`~armani.evaluation.generation.main`. ``--help`` lists the options.
"""

from __future__ import annotations

from armani.evaluation.generation import *  # noqa: F403 - the public names, as generation.__all__ lists them
from armani.evaluation.generation import __all__, main  # noqa: F401 - re-exported

if __name__ == "__main__":
    raise SystemExit(main())

"""Hugging Face Space entry point: the repository's app (demo/app.py) on the shipped checkpoints.

In a folder assembled by build.sh, ``demo/``, ``src/armani`` and ``checkpoints/`` sit beside
this file; inside the repository they are two levels up. Either way ``src/`` goes on the
path, so ``armani`` is importable without installing it and ``ArmaniPipeline.from_pretrained()``
finds ``checkpoints/armani`` next to ``src/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE if (HERE / "demo" / "app.py").is_file() else HERE.parents[1]
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from demo.app import main  # noqa: E402

if __name__ == "__main__":
    main()

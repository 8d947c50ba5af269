"""Example prompts and example garments for the app's clickable examples.

The prompts are written in the procedural dataset's shop-text style (so that a model
trained on it understands them); the last two ask for held-out combinations (a zip on a
t-shirt, a pink coat), the paper's generalisation test. The garments are rows of the
procedural validation split, drawn once at start into a temporary folder, because
``gr.Examples`` needs files.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

from PIL import Image

from armani.data.synthetic import generate_row

EXAMPLE_PROMPTS: tuple[str, ...] = (
    "Navy shirt with long sleeves, a pointed collar, a front placket and five buttons.",
    "Red striped t-shirt with short sleeves and a chest pocket on the left.",
    "Purple hoodie with long sleeves, a hood, a zipper down the front and two kangaroo pockets.",
    "Yellow dotted skirt with a wide waistband and a belt.",
    "Black coat with long sleeves, a wide collar, three buttons and a matching belt.",
    "White polo with short sleeves, a soft collar and an embroidered logo.",
    "Green trousers with a wide waistband and two hip pockets, one on each side.",
    "Grey t-shirt with short sleeves and a short zip at the neck.",  # held out: zipper on a t-shirt
    "Pink coat with long sleeves, a lapel collar and two buttons.",  # held out: pink coat
)

EDIT_PROMPTS: tuple[str, ...] = (
    "a red pocket",
    "a white collar",
    "long black sleeves",
)

EXAMPLE_SEED = 0
EXAMPLE_SPLIT = "val"


@lru_cache(maxsize=4)
def example_garments(num: int = 8, size: int = 128) -> tuple[tuple[str, str], ...]:
    """``num`` procedural garments as ((png path, caption), ...), drawn once per process."""
    folder = Path(tempfile.mkdtemp(prefix="armani-examples-"))
    out = []
    for i in range(num):
        row = generate_row(i, size=size, seed=EXAMPLE_SEED, split=EXAMPLE_SPLIT)
        path = folder / f"garment_{i:02d}.png"
        Image.fromarray(row["image"]).save(path)
        out.append((str(path), row["caption"]))
    return tuple(out)

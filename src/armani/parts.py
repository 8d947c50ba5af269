"""The garment part vocabulary shared by every module: data, segmenter, MaskCLIP, metrics, demo.

The paper's mask prediction network outputs 15 labels (background, the garment body and
13 parts). The paper lists them only in its appendix, so we fix our own 15 here; every
mask in the project (procedural ground truth or segmenter prediction) is a ``uint8`` map
whose values index :data:`PART_NAMES`.
"""

from __future__ import annotations

PART_NAMES: tuple[str, ...] = (
    "background",  # 0: everything that is not garment
    "body",  # 1: the main panel(s) of the garment (torso, skirt, trouser legs)
    "sleeve",
    "cuff",
    "collar",
    "hood",
    "pocket",
    "button",
    "zipper",
    "belt",
    "waistband",
    "logo",
    "strap",
    "hem",
    "placket",
)
NUM_PARTS: int = len(PART_NAMES)
PART_ID: dict[str, int] = {name: i for i, name in enumerate(PART_NAMES)}
BACKGROUND: int = PART_ID["background"]

# Parts that can be counted as connected components in a mask and appear in captions
# with a number ("five buttons", "two pockets").
COUNTABLE_PARTS: tuple[str, ...] = ("button", "pocket", "strap")

# Caption words that name a part. Used by the pointing game (which patch does "pocket"
# point at?) and by the heatmap table. Lower-case, one word each.
PART_WORDS: dict[str, str] = {
    "sleeve": "sleeve", "sleeves": "sleeve", "sleeved": "sleeve",
    "cuff": "cuff", "cuffs": "cuff", "cuffed": "cuff",
    "collar": "collar", "collared": "collar", "neckline": "collar",
    "hood": "hood", "hooded": "hood", "hoodie": "hood",
    "pocket": "pocket", "pockets": "pocket",
    "button": "button", "buttons": "button", "buttoned": "button",
    "zipper": "zipper", "zip": "zipper", "zipped": "zipper", "zips": "zipper",
    "belt": "belt", "belted": "belt",
    "waistband": "waistband", "waist": "waistband",
    "logo": "logo", "emblem": "logo", "badge": "logo",
    "strap": "strap", "straps": "strap",
    "hem": "hem", "hemline": "hem",
    "placket": "placket",
}

# A fixed, colour-blind-friendly-ish palette for mask overlays and legends (RGB, 0-255).
PART_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # background
    (120, 120, 120),  # body
    (31, 119, 180),  # sleeve
    (174, 199, 232),  # cuff
    (255, 127, 14),  # collar
    (148, 103, 189),  # hood
    (44, 160, 44),  # pocket
    (214, 39, 40),  # button
    (255, 187, 120),  # zipper
    (140, 86, 75),  # belt
    (227, 119, 194),  # waistband
    (188, 189, 34),  # logo
    (23, 190, 207),  # strap
    (152, 223, 138),  # hem
    (255, 152, 150),  # placket
)
assert len(PART_COLORS) == NUM_PARTS


def colorize_mask(mask):
    """Map an (H, W) integer part mask to an (H, W, 3) uint8 RGB image using PART_COLORS."""
    import numpy as np

    palette = np.asarray(PART_COLORS, dtype=np.uint8)
    return palette[np.asarray(mask, dtype=np.int64).clip(0, NUM_PARTS - 1)]

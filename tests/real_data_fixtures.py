"""Fixture folders of garment *photos* for the real-data tests (written by the tests, never downloaded).

``write_photo_folder``: an ``imagefolder`` (``metadata.jsonl`` with ``file_name`` and
``text``) of JPEG photos of procedural garments, of different sizes and aspect ratios, a few
stored sideways with an EXIF orientation tag, a few in CMYK, plus files that must be
skipped: two unreadable ones, a blank (non-garment) photo, and a garment without a caption. No masks: the true masks are returned for the test to compare with.

``write_deepfashion_folder``: the DeepFashion-MultiModal layout (``images/``, ``segm/``
with ``<name>_segm.png`` human-parsing labels 0-23, ``captions.json``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from armani.data.synthetic import generate_row
from armani.parts import PART_ID

# What write_photo_folder's report must say (see its docstring).
PHOTO_COUNTS = {"files": 64, "garments": 61, "exif_rotated": 8, "cmyk": 3}
PHOTO_SKIPPED = {"blank image": 1, "empty caption": 1, "unreadable image": 2}


def _place(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scale a square render and pad it to a random aspect ratio (white photo, background mask)."""
    scale = float(rng.choice([0.75, 1.0, 1.5, 2.0, 3.0]))
    side = max(24, int(round(image.shape[0] * scale)))
    img = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
    msk = np.asarray(Image.fromarray(mask).resize((side, side), Image.Resampling.NEAREST))
    pad_x, pad_y = (int(v) for v in rng.integers(0, side // 2 + 1, size=2) * rng.integers(0, 2, size=2))
    left, top = int(rng.integers(0, pad_x + 1)), int(rng.integers(0, pad_y + 1))
    canvas = np.full((side + pad_y, side + pad_x, 3), 255, np.uint8)
    canvas_mask = np.zeros((side + pad_y, side + pad_x), np.uint8)
    canvas[top:top + side, left:left + side] = img
    canvas_mask[top:top + side, left:left + side] = msk
    return canvas, canvas_mask


def write_photo_folder(root: Path, seed: int = 7) -> dict[str, np.ndarray]:
    """Write the photo fixture; returns {file_name: true part mask of the upright photo}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    n = PHOTO_COUNTS["garments"]
    exif_rows = set(range(3, n, 7)[: PHOTO_COUNTS["exif_rotated"]])
    cmyk_rows = {6, 26, 46}
    for i in range(n):
        # Held-out-free validation rows the shipped segmenter never trained on.
        row = generate_row(i, size=64, seed=seed, split="val")
        photo, mask = _place(row["image"], row["mask"], rng)
        name = f"garment-{i:03d}.jpg"
        pil = Image.fromarray(photo)
        if i in exif_rows:
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
            pil.transpose(Image.Transpose.ROTATE_90).save(root / name, quality=92, exif=exif)
            rows.append({"file_name": name, "text": row["caption"], "_exif": True})
        elif i in cmyk_rows:
            pil.convert("CMYK").save(root / name, quality=92)
            rows.append({"file_name": name, "text": row["caption"]})
        else:
            pil.save(root / name, quality=92)
            rows.append({"file_name": name, "text": row["caption"]})
        truth[name] = mask
    rows[10]["text"] = ""  # a garment without a caption
    truth.pop(rows[10]["file_name"])
    # Files that are not usable garment photos.
    buf = io.BytesIO()
    Image.fromarray(np.full((80, 60, 3), 200, np.uint8)).save(buf, format="JPEG")
    (root / "broken-truncated.jpg").write_bytes(buf.getvalue()[:120])
    (root / "broken-not-an-image.jpg").write_bytes(b"this is a text file, not a photo\n" * 4)
    Image.new("RGB", (90, 70), (236, 236, 236)).save(root / "blank.jpg", quality=92)
    for name, text in (("broken-truncated.jpg", "grey t-shirt"), ("broken-not-an-image.jpg", "red dress"),
                       ("blank.jpg", "white shirt")):
        rows.append({"file_name": name, "text": text})
    assert len(rows) == PHOTO_COUNTS["files"]
    assert sum(1 for r in rows if r.pop("_exif", False)) == PHOTO_COUNTS["exif_rotated"]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return truth


# DeepFashion-MultiModal parsing labels used below (its README).
DF_BACKGROUND, DF_TOP, DF_PANTS, DF_BELT, DF_SKIN, DF_HAIR = 0, 1, 5, 10, 15, 13


def write_deepfashion_folder(root: Path, num: int = 6, seed: int = 3) -> dict[str, np.ndarray]:
    """A small folder in the DeepFashion-MultiModal layout; returns {image name: parsing labels}.

    Each image is a procedural garment; its parsing map says "top" over the whole garment
    except the belt (label 10), plus a patch of "skin" and "hair" in a corner, which are not
    garment. One image has no parsing file (as in the real set, where only full-body
    images have one)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "segm").mkdir(exist_ok=True)
    captions, parsing = {}, {}
    for i in range(num):
        row = generate_row(i, size=64, seed=seed, split="val")
        name = f"WOMEN-Tees_Tanks-id_{i:08d}-01_1_front.jpg"
        photo = np.full((96, 64, 3), 255, np.uint8)  # portrait, like the 750 x 1101 originals
        photo[16:80] = row["image"]
        Image.fromarray(photo).save(root / "images" / name, quality=92)
        captions[name] = row["caption"]
        labels = np.zeros((96, 64), np.uint8)
        garment = row["mask"] != PART_ID["background"]
        labels[16:80][garment] = DF_TOP
        labels[16:80][row["mask"] == PART_ID["belt"]] = DF_BELT
        labels[0:6, 0:6] = DF_HAIR
        labels[90:96, 58:64] = DF_SKIN
        if i != num - 1:
            Image.fromarray(labels).save(root / "segm" / f"{Path(name).stem}_segm.png")
            parsing[name] = labels
    (root / "captions.json").write_text(json.dumps(captions, indent=1))
    return parsing

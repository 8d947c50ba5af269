"""Read the DeepFashion-MultiModal folder layout (Text2Human, Jiang et al. 2022) as a dataset.

The layout, as its README describes it::

    DeepFashion-MultiModal/
        images/            <name>.jpg     (750 x 1101 photos; 44,096)
        segm/              <name>_segm.png (human-parsing labels 0-23; 12,701 full-body images)
        captions.json      {"<name>.jpg": "The lady wears a short-sleeve T-shirt ...", ...}
        labels/, keypoints/, densepose/   (not used here)

``image/`` and ``parsing/`` (the names of the README's download table) are accepted for
``images/`` and ``segm/``, and a mask may also be called ``<name>.png``. Every entry of
``captions.json`` becomes one row (image path, caption, mask path or None); an image
missing on disk stays a row and is counted as unreadable when the data is prepared.
The parsing labels are people's clothes, not garment parts: map them with
``data.label_map=deepfashion_multimodal`` (:mod:`armani.data.label_maps`), which
:func:`armani.data.loader.load_garment_dataset` picks by itself for this layout.

The dataset has no official train/validation split; everything is ``train``. Hold images
out yourself (e.g. a second folder with its own ``captions.json``) for ``data.val_split``.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

IMAGE_DIRS = ("images", "image")
MASK_DIRS = ("segm", "parsing")
CAPTIONS = "captions.json"
LABEL_MAP = "deepfashion_multimodal"


def is_deepfashion_multimodal(path: str | Path) -> bool:
    path = Path(path)
    return (path / CAPTIONS).is_file() and any((path / d).is_dir() for d in IMAGE_DIRS)


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def load_deepfashion_multimodal(root: str | Path) -> datasets.DatasetDict:
    """The folder as ``DatasetDict({"train": ...})`` with columns image, caption, mask (paths)."""
    root = Path(root)
    if not is_deepfashion_multimodal(root):
        raise ValueError(f"{root} is not in the DeepFashion-MultiModal layout (images/ and captions.json)")
    try:
        captions = json.loads((root / CAPTIONS).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{root / CAPTIONS} is not valid JSON: {err}") from err
    if not isinstance(captions, dict):
        raise ValueError(f"{root / CAPTIONS} must map image file names to captions")
    image_dir = _first_dir(root, IMAGE_DIRS)
    mask_dir = _first_dir(root, MASK_DIRS)
    images, texts, masks = [], [], []
    for name in sorted(captions):
        images.append(str(image_dir / name))
        text = captions[name]
        texts.append(text if isinstance(text, str) else None)
        mask = None
        if mask_dir is not None:
            stem = Path(name).stem
            for candidate in (mask_dir / f"{stem}_segm.png", mask_dir / f"{stem}.png"):
                if candidate.is_file():
                    mask = str(candidate)
                    break
        masks.append(mask)
    features = datasets.Features({"image": datasets.Value("string"), "caption": datasets.Value("string"),
                                  "mask": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": images, "caption": texts, "mask": masks}, features=features)
    return datasets.DatasetDict({"train": ds})

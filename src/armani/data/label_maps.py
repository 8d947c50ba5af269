"""Map another dataset's mask labels onto ARMANI's 15 parts (:mod:`armani.parts`).

A label map says, for every label id a source's masks use, which of our parts it becomes.
Targets are part names (``"body"``, ``"belt"``, ...) or ids, plus two special ones:

- ``"garment"``: a garment pixel whose part the source does not say (e.g. a human-parsing
  label "top" covers the sleeves, collar and buttons alike). The mask-predicting segmenter
  decides these pixels' parts when the data is prepared (:mod:`armani.data.prepare`);
  where it sees no garment part, the pixel becomes ``body``.
- ``"ignore"``: same as ``"background"`` (skin, hair, shoes, bags: not garment).

``"*"`` as a key gives the target of every label the map does not list; without it, a
mask holding an unlisted label is skipped and counted in the data report.

A map is given in the config as ``data.label_map=``:

- a preset name (:data:`PRESETS`), e.g. ``deepfashion_multimodal``;
- a JSON file ``{"0": "background", "1": "garment", "10": "belt", "*": "ignore"}``;
- an inline list ``0:background,1:garment,10:belt,*:ignore``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from armani.parts import NUM_PARTS, PART_ID

GARMENT: int = 255  # in a mapped mask: a garment pixel whose part the segmenter decides
UNMAPPED: int = -1

# DeepFashion-MultiModal's 24 human-parsing labels (its README, "Human Parsing Label").
DEEPFASHION_MULTIMODAL_LABELS: tuple[str, ...] = (
    "background", "top", "outer", "skirt", "dress", "pants", "leggings", "headwear", "eyeglass", "neckwear",
    "belt", "footwear", "bag", "hair", "face", "skin", "ring", "wrist wearing", "socks", "gloves", "necklace",
    "rompers", "earrings", "tie",
)
# Its clothing labels are whole garments: their parts are left to the segmenter.
_DF_GARMENTS = ("top", "outer", "skirt", "dress", "pants", "leggings", "rompers")

PRESETS: dict[str, dict[str, str]] = {
    "deepfashion_multimodal": {
        str(i): ("garment" if name in _DF_GARMENTS else "belt" if name == "belt" else "ignore")
        for i, name in enumerate(DEEPFASHION_MULTIMODAL_LABELS)
    },
    # The same without the segmenter: every garment pixel is "body" (coarser masks, no prediction).
    "deepfashion_multimodal_coarse": {
        str(i): ("body" if name in _DF_GARMENTS else "belt" if name == "belt" else "ignore")
        for i, name in enumerate(DEEPFASHION_MULTIMODAL_LABELS)
    },
}


@dataclass(frozen=True)
class LabelMap:
    """A parsed label map: ``table[source_label] -> our part id`` (or :data:`GARMENT`)."""

    name: str
    mapping: tuple[tuple[int, int], ...]  # sorted (source label, target)
    default: int | None = None  # target of unlisted labels; None: such a mask is an error

    def as_dict(self) -> dict:
        names = {GARMENT: "garment", **{i: n for n, i in PART_ID.items()}}
        out = {str(k): names[v] for k, v in self.mapping}
        if self.default is not None:
            out["*"] = names[self.default]
        return out

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Map a 2-D array of source labels to uint8 part ids / GARMENT.

        Raises ``ValueError`` naming the labels the map does not know."""
        labels = np.asarray(labels)
        if labels.size == 0:
            return labels.astype(np.uint8)
        if labels.min() < 0:
            raise ValueError(f"mask labels must be non-negative, found {labels.min()}")
        top = int(labels.max())
        table = np.full(max(top, max((k for k, _ in self.mapping), default=0)) + 1,
                        UNMAPPED if self.default is None else self.default, dtype=np.int64)
        for k, v in self.mapping:
            table[k] = v
        out = table[labels.astype(np.int64)]
        if (out == UNMAPPED).any():
            unknown = sorted(int(v) for v in np.unique(labels[out == UNMAPPED]))
            raise ValueError(f"mask label(s) {unknown} are not in the label map {self.name!r}; add them "
                             "(or a '*' entry for every other label)")
        return out.astype(np.uint8)


def _target(value: object, where: str) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        part = int(value)
        if not 0 <= part < NUM_PARTS:
            raise ValueError(f"{where}: part id {part} is outside 0-{NUM_PARTS - 1}")
        return part
    name = str(value).strip().lower()
    if name == "garment":
        return GARMENT
    if name == "ignore":
        return PART_ID["background"]
    if name not in PART_ID:
        raise ValueError(f"{where}: {value!r} is not a part; use one of {sorted(PART_ID)}, 'garment' or 'ignore'")
    return PART_ID[name]


def from_dict(entries: dict, name: str) -> LabelMap:
    mapping, default = [], None
    for key, value in entries.items():
        where = f"label map {name!r}, entry {key!r}"
        if str(key).strip() == "*":
            default = _target(value, where)
            continue
        try:
            label = int(str(key).strip())
        except ValueError:
            raise ValueError(f"{where}: keys are the source's integer mask labels (or '*')") from None
        if label < 0:
            raise ValueError(f"{where}: labels must be non-negative")
        mapping.append((label, _target(value, where)))
    if not mapping and default is None:
        raise ValueError(f"label map {name!r} is empty")
    return LabelMap(name=name, mapping=tuple(sorted(mapping)), default=default)


def resolve_label_map(spec: str | dict | None) -> LabelMap | None:
    """A preset name, a JSON file, an inline ``label:part,...`` list, a dict, or None."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(spec, dict):
        return from_dict(spec, "inline")
    text = spec.strip()
    if text in PRESETS:
        return from_dict(PRESETS[text], text)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise ValueError(f"label map file {path} does not exist")
        try:
            entries = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"label map file {path} is not valid JSON: {err}") from err
        if not isinstance(entries, dict):
            raise ValueError(f"label map file {path} must hold one JSON object {{label: part}}")
        return from_dict(entries, str(path))
    if ":" in text:
        entries = {}
        for item in text.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition(":")
            if not sep:
                raise ValueError(f"label map entry {item!r} is not 'label:part'")
            entries[key.strip()] = value.strip()
        return from_dict(entries, "inline")
    raise ValueError(f"label map {spec!r} is neither a preset {sorted(PRESETS)}, a JSON file nor 'label:part,...'")

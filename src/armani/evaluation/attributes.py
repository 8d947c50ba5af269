"""An attribute classifier for garment images: the judge of part-level accuracy.

Generated garments are checked part by part (GarmentAligner's "quantitative" and
"spatial" accuracy) by a small CNN trained on the procedural renders, whose attribute
records are exact. It reads one image and predicts, in the dataset's attribute-record
shape (see :mod:`armani.data.synthetic`): category, colour, pattern, sleeve (or none),
which of the 13 garment parts are present, the number of buttons (0-6, exact) and
pockets (0-2), and the pocket side (none / left / right / both, the image's left).

Choices the paper (which has no such classifier) leaves to us:

- **Architecture.** Three GroupNorm/SiLU conv stages (stride 2 each; a full-resolution
  first stage would see 1 px buttons better but costs 3x on this CPU), then an adaptive
  average pool to a 4x4 grid that is *flattened*, not averaged: a global pool would throw
  away where a pocket is (left/right) and how buttons are spaced. One linear layer then
  gives the ``feature_dim`` penultimate features, which are also the FID features when no
  Inception weights are at hand (:mod:`armani.evaluation.metrics`).
- **Heads.** One softmax head per single-choice attribute, one sigmoid per part
  (multi-label), and softmax heads for the button count, pocket count and pocket side.
  Counts above the head's range are clipped into its last class (the data never exceeds
  6 buttons or 2 pockets).
- **Reading the heads** (:meth:`AttributeClassifier.predict`): a part is present when its
  sigmoid exceeds 0.5, except buttons and pockets, whose count heads decide (present
  iff count > 0; the presence logits of those two are trained as an auxiliary signal
  only), so a record never says "buttons present, 0 buttons". ``pocket_side`` is the side
  head's answer on its own; ``body`` is always present; a ``strap`` counts 2 (as drawn).
- **Inputs** are images of any size in [-1, 1]; they are resized (bilinear, antialiased)
  to the classifier's ``image_size``.
- **Augmentation** (:func:`degrade`, training only): generated images are blurrier and
  noisier than the renders, so the classifier must not depend on pixel-exact edges.
  Each training image gets, each with its own probability: a shift of up to
  ``size/16`` pixels (edge pixels replicated), a Gaussian blur (sigma 0.3-1.2), a
  down-and-up resize (factor 0.5-0.8, like a decoder's softness), JPEG compression
  (quality 30-90) and Gaussian pixel noise (sigma up to 6/255), plus a mild global
  brightness/contrast change (+-6%). Never a horizontal flip or a hue change: the pocket
  side and the colour name are labels.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from armani.data.garments import CATEGORIES, COLORS, PATTERNS, SLEEVES
from armani.models.checkpoint import PretrainedMixin
from armani.models.segmenter import ConvBlock
from armani.parts import PART_NAMES
from armani.pipeline_protocol import checkpoints_dir

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SLEEVE_CLASSES: tuple[str | None, ...] = (None, *SLEEVES)  # None: a garment without sleeves info (bottoms)
GARMENT_PARTS: tuple[str, ...] = PART_NAMES[2:]  # the 13 parts: no background, no body
MAX_BUTTONS: int = 6
MAX_POCKETS: int = 2
POCKET_SIDES: tuple[str | None, ...] = (None, "left", "right", "both")
COUNTED_PARTS: tuple[str, ...] = ("button", "pocket")  # parts whose count heads decide presence

# The verdict keys of :func:`compare`, in report order.
ATTRIBUTE_KEYS: tuple[str, ...] = (
    "category", "color", "pattern", "sleeve",
    *(f"part:{p}" for p in GARMENT_PARTS),
    "count:button", "count:pocket", "pocket_side",
)
VALIDATION_NAME = "validation.json"


@dataclass
class AttributeClassifierConfig:
    image_size: int = 64
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)  # one stride-2 stage each
    groups: int = 8  # GroupNorm groups
    pool: int = 4  # the last feature map is pooled to pool x pool and flattened
    feature_dim: int = 256  # penultimate features (FID features)
    dropout: float = 0.1

    def __post_init__(self):
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"base_channels * {m} must be divisible by groups={self.groups}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")


@dataclass
class AttributeLoss:
    """The classifier's loss and its named parts (sum of the head losses)."""

    loss: torch.Tensor
    category: torch.Tensor
    color: torch.Tensor
    pattern: torch.Tensor
    sleeve: torch.Tensor
    parts: torch.Tensor
    button: torch.Tensor
    pocket: torch.Tensor
    pocket_side: torch.Tensor

    def scalars(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name).detach()) for f in fields(self) if f.name != "loss"}


# -- records <-> targets -----------------------------------------------------------------------
_SINGLE_HEADS: dict[str, tuple] = {
    "category": CATEGORIES,
    "color": COLOR_NAMES,
    "pattern": PATTERNS,
    "sleeve": SLEEVE_CLASSES,
    "button": tuple(range(MAX_BUTTONS + 1)),
    "pocket": tuple(range(MAX_POCKETS + 1)),
    "pocket_side": POCKET_SIDES,
}


def encode_attributes(record: dict) -> dict[str, torch.Tensor]:
    """An attribute record -> training targets: int64 scalars per single-choice head and a
    float (13,) multi-hot ``parts``. Unknown values raise ValueError naming the field."""
    parts = record.get("parts") or {}

    def index(field: str, value, vocab) -> torch.Tensor:
        if value not in vocab:
            raise ValueError(f"attribute {field!r} = {value!r} is not one of {list(vocab)}")
        return torch.tensor(vocab.index(value), dtype=torch.int64)

    unknown = set(parts) - set(PART_NAMES[1:])
    if unknown:
        raise ValueError(f"unknown part(s) {sorted(unknown)}; expected names from {list(PART_NAMES[1:])}")
    return {
        "category": index("category", record["category"], CATEGORIES),
        "color": index("color", record["color"], COLOR_NAMES),
        "pattern": index("pattern", record["pattern"], PATTERNS),
        "sleeve": index("sleeve", record.get("sleeve"), SLEEVE_CLASSES),
        "parts": torch.tensor([float(p in parts) for p in GARMENT_PARTS]),  # (13,)
        "button": torch.tensor(min(int(parts.get("button", 0)), MAX_BUTTONS), dtype=torch.int64),
        "pocket": torch.tensor(min(int(parts.get("pocket", 0)), MAX_POCKETS), dtype=torch.int64),
        "pocket_side": index("pocket_side", record.get("pocket_side"), POCKET_SIDES),
    }


def decode_attributes(indices: dict[str, torch.Tensor]) -> list[dict]:
    """Head answers (int64 (B,) per single head, bool (B, 13) ``parts``) -> attribute records."""
    records = []
    for b in range(indices["category"].shape[0]):
        parts: dict[str, int] = {"body": 1}
        for j, name in enumerate(GARMENT_PARTS):
            if name in COUNTED_PARTS:
                count = int(indices[name][b])
                if count:
                    parts[name] = count
            elif bool(indices["parts"][b, j]):
                parts[name] = 2 if name == "strap" else 1
        records.append({
            "category": CATEGORIES[int(indices["category"][b])],
            "color": COLOR_NAMES[int(indices["color"][b])],
            "pattern": PATTERNS[int(indices["pattern"][b])],
            "sleeve": SLEEVE_CLASSES[int(indices["sleeve"][b])],
            "parts": parts,
            "pocket_side": POCKET_SIDES[int(indices["pocket_side"][b])],
        })
    return records


def compare(pred: dict, target: dict) -> dict[str, bool]:
    """Per-attribute verdicts of a predicted record against the requested one.

    Keys (:data:`ATTRIBUTE_KEYS`): ``category``, ``color``, ``pattern``, ``sleeve`` (None
    must match None), ``part:<name>`` (present in both or absent in both) for each of the
    13 parts, ``count:button`` and ``count:pocket`` (exact count, 0 when absent) and
    ``pocket_side`` (None when there are no pockets).
    """
    p_parts, t_parts = pred.get("parts") or {}, target.get("parts") or {}
    verdicts = {key: pred.get(key) == target.get(key) for key in ("category", "color", "pattern", "sleeve")}
    for name in GARMENT_PARTS:
        verdicts[f"part:{name}"] = (name in p_parts) == (name in t_parts)
    for name in COUNTED_PARTS:
        verdicts[f"count:{name}"] = int(p_parts.get(name, 0)) == int(t_parts.get(name, 0))
    verdicts["pocket_side"] = pred.get("pocket_side") == target.get("pocket_side")
    return verdicts


def attribute_accuracy(preds: list[dict], targets: list[dict]) -> dict[str, float]:
    """Mean of :func:`compare` verdicts over aligned lists of records, per key."""
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    if not preds:
        raise ValueError("no records to score")
    verdicts = [compare(p, t) for p, t in zip(preds, targets)]
    return {key: float(np.mean([v[key] for v in verdicts])) for key in ATTRIBUTE_KEYS}


def category_misses(preds: list[dict], targets: list[dict]) -> dict[str, int]:
    """How often each requested category was read as another: ``{"sweater -> t-shirt": 9, ...}``,
    most frequent first (ties by name). Empty when every category is right. Which pairs a model
    confuses, set beside the pairs the classifier confuses on real renders, tells a model's
    misses from garments the data itself barely tells apart."""
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    counts = Counter(f"{t['category']} -> {p['category']}" for p, t in zip(preds, targets)
                     if p.get("category") != t.get("category"))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# -- augmentation ------------------------------------------------------------------------------
def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light, label-preserving degradation of a uint8 (S, S, 3) RGB render (see module doc)."""
    out = np.ascontiguousarray(image)
    size = out.shape[0]
    if rng.random() < 0.7:  # small shift, edges replicated
        limit = max(1.0, size / 16)
        dx, dy = rng.uniform(-limit, limit, size=2)
        warp = np.float32([[1, 0, dx], [0, 1, dy]])
        out = cv2.warpAffine(out, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.4:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3:
        small = max(8, int(round(size * rng.uniform(0.5, 0.8))))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                         interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    x = out.astype(np.float32)
    if rng.random() < 0.5:
        gain, bias = rng.uniform(0.94, 1.06), rng.uniform(-0.06, 0.06) * 255
        x = (x - 127.5) * gain + 127.5 + bias
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(1.0, 6.0), size=x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# -- the model ---------------------------------------------------------------------------------
class AttributeClassifier(PretrainedMixin, nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> per-attribute logits; see the module docstring."""

    config_class = AttributeClassifierConfig

    def __init__(self, config: AttributeClassifierConfig):
        super().__init__()
        self.config = c = config
        chans = [c.base_channels * m for m in c.channel_mults]
        self.stem = nn.Conv2d(3, chans[0], 3, padding=1)
        self.blocks = nn.Sequential(*[
            ConvBlock(cin, cout, c.groups, stride=2) for cin, cout in zip([chans[0], *chans[:-1]], chans)
        ])
        self.pool = nn.AdaptiveAvgPool2d(c.pool)
        self.features_proj = nn.Sequential(
            nn.Flatten(), nn.Dropout(c.dropout), nn.Linear(chans[-1] * c.pool * c.pool, c.feature_dim), nn.SiLU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(c.feature_dim, len(vocab)) for name, vocab in _SINGLE_HEADS.items()})
        self.heads["parts"] = nn.Linear(c.feature_dim, len(GARMENT_PARTS))

    @property
    def num_features(self) -> int:
        return self.config.feature_dim

    def _fit(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(image.shape)}")
        S = self.config.image_size
        if image.shape[-2:] != (S, S):
            image = F.interpolate(image.float(), size=(S, S), mode="bilinear", antialias=True, align_corners=False)
        return image

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> penultimate features (B, feature_dim)."""
        x = self.stem(self._fit(image))  # (B, C0, S, S)
        x = self.blocks(x)  # (B, C, S / 2^k, S / 2^k) after k stages
        return self.features_proj(self.pool(x))  # (B, feature_dim)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head: ``category`` (B, 12), ``color`` (B, 13), ``pattern`` (B, 4),
        ``sleeve`` (B, 4), ``parts`` (B, 13), ``button`` (B, 7), ``pocket`` (B, 3),
        ``pocket_side`` (B, 4)."""
        h = self.features(image)
        return {name: head(h) for name, head in self.heads.items()}

    def loss(self, image: torch.Tensor, targets: dict[str, torch.Tensor]) -> AttributeLoss:
        """Sum of the heads' cross entropies (softmax heads) and the mean part BCE."""
        logits = self.forward(image)
        terms = {name: F.cross_entropy(logits[name].float(), targets[name]) for name in _SINGLE_HEADS}
        terms["parts"] = F.binary_cross_entropy_with_logits(logits["parts"].float(), targets["parts"].float())
        return AttributeLoss(loss=sum(terms.values()), **terms)

    @staticmethod
    def head_answers(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits -> argmax indices (B,) per softmax head and bool (B, 13) part presence."""
        out = {name: logits[name].argmax(dim=-1) for name in _SINGLE_HEADS}
        out["parts"] = logits["parts"] > 0
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> list[dict]:
        """Images (B, 3, H, W) in [-1, 1] -> one attribute record per image (eval mode)."""
        was_training = self.training
        self.eval()
        records: list[dict] = []
        try:
            for chunk in images.split(batch_size):
                answers = self.head_answers(self.forward(chunk.to(self.device)))
                records.extend(decode_attributes({k: v.cpu() for k, v in answers.items()}))
        finally:
            self.train(was_training)
        return records

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- persistence ---------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, validation: dict | None = None,
                        storage_dtype: str = "float32") -> Path:
        """``config.json`` + ``model.safetensors``, and ``validation.json`` (its accuracy on real
        renders, see :func:`load_validation`) when given."""
        path = super().save_pretrained(path, storage_dtype)
        if validation is not None:
            (Path(path) / VALIDATION_NAME).write_text(json.dumps(validation, indent=2))
        return path

    def after_load(self) -> None:
        self.eval()


def load_validation(path: str | Path) -> dict | None:
    """The classifier folder's ``validation.json``: ``{"split", "num_images", "accuracy": {key: acc}}``,
    or None when the classifier was saved without one."""
    file = Path(path) / VALIDATION_NAME
    if not file.is_file():
        return None
    return json.loads(file.read_text())


# An attribute whose validation accuracy is below this is reported but not trusted.
TRUST_THRESHOLD = 0.95


def default_classifier_dir() -> Path:
    """Where the shipped attribute classifier lives: ``checkpoints/attribute_classifier``."""
    return checkpoints_dir() / "attribute_classifier"


def load_classifier(path: str | Path | None) -> tuple["AttributeClassifier | None", dict | None, str]:
    """(classifier, its validation record, the folder). With no ``path`` a missing default
    classifier gives (None, None, folder); a given folder without one raises FileNotFoundError."""
    folder = Path(path) if path else default_classifier_dir()
    if not (folder / "model.safetensors").is_file():
        if path:
            raise FileNotFoundError(f"--classifier {folder} holds no attribute classifier (model.safetensors)")
        return None, None, str(folder)
    return AttributeClassifier.from_pretrained(folder), load_validation(folder), str(folder)

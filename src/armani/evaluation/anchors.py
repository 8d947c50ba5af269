"""The floor and ceiling every prompt-following figure is read against, and the control metrics.

A part accuracy of 0.66 means little alone: a random real garment that ignores the prompt
already scores about 0.5 (many attributes are often right by chance), and the classifier
reads real renders of the prompt at about 0.99. :func:`fidelity` puts a figure on that
scale, ``(x - floor) / (ceiling - floor)``: 0 = no better than ignoring the prompt, 1 = as
good as a real render of it.

- **ceiling**: real renders of each prompt's attributes (the same renders FID compares with);
- **floor**: real renders of random garments of the same split, prompt ignored.

The control tasks have their own measures:

- :func:`silhouette_iou`: IoU of the garment masks (every part but background) of two
  images: of the output, read by the segmenter, and of the garment the sketch was drawn from
  (its exact render mask). The same segmenter on the reference render is the ceiling, a
  random garment the floor.
- :func:`kept_region_psnr`: PSNR inside the partial image's keep-mask between the output
  and the partial image.
"""

from __future__ import annotations

import numpy as np
import torch


def fidelity(value: float | None, floor: float | None, ceiling: float | None) -> float | None:
    """``(value - floor) / (ceiling - floor)``; None when any input is missing or the anchors coincide."""
    if value is None or floor is None or ceiling is None or not all(
            isinstance(v, (int, float)) for v in (value, floor, ceiling)):
        return None
    span = ceiling - floor
    if abs(span) < 1e-9:
        return None
    return float((value - floor) / span)


@torch.no_grad()
def garment_masks(images: torch.Tensor, segmenter: torch.nn.Module, batch_size: int = 64) -> np.ndarray:
    """(N, 3, S, S) float images in [-1, 1] -> bool (N, S, S): pixels the segmenter calls garment."""
    out = []
    for i in range(0, len(images), batch_size):
        out.append(segmenter.predict(images[i:i + batch_size].float()).numpy() > 0)
    return np.concatenate(out) if out else np.zeros((0, *images.shape[-2:]), dtype=bool)


def silhouette_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image IoU of two bool (N, S, S) garment masks; two empty masks count as 1."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {target.shape}")
    inter = (pred & target).reshape(len(pred), -1).sum(1)
    union = (pred | target).reshape(len(pred), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def kept_region_psnr(images: np.ndarray, references: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB, peak 255) inside ``keep`` between uint8 (N, S, S, 3) ``images`` and
    ``references``; ``keep`` is bool (N, S, S). Exact copies give ``inf``."""
    images = np.asarray(images, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    if images.shape != references.shape or images.shape[:3] != keep.shape:
        raise ValueError(f"shapes differ: images {images.shape}, references {references.shape}, keep {keep.shape}")
    err = ((images - references) ** 2).mean(-1)  # (N, S, S)
    mse = np.array([e[k].mean() if k.any() else np.nan for e, k in zip(err, keep)])
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / mse)


def summarise_psnr(values: np.ndarray) -> dict:
    """Mean PSNR over images (``inf`` for exact copies counts as 99 dB), and the share of exact copies."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return {"mean_db": None, "exact": None}
    return {"mean_db": float(np.minimum(values, 99.0).mean()), "exact": float(np.isinf(values).mean())}

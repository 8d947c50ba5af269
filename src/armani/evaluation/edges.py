"""Edge precision / recall of a sketch against a reference, with a pixel tolerance.

What a sketch codebook must keep is where the lines are. PSNR over an edge map says little
(an all-background image scores ~10 dB against a Canny map), so the sketch tokenizer is also
judged the way edge detectors are: a predicted edge pixel is correct when a true edge lies
within ``tolerance`` pixels of it (precision), and a true edge pixel is found when a
predicted edge lies within ``tolerance`` pixels of it (recall). "Within" is the
(2t+1) x (2t+1) square: each map is dilated by that kernel before the other is matched
against it (t = 1: a 3x3 kernel). Counts are pooled over every pixel of the batch.

This is a simple, symmetric version of the boundary benchmarks' tolerance matching
(BSDS uses a one-to-one assignment; here one true pixel may vouch for several predicted
ones, which is fine at the 1 px tolerance used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class EdgeCounts:
    """Pixel counts behind precision and recall; add counts of several batches with ``+``."""

    matched_pred: int = 0  # predicted edge pixels within tolerance of a true edge
    pred: int = 0  # predicted edge pixels
    matched_true: int = 0  # true edge pixels within tolerance of a predicted edge
    true: int = 0  # true edge pixels

    def __add__(self, other: "EdgeCounts") -> "EdgeCounts":
        return EdgeCounts(self.matched_pred + other.matched_pred, self.pred + other.pred,
                          self.matched_true + other.matched_true, self.true + other.true)

    @property
    def precision(self) -> float:
        """Share of predicted edges that are right; 1 when nothing is predicted and nothing is there, else 0."""
        if self.pred == 0:
            return 1.0 if self.true == 0 else 0.0
        return self.matched_pred / self.pred

    @property
    def recall(self) -> float:
        """Share of true edges that are found; 1 when there are none and none are predicted, else 0."""
        if self.true == 0:
            return 1.0 if self.pred == 0 else 0.0
        return self.matched_true / self.true

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def as_dict(self, prefix: str = "edge_") -> dict[str, float]:
        return {f"{prefix}precision": self.precision, f"{prefix}recall": self.recall, f"{prefix}f1": self.f1}


def _edge_map(x, threshold: float) -> torch.Tensor:
    """Any sketch-like input -> bool (B, 1, H, W). Bool arrays are taken as they are; numbers
    are edges where ``> threshold`` (0 for sketches in [-1, 1]; pass 127 for uint8 maps)."""
    t = (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))).detach().cpu()
    edges = t if t.dtype == torch.bool else t.float() > threshold
    if edges.ndim == 2:
        edges = edges[None, None]
    elif edges.ndim == 3:
        edges = edges[:, None]
    if edges.ndim != 4 or edges.shape[1] != 1:
        raise ValueError(f"expected an edge map (H, W), (B, H, W) or (B, 1, H, W), got shape {tuple(t.shape)}")
    return edges


def _dilate(edges: torch.Tensor, tolerance: int) -> torch.Tensor:
    if tolerance == 0:
        return edges
    k = 2 * tolerance + 1
    return F.max_pool2d(edges.float(), kernel_size=k, stride=1, padding=tolerance) > 0


def edge_counts(pred, target, tolerance: int = 1, threshold: float = 0.0) -> EdgeCounts:
    """Matched and total edge pixels of ``pred`` against ``target`` (see the module docstring).

    pred, target: tensors or arrays of the same shape, (H, W), (B, H, W) or (B, 1, H, W):
    bool, or numbers with edges ``> threshold``.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    p, t = _edge_map(pred, threshold), _edge_map(target, threshold)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    return EdgeCounts(
        matched_pred=int((p & _dilate(t, tolerance)).sum()), pred=int(p.sum()),
        matched_true=int((t & _dilate(p, tolerance)).sum()), true=int(t.sum()),
    )


def edge_precision_recall(pred, target, tolerance: int = 1, threshold: float = 0.0) -> dict[str, float]:
    """``{"precision", "recall", "f1"}`` of ``pred`` against ``target``, pooled over the batch.

    With the default ``threshold=0`` sketches in [-1, 1] (edges +1) are read as the sketch
    tokenizer writes them; a decoded sketch counts its pixels above 0 as edges.
    """
    c = edge_counts(pred, target, tolerance, threshold)
    return {"precision": c.precision, "recall": c.recall, "f1": c.f1}


__all__ = ["EdgeCounts", "edge_counts", "edge_precision_recall"]

"""Hand-drawn-style sketches of a garment: what a person draws on the app's canvas.

Training sees Canny edges of renders: one-pixel, closed, exact lines. A designer's canvas
stroke is thicker, wobbles, and often leaves a contour open. :func:`drawn_sketch` draws
such a sketch from a garment's part mask, so the evaluator (``--sketch-style drawn``) and
the tests can check that the sketch path works for drawings, not only for Canny maps.

The drawing follows the mask's contours (the silhouette and each part's outline), moves
every contour point by a smooth random offset (the wobble), leaves a short gap in some
contours (unclosed strokes), and draws them with a round pen at 4x resolution, then
area-downsamples: a stroke is 1-2 px wide at the output size, with soft edges, as a
canvas drawing looks once the app has fitted it to the model's size.
"""

from __future__ import annotations

import cv2
import numpy as np

_UPSCALE = 4


def _wobble(points: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Add a smooth random offset (a random walk, box-filtered) to a closed polyline (n, 2)."""
    n = len(points)
    if n < 4 or amplitude <= 0:
        return points.astype(np.float32)
    steps = rng.normal(0.0, 1.0, size=(n, 2))
    walk = np.cumsum(steps, axis=0)
    walk -= np.linspace(0, 1, n)[:, None] * walk[-1]  # ends meet: no jump at the closing point
    k = max(3, n // 12)
    kernel = np.ones(k) / k
    smooth = np.stack([np.convolve(np.concatenate([walk[-k:, d], walk[:, d], walk[:k, d]]), kernel, "same")[k:-k]
                       for d in range(2)], axis=1)
    scale = np.abs(smooth).max()
    if scale > 0:
        smooth = smooth / scale * amplitude
    return (points + smooth).astype(np.float32)


def drawn_sketch(mask: np.ndarray, rng: np.random.Generator, *, width: tuple[float, float] = (1.0, 2.0),
                 wobble: float = 1.2, gap_probability: float = 0.5, parts: bool = True,
                 min_area: int = 6) -> np.ndarray:
    """A hand-drawn-style sketch of the garment whose part mask is ``mask``.

    Args:
        mask: (S, S) integer part ids (0 = background), as ``render_garment`` returns.
        rng: the randomness of the wobble, the pen width and the gaps.
        width: range of the pen width in output pixels.
        wobble: largest offset of a contour point, in output pixels.
        gap_probability: chance that a contour is left open (a gap of 5-15% of its length).
        parts: draw the outline of every part as well as the silhouette.
        min_area: parts smaller than this many output pixels are not drawn (a person skips them).

    Returns:
        uint8 (S, S): 255 on strokes (soft-edged), 0 elsewhere, the format of ``canny_sketch``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W) part ids, got shape {mask.shape}")
    h, w = mask.shape
    big = cv2.resize(mask.astype(np.uint8), (w * _UPSCALE, h * _UPSCALE), interpolation=cv2.INTER_NEAREST)
    regions = [big > 0]
    if parts:
        for label in np.unique(mask):
            if label > 1 and (mask == label).sum() >= min_area:  # 1 is the garment body (its outline = silhouette)
                regions.append(big == label)
    canvas = np.zeros_like(big, dtype=np.uint8)
    pen = int(round(rng.uniform(*width) * _UPSCALE))
    for region in regions:
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for contour in contours:
            pts = contour[:, 0, :].astype(np.float32)
            if len(pts) < 8:
                continue
            pts = _wobble(pts, rng, wobble * _UPSCALE)
            closed = True
            if rng.random() < gap_probability:
                gap = int(len(pts) * rng.uniform(0.05, 0.15))
                start = int(rng.integers(0, len(pts)))
                pts = np.roll(pts, -start - gap, axis=0)[: len(pts) - gap]
                closed = False
            cv2.polylines(canvas, [np.round(pts).astype(np.int32)], closed, 255, thickness=max(1, pen),
                          lineType=cv2.LINE_AA)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)

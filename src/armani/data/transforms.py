"""Control signals (Canny sketch, partial image) and the torch Dataset every stage trains on.

The paper conditions stage 2 on a sketch and on a partial image but says little about how
they are made. Our choices:

- Sketch: OpenCV Canny edges of the grey image after a light Gaussian blur (3x3 by
  default), thresholds 100/200 (OpenCV's usual pair). The blur removes texture speckle
  from patterns so the sketch keeps silhouettes and part borders.
- Partial image: one random axis-aligned rectangle that keeps ``keep_fraction`` (25%) of
  the area. Its aspect ratio (w/h) is drawn log-uniformly in [1/2, 2] and its position
  uniformly; everything outside is blanked to mid-grey (127 in uint8, 0 in [-1, 1]).

The numpy functions work on uint8 images of any size (user photos included); the tensor
helpers follow docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BLANK_VALUE: int = 127  # uint8 value of blanked pixels; maps to ~0 in [-1, 1]

# Aspect-ratio (width / height) range of the kept rectangle, drawn log-uniformly.
_ASPECT_RANGE: tuple[float, float] = (0.5, 2.0)


def _check_uint8_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 array (0-255), got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{name} must be HxW or HxWx3 (RGB), got shape {image.shape}")
    return image


# -- sketch ---------------------------------------------------------------------------------
def canny_sketch(image: np.ndarray, low: int = 100, high: int = 200, blur: int = 3) -> np.ndarray:
    """Canny edge map of an RGB (or grey) uint8 image.

    Args:
        image: uint8 (H, W, 3) RGB or (H, W) grey, any size.
        low, high: Canny hysteresis thresholds.
        blur: side of the Gaussian blur kernel applied first; 0 or 1 means no blur; an even
            value is rounded up to the next odd one (OpenCV needs odd kernels).

    Returns:
        uint8 (H, W), 255 on edges and 0 elsewhere.
    """
    image = _check_uint8_image(image)
    if low < 0 or high < low:
        raise ValueError(f"Canny thresholds need 0 <= low <= high, got low={low}, high={high}")
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if blur > 1:
        k = int(blur) | 1  # next odd size
        grey = cv2.GaussianBlur(grey, (k, k), 0)
    return cv2.Canny(np.ascontiguousarray(grey), float(low), float(high))


# -- partial image --------------------------------------------------------------------------
def partial_from_mask(image: np.ndarray, keep_mask: np.ndarray) -> np.ndarray:
    """Blank (to 127) every pixel of ``image`` where ``keep_mask`` is False.

    Used for user-drawn regions in the demo as well as for the random crops below.
    ``keep_mask``: bool (H, W) (any nonzero value counts as kept).
    """
    image = _check_uint8_image(image)
    keep_mask = np.asarray(keep_mask)
    if keep_mask.ndim == 3 and keep_mask.shape[2] == 1:
        keep_mask = keep_mask[:, :, 0]
    if keep_mask.shape != image.shape[:2]:
        raise ValueError(
            f"the kept-region mask is {keep_mask.shape[1]}x{keep_mask.shape[0]} but the image "
            f"is {image.shape[1]}x{image.shape[0]}; draw the region on the same image"
        )
    keep = keep_mask.astype(bool)
    out = np.full_like(image, BLANK_VALUE)
    out[keep] = image[keep]
    return out


def random_keep_mask(height: int, width: int, rng: np.random.Generator, keep_fraction: float = 0.25) -> np.ndarray:
    """A bool (H, W) mask, True inside one random rectangle covering ~keep_fraction of the area."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    area = keep_fraction * height * width
    log_lo, log_hi = math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))  # width / height
    h = math.sqrt(area / aspect)
    w = area / h
    # If one side would overflow the image, clip it and stretch the other to keep the area.
    if h > height:
        h, w = height, area / height
    if w > width:
        w, h = width, min(height, area / width)
    h_px = int(np.clip(round(h), 1, height))
    w_px = int(np.clip(round(w), 1, width))
    top = int(rng.integers(0, height - h_px + 1))
    left = int(rng.integers(0, width - w_px + 1))
    keep = np.zeros((height, width), dtype=bool)
    keep[top : top + h_px, left : left + w_px] = True
    return keep


def random_partial(
    image: np.ndarray, rng: np.random.Generator, keep_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Keep one random rectangle (~keep_fraction of the area) and blank the rest to 127.

    Returns ``(partial uint8 (H, W, 3), keep_mask bool (H, W))``. All randomness comes
    from ``rng``, so the same seed gives the same crop.
    """
    image = _check_uint8_image(image)
    keep = random_keep_mask(image.shape[0], image.shape[1], rng, keep_fraction)
    return partial_from_mask(image, keep), keep

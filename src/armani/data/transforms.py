"""Control signals (Canny sketch, partial image) and the torch Dataset every stage trains on.

The paper conditions stage 2 on a sketch and on a partial image but says little about how
they are made. Our choices:

- Sketch: OpenCV Canny edges of the grey image after a light Gaussian blur (3x3 by
  default), thresholds 100/200 (OpenCV's usual pair). The blur removes texture speckle
  from patterns so the sketch keeps silhouettes and part borders.
- Drawn sketch (optional, sketch tokenizer training): with ``drawn_sketch_prob`` a row's
  Canny map is replaced by a hand-drawn-style sketch of its part mask
  (:func:`drawn_sketch_edges`), binarised as the app reads a drawing.
- Partial image: one random axis-aligned rectangle that keeps ``keep_fraction`` (25%) of
  the area. Its aspect ratio (w/h) is drawn log-uniformly in [1/2, 2] and its position
  uniformly; everything outside is blanked to mid-grey (127 in uint8, 0 in [-1, 1]).

The numpy functions work on uint8 images of any size (user photos included); the tensor
helpers follow docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cv2
import datasets
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from armani.data.images import fit_image, fit_mask, load_image, load_mask

if TYPE_CHECKING:  # only for annotations: keeps `import transforms` free of open_clip
    from armani.text import GarmentTokenizer

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


def drawing_edges(strokes: np.ndarray) -> np.ndarray:
    """A drawing's strokes (uint8 (H, W), bright on dark, soft-edged) -> uint8 edge map (255 / 0).

    The rule of ``ArmaniPipeline.prepare_sketch`` (mode "edges"): area-downsampled strokes are
    faint, so anything with a fifth of the brightest stroke's weight is kept.
    """
    small = np.asarray(strokes, dtype=np.float32)
    return np.where(small > 0.2 * max(1.0, float(small.max())), 255, 0).astype(np.uint8)


def drawn_sketch_edges(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hand-drawn-style sketch of part mask ``mask`` (:func:`armani.data.drawn_sketch.drawn_sketch`:
    thicker, wobbly, partly unclosed strokes), binarised like a canvas drawing: uint8 (H, W)."""
    from armani.data.drawn_sketch import drawn_sketch

    return drawing_edges(drawn_sketch(mask, rng))


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


# -- tensors (docs/ARCHITECTURE.md contracts) -----------------------------------------------
def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) in [-1, 1]."""
    image = _check_uint8_image(image)
    if image.ndim != 3:
        raise ValueError(f"image_tensor needs an RGB (H, W, 3) image, got shape {image.shape}")
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0  # (3, H, W)


def sketch_tensor(edges: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) edge map (255 = edge) -> float32 (1, H, W): edges +1, background -1."""
    edges = np.asarray(edges)
    if edges.ndim != 2:
        raise ValueError(f"a sketch must be a 2-D edge map, got shape {edges.shape}")
    return torch.from_numpy(np.where(edges > 127, 1.0, -1.0).astype(np.float32))[None]  # (1, H, W)


def partial_tensors(image: np.ndarray, keep_mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Image + kept region -> (partial (3, H, W) in [-1, 1] with blanked pixels exactly 0,
    keep_mask float32 (1, H, W), 1 = kept)."""
    keep = torch.from_numpy(np.asarray(keep_mask, dtype=bool).astype(np.float32))[None]  # (1, H, W)
    # Multiply rather than convert the 127 fill: 127 / 127.5 - 1 is not exactly 0.
    return image_tensor(image) * keep, keep


# -- torch Dataset --------------------------------------------------------------------------
class GarmentTorchDataset(Dataset):
    """A torch view of a garment ``datasets.Dataset`` (columns from ``load_garment_dataset``).

    Each item is a dict (see docs/ARCHITECTURE.md, "A training batch"): ``image`` (3, S, S),
    ``mask`` int64 (S, S) (all background and ``has_mask`` False when the row has none),
    ``has_mask`` bool, ``text_ids`` (L,), ``caption`` str, ``sketch`` (1, S, S),
    ``partial`` (3, S, S), ``keep_mask`` (1, S, S), ``index`` int64.

    Images of another size are letterboxed to S x S (``fit_image``: LANCZOS, white
    padding; masks with nearest and background padding, so both stay aligned). The only
    random choice, the partial crop, uses ``np.random.default_rng((seed, epoch, index))``:
    the same item is byte-identical in any worker, process or resumed run, and changes
    from epoch to epoch. Call :meth:`set_epoch` before each epoch; with a DataLoader keep
    ``persistent_workers=False`` so that workers see the new epoch.

    ``drawn_sketch_prob`` (default 0: Canny maps only) replaces a row's ``sketch`` by a
    hand-drawn-style sketch of its part mask (:func:`drawn_sketch_edges`) with that chance;
    the draw and the drawing come from their own generator, ``(seed, epoch, index, 1)``, so
    the partial crop is the same either way. Rows without a mask keep their Canny map.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        image_size: int,
        tokenizer: GarmentTokenizer,
        seed: int = 0,
        sketch_thresholds: tuple[int, int] = (100, 200),
        keep_fraction: float = 0.25,
        drawn_sketch_prob: float = 0.0,
    ):
        if not 0.0 <= drawn_sketch_prob <= 1.0:
            raise ValueError(f"drawn_sketch_prob must be in [0, 1], got {drawn_sketch_prob}")
        missing = {"image", "caption"} - set(hf_dataset.column_names)
        if missing:
            raise ValueError(
                f"the dataset lacks column(s) {sorted(missing)}; it has {hf_dataset.column_names}. "
                "Load it with armani.data.loader.load_garment_dataset to map its columns."
            )
        # Decode images ourselves (load_image), so a corrupt file is a clear error naming the row.
        ds = hf_dataset.with_format(None)
        for column in ("image", "mask"):
            if column in ds.column_names and isinstance(ds.features[column], datasets.Image):
                ds = ds.cast_column(column, datasets.Image(decode=False))
        self.dataset = ds
        self.image_size = int(image_size)
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.sketch_thresholds = (int(sketch_thresholds[0]), int(sketch_thresholds[1]))
        self.keep_fraction = float(keep_fraction)
        self.drawn_sketch_prob = float(drawn_sketch_prob)
        self.epoch = 0
        self._has_mask_column = "mask" in hf_dataset.column_names
        self._warned_truncation = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of row ``index`` for the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} rows")
        index = int(index) % n
        row = self.dataset[index]
        size = self.image_size

        pil = _decode_cell(row["image"], index, "image", load_image)
        stored_size = pil.size
        if stored_size != (size, size):
            pil = fit_image(pil, size)
        image = np.asarray(pil)  # (S, S, 3) uint8

        raw_mask = row.get("mask") if self._has_mask_column else None
        has_mask = raw_mask is not None
        if has_mask:
            mask = _decode_cell(raw_mask, index, "mask", lambda m: load_mask(m, size=stored_size))  # (h, w) int64
            if mask.shape != (size, size):
                mask = fit_mask(mask, size)
        else:
            mask = np.zeros((size, size), dtype=np.int64)

        caption = row["caption"] or ""
        tokens = self.tokenizer([caption], warn=False)
        if tokens.truncated[0] and not self._warned_truncation:
            self._warned_truncation = True
            warnings.warn(
                f"some captions are longer than the context length ({self.tokenizer.context_length} tokens) "
                f"and are truncated, e.g. row {index}: {caption[:60]!r}",
                stacklevel=2,
            )

        low, high = self.sketch_thresholds
        edges = canny_sketch(image, low=low, high=high)
        if self.drawn_sketch_prob > 0 and has_mask:
            sketch_rng = np.random.default_rng((self.seed, self.epoch, index, 1))
            if sketch_rng.random() < self.drawn_sketch_prob:
                drawn = drawn_sketch_edges(mask, sketch_rng)
                if drawn.any():  # a mask too small to draw keeps its Canny map
                    edges = drawn
        partial, keep = random_partial(image, self.rng(index), self.keep_fraction)
        partial_t, keep_t = partial_tensors(image, keep)
        return {
            "image": image_tensor(image),  # (3, S, S)
            "mask": torch.from_numpy(mask),  # (S, S) int64
            "has_mask": torch.tensor(has_mask),
            "text_ids": tokens.ids[0],  # (L,)
            "caption": caption,
            "sketch": sketch_tensor(edges),  # (1, S, S)
            "partial": partial_t,  # (3, S, S)
            "keep_mask": keep_t,  # (1, S, S)
            "index": torch.tensor(index, dtype=torch.int64),
        }


def _decode_cell(cell: Any, index: int, column: str, decode: Callable[[Any], Any]) -> Any:
    """Decode one image/mask cell (``{"bytes", "path"}``, path, PIL or array) naming the row on error."""
    where = f"row {index}"
    if isinstance(cell, dict):
        where += f" ({cell['path']})" if cell.get("path") else ""
        cell = cell["bytes"] if cell.get("bytes") is not None else cell.get("path")
        if cell is None:
            raise ValueError(f"{where}: the {column} cell holds neither bytes nor a path")
    try:
        return decode(cell)
    except ValueError as err:
        raise ValueError(f"{where}: bad {column}: {err}") from err


def collate(samples: list[dict]) -> dict:
    """Stack a list of :class:`GarmentTorchDataset` items into a batch.

    Tensors are stacked along a new batch dim (``has_mask`` (B,) bool, ``index`` (B,)
    int64, ...) and captions become a list of str: exactly torch's ``default_collate``.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    return default_collate(samples)


def partial_tokenizer_input(partial: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """What the partial-image tokenizer reads: (B, 3, H, W) partial + (B, 1, H, W) keep mask
    -> (B, 4, H, W), the mask rescaled to [-1, 1] like the image channels."""
    return torch.cat([partial, keep_mask.to(partial.dtype) * 2 - 1], dim=1)

"""Turn whatever a user hands us into a clean RGB image, and convert images to/from tensors.

Users upload phone photos, scans, PNGs with transparency, 16-bit greyscale, CMYK print
files and the odd 20000-pixel poster. Everything here either returns a sane RGB
``PIL.Image`` or raises :class:`ImageInputError` (a ``ValueError``) with a message a
designer can act on; nothing crashes with a library traceback.

API choice: :func:`load_image_with_notes` returns a :class:`LoadedImage` holding the image
and a list of human-readable ``notes`` on what was fixed (transparency flattened, image
rotated by its EXIF tag, downscaled, ...), for the demo to show. :func:`load_image` is the
same without the notes.

Choices the paper does not make (it only uses clean 256x256 shop images):
- Transparency is composited on white, the usual product-photo background.
- 16/32-bit integer and float greyscale is stretched to 8 bits by its own value range
  (min -> 0, max -> 255); a constant image keeps its level relative to the full range.
- Float arrays in [0, 1] are read as 0-1 intensities, arrays with negatives in [-1, 1] as
  this project's tensor convention, arrays in [0, 255] as 8-bit values; anything else is
  stretched by its range. Which reading was used goes into the notes.
- Images larger than ``max_pixels`` are downscaled (aspect kept) to fit. JPEGs are
  decoded at 1/2, 1/4 or 1/8 scale first (PIL ``draft``), so a huge JPEG never costs its
  full size in memory; other formats are decoded only if they hold at most
  ``DECODE_LIMIT_FACTOR * max_pixels`` pixels, otherwise they are refused.
- ``fit_image`` / ``fit_mask`` letterbox to a square with ``PIL.ImageOps.pad`` (resize
  to fit, then pad centred), with white for images and background (0) for masks, so an
  image and its mask stay pixel-aligned.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from armani.parts import NUM_PARTS

ImageInput = Union[str, Path, bytes, io.IOBase, Image.Image, np.ndarray]

MIN_SIDE: int = 8  # smaller images carry no usable garment detail
DEFAULT_MAX_PIXELS: int = 4096 * 4096
DECODE_LIMIT_FACTOR: int = 4  # never decode more than this many times max_pixels
_WHITE = (255, 255, 255)
_BOMB_LOCK = threading.Lock()


class ImageInputError(ValueError):
    """An input that cannot be turned into a garment image; the message says why and what to do."""


@dataclass
class LoadedImage:
    """A clean RGB image and what was changed to get it (empty when nothing was)."""

    image: Image.Image
    notes: list[str] = field(default_factory=list)


# -- public entry points --------------------------------------------------------------------
def load_image_with_notes(x: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Load a path, bytes, file object, PIL image or numpy array as an RGB image.

    Raises :class:`ImageInputError` for missing/unreadable/corrupt files, non-images,
    unsupported array shapes, images smaller than ``MIN_SIDE`` pixels a side and images
    too large to decode safely.
    """
    if max_pixels < MIN_SIDE * MIN_SIDE:
        raise ValueError(f"max_pixels must be at least {MIN_SIDE * MIN_SIDE}, got {max_pixels}")
    notes: list[str] = []
    if isinstance(x, np.ndarray):
        img = _array_to_pil(x, notes)
    elif isinstance(x, Image.Image):
        img = x
    elif isinstance(x, (str, Path, bytes, bytearray, io.IOBase)):
        img = _open_file(x, max_pixels, notes)
    else:
        raise ImageInputError(
            f"cannot read an image from a {type(x).__name__}; give a file path, a PIL image "
            "or a numpy array (H x W, H x W x 3 or H x W x 4)"
        )
    img = _to_rgb(img, notes)
    _check_min_side(img)
    img = _downscale(img, max_pixels, notes)
    return LoadedImage(img, notes)


def load_image(x: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Like :func:`load_image_with_notes` but returns only the RGB image."""
    return load_image_with_notes(x, max_pixels).image


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to RGB (transparency on white, 16-bit stretched)."""
    return _to_rgb(img, [])


def fit_image(img: Image.Image, size: int, fill: tuple[int, int, int] = _WHITE) -> Image.Image:
    """Letterbox ``img`` into a ``size`` x ``size`` RGB square: fit (LANCZOS), pad centred."""
    img = img if img.mode == "RGB" else to_rgb(img)
    return ImageOps.pad(img, (size, size), method=Image.Resampling.LANCZOS, color=tuple(fill))


def fit_mask(mask: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """The mask counterpart of :func:`fit_image`: same geometry, nearest, background padding.

    Returns int64 (size, size).
    """
    pil = Image.fromarray(load_mask(mask).astype(np.uint8))  # validates: one channel, ids < 15
    out = ImageOps.pad(pil, (size, size), method=Image.Resampling.NEAREST, color=0)
    return np.asarray(out, dtype=np.int64)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 (3, H, W) in [-1, 1]."""
    img = img if img.mode == "RGB" else to_rgb(img)
    arr = np.asarray(img, dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0  # (3, H, W)


def tensor_to_pil(t: torch.Tensor) -> Image.Image | list[Image.Image]:
    """(C, H, W) or (B, C, H, W) in [-1, 1] -> PIL image(s); C = 3 gives RGB, C = 1 gives L.

    Values outside [-1, 1] are clipped. A batch gives a list.
    """
    if t.ndim == 4:
        return [tensor_to_pil(x) for x in t]  # type: ignore[misc]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3, H, W), (1, H, W) or (B, C, H, W) tensor, got shape {tuple(t.shape)}")
    u8 = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (C, H, W)
    arr = u8.permute(1, 2, 0).numpy()  # (H, W, C)
    return Image.fromarray(np.ascontiguousarray(arr[:, :, 0] if arr.shape[2] == 1 else arr))


def load_mask(x: str | Path | bytes | Image.Image | np.ndarray, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Load a part mask (one channel of part ids 0..14) as int64 (H, W).

    ``size`` is the size of the image the mask belongs to, ``(width, height)`` as PIL
    gives it (an int means square); a mask of another size is an error rather than being
    silently stretched. RGB masks whose three channels are equal are accepted.
    """
    if isinstance(x, (str, Path, bytes, bytearray)):
        if isinstance(x, (str, Path)) and not Path(x).is_file():
            raise ImageInputError(f"no mask file at {x}")
        src = io.BytesIO(bytes(x)) if isinstance(x, (bytes, bytearray)) else x
        try:
            with Image.open(src) as opened:
                opened.load()
                x = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ImageInputError(f"{_describe(src)} is not a readable mask image ({err})") from err
    if isinstance(x, Image.Image):
        if x.mode in ("RGB", "RGBA"):
            x = np.asarray(x)[:, :, :3]
        else:
            x = np.asarray(x)  # L, P (palette indices are the labels), I, I;16, 1
    arr = np.asarray(x)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        if not (np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2])):
            raise ImageInputError(
                "the mask has colours, but a part mask must be one channel of part ids "
                f"0-{NUM_PARTS - 1} (a greyscale 'L' PNG); a colourised preview cannot be used as a mask"
            )
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ImageInputError(f"a part mask must be a 2-D map of part ids, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageInputError(f"a part mask must hold integer part ids, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise ImageInputError("a part mask must hold whole-number part ids, got fractional values")
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_PARTS):
        raise ImageInputError(
            f"mask values must be part ids 0-{NUM_PARTS - 1}, found values from {arr.min()} to "
            f"{arr.max()} (a mask saved as 0/255 black-and-white, or an anti-aliased mask, is not a part mask)"
        )
    if size is not None:
        width, height = (size, size) if isinstance(size, int) else size
        if arr.shape != (height, width):
            raise ImageInputError(
                f"the mask is {arr.shape[1]}x{arr.shape[0]} pixels but the image is {width}x{height}; "
                "a mask must have exactly the size of its image"
            )
    return arr.astype(np.int64)


# -- file reading ---------------------------------------------------------------------------
def _describe(x: object) -> str:
    if isinstance(x, (str, Path)):
        return Path(x).name or str(x)
    return "the uploaded data"


def _open_file(x: str | Path | bytes | io.IOBase, max_pixels: int, notes: list[str]) -> Image.Image:
    name = _describe(x)
    if isinstance(x, str) and x.startswith(("http://", "https://")):
        raise ImageInputError(f"{x} is a web address; download the image and give the file instead")
    if isinstance(x, (str, Path)):
        if not Path(x).exists():
            raise ImageInputError(f"no file at {x}")
        if Path(x).is_dir():
            raise ImageInputError(f"{x} is a folder, not an image file")
    src = io.BytesIO(bytes(x)) if isinstance(x, (bytes, bytearray)) else x
    try:
        img = _open_unchecked(src)
    except UnidentifiedImageError as err:
        raise ImageInputError(
            f"{name} is not an image file that can be read (use PNG, JPEG, WebP, TIFF, BMP or GIF)"
        ) from err
    except OSError as err:
        raise ImageInputError(f"{name} could not be opened: {err}") from err

    try:
        return _decode(img, name, max_pixels, notes)
    finally:
        img.close()  # the decoded copy lives on; release the file handle now


def _decode(img: Image.Image, name: str, max_pixels: int, notes: list[str]) -> Image.Image:
    """Check the size, decode (reduced for big JPEGs), apply EXIF orientation; an in-memory copy."""
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"the file holds {img.n_frames} frames/pages; the first one was used")
    width, height = img.size
    if width * height > max_pixels and img.format == "JPEG":
        # Decode at a reduced scale (1/2..1/8) straight from the JPEG stream.
        scale = math.sqrt(max_pixels / (width * height))
        img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    dw, dh = img.size
    if dw * dh > DECODE_LIMIT_FACTOR * max_pixels:
        raise ImageInputError(
            f"{name} is {width}x{height} pixels, too large to open safely (limit about "
            f"{DECODE_LIMIT_FACTOR * max_pixels / 1e6:.0f} megapixels); save a smaller copy, or a JPEG, and try again"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(f"{name} is damaged or incomplete and could not be decoded ({err})") from err
    except MemoryError as err:
        raise ImageInputError(f"{name} is too large to decode in memory; save a smaller copy") from err
    if (dw, dh) != (width, height):
        notes.append(f"decoded the {width}x{height} JPEG at reduced scale ({dw}x{dh})")
    if img.getexif().get(0x0112, 1) not in (0, 1):  # 0x0112: EXIF orientation
        notes.append("rotated/flipped the photo upright using its EXIF orientation tag")
        return ImageOps.exif_transpose(img)  # a new image
    return img.copy()


def _open_unchecked(src: str | Path | io.IOBase) -> Image.Image:
    """``Image.open`` with PIL's decompression-bomb guard replaced by our own size check.

    PIL refuses headers above ~179 megapixels before we can even read the size, which
    would stop us from draft-decoding a huge JPEG at 1/8 scale. We check the size
    ourselves (in :func:`_open_file`) before decoding anything, so here the guard is
    lifted only for the ``open`` (header parse) call, under a lock.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(src)
        except Image.DecompressionBombError:
            if isinstance(src, io.IOBase):
                src.seek(0)
            with _BOMB_LOCK:
                saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    return Image.open(src)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved


# -- mode conversion ------------------------------------------------------------------------
def _flatten_on_white(img: Image.Image, notes: list[str]) -> Image.Image:
    rgba = img.convert("RGBA")
    alpha = np.asarray(rgba)[:, :, 3]
    if alpha.min() < 255:
        notes.append("transparent areas were filled with white")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _stretch_to_uint8(arr: np.ndarray, nominal_max: float, notes: list[str], what: str) -> np.ndarray:
    """Map an integer/float array to uint8 by its value range (see module docstring)."""
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        notes.append(f"{np.count_nonzero(~finite)} non-finite pixel values were set to black")
        arr = np.where(finite, arr, np.nan)
    lo = np.nanmin(arr) if finite.any() else 0.0
    hi = np.nanmax(arr) if finite.any() else 0.0
    if hi > lo:
        out = (arr - lo) / (hi - lo) * 255.0
        notes.append(f"{what} was scaled to 8 bits using its value range {lo:g}..{hi:g}")
    else:
        out = np.clip(arr / nominal_max, 0.0, 1.0) * 255.0
        notes.append(f"{what} is a single flat value ({lo:g}); kept its level")
    return np.nan_to_num(np.round(out), nan=0.0).astype(np.uint8)


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _flatten_on_white(img, notes)
    if mode == "P":
        if "transparency" in img.info:
            return _flatten_on_white(img, notes)
        return img.convert("RGB")
    if mode in ("L", "1"):
        return img.convert("L").convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img)
        nominal = 65535.0 if (mode.startswith("I;16") or (arr.size and arr.max() > 255)) else 255.0
        what = "the 16-bit greyscale image" if mode.startswith("I;16") else f"the '{mode}' image"
        if mode == "F":
            return _to_rgb(_array_to_pil(arr, notes), notes)
        return Image.fromarray(_stretch_to_uint8(arr, nominal, notes, what)).convert("RGB")
    if mode == "CMYK":
        notes.append("converted from CMYK print colours to RGB (colours may shift slightly)")
        return img.convert("RGB")
    try:
        out = img.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageInputError(f"images in colour mode '{mode}' are not supported; save it as RGB") from err
    notes.append(f"converted from colour mode '{mode}' to RGB")
    return out


def _array_to_pil(arr: np.ndarray, notes: list[str]) -> Image.Image:
    if arr.size == 0:
        raise ImageInputError(f"the image array is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
        notes.append("the array was channel-first (C x H x W); moved the channels last")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageInputError(
            f"an image array must be H x W, H x W x 1, H x W x 3 (RGB) or H x W x 4 (RGBA); got shape {arr.shape}"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            arr = _stretch_to_uint8(arr, 65535.0, notes, f"the {arr.dtype} array")
    elif np.issubdtype(arr.dtype, np.floating):
        arr = _float_to_uint8(arr, notes)
    else:
        raise ImageInputError(f"cannot read an image from an array of dtype {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr))  # L, RGB or RGBA from the shape


def _float_to_uint8(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    finite = arr[np.isfinite(arr)]
    if finite.size == arr.size and finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= 0.0 and hi <= 1.0:
            notes.append("float values were read as intensities in 0..1")
            return np.round(arr * 255.0).astype(np.uint8)
        if lo >= -1.0 and hi <= 1.0:
            notes.append("float values were read as the model range -1..1")
            return np.round((arr + 1.0) * 127.5).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            notes.append("float values were read as 8-bit levels 0..255")
            return np.round(arr).astype(np.uint8)
    return _stretch_to_uint8(arr, 1.0, notes, "the float image")


# -- size -----------------------------------------------------------------------------------
def _check_min_side(img: Image.Image) -> None:
    width, height = img.size
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(
            f"the image is only {width}x{height} pixels; it needs at least {MIN_SIDE} pixels on each side"
        )


def _downscale(img: Image.Image, max_pixels: int, notes: list[str]) -> Image.Image:
    width, height = img.size
    if width * height <= max_pixels:
        return img
    scale = math.sqrt(max_pixels / (width * height))
    new = (max(MIN_SIDE, int(width * scale)), max(MIN_SIDE, int(height * scale)))
    # reducing_gap: PIL first shrinks by an integer factor (Image.reduce), then resamples.
    out = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    notes.append(f"downscaled from {width}x{height} to {new[0]}x{new[1]} pixels")
    return out

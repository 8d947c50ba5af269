"""User image input: every mode to RGB with sensible pixels, clear errors, safe downscaling."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from armani.data.images import (
    ImageInputError,
    LoadedImage,
    fit_image,
    fit_mask,
    load_image,
    load_image_with_notes,
    load_mask,
    pil_to_tensor,
    tensor_to_pil,
    to_rgb,
)


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


# -- modes ----------------------------------------------------------------------------------
def test_rgba_transparent_becomes_white_and_opaque_keeps_colour():
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[..., 0] = 200  # red everywhere ...
    arr[:8, :, 3] = 255  # ... but only the top half is opaque
    out = load_image_with_notes(Image.fromarray(arr))
    px = _rgb(out.image)
    assert (px[:8] == [200, 0, 0]).all()
    assert (px[8:] == 255).all()
    assert any("transparent" in n for n in out.notes)
    # the same from a numpy HxWx4 array and a half-transparent pixel blends toward white
    arr[0, 0, 3] = 128
    px = _rgb(load_image(arr))
    assert px[0, 0, 0] == pytest.approx(228, abs=2) and px[0, 0, 1] == pytest.approx(127, abs=2)


def test_la_and_palette_with_transparency():
    la = Image.fromarray(np.stack([np.full((10, 10), 50, np.uint8), np.zeros((10, 10), np.uint8)], -1))
    assert la.mode == "LA"
    assert (_rgb(load_image(la)) == 255).all()

    pal = Image.fromarray(np.tile(np.array([[0, 1]], np.uint8), (10, 5)), mode="P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = 0  # index 0 (red) is transparent
    px = _rgb(load_image(pal))
    assert (px[:, 0] == 255).all()  # transparent -> white
    assert (px[:, 1] == [0, 0, 255]).all()  # opaque blue stays blue
    # round trip through a real PNG file keeps the same behaviour
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    assert np.array_equal(_rgb(load_image(buf.getvalue())), px)


def test_16bit_grey_ramp_becomes_monotone_full_range_8bit():
    ramp = (np.arange(256, dtype=np.uint16) * 100).reshape(16, 16)  # 0..25500, 16-bit
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    out = load_image_with_notes(img)
    grey = _rgb(out.image)[..., 0].ravel()
    assert grey[0] == 0 and grey[-1] == 255
    assert np.all(np.diff(grey) >= 0) and len(np.unique(grey)) > 200
    assert any("16-bit" in n for n in out.notes)
    # 32-bit integer 'I' mode and a uint16 numpy array behave the same
    assert np.array_equal(_rgb(load_image(img.convert("I")))[..., 0].ravel(), grey)
    assert np.array_equal(_rgb(load_image(ramp))[..., 0].ravel(), grey)


def test_float_bilevel_cmyk_and_grey_modes():
    f = Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16))
    assert f.mode == "F"
    px = _rgb(load_image(f))[..., 0].ravel()
    assert px[0] == 0 and px[-1] == 255 and np.all(np.diff(px) >= 0)

    bilevel = Image.fromarray(np.eye(16, dtype=bool))
    assert bilevel.mode == "1"
    px = _rgb(load_image(bilevel))
    assert (px[np.eye(16, dtype=bool)] == 255).all() and (px[~np.eye(16, dtype=bool)] == 0).all()

    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure magenta+yellow ink = red
    out = load_image_with_notes(cmyk)
    assert (_rgb(out.image) == [255, 0, 0]).all() and any("CMYK" in n for n in out.notes)

    grey = Image.new("L", (16, 16), 77)
    assert (_rgb(to_rgb(grey)) == 77).all()


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.full((12, 12), 0.5, np.float32), 128),  # 0..1 floats
        (np.full((12, 12, 1), -1.0, np.float64), 0),  # model range -1..1
        (np.full((12, 12, 3), 200.0), 200),  # 0..255 floats
        (np.full((12, 12, 3), 90, np.int64), 90),  # small ints are 8-bit levels
        (np.full((3, 12, 14), 1.0, np.float32), 255),  # channel-first is moved
    ],
)
def test_numpy_arrays_of_many_dtypes_and_shapes(arr, expected):
    img = load_image(arr)
    assert img.mode == "RGB" and min(img.size) == 12
    assert (_rgb(img) == expected).all()


def test_pil_tensor_round_trip_and_ranges():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    t = pil_to_tensor(Image.fromarray(arr))
    assert t.shape == (3, 9, 11) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert t[0, 0, 0].item() == pytest.approx(arr[0, 0, 0] / 127.5 - 1)
    assert np.array_equal(np.asarray(tensor_to_pil(t)), arr)
    batch = tensor_to_pil(torch.stack([t, -t, t * 5]))  # out-of-range values are clipped
    assert isinstance(batch, list) and len(batch) == 3
    assert np.array_equal(np.asarray(batch[1]), 255 - arr)  # -t mirrors the levels
    far = np.abs(arr.astype(int) - 127.5) > 40  # |5 t| > 1 there: saturated
    assert (np.asarray(batch[2])[far] == np.where(arr > 127, 255, 0)[far]).all()
    sketch = tensor_to_pil(torch.ones(1, 8, 8))
    assert sketch.mode == "L" and np.asarray(sketch).min() == 255


# -- errors ---------------------------------------------------------------------------------
def test_tiny_image_is_a_clear_error():
    with pytest.raises(ImageInputError, match="1x1 pixels"):
        load_image(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 8"):  # ImageInputError is a ValueError
        load_image(Image.new("RGB", (100, 5)))


def test_corrupt_non_image_and_missing_files(tmp_path):
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageInputError, match="cut.png is damaged or incomplete"):
        load_image(truncated)

    text = tmp_path / "notes.txt"
    text.write_text("a red dress with two pockets")
    with pytest.raises(ImageInputError, match="notes.txt is not an image file"):
        load_image(str(text))
    with pytest.raises(ImageInputError, match="no file at"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(ImageInputError, match="H x W x 3"):
        load_image(np.zeros((16, 16, 2), np.uint8))
    with pytest.raises(ImageInputError, match="cannot read an image from a list"):
        load_image([[0, 1], [2, 3]])


# -- size -----------------------------------------------------------------------------------
def test_large_image_is_downscaled_with_a_note(tmp_path):
    img = Image.new("RGB", (400, 200), (10, 200, 30))
    out = load_image_with_notes(img, max_pixels=100 * 50)
    assert isinstance(out, LoadedImage)
    assert out.image.size == (100, 50)
    assert any("downscaled from 400x200" in n for n in out.notes)
    assert (np.abs(_rgb(out.image) - [10, 200, 30]) <= 1).all()
    # a JPEG is decoded at reduced scale first, then fitted
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 800), (200, 30, 40)).save(path, quality=95)
    out = load_image_with_notes(path, max_pixels=200 * 100)
    assert out.image.width * out.image.height <= 200 * 100
    assert out.image.size == (200, 100)
    assert any("reduced scale" in n for n in out.notes)
    assert (np.abs(_rgb(out.image) - [200, 30, 40]) <= 6).all()
    # small images come back untouched, without notes
    assert load_image_with_notes(Image.new("RGB", (32, 32))).notes == []


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size (a decompression bomb's header) without the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "poster.png"
    path.write_bytes(_png_header_only(20000, 20000))
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageInputError, match="20000x20000 pixels, too large"):
        load_image(path)
    assert Image.MAX_IMAGE_PIXELS == limit_before  # PIL's own guard is restored


# -- fitting and masks ----------------------------------------------------------------------
def test_fit_image_and_fit_mask_share_geometry():
    arr = np.zeros((20, 40, 3), np.uint8)  # a black landscape image
    out = fit_image(Image.fromarray(arr), 32)
    px = _rgb(out)
    assert out.size == (32, 32)
    assert (px[:7] == 255).all() and (px[-7:] == 255).all()  # white bars top and bottom
    assert (px[9:23] == 0).all()
    assert fit_image(Image.new("RGB", (10, 10), (1, 2, 3)), 16, fill=(0, 0, 0)).getpixel((8, 8)) == (1, 2, 3)

    mask = fit_mask(np.full((20, 40), 4), 32)
    assert mask.dtype == np.int64 and set(np.unique(mask)) == {0, 4}
    assert ((mask == 4) == (px[..., 0] == 0)).all()  # same rows are garment vs padding


def test_load_mask_checks(tmp_path):
    m = np.zeros((16, 24), np.uint8)
    m[4:8, 4:8] = 6
    path = tmp_path / "mask.png"
    Image.fromarray(m).save(path)
    out = load_mask(path, size=(24, 16))
    assert out.dtype == np.int64 and np.array_equal(out, m)
    assert np.array_equal(load_mask(np.stack([m] * 3, -1)), m)  # equal RGB channels are fine
    with pytest.raises(ImageInputError, match="16x16"):
        load_mask(path, size=16)
    with pytest.raises(ImageInputError, match="part ids 0-14"):
        load_mask(m * 40)
    with pytest.raises(ImageInputError, match="colours"):
        load_mask(np.stack([m, m, m + 1], -1))
    with pytest.raises(ImageInputError, match="2-D"):
        load_mask(np.zeros((2, 3, 4, 5)))

"""Control signals and the torch Dataset: content, determinism and the tensor contracts."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from armani.data.transforms import (
    BLANK_VALUE,
    GarmentTorchDataset,
    canny_sketch,
    collate,
    partial_from_mask,
    partial_tensors,
    random_partial,
    sketch_tensor,
)
from armani.text import GarmentTokenizer


def _rectangle_image(size: int = 64) -> np.ndarray:
    image = np.full((size, size, 3), 240, np.uint8)
    image[16:48, 20:44] = (30, 60, 200)  # a blue rectangle on light grey
    return image


# -- sketch ---------------------------------------------------------------------------------
def test_canny_edges_lie_on_the_rectangle_border():
    edges = canny_sketch(_rectangle_image())
    assert edges.dtype == np.uint8 and edges.shape == (64, 64)
    assert set(np.unique(edges)) == {0, 255}
    ys, xs = np.nonzero(edges)
    # every edge pixel is within 2 px of the rectangle border ...
    near_border = (
        (np.minimum(np.abs(ys - 16), np.abs(ys - 47)) <= 2) & (xs >= 18) & (xs <= 45)
        | (np.minimum(np.abs(xs - 20), np.abs(xs - 43)) <= 2) & (ys >= 14) & (ys <= 49)
    )
    assert near_border.all()
    # ... and each of the four sides is traced
    assert edges[14:19, 30].any() and edges[45:50, 30].any()
    assert edges[30, 18:23].any() and edges[30, 41:46].any()
    assert not edges[24:40, 26:38].any() and not edges[:8].any()  # flat areas stay blank


def test_canny_works_on_any_size_and_thresholds_matter():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (37, 123, 3), dtype=np.uint8)
    assert canny_sketch(photo).shape == (37, 123)
    loose = canny_sketch(photo, low=10, high=30, blur=0)
    strict = canny_sketch(photo, low=400, high=800, blur=0)
    assert (loose > 0).sum() > (strict > 0).sum()
    assert canny_sketch(_rectangle_image()[..., 0]).any()  # a grey HxW image works too
    with pytest.raises(ValueError, match="uint8"):
        canny_sketch(photo.astype(np.float32))
    with pytest.raises(ValueError, match="low <= high"):
        canny_sketch(photo, low=200, high=100)


# -- partial image --------------------------------------------------------------------------
def test_random_partial_keeps_about_a_quarter_and_blanks_the_rest():
    image = _rectangle_image()
    rng = np.random.default_rng(0)
    fractions, aspects, centres = [], [], []
    for _ in range(200):
        partial, keep = random_partial(image, rng)
        assert keep.dtype == bool and keep.shape == (64, 64)
        assert np.array_equal(partial[keep], image[keep])
        assert (partial[~keep] == BLANK_VALUE).all()
        ys, xs = np.nonzero(keep)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert keep.sum() == h * w  # one axis-aligned rectangle
        fractions.append(keep.mean())
        aspects.append(w / h)
        centres.append((ys.mean(), xs.mean()))
    assert 0.20 <= np.mean(fractions) <= 0.30
    assert min(fractions) >= 0.2 and max(fractions) <= 0.3
    assert min(aspects) < 0.8 and max(aspects) > 1.25  # aspect jitter
    assert np.ptp(np.array(centres), axis=0).min() > 20  # position varies


def test_random_partial_is_deterministic_for_a_seed():
    image = np.random.default_rng(5).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    a = random_partial(image, np.random.default_rng(123), keep_fraction=0.4)
    b = random_partial(image, np.random.default_rng(123), keep_fraction=0.4)
    c = random_partial(image, np.random.default_rng(124), keep_fraction=0.4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert abs(a[1].mean() - 0.4) < 0.05


def test_partial_from_user_mask_and_tensor_contracts():
    image = _rectangle_image(32)
    keep = np.zeros((32, 32), bool)
    keep[:, :10] = True
    partial = partial_from_mask(image, keep)
    assert np.array_equal(partial[:, :10], image[:, :10]) and (partial[:, 10:] == BLANK_VALUE).all()
    with pytest.raises(ValueError, match="same image"):
        partial_from_mask(image, keep[:16])

    p, k = partial_tensors(image, keep)
    assert p.shape == (3, 32, 32) and k.shape == (1, 32, 32) and k.dtype == torch.float32
    assert (p[:, :, 10:] == 0).all()  # blanked pixels are exactly 0
    assert torch.allclose(p[:, 0, 0], torch.tensor([240 / 127.5 - 1] * 3))
    s = sketch_tensor(canny_sketch(image))
    assert s.shape == (1, 32, 32) and set(s.unique().tolist()) == {-1.0, 1.0}


# -- torch dataset --------------------------------------------------------------------------
def _fixture_dataset(n: int = 4, size: int = 40) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    images, masks = [], []
    for i in range(n):
        arr = np.full((size, size, 3), 230, np.uint8)
        arr[8:32, 10 + i : 30 + i] = rng.integers(0, 120, 3)
        images.append(Image.fromarray(arr))
        m = np.zeros((size, size), np.uint8)
        m[8:32, 10 + i : 30 + i] = 1
        m[20:24, 12 + i : 16 + i] = 6  # a pocket
        masks.append(Image.fromarray(m) if i % 2 == 0 else None)  # odd rows: no mask
    data = {
        "image": images,
        "caption": [f"a shirt with {i} buttons" for i in range(n)],
        "mask": masks,
    }
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"), "mask": datasets.Image()})
    return datasets.Dataset.from_dict(data, features=features)


@pytest.fixture(scope="module")
def torch_dataset():
    return GarmentTorchDataset(_fixture_dataset(), image_size=32, tokenizer=GarmentTokenizer(16), seed=7)


def test_items_follow_the_contracts(torch_dataset):
    item = torch_dataset[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
    assert set(item["mask"].unique().tolist()) == {0, 1, 6}  # nearest resize keeps ids
    assert item["has_mask"].dtype == torch.bool and bool(item["has_mask"])
    assert item["sketch"].shape == (1, 32, 32) and set(item["sketch"].unique().tolist()) == {-1.0, 1.0}
    assert item["keep_mask"].shape == (1, 32, 32) and set(item["keep_mask"].unique().tolist()) == {0.0, 1.0}
    assert (item["partial"] * (1 - item["keep_mask"]) == 0).all()
    kept = item["keep_mask"].bool().expand(3, -1, -1)
    assert torch.equal(item["partial"][kept], item["image"][kept])
    assert 0.15 < item["keep_mask"].mean() < 0.35
    assert item["index"].dtype == torch.int64 and item["index"].item() == 0
    assert item["caption"] == "a shirt with 0 buttons"
    assert torch.equal(item["text_ids"], GarmentTokenizer(16)(item["caption"]).ids[0])
    # resize 40 -> 32 keeps the garment: mask body pixels are dark in the image
    body = item["mask"] == 1
    assert item["image"][:, body].mean() < 0 < item["image"][:, item["mask"] == 0].mean()

    missing = torch_dataset[1]
    assert not bool(missing["has_mask"]) and (missing["mask"] == 0).all()


def test_same_seed_epoch_index_gives_identical_items_and_epochs_differ(torch_dataset):
    other = GarmentTorchDataset(_fixture_dataset(), image_size=32, tokenizer=GarmentTokenizer(16), seed=7)
    torch_dataset.set_epoch(3)
    other.set_epoch(3)
    a, b = torch_dataset[2], other[2]
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
    crops = set()
    for epoch in range(5):
        torch_dataset.set_epoch(epoch)
        crops.add(torch_dataset[2]["keep_mask"].numpy().tobytes())
    assert len(crops) >= 4  # a fresh crop (almost) every epoch
    other_seed = GarmentTorchDataset(_fixture_dataset(), image_size=32, tokenizer=GarmentTokenizer(16), seed=8)
    other_seed.set_epoch(3)
    torch_dataset.set_epoch(3)
    assert not torch.equal(other_seed[2]["keep_mask"], torch_dataset[2]["keep_mask"])
    torch_dataset.set_epoch(0)


def test_collate_and_dataloader_workers_agree(torch_dataset):
    batch = collate([torch_dataset[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["text_ids"].shape == (4, 16)
    assert batch["has_mask"].tolist() == [True, False, True, False]
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["caption"] == [f"a shirt with {i} buttons" for i in range(4)]
    loader = torch.utils.data.DataLoader(torch_dataset, batch_size=2, collate_fn=collate, num_workers=0)
    again = [b for b in loader]
    assert torch.equal(torch.cat([b["partial"] for b in again]), batch["partial"])
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(IndexError):
        torch_dataset[4]


def test_missing_columns_and_mismatched_masks_are_clear_errors():
    ds = datasets.Dataset.from_dict({"img": [Image.new("RGB", (16, 16))], "text": ["a coat"]})
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['caption', 'image'\].*\['img', 'text'\]"):
        GarmentTorchDataset(ds, 16, GarmentTokenizer(8))
    bad = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (16, 16))], "caption": ["a coat"], "mask": [Image.new("L", (8, 8))]}
    )
    with pytest.raises(ValueError, match="8x8 pixels but the image is 16x16"):
        GarmentTorchDataset(bad, 16, GarmentTokenizer(8))[0]

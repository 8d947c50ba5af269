"""load_garment_dataset: every kind of source, the column mapping and clear errors."""

from __future__ import annotations

import json
from unittest import mock

import datasets
import numpy as np
import pytest
from PIL import Image

from armani.data import loader
from armani.data.loader import STANDARD_COLUMNS, load_garment_dataset
from armani.data.transforms import GarmentTorchDataset
from armani.text import GarmentTokenizer

N = 3


def _garment(i: int) -> Image.Image:
    return Image.fromarray(np.full((16, 16, 3), 40 * (i + 1), np.uint8))


def _mask(i: int) -> Image.Image:
    m = np.zeros((16, 16), np.uint8)
    m[4:12, 4:12] = i + 1
    return Image.fromarray(m)


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "hf_cache"


@pytest.fixture()
def imagefolder(tmp_path):
    """An imagefolder with captions under 'text', masks via 'mask_file_name', attributes as JSON."""
    root = tmp_path / "shop"
    root.mkdir()
    rows = []
    for i in range(N):
        _garment(i).save(root / f"g{i}.png")
        _mask(i).save(root / f"m{i}.png")
        rows.append({"file_name": f"g{i}.png", "mask_file_name": f"m{i}.png", "text": f"garment {i}",
                     "attrs": json.dumps({"buttons": i})})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def _in_memory() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "photo": [_garment(i) for i in range(N)],
            "description": [f"garment {i}" for i in range(N)],
            "parts": [np.asarray(_mask(i)).tolist() for i in range(N)],  # masks as 2-D arrays
            "extra": list(range(N)),
        },
        features=datasets.Features(
            {
                "photo": datasets.Image(),
                "description": datasets.Value("string"),
                "parts": datasets.List(datasets.List(datasets.Value("uint8"))),
                "extra": datasets.Value("int64"),
            }
        ),
    )


def _check_standard(ds: datasets.Dataset, with_masks: bool) -> None:
    assert ds.column_names == list(STANDARD_COLUMNS)
    assert isinstance(ds.features["image"], datasets.Image)
    assert len(ds) == N
    by_caption = {row["caption"]: row for row in ds}
    assert set(by_caption) == {f"garment {i}" for i in range(N)}
    for i in range(N):
        row = by_caption[f"garment {i}"]
        assert np.asarray(row["image"].convert("RGB"))[0, 0, 0] == 40 * (i + 1)  # right image for the caption
        if with_masks:
            assert np.asarray(row["mask"]).max() == i + 1
        else:
            assert row["mask"] is None  # missing: the segmenter fills it later


# -- sources --------------------------------------------------------------------------------
def test_imagefolder_with_renamed_columns(imagefolder, cache):
    ds = load_garment_dataset(imagefolder, caption_column="text", mask_column="mask",
                              attributes_column="attrs", cache_dir=cache)
    _check_standard(ds, with_masks=True)
    assert {json.loads(a)["buttons"] for a in ds["attributes"]} == set(range(N))
    # without mask_column the rows are marked as having no mask
    plain = load_garment_dataset(imagefolder, caption_column="text", cache_dir=cache)
    _check_standard(plain, with_masks=False)
    assert plain["attributes"] == [None] * N


def test_saved_dataset_and_dataset_dict(tmp_path):
    ds = _in_memory()
    ds.save_to_disk(tmp_path / "single")
    out = load_garment_dataset(tmp_path / "single", image_column="photo", caption_column="description",
                               mask_column="parts")
    _check_standard(out, with_masks=True)

    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(tmp_path / "dict")
    test = load_garment_dataset(str(tmp_path / "dict"), split="test", image_column="photo",
                                caption_column="description")
    assert len(test) == 1 and test[0]["caption"] == "garment 0"
    with pytest.raises(ValueError, match=r"no split 'validation'; its splits are \['train', 'test'\]"):
        load_garment_dataset(tmp_path / "dict", split="validation", image_column="photo",
                             caption_column="description")
    with pytest.raises(ValueError, match="several splits"):
        load_garment_dataset(tmp_path / "dict", split=None, image_column="photo", caption_column="description")


def test_parquet_file(tmp_path, cache):
    path = tmp_path / "shop.parquet"
    _in_memory().to_parquet(str(path))
    out = load_garment_dataset(path, split=None, image_column="photo", caption_column="description",
                               mask_column="parts", cache_dir=cache)
    _check_standard(out, with_masks=True)
    torch_ds = GarmentTorchDataset(out, image_size=16, tokenizer=GarmentTokenizer(8))
    item = torch_ds[2]
    assert bool(item["has_mask"]) and set(item["mask"].unique().tolist()) == {0, 3}


def test_jsonl_with_relative_image_paths(tmp_path, cache):
    folder = tmp_path / "json_shop"
    (folder / "img").mkdir(parents=True)
    lines = []
    for i in range(N):
        _garment(i).save(folder / "img" / f"{i}.png")
        lines.append(json.dumps({"path": f"img/{i}.png", "caption": f"garment {i}"}))
    (folder / "data.jsonl").write_text("\n".join(lines))
    out = load_garment_dataset(folder / "data.jsonl", image_column="path", cache_dir=cache)
    _check_standard(out, with_masks=False)


def test_hub_id_is_passed_through_untouched():
    fake = datasets.DatasetDict({"train": _in_memory()})
    with mock.patch.object(loader.datasets, "load_dataset", return_value=fake["train"]) as load:
        out = load_garment_dataset("SomeOrg/Fashion-Captions_v2", split="train", image_column="photo",
                                   caption_column="description", revision="main")
    load.assert_called_once_with("SomeOrg/Fashion-Captions_v2", split="train", revision="main")
    assert out.column_names == list(STANDARD_COLUMNS) and len(out) == N
    with mock.patch.object(loader.datasets, "load_dataset", return_value=fake) as load:
        load_garment_dataset("fashion", split=None, image_column="photo", caption_column="description")
    assert load.call_args.args == ("fashion",)


# -- errors ---------------------------------------------------------------------------------
def test_missing_columns_list_the_available_ones(tmp_path):
    _in_memory().save_to_disk(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"no image column 'image'.*\['photo', 'description', 'parts', 'extra'\]"):
        load_garment_dataset(tmp_path / "ds", caption_column="description")
    with pytest.raises(ValueError, match="no caption column 'caption', no mask column 'seg'"):
        load_garment_dataset(tmp_path / "ds", image_column="photo", mask_column="seg")
    with pytest.raises(ValueError, match="must hold text"):
        load_garment_dataset(tmp_path / "ds", image_column="photo", caption_column="extra")
    with pytest.raises(ValueError, match="cannot be read as images"):
        load_garment_dataset(tmp_path / "ds", image_column="extra", caption_column="description")
    with pytest.raises(ValueError, match="no file or folder"):
        load_garment_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no file or folder"):
        load_garment_dataset("./data/missing.parquet")


def test_corrupt_image_file_is_a_clear_error_naming_the_row(imagefolder, cache):
    (imagefolder / "g1.png").write_bytes(b"this is not a png")
    ds = load_garment_dataset(imagefolder, caption_column="text", cache_dir=cache)
    torch_ds = GarmentTorchDataset(ds, image_size=16, tokenizer=GarmentTokenizer(8))
    rows_ok, errors = 0, []
    for i in range(N):
        try:
            torch_ds[i]
            rows_ok += 1
        except ValueError as err:
            errors.append(str(err))
    assert rows_ok == N - 1 and len(errors) == 1
    assert "g1.png" in errors[0] and "not an image file" in errors[0]


def test_a_missing_mask_column_can_mean_no_masks(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(N):
        _garment(i).save(root / f"g{i}.png")
    (root / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"g{i}.png", "text": f"garment {i}"})
                                                   for i in range(N)))
    with pytest.raises(ValueError, match="no mask column 'mask'"):
        load_garment_dataset(root, caption_column="text", mask_column="mask", cache_dir=tmp_path / "c")
    ds = load_garment_dataset(root, caption_column="text", mask_column="mask", missing_ok=True,
                              cache_dir=tmp_path / "c")
    assert ds.column_names == list(STANDARD_COLUMNS) and ds["mask"] == [None] * N

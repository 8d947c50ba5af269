"""Load a real garment dataset from any Hugging Face ``datasets`` source, with standard columns.

Every training stage reads the same four columns, whatever the source called them:

- ``image``: a ``datasets.Image()`` column (decodes to PIL),
- ``caption``: the product text,
- ``mask``: a part mask per row (ids 0..14, see :mod:`armani.parts`) as an ``L`` image or
  a 2-D array, or ``None`` where the source has no masks: missing, for the segmenter to
  fill later (``GarmentTorchDataset`` then reports ``has_mask`` False),
- ``attributes``: per-row garment attributes as the source stores them, or ``None``.

Other columns are dropped. Sources, tried in this order:

1. a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``);
1b. a folder in the DeepFashion-MultiModal layout (``images/``, ``segm/``, ``captions.json``;
   see :mod:`armani.data.deepfashion`): one ``train`` split with image, caption and mask;
2. a local image folder with ``metadata.jsonl`` / ``metadata.csv``
   (``load_dataset("imagefolder", data_dir=...)``, so the image column is called ``image``;
   a metadata field ``mask_file_name`` pointing at an ``L`` PNG becomes a ``mask`` image
   column: pass ``mask_column="mask"``);
3. another local folder (``datasets`` infers the format: parquet, json, csv, ...);
4. a local ``.parquet`` / ``.json`` / ``.jsonl`` / ``.csv`` file; relative image paths
   in json/csv/parquet files are resolved against the file's folder;
5. anything else is a hub id, handed to ``datasets.load_dataset`` exactly as given.

``split`` picks one split of a multi-split source; ``None`` is accepted only when the
source holds exactly one split.

Training does not read these rows directly: :mod:`armani.data.prepare` turns them into
letterboxed training rows once (masks mapped or predicted) and writes the data report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

STANDARD_COLUMNS: tuple[str, ...] = ("image", "caption", "mask", "attributes")
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
_METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def load_garment_dataset(
    source: str | Path,
    split: str | None = "train",
    image_column: str = "image",
    caption_column: str = "caption",
    mask_column: str | None = None,
    attributes_column: str | None = None,
    cache_dir: str | Path | None = None,
    missing_ok: bool = False,
    **load_kwargs: Any,
) -> datasets.Dataset:
    """Load ``source`` and return a ``datasets.Dataset`` with columns image, caption, mask, attributes.

    ``cache_dir`` and ``load_kwargs`` (e.g. ``name=`` or ``revision=`` for a hub dataset)
    go to ``datasets.load_dataset``. Missing columns raise a ``ValueError`` that lists
    the columns the source does have; with ``missing_ok`` a mask or attributes column the
    source lacks means "none" (the training config's defaults ``mask_column="mask"`` and
    ``attributes_column="attributes"`` then fit a folder of photos and captions alone).
    """
    raw = _load_raw(source, split, cache_dir, load_kwargs)
    if missing_ok and mask_column is not None and mask_column not in raw.column_names:
        mask_column = None
    if missing_ok and attributes_column is not None and attributes_column not in raw.column_names:
        attributes_column = None
    return standardize_columns(
        raw,
        image_column=image_column,
        caption_column=caption_column,
        mask_column=mask_column,
        attributes_column=attributes_column,
        source=str(source),
    )


def standardize_columns(
    ds: datasets.Dataset,
    image_column: str = "image",
    caption_column: str = "caption",
    mask_column: str | None = None,
    attributes_column: str | None = None,
    source: str = "the dataset",
) -> datasets.Dataset:
    """Select and rename the source's columns to the standard four (see module docstring)."""
    wanted = {"image": image_column, "caption": caption_column}
    if mask_column is not None:
        wanted["mask"] = mask_column
    if attributes_column is not None:
        wanted["attributes"] = attributes_column
    missing = [f"{role} column {col!r}" for role, col in wanted.items() if col not in ds.column_names]
    if missing:
        raise ValueError(
            f"{source} has no {', no '.join(missing)}; its columns are {ds.column_names}. "
            "Pass image_column=, caption_column=, mask_column= or attributes_column= to name them."
        )
    if len(set(wanted.values())) != len(wanted):
        raise ValueError(f"one source column cannot fill two roles: {wanted}")

    ds = ds.select_columns(list(wanted.values()))
    ds = ds.rename_columns({col: role for role, col in wanted.items() if col != role})

    caption_type = ds.features["caption"]
    if not (isinstance(caption_type, datasets.Value) and caption_type.dtype in ("string", "large_string")):
        raise ValueError(
            f"the caption column {caption_column!r} must hold text (one string per image), got {caption_type}"
        )
    ds = _cast_to_image(ds, "image", image_column)
    if "mask" in ds.column_names:
        # Masks stored as file paths or image bytes become L images; 2-D arrays stay arrays.
        if _looks_like_image_feature(ds.features["mask"]):
            ds = _cast_to_image(ds, "mask", mask_column)
    else:
        ds = ds.add_column("mask", [None] * len(ds), feature=datasets.Image())  # missing: segmenter fills later
    if "attributes" not in ds.column_names:
        ds = ds.add_column("attributes", [None] * len(ds), feature=datasets.Value("string"))
    return ds.select_columns(list(STANDARD_COLUMNS))


# -- sources --------------------------------------------------------------------------------
def _load_raw(source: str | Path, split: str | None, cache_dir: str | Path | None, load_kwargs: dict) -> datasets.Dataset:
    kwargs = dict(load_kwargs)
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    path = Path(source).expanduser()
    if not path.exists():
        if isinstance(source, Path) or _looks_like_local_path(str(source)):
            raise ValueError(f"no file or folder at {source}")
        # A hub id: passed through untouched.
        return _pick_split(datasets.load_dataset(source, split=split, **kwargs), split, str(source))

    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.Dataset) and split not in (None, "train"):
                # One saved dataset without splits is the training split; any other name is
                # absent, so a run never validates on its own training rows by accident.
                raise ValueError(f"{source} is one saved dataset without splits: it has no split {split!r} "
                                 "(only 'train')")
            return _pick_split(loaded, split, str(source))
        from armani.data.deepfashion import is_deepfashion_multimodal, load_deepfashion_multimodal

        if is_deepfashion_multimodal(path):
            return _pick_split(load_deepfashion_multimodal(path), split, str(source))
        if any(path.glob(f"**/{name}") for name in _METADATA_FILES):
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), **kwargs)
        else:
            loaded = datasets.load_dataset(str(path), **kwargs)
        return _pick_split(loaded, split, str(source))

    builder = _FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(
            f"{path.name}: unsupported file type {path.suffix!r}; give a folder, a hub id or a "
            f"{', '.join(sorted(_FILE_BUILDERS))} file"
        )
    loaded = datasets.load_dataset(builder, data_files={"train": str(path)}, **kwargs)
    ds = _pick_split(loaded, split, str(source))  # a single file is one split, "train"
    return _resolve_relative_paths(ds, path.parent)


def _looks_like_local_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or "\\" in source
        or Path(source).suffix.lower() in _FILE_BUILDERS
        or source.count("/") > 1  # hub ids are "name" or "owner/name"
    )


def _pick_split(loaded: datasets.Dataset | datasets.DatasetDict, split: str | None, source: str) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if not isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"{source} loaded as a {type(loaded).__name__}; expected a Dataset or DatasetDict")
    splits = list(loaded.keys())
    if split is None:
        if len(splits) == 1:
            return loaded[splits[0]]
        raise ValueError(f"{source} has several splits {splits}; choose one with split=")
    if split not in loaded:
        raise ValueError(f"{source} has no split {split!r}; its splits are {splits}")
    return loaded[split]


# -- column casting -------------------------------------------------------------------------
def _looks_like_image_feature(feature: Any) -> bool:
    """An Image feature, a string (file path) column or a {bytes, path} struct."""
    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string", "binary", "large_binary")
    return isinstance(feature, dict) and set(feature) <= {"bytes", "path"}


def _cast_to_image(ds: datasets.Dataset, column: str, source_name: str | None) -> datasets.Dataset:
    feature = ds.features[column]
    if isinstance(feature, datasets.Image) and feature.decode:
        return ds
    if not _looks_like_image_feature(feature):
        raise ValueError(
            f"column {source_name!r} cannot be read as images: it holds {feature}; expected images, "
            "image file paths or image bytes"
        )
    try:
        return ds.cast_column(column, datasets.Image())
    except (ValueError, TypeError) as err:
        raise ValueError(f"column {source_name!r} cannot be read as images: {err}") from err


def _resolve_relative_paths(ds: datasets.Dataset, base: Path) -> datasets.Dataset:
    """Make relative image paths in string columns absolute against ``base`` where the file exists.

    Only plain string columns whose first value names an existing file under ``base`` are
    touched, so captions and other text are left alone.
    """
    if len(ds) == 0:
        return ds
    first = ds[0]
    columns = [
        name
        for name, feature in ds.features.items()
        if isinstance(feature, datasets.Value)
        and feature.dtype in ("string", "large_string")
        and isinstance(first[name], str)
        and first[name]
        and not Path(first[name]).is_absolute()
        and (base / first[name]).is_file()
    ]
    if not columns:
        return ds

    def absolute(batch: dict) -> dict:
        return {c: [v if v is None or Path(v).is_absolute() else str(base / v) for v in batch[c]] for c in columns}

    return ds.map(absolute, batched=True, desc="resolving image paths")

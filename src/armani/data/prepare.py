"""Prepare a real garment dataset for training, once: photos as photos, masks mapped or predicted.

Every stage of a run on real data (``data.source`` not ``procedural``) reads the rows this
module writes, never the source directly. For each row of the source (after
:func:`armani.data.loader.load_garment_dataset` picked its columns):

1. the photo is decoded with :func:`armani.data.images.load_image_with_notes` (EXIF
   orientation applied, any mode converted to RGB, huge files decoded at reduced scale) and
   letterboxed to ``data.image_size`` with :func:`~armani.data.images.fit_image` (resized to
   fit, padded with white: never stretched);
2. its mask, where the source has one, is mapped to our 15 parts with ``data.label_map``
   (:mod:`armani.data.label_maps`) and letterboxed the same way (nearest, background padding);
3. where the source has no mask, or the label map leaves the parts of garment pixels open,
   the segmenter ``data.mask_segmenter`` (the shipped one by default) predicts them, at its own
   training resolution;
4. rows that cannot be used are skipped and counted, with the reason: unreadable or damaged
   files, images under 8 pixels a side, empty captions, blank images, bad masks, labels the
   label map does not know, and "no garment": less than ``MIN_GARMENT_FRACTION`` of the image
   is garment in its (given or predicted) mask.

The result is cached under ``data.cache_dir/prepared/<name>-<split>-<key>/`` (a
``save_to_disk`` dataset with columns image, caption, mask, attributes, mask_source,
source_row, and ``data_report.json``). The key hashes the source dataset's ``datasets``
fingerprint with everything that changes the rows (image size, label map, the predicting
segmenter's weights, this module's version), so a second run, or every later stage of the
same run, reuses it, and a changed source or setting prepares afresh.

The work goes in chunks of ``CHUNK_ROWS`` rows, each written atomically under
``<key>.partial/``: a run killed during preparation (mask prediction included) continues
from the last finished chunk when started again.

The data report (``data_report.json``, printed by ``train.py``) says how many rows were
read, kept and skipped (and why, with examples), what was fixed (EXIF rotations, mode
conversions, downscaled photos), caption lengths in words, where the masks came from
(given, label-mapped, predicted, refined), and mask coverage: the mean garment fraction
and how often each part appears.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, ImageOps

from armani.data.images import ImageInputError, fit_image, load_image_with_notes, load_mask
from armani.data.label_maps import GARMENT, LabelMap, resolve_label_map
from armani.locations import shipped_checkpoint
from armani.parts import PART_ID, PART_NAMES

PREPARE_VERSION = 1
CHUNK_ROWS = 256
MIN_GARMENT_FRACTION = 0.02  # of the letterboxed image; below it a photo shows no garment
BLANK_STD = 2.0  # grey-level standard deviation below which an image is one flat colour
PREDICT_BATCH = 32
_EXAMPLES_PER_REASON = 3
_ORIENTATION_TRANSPOSE = {  # EXIF orientation -> the PIL transpose that makes the photo upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

FEATURES = datasets.Features({
    "image": datasets.Image(),
    "caption": datasets.Value("string"),
    "mask": datasets.Image(),
    "attributes": datasets.Value("string"),
    "mask_source": datasets.Value("string"),  # given | mapped | predicted | refined
    "source_row": datasets.Value("int64"),
})


class DataError(ValueError):
    """Real data that cannot be trained on; the message says why and what to change."""


# -- the segmenter that fills missing masks ---------------------------------------------------
def resolve_segmenter_dir(spec: str | None) -> Path | None:
    """``"shipped"``, a segmenter folder, a saved pipeline or a run -> the folder with model.safetensors."""
    if spec is None or str(spec).lower() in ("", "none", "null"):
        return None
    path = shipped_checkpoint() / "segmenter" if spec == "shipped" else Path(spec).expanduser()
    for candidate in (path, path / "segmenter", path / "segmenter" / "final"):
        if (candidate / "model.safetensors").is_file() and (candidate / "config.json").is_file():
            return candidate
    return None


def _segmenter_image_size(folder: Path, default: int) -> int:
    """The resolution the segmenter was trained at: ``data.image_size`` of the run config
    exported beside it (or beside its pipeline), else ``default``."""
    import yaml

    for cfg_file in (folder / "run_config.yaml", folder.parent / "run_config.yaml"):
        if cfg_file.is_file():
            try:
                return int(yaml.safe_load(cfg_file.read_text())["data"]["image_size"])
            except (KeyError, TypeError, ValueError, yaml.YAMLError):
                continue
    return default


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class MaskPredictor:
    """Loads the segmenter lazily (only when a row needs a prediction) and predicts in batches."""

    def __init__(self, folder: Path | None, spec: str | None, image_size: int):
        self.folder, self.spec, self.image_size = folder, spec, image_size
        self._model = None

    @property
    def identity(self) -> str:
        return "none" if self.folder is None else _file_digest(self.folder / "model.safetensors")

    def _load(self):
        if self._model is None:
            if self.folder is None:
                raise DataError(
                    f"some rows have no part mask (or a label map leaves garment parts open) and no segmenter "
                    f"was found at data.mask_segmenter={self.spec!r}; give a segmenter folder, a saved pipeline "
                    "or a training run, or masks for every row")
            from armani.models.segmenter import Segmenter

            self._model = Segmenter.from_pretrained(self.folder).eval()
            self.native = _segmenter_image_size(self.folder, self.image_size)
        return self._model

    def predict(self, photos: list[Image.Image]) -> list[np.ndarray]:
        """RGB photos -> uint8 (S, S) part masks, letterboxed like ``fit_image(photo, S)``."""
        import torch

        from armani.data.images import pil_to_tensor

        model = self._load()
        out: list[np.ndarray] = []
        for start in range(0, len(photos), PREDICT_BATCH):
            batch = torch.stack([pil_to_tensor(fit_image(p, self.native)) for p in photos[start:start + PREDICT_BATCH]])
            with torch.no_grad():
                pred = model.predict(batch).to(torch.uint8).numpy()  # (B, native, native)
            for m in pred:
                if self.native != self.image_size:
                    m = np.asarray(Image.fromarray(m).resize((self.image_size, self.image_size), Image.Resampling.NEAREST))
                out.append(m)
        return out


# -- reading one row -------------------------------------------------------------------------
def _cell_source(cell: Any) -> Any:
    """A ``{"bytes", "path"}`` cell -> bytes or a path (what the image loaders take)."""
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return cell["bytes"]
        return cell.get("path")
    return cell


def _cell_name(cell: Any, row: int) -> str:
    path = cell.get("path") if isinstance(cell, dict) else cell if isinstance(cell, str) else None
    return f"row {row} ({Path(path).name})" if path else f"row {row}"


def _exif_orientation(cell: Any) -> int:
    src = _cell_source(cell)
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src) as img:
            return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - the photo itself already decoded; orientation is a detail
        return 1


def _read_raw_mask(cell: Any) -> np.ndarray:
    """A mask cell (image file/bytes/PIL or a 2-D array) -> its integer labels, unvalidated."""
    src = _cell_source(cell)
    if isinstance(src, (str, Path, bytes, bytearray)):
        if isinstance(src, (str, Path)) and not Path(src).is_file():
            raise ImageInputError(f"no mask file at {src}")
        try:
            with Image.open(io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray)) else src) as opened:
                opened.load()
                src = opened.copy()
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageInputError(f"the mask is not a readable image ({err})") from err
    if isinstance(src, Image.Image):
        arr = np.asarray(src)
    else:
        arr = np.asarray(src)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[:, :, :3]
        if not (np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])):
            raise ImageInputError("the mask has colours; masks must hold one label id per pixel (an 'L' or 'P' PNG)")
        arr = rgb[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ImageInputError(f"a mask must be a 2-D map of integer labels, got shape {arr.shape}, dtype {arr.dtype}")
    return arr


def _pad_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Letterbox a uint8 label map like ``fit_image`` (nearest, background padding)."""
    pil = Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8)))
    return np.asarray(ImageOps.pad(pil, (size, size), method=Image.Resampling.NEAREST, color=0), dtype=np.uint8)


def _png(arr_or_img: np.ndarray | Image.Image) -> dict:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _skip_reason(err: ImageInputError) -> str:
    text = str(err)
    if "pixels; it needs at least" in text:
        return "image too small"
    if "too large" in text:
        return "image too large"
    return "unreadable image"


# -- one chunk ---------------------------------------------------------------------------------
def _prepare_chunk(rows: dict[str, list], start: int, size: int, label_map: LabelMap | None,
                   predictor: MaskPredictor) -> tuple[dict[str, list], dict]:
    """Rows ``start..`` of the standardised source -> (kept rows, this chunk's report counts)."""
    n = len(rows["caption"])
    stats = {"rows": n, "read": 0, "skipped": Counter(), "examples": {}, "fixes": Counter(),
             "mask_sources": Counter(), "caption_words": [], "garment_fraction": [], "part_images": Counter(),
             "min_side": None, "max_side": None, "with_attributes": 0}

    def skip(reason: str, message: str) -> None:
        stats["skipped"][reason] += 1
        stats["examples"].setdefault(reason, [])
        if len(stats["examples"][reason]) < _EXAMPLES_PER_REASON:
            stats["examples"][reason].append(message)

    pending: list[dict] = []  # rows decoded so far, in order
    for i in range(n):
        row = start + i
        cell = rows["image"][i]
        where = _cell_name(cell, row)
        try:
            loaded = load_image_with_notes(_cell_source(cell))
        except ImageInputError as err:
            skip(_skip_reason(err), f"{where}: {err}")
            continue
        stats["read"] += 1
        photo = loaded.image
        for note in loaded.notes:
            key = ("exif_rotated" if "EXIF" in note else "downscaled" if "downscaled" in note or "reduced scale" in note
                   else "mode_converted")
            stats["fixes"][key] += 1
        w, h = photo.size
        stats["min_side"] = min(stats["min_side"] or 10**9, w, h)
        stats["max_side"] = max(stats["max_side"] or 0, w, h)
        caption = rows["caption"][i]
        if not isinstance(caption, str) or not caption.strip():
            skip("empty caption", f"{where}: no caption")
            continue
        grey = np.asarray(photo.convert("L"), dtype=np.float32)
        if float(grey.std()) < BLANK_STD:
            skip("blank image", f"{where}: the image is one flat colour")
            continue
        mask, source = None, "predicted"
        raw_mask = rows["mask"][i]
        if raw_mask is not None:
            try:
                labels = _read_raw_mask(raw_mask)
                if labels.shape != (h, w):
                    orientation = _exif_orientation(cell)
                    if orientation in _ORIENTATION_TRANSPOSE and labels.shape == (w, h):
                        # A mask drawn on the stored (unrotated) pixels: turn it like the photo.
                        labels = np.asarray(Image.fromarray(labels.astype(np.int32)).transpose(
                            _ORIENTATION_TRANSPOSE[orientation]))
                    else:
                        raise ImageInputError(f"the mask is {labels.shape[1]}x{labels.shape[0]} pixels but the "
                                              f"image is {w}x{h}")
                if label_map is not None:
                    mapped = label_map.apply(labels)
                    source = "refined" if (mapped == GARMENT).any() else "mapped"
                else:
                    mapped = load_mask(labels).astype(np.uint8)  # validates ids 0..14
                    source = "given"
                mask = _pad_mask(mapped, size)
            except ValueError as err:  # ImageInputError is a ValueError; so are unknown labels
                reason = "mask label not in the label map" if "not in the label map" in str(err) else "bad mask"
                skip(reason, f"{where}: {err}")
                continue
        pending.append({"row": row, "photo": photo, "caption": caption, "mask": mask, "source": source,
                        "attributes": rows["attributes"][i]})

    # Masks the source does not give (whole or in part) come from the segmenter, in batches.
    need = [p for p in pending if p["mask"] is None or p["source"] == "refined"]
    if need:
        for p, pred in zip(need, predictor.predict([p["photo"] for p in need])):
            if p["mask"] is None:
                p["mask"] = pred
            else:
                open_ = p["mask"] == GARMENT
                p["mask"] = np.where(open_, np.where(pred != 0, pred, PART_ID["body"]), p["mask"]).astype(np.uint8)

    out: dict[str, list] = {k: [] for k in FEATURES}
    for p in pending:
        mask = p["mask"]
        fraction = float((mask != 0).mean())
        if fraction < MIN_GARMENT_FRACTION:
            what = "predicted" if p["source"] == "predicted" else "given"
            skip("no garment found", f"row {p['row']}: only {fraction:.1%} of the image is garment in its {what} mask")
            continue
        stats["mask_sources"][p["source"]] += 1
        stats["garment_fraction"].append(fraction)
        for part in np.unique(mask):
            stats["part_images"][PART_NAMES[int(part)]] += 1
        stats["caption_words"].append(len(p["caption"].split()))
        attrs = p["attributes"]
        if attrs is not None:
            stats["with_attributes"] += 1
            attrs = attrs if isinstance(attrs, str) else json.dumps(attrs, default=str)
        out["image"].append(_png(fit_image(p["photo"], size)))
        out["caption"].append(p["caption"])
        out["mask"].append(_png(mask))
        out["attributes"].append(attrs)
        out["mask_source"].append(p["source"])
        out["source_row"].append(p["row"])
    return out, stats


# -- the cache -----------------------------------------------------------------------------
def _slug(source: str) -> str:
    name = Path(str(source).rstrip("/")).name or str(source)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "data"


def load_source(cfg, split: str) -> datasets.Dataset | None:
    """The source's rows for ``split`` ("train" or "val") with the standard columns; None
    when the source has no such split (only an error for "train")."""
    from armani.data.loader import load_garment_dataset

    name = {"train": cfg.train_split, "val": cfg.val_split}.get(split)
    if name is None:
        return None
    try:
        return load_garment_dataset(cfg.source, split=name, image_column=cfg.image_column,
                                    caption_column=cfg.caption_column, mask_column=cfg.mask_column,
                                    attributes_column=getattr(cfg, "attributes_column", None), missing_ok=True)
    except (KeyError, ValueError) as err:
        if split == "train":
            raise DataError(f"data.source={cfg.source}: {err}") from err
        if "split" not in str(err):
            raise DataError(f"data.source={cfg.source} ({split} split): {err}") from err
        return None


def effective_label_map(cfg) -> LabelMap | None:
    """``data.label_map``, or the DeepFashion-MultiModal preset for a folder in that layout."""
    if cfg.label_map is None and isinstance(cfg.source, str):
        from armani.data.deepfashion import LABEL_MAP, is_deepfashion_multimodal

        if Path(cfg.source).expanduser().is_dir() and is_deepfashion_multimodal(Path(cfg.source).expanduser()):
            return resolve_label_map(LABEL_MAP)
    try:
        return resolve_label_map(cfg.label_map)
    except ValueError as err:
        raise DataError(f"data.label_map: {err}") from err


def prepared_dir(cfg, split: str, raw: datasets.Dataset, label_map: LabelMap | None, predictor: MaskPredictor) -> Path:
    key = json.dumps({
        "version": PREPARE_VERSION, "fingerprint": raw._fingerprint, "rows": len(raw), "split": split,
        "image_size": cfg.image_size, "label_map": None if label_map is None else label_map.as_dict(),
        "segmenter": predictor.identity, "min_garment_fraction": MIN_GARMENT_FRACTION, "blank_std": BLANK_STD,
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cfg.cache_dir) / "prepared" / f"{_slug(cfg.source)}-{split}-{digest}"


def prepare_split(cfg, split: str, accelerator=None, *, chunk_rows: int = CHUNK_ROWS, progress: bool = True,
                  on_chunk: Callable[[int], None] | None = None) -> datasets.Dataset | None:
    """The prepared rows of ``split`` ("train"/"val") of ``cfg.source`` (a ``DataConfig``);
    prepared on first use, then read from the cache. None when the source has no such split.

    ``on_chunk(i)`` is called after chunk ``i`` is written (tests interrupt a run with it).
    Under multi-process launch the main process prepares while the others wait.
    """
    out, _ = prepare_with_report(cfg, split, accelerator, chunk_rows=chunk_rows, progress=progress,
                                 on_chunk=on_chunk)
    return out


def prepare_with_report(cfg, split: str, accelerator=None, *, chunk_rows: int = CHUNK_ROWS, progress: bool = True,
                        on_chunk: Callable[[int], None] | None = None) -> tuple[datasets.Dataset | None, dict | None]:
    """:func:`prepare_split` and its data report (a dict, see the module docstring)."""
    raw = load_source(cfg, split)
    if raw is None:
        return None, None
    label_map = effective_label_map(cfg)
    seg_dir = resolve_segmenter_dir(cfg.mask_segmenter)
    predictor = MaskPredictor(seg_dir, cfg.mask_segmenter, cfg.image_size)
    path = prepared_dir(cfg, split, raw, label_map, predictor)
    ctx = accelerator.main_process_first() if accelerator is not None else nullcontext()
    with ctx:
        main = accelerator is None or accelerator.is_main_process
        if not (path / "data_report.json").is_file() and main:
            _build(cfg, split, raw, label_map, predictor, path, chunk_rows, progress, on_chunk)
        report = json.loads((path / "data_report.json").read_text())
        return datasets.load_from_disk(str(path / "dataset")), report


def _build(cfg, split, raw, label_map, predictor, path: Path, chunk_rows: int, progress: bool, on_chunk) -> None:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    work = path.with_name(path.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    ds = raw.with_format(None)
    for column in ("image", "mask"):
        if isinstance(ds.features[column], datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
    n = len(ds)
    chunks = range(0, n, chunk_rows)
    done = {int(p.name.split("-")[1]) for p in work.glob("chunk-*") if (p / "report.json").is_file()}
    resumed = sum(min(chunk_rows, n - i * chunk_rows) for i in done)
    what = "predicting masks" if not label_map or any(v == GARMENT for _, v in label_map.mapping) else "mapping masks"
    bar = tqdm(total=n, initial=resumed, desc=f"preparing {split} ({what} where missing)", disable=not progress,
               unit="img", dynamic_ncols=True)
    if done:
        bar.write(f"[data] resuming preparation of {split}: {len(done)} of {len(chunks)} chunks already done")
    for index, start in enumerate(chunks):
        if index in done:
            continue
        rows = ds[start:start + chunk_rows]
        kept, stats = _prepare_chunk(rows, start, cfg.image_size, label_map, predictor)
        tmp = work / f"tmp-{index:05d}"
        shutil.rmtree(tmp, ignore_errors=True)
        datasets.Dataset.from_dict(kept, features=FEATURES).save_to_disk(str(tmp / "dataset"))
        (tmp / "report.json").write_text(json.dumps(stats, default=_jsonable))
        final = work / f"chunk-{index:05d}"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # atomic: a killed run never leaves half a chunk behind
        bar.update(len(rows["caption"]))
        if on_chunk is not None:
            on_chunk(index)
    bar.close()

    parts = [work / f"chunk-{i:05d}" for i in range(len(chunks))]
    merged = (datasets.concatenate_datasets([datasets.load_from_disk(str(p / "dataset")) for p in parts])
              if parts else datasets.Dataset.from_dict({k: [] for k in FEATURES}, features=FEATURES))
    report = _merge_reports([json.loads((p / "report.json").read_text()) for p in parts])
    report.update({
        "source": str(cfg.source), "split": split, "fingerprint": raw._fingerprint, "image_size": cfg.image_size,
        "label_map": None if label_map is None else label_map.name,
        "mask_segmenter": None if predictor.folder is None else str(predictor.folder),
        "attributes": ("present" if report["rows_with_attributes"] else
                       "none: attribute-based evaluation (attribute classifier, part accuracy) is skipped"),
        "prepare_seconds": round(time.perf_counter() - t0, 1), "cache": str(path),
    })
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_to_disk(str(tmp / "dataset"))
    (tmp / "data_report.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    shutil.rmtree(work, ignore_errors=True)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Counter):
        return dict(x)
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(type(x).__name__)


def _merge_reports(chunks: list[dict]) -> dict:
    total = lambda key: sum(c[key] for c in chunks)  # noqa: E731
    counters: dict[str, Counter] = {k: Counter() for k in ("skipped", "fixes", "mask_sources", "part_images")}
    examples: dict[str, list[str]] = {}
    words: list[int] = []
    fractions: list[float] = []
    for c in chunks:
        for key in counters:
            counters[key].update(c[key])
        for reason, msgs in c["examples"].items():
            examples.setdefault(reason, []).extend(msgs)
        words.extend(c["caption_words"])
        fractions.extend(c["garment_fraction"])
    kept = len(words)
    sides = [c["min_side"] for c in chunks if c["min_side"] is not None]
    big = [c["max_side"] for c in chunks if c["max_side"] is not None]
    return {
        "rows": total("rows"),
        "read": total("read"),
        "kept": kept,
        "skipped": dict(sorted(counters["skipped"].items())),
        "skipped_total": sum(counters["skipped"].values()),
        "skipped_examples": {k: v[:_EXAMPLES_PER_REASON] for k, v in sorted(examples.items())},
        "fixes": dict(sorted(counters["fixes"].items())),
        "photo_sides": {"min": min(sides) if sides else None, "max": max(big) if big else None},
        "captions_words": ({"min": int(min(words)), "median": float(np.median(words)), "mean": round(float(np.mean(words)), 2),
                            "max": int(max(words))} if words else None),
        "masks": dict(sorted(counters["mask_sources"].items())),
        "mask_coverage": {
            "garment_fraction_mean": round(float(np.mean(fractions)), 4) if fractions else None,
            "images_with_part": {name: round(counters["part_images"][name] / kept, 4)
                                 for name in PART_NAMES if kept and counters["part_images"][name]},
        },
        "rows_with_attributes": total("with_attributes"),
    }


def format_report(report: dict) -> str:
    """A few lines for the console."""
    lines = [f"[data] {report['source']} ({report['split']}): {report['rows']} rows, {report['read']} read, "
             f"{report['kept']} kept, {report['skipped_total']} skipped"]
    for reason, count in report["skipped"].items():
        example = report["skipped_examples"].get(reason, [""])[0]
        lines.append(f"[data]   skipped {count} x {reason}" + (f" (e.g. {example})" if example else ""))
    if report["fixes"]:
        lines.append("[data]   fixed: " + ", ".join(f"{k} {v}" for k, v in report["fixes"].items()))
    if report["captions_words"]:
        c = report["captions_words"]
        lines.append(f"[data]   caption words: min {c['min']}, median {c['median']:g}, mean {c['mean']}, max {c['max']}")
    cov = report["mask_coverage"]
    lines.append("[data]   masks: " + ", ".join(f"{k} {v}" for k, v in report["masks"].items())
                 + (f"; garment covers {cov['garment_fraction_mean']:.1%} of an image on average"
                    if cov["garment_fraction_mean"] is not None else ""))
    lines.append(f"[data]   attributes: {report['attributes']}")
    lines.append(f"[data]   report: {report['cache']}/data_report.json")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m armani.data.prepare --config default data.source=DIR ...``: prepare and print the report."""
    import argparse

    from armani.config import load_config
    from armani.configuration import ConfigError

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--config", default="default")
    p.add_argument("--split", default="train", choices=("train", "val"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}")
        return 2
    if cfg.data.source == "procedural":
        print("data.source is procedural: nothing to prepare")
        return 0
    try:
        _, report = prepare_with_report(cfg.data, args.split)
    except DataError as err:
        print(f"data error: {err}")
        return 2
    if report is None:
        print(f"{cfg.data.source} has no {args.split} split")
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

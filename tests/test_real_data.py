"""The real-data path end to end: a folder of garment photos (no masks) through every stage.

The fixture (tests/real_data_fixtures.py) is 64 JPEG files: 61 procedural garments of
different sizes and aspect ratios (8 stored sideways with an EXIF orientation tag, 3 in
CMYK, one without a caption), two unreadable files and a blank photo. Masks are predicted
by the shipped segmenter (checkpoints/armani/segmenter, trained at 64 px) and compared
with the garments' true masks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from real_data_fixtures import PHOTO_COUNTS, PHOTO_SKIPPED, write_deepfashion_folder, write_photo_folder
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "src" / "armani" / "train.py"
STAGES = ("segmenter", "maskclip", "vqgan", "sketch_tokenizer", "partial_tokenizer", "transformer")
# Measured on the fixture (tiny config, 32 px, 2026-12-02): mean IoU 0.62 over the 15 parts
# (0.75 at 64 px), garment-vs-background IoU of the EXIF-rotated photos 0.85 on average
# (0.59 if they were read sideways). The floors leave room for BLAS/JPEG differences.
MEAN_IOU_FLOOR = 0.5
EXIF_GARMENT_IOU_FLOOR = 0.75


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _train(out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TRAIN), "--config", "tiny", "--output", str(out), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    truth = write_photo_folder(root / "shop")
    return root / "shop", truth, root / "cache"


def _data_args(photos) -> list[str]:
    folder, _, cache = photos
    return [f"data.source={folder}", "data.caption_column=text", f"data.cache_dir={cache}"]


@pytest.fixture(scope="module")
def photo_run(photos, tmp_path_factory):
    run = tmp_path_factory.mktemp("photo_run")
    proc = _train(run, "--stage", "all", *_data_args(photos))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return run, proc.stdout + proc.stderr


def _report(photo_run) -> dict:
    run, out = photo_run
    line = next(x for x in out.splitlines() if x.startswith("[data]   report: "))
    return json.loads(Path(line.split(": ", 1)[1]).read_text())


def test_every_stage_trains_on_a_photo_folder_and_reports_the_data(photo_run):
    run, out = photo_run
    report = _report(photo_run)
    garments_kept = PHOTO_COUNTS["garments"] - PHOTO_SKIPPED["empty caption"]
    assert report["rows"] == PHOTO_COUNTS["files"] == 64
    assert report["read"] == 64 - PHOTO_SKIPPED["unreadable image"]
    assert report["kept"] == garments_kept == 60
    assert report["skipped"] == PHOTO_SKIPPED
    assert report["fixes"] == {"exif_rotated": PHOTO_COUNTS["exif_rotated"], "mode_converted": PHOTO_COUNTS["cmyk"]}
    assert report["masks"] == {"predicted": garments_kept}
    assert 0.1 < report["mask_coverage"]["garment_fraction_mean"] < 0.6
    assert report["mask_coverage"]["images_with_part"]["body"] == 1.0
    assert 3 <= report["captions_words"]["min"] <= report["captions_words"]["median"] <= report["captions_words"]["max"]
    assert report["attributes"].startswith("none")
    assert "[data] " in out and "skipped 2 x unreadable image" in out
    for stage in STAGES:
        final = run / stage / "final"
        assert (final / "DONE").is_file(), stage
        assert json.loads((final / "training_report.json").read_text())["steps"] == 6


def test_predicted_masks_agree_with_the_true_masks(photos, photo_run):
    import datasets

    from armani.data.images import fit_mask
    from armani.models.segmenter import mean_iou

    folder, truth, _ = photos
    report = _report(photo_run)
    prepared = datasets.load_from_disk(str(Path(report["cache"]) / "dataset"))
    names = [json.loads(line)["file_name"] for line in (folder / "metadata.jsonl").read_text().splitlines()]
    preds, trues, exif_iou = [], [], []
    exif_rows = set(range(3, PHOTO_COUNTS["garments"], 7)[: PHOTO_COUNTS["exif_rotated"]])
    for row in prepared:
        name = names[row["source_row"]]
        pred = np.asarray(row["mask"], dtype=np.int64)
        true = fit_mask(truth[name], report["image_size"])
        preds.append(torch.from_numpy(pred))
        trues.append(torch.from_numpy(true))
        if int(name.split("-")[1].split(".")[0]) in exif_rows:
            exif_iou.append(((pred > 0) & (true > 0)).sum() / ((pred > 0) | (true > 0)).sum())
        assert np.asarray(row["image"]).shape == (32, 32, 3)
    iou = mean_iou(torch.stack(preds), torch.stack(trues))
    assert iou["mean"] > MEAN_IOU_FLOOR, iou
    assert len(exif_iou) == PHOTO_COUNTS["exif_rotated"] - 1  # row 10 has no caption
    assert float(np.mean(exif_iou)) > EXIF_GARMENT_IOU_FLOOR, exif_iou


def test_the_run_loads_in_the_pipeline_and_the_demo(photo_run, tmp_path):
    from armani.pipeline import ArmaniPipeline

    run, _ = photo_run
    pipe = ArmaniPipeline.from_run(run)
    out = pipe(text="navy shirt with two pockets", num_images=2, seed=0)
    assert len(out.images) == 2 and out.images[0].size == (32, 32)
    pipe.save_pretrained(tmp_path / "pipe")
    again = ArmaniPipeline.from_pretrained(tmp_path / "pipe")
    assert len(again(text="red dress", num_images=1, seed=0).images) == 1
    sys.path.insert(0, str(ROOT / "demo"))
    try:
        from models import load_main  # demo/models.py: what `demo/app.py --checkpoint RUN` loads
    finally:
        sys.path.remove(str(ROOT / "demo"))
    assert load_main(run).image_size == 32


def test_fine_tuning_starts_from_the_given_weights(photos, tiny_run, tmp_path):
    """--init-from a tiny pipeline trained on procedural garments, then 6 steps per stage on
    the photos. With another seed, a fresh start would land far from the given weights."""
    proc = _train(tmp_path, "--stage", "all", "--init-from", str(tiny_run), "train.seed=1", *_data_args(photos))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "[init-from] segmenter, maskclip, vqgan, sketch_tokenizer, partial_tokenizer, transformer" in proc.stdout
    assert (tmp_path / "tokenizer" / "tokenizer.json").read_text() == (tiny_run / "tokenizer" / "tokenizer.json").read_text()
    for stage in STAGES:
        report = json.loads((tmp_path / stage / "final" / "training_report.json").read_text())
        assert report["init_from"] == str(tiny_run / stage / "final")
        given = load_file(str(tiny_run / stage / "final" / "model.safetensors"))
        tuned = load_file(str(tmp_path / stage / "final" / "model.safetensors"))
        assert given.keys() == tuned.keys()
        # The codebooks' EMA statistics follow the new data within a few steps (they are running
        # averages, not trained weights); every trained weight moves only a little.
        trained = [k for k in given if "_codebook." not in k]
        num = sum(float((tuned[k].float() - given[k].float()).pow(2).sum()) for k in trained)
        den = sum(float(given[k].float().pow(2).sum()) for k in trained)
        assert (num / den) ** 0.5 < 0.1, (stage, (num / den) ** 0.5)


def test_missing_caption_column_and_too_little_data_fail_at_once(photos, tmp_path, capsys):
    folder, _, cache = photos
    proc = _train(tmp_path / "a", "--stage", "all", f"data.source={folder}", f"data.cache_dir={cache}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "data error" in out and "no caption column 'caption'" in out and "'text'" in out
    assert "Traceback" not in out and not (tmp_path / "a" / "segmenter").exists()

    from armani.train import main  # in this process: the prepared data is cached, the imports done

    rc = main(["--config", "tiny", "--stage", "all", "--output", str(tmp_path / "b"), "train.vqgan.batch_size=64",
               *_data_args(photos)])
    out = "".join(capsys.readouterr())
    assert rc == 2, out[-3000:]
    assert "60 usable training rows" in out and "fewer than one batch" in out and "train.vqgan.batch_size=60" in out
    assert not (tmp_path / "b" / "segmenter").exists()


def test_an_interrupted_preparation_resumes_from_its_last_chunk(photos, photo_run, tmp_path):
    from armani.config import load_config
    from armani.data.prepare import prepare_with_report

    cfg = load_config("tiny", _data_args(photos)[:2] + [f"data.cache_dir={tmp_path}"]).data

    def stop_after_second(index):
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_with_report(cfg, "train", chunk_rows=16, progress=False, on_chunk=stop_after_second)
    partial = next((tmp_path / "prepared").glob("*.partial"))
    assert sorted(p.name for p in partial.iterdir()) == ["chunk-00000", "chunk-00001"]
    seen = []
    ds, report = prepare_with_report(cfg, "train", chunk_rows=16, progress=False, on_chunk=seen.append)
    assert seen == [2, 3]  # only the chunks not finished before the interruption
    full = _report(photo_run)
    for key in ("rows", "read", "kept", "skipped", "fixes", "masks", "captions_words"):
        assert report[key] == full[key], key
    assert len(ds) == full["kept"] and not partial.exists()


def test_deepfashion_multimodal_recipe(tmp_path):
    """The documented recipe on a folder in DeepFashion-MultiModal's layout: parsing labels
    mapped to our parts (garments refined by the segmenter, belts kept, skin and hair
    dropped), captions from captions.json, then the segmenter stage trains on it."""
    from armani.config import load_config
    from armani.data.prepare import prepare_with_report
    from armani.parts import PART_ID

    root = tmp_path / "DeepFashion-MultiModal"
    parsing = write_deepfashion_folder(root)
    args = [f"data.source={root}", f"data.cache_dir={tmp_path / 'cache'}"]
    ds, report = prepare_with_report(load_config("tiny", args).data, "train", progress=False)
    assert report["label_map"] == "deepfashion_multimodal"
    assert report["rows"] == report["kept"] == 6
    assert report["masks"] == {"predicted": 1, "refined": 5}
    captions = json.loads((root / "captions.json").read_text())
    names = sorted(captions)
    for row in ds:
        name = names[row["source_row"]]
        assert row["caption"] == captions[name]
        mask = np.asarray(row["mask"])
        if name not in parsing:
            continue
        labels = parsing[name]  # 96 x 64 -> letterboxed to 32 x 32: 2 x 3 pixels per cell
        # skin (bottom right) and hair (top left) are background; the garment is not
        assert mask[0, 5] == 0 and mask[31, 26] == 0
        assert (mask != 0).mean() > 0.1
        if (labels == 10).sum() > 30:
            assert (mask == PART_ID["belt"]).any()
    proc = _train(tmp_path / "run", "--stage", "segmenter", *args, "train.segmenter.batch_size=4",
                  "train.segmenter.max_steps=2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (tmp_path / "run" / "segmenter" / "final" / "DONE").is_file()


def test_label_maps_parse_presets_files_and_inline_lists(tmp_path):
    from armani.data.label_maps import GARMENT, resolve_label_map
    from armani.parts import PART_ID

    inline = resolve_label_map("0:background, 1:garment, 7:belt, 8:3")
    labels = np.array([[0, 1], [7, 8]])
    assert inline.apply(labels).tolist() == [[0, GARMENT], [PART_ID["belt"], 3]]
    with pytest.raises(ValueError, match=r"\[9\] are not in the label map"):
        inline.apply(np.array([[9, 1]]))
    (tmp_path / "map.json").write_text(json.dumps({"1": "body", "*": "ignore"}))
    assert resolve_label_map(str(tmp_path / "map.json")).apply(np.array([[1, 5]])).tolist() == [[1, 0]]
    df = resolve_label_map("deepfashion_multimodal")
    assert df.apply(np.arange(24)[None]).tolist()[0] == [0, *[GARMENT] * 6, 0, 0, 0, PART_ID["belt"],
                                                         *[0] * 10, GARMENT, 0, 0]
    with pytest.raises(ValueError, match="not a part"):
        resolve_label_map("1:pocketz")
    assert resolve_label_map(None) is None and resolve_label_map("none") is None


def test_a_saved_dataset_with_masks_and_attributes_keeps_them(tmp_path):
    """A ``save_to_disk`` folder with its own part masks (here procedural renders at 48 px):
    the masks are used as given (letterboxed exactly like the photos), the attribute records
    are kept, nothing is predicted, and a dataset without splits has no validation split."""
    from armani.config import load_config
    from armani.data.images import fit_mask
    from armani.data.prepare import prepare_with_report
    from armani.data.synthetic import generate_dataset

    source = generate_dataset(12, size=48, seed=5, split="val", workers=1, progress=False)
    source.save_to_disk(str(tmp_path / "saved"))
    cfg = load_config("tiny", [f"data.source={tmp_path / 'saved'}", f"data.cache_dir={tmp_path / 'cache'}",
                               "data.mask_segmenter=none"]).data
    ds, report = prepare_with_report(cfg, "train", progress=False)
    assert report["kept"] == 12 and report["masks"] == {"given": 12} and report["rows_with_attributes"] == 12
    assert report["attributes"] == "present" and report["mask_segmenter"] is None
    for row in ds:
        original = np.asarray(source[row["source_row"]]["mask"], dtype=np.int64)
        assert np.array_equal(np.asarray(row["mask"], dtype=np.int64), fit_mask(original, 32))
        assert json.loads(row["attributes"]) == json.loads(source[row["source_row"]]["attributes"])
    assert prepare_with_report(cfg, "val", progress=False) == (None, None)


def test_the_attribute_classifier_says_it_is_skipped_on_real_data(photos, tmp_path, capsys):
    from armani.train import main

    rc = main(["--config", "tiny", "--stage", "attribute_classifier", "--output", str(tmp_path), *_data_args(photos)])
    out = "".join(capsys.readouterr())
    assert rc == 0, out[-3000:]
    assert "[attribute_classifier] skipped" in out and "data.source=procedural" in out
    assert not (tmp_path / "attribute_classifier").exists()

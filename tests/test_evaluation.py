"""Evaluation harness: attribute classifier (stage, verdicts, persistence), FID/IS/CLIPScore
wrappers, prompts, pipeline loading and the ``python -m armani.evaluate`` CLI
(:mod:`armani.evaluation.generation`) on tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from armani.evaluation.attributes import (
    ATTRIBUTE_KEYS,
    AttributeClassifier,
    AttributeClassifierConfig,
    attribute_accuracy,
    compare,
    decode_attributes,
    degrade,
    encode_attributes,
    load_validation,
)

ROOT = Path(__file__).resolve().parents[1]


def _record(**over) -> dict:
    base = {"category": "shirt", "color": "navy", "pattern": "plain", "sleeve": "long",
            "parts": {"body": 1, "sleeve": 1, "cuff": 1, "collar": 1, "pocket": 1, "button": 5, "placket": 1},
            "pocket_side": "left"}
    base.update(over)
    return base


# -- the engine stage -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    """``train.py --config tiny --stage attribute_classifier`` (registration imported explicitly)."""
    run = tmp_path_factory.mktemp("attr_run")
    code = ("import sys, armani.training.stages.attributes; from armani.train import main; "
            "sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, "--config", "tiny", "--stage", "attribute_classifier",
           "--output", str(run), f"data.cache_dir={run / 'data'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return run / "attribute_classifier" / "final"


def test_stage_exports_weights_and_real_image_accuracy(classifier_dir):
    assert (classifier_dir / "DONE").is_file()
    validation = load_validation(classifier_dir)
    assert validation["split"] == "val" and validation["num_images"] == 16  # tiny: 16 real val renders
    assert list(validation["accuracy"]) == list(ATTRIBUTE_KEYS)
    assert all(0.0 <= a <= 1.0 for a in validation["accuracy"].values())
    report = json.loads((classifier_dir / "training_report.json").read_text())
    assert report["steps"] == 6 and np.isfinite(report["final_loss"])
    model = AttributeClassifier.from_pretrained(classifier_dir)
    assert model.config.image_size == 32  # the run's image size
    # Trained weights differ from a fresh init with the same seed... and round-trip exactly.
    torch.manual_seed(0)
    fresh = AttributeClassifier(model.config)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    model.save_pretrained(classifier_dir.parent / "copy")
    again = AttributeClassifier.from_pretrained(classifier_dir.parent / "copy")
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(model(x)["category"], again(x)["category"])


def test_loss_decreases_when_overfitting_one_batch():
    torch.manual_seed(0)
    from armani.data.synthetic import generate_row
    from armani.data.transforms import image_tensor

    rows = [generate_row(i, 32, seed=3) for i in range(8)]
    x = torch.stack([image_tensor(r["image"]) for r in rows])
    targets = {k: torch.stack([encode_attributes(r["attributes"])[k] for r in rows])
               for k in encode_attributes(rows[0]["attributes"])}
    model = AttributeClassifier(AttributeClassifierConfig(image_size=32, base_channels=8, channel_mults=(1, 2),
                                                          groups=4, pool=2, feature_dim=32, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(x, targets)
    for _ in range(60):
        loss = model.loss(x, targets)
        opt.zero_grad()
        loss.loss.backward()
        opt.step()
    assert loss.loss.item() < 0.3 * first.loss.item()
    assert set(loss.scalars()) == {"category", "color", "pattern", "sleeve", "parts", "button", "pocket",
                                   "pocket_side"}
    # Memorised: the predicted records are the targets, attribute by attribute.
    acc = attribute_accuracy(model.predict(x), [r["attributes"] for r in rows])
    assert acc["category"] == 1.0 and acc["color"] == 1.0 and acc["count:button"] == 1.0


# -- records and verdicts -------------------------------------------------------------------------
def test_compare_verdicts_on_hand_made_records():
    target = _record()
    assert all(compare(target, target).values()) and list(compare(target, target)) == list(ATTRIBUTE_KEYS)
    four_buttons = _record(parts={**target["parts"], "button": 4})
    v = compare(four_buttons, target)
    assert not v["count:button"] and v["part:button"]  # present in both, but the count is exact
    assert sum(not ok for ok in v.values()) == 1
    right = compare(_record(pocket_side="right"), target)
    assert not right["pocket_side"] and right["part:pocket"] and right["count:pocket"]
    no_collar = {k: n for k, n in target["parts"].items() if k != "collar"}
    v = compare(_record(parts=no_collar), target)
    assert not v["part:collar"] and sum(not ok for ok in v.values()) == 1
    extra_hood = compare(_record(parts={**target["parts"], "hood": 1}), target)
    assert not extra_hood["part:hood"]  # a part that was not asked for is wrong too
    skirt = _record(category="skirt", sleeve=None, parts={"body": 1, "waistband": 1}, pocket_side=None)
    v = compare(skirt, _record(category="skirt", sleeve="short", parts={"body": 1, "waistband": 1}, pocket_side=None))
    assert not v["sleeve"] and v["count:button"] and v["count:pocket"] and v["pocket_side"]
    acc = attribute_accuracy([target, four_buttons], [target, target])
    assert acc["count:button"] == 0.5 and acc["category"] == 1.0


def test_category_misses_count_each_confused_pair_most_frequent_first():
    from armani.evaluation.attributes import category_misses

    sweater, tee, jacket = (_record(category=c) for c in ("sweater", "t-shirt", "jacket"))
    preds = [tee, tee, jacket, sweater, tee, sweater]
    targets = [sweater, sweater, sweater, sweater, jacket, tee]
    misses = category_misses(preds, targets)
    assert misses == {"sweater -> t-shirt": 2, "jacket -> t-shirt": 1, "sweater -> jacket": 1, "t-shirt -> sweater": 1}
    assert list(misses)[0] == "sweater -> t-shirt"  # most frequent first, then by name
    assert sum(misses.values()) == round((1 - attribute_accuracy(preds, targets)["category"]) * len(preds))
    assert category_misses([tee], [tee]) == {}
    with pytest.raises(ValueError, match="predictions"):
        category_misses([tee], [tee, tee])


def test_encode_decode_round_trips_dataset_records():
    from armani.data.synthetic import generate_row

    for i in range(40):
        record = generate_row(i, 32, seed=1)["attributes"]
        t = encode_attributes(record)
        answers = {k: (v.unsqueeze(0) > 0.5) if k == "parts" else v.unsqueeze(0) for k, v in t.items()}
        assert decode_attributes(answers)[0] == record
    with pytest.raises(ValueError, match="color"):
        encode_attributes(_record(color="teal"))
    with pytest.raises(ValueError, match="unknown part"):
        encode_attributes(_record(parts={"body": 1, "frill": 1}))


def test_degrade_is_seeded_light_and_keeps_the_picture():
    from armani.data.synthetic import generate_row

    image = generate_row(0, 64, seed=0)["image"]
    outs = [degrade(image, np.random.default_rng(s)) for s in range(6)]
    assert np.array_equal(degrade(image, np.random.default_rng(3)), outs[3])
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o, image) for o in outs) >= 4
    for o in outs:  # the garment's colour survives: mean colour moves by a few levels only
        assert np.abs(o.reshape(-1, 3).mean(0) - image.reshape(-1, 3).mean(0)).max() < 20


# -- metrics --------------------------------------------------------------------------------------
def _renders(n: int, seed: int, size: int = 32) -> torch.Tensor:
    from armani.data.synthetic import generate_row

    return torch.from_numpy(np.stack([generate_row(i, size, seed=seed)["image"] for i in range(n)])).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def random_classifier():
    torch.manual_seed(0)
    return AttributeClassifier(AttributeClassifierConfig(image_size=32, base_channels=8, channel_mults=(1, 2),
                                                         groups=4, pool=2, feature_dim=16)).eval()


def test_fid_with_classifier_features(random_classifier, monkeypatch, tmp_path):
    from armani.evaluation.metrics import choose_extractors, frechet_distance

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no Inception weights here
    ext = choose_extractors(random_classifier)
    assert ext.name.startswith("attribute-classifier")
    with pytest.raises(FileNotFoundError):
        choose_extractors(random_classifier, inception="on")
    real = _renders(24, seed=0)
    same = frechet_distance(real, real.clone(), ext)
    other_renders = frechet_distance(real, _renders(24, seed=1), ext)
    noise = frechet_distance(real, torch.randint(0, 256, real.shape, dtype=torch.uint8), ext)
    assert abs(same) < 1e-3
    assert other_renders > 10 * max(abs(same), 1e-4)
    assert noise > other_renders  # noise is further from garments than other garments are


def test_inception_score_with_classifier_logits(random_classifier):
    from armani.evaluation.metrics import choose_extractors, inception_score

    ext = choose_extractors(random_classifier, inception="off")
    images = _renders(20, seed=0)
    mean, std = inception_score(images, ext, seed=0)
    assert np.isfinite(mean) and np.isfinite(std) and 1.0 <= mean <= 12.0
    assert inception_score(images, ext, seed=0) == (mean, std)  # seeded shuffle
    same = torch.stack([images[0]] * 20)  # one image repeated: every split has KL 0
    assert inception_score(same, ext)[0] == pytest.approx(1.0, abs=1e-4)


def test_clip_score_adapter_matches_a_direct_computation():
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from armani.evaluation.metrics import clip_score, clip_score_metric

    torch.manual_seed(0)
    model = CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    preprocess = open_clip.image_transform(32, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    images = _renders(4, seed=0)
    texts = ["a navy shirt", "a red dress with a belt", "grey trousers", "a hoodie"]
    got = clip_score(clip_score_metric(model, preprocess, tokenizer), images, texts)
    from PIL import Image

    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(Image.fromarray(im.permute(1, 2, 0).numpy()))
                                              for im in images]))
        txt = model.encode_text(tokenizer(texts))
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    assert got == pytest.approx(max(0.0, float(100 * cos.mean())), rel=1e-4, abs=1e-4)


def test_openclip_scorer_is_unavailable_without_weights(monkeypatch, tmp_path):
    from armani.evaluation.metrics import OPENCLIP_ENV, openclip_scorer

    monkeypatch.delenv(OPENCLIP_ENV, raising=False)
    assert openclip_scorer() is None
    bad = tmp_path / "clip.bin"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="safetensors"):
        openclip_scorer(bad)


# -- prompts --------------------------------------------------------------------------------------
def test_default_prompts_carry_the_split_records():
    from armani.data.synthetic import DEFAULT_HELDOUT, generate_row
    from armani.evaluation.prompts import default_prompts

    prompts = default_prompts(5, "val", seed=2)
    assert [p["attributes"] for p in prompts] == [generate_row(i, 32, seed=2, split="val")["attributes"]
                                                  for i in range(5)]
    assert all(p["text"] and p["attributes"]["color"] in p["text"].lower() for p in prompts)
    held = default_prompts(6, "heldout", seed=0)
    assert all(any(c.matches(p["attributes"]) for c in DEFAULT_HELDOUT) for p in held)
    assert default_prompts(3, "val", seed=2) == prompts[:3]


def test_load_prompts_round_trip_and_errors(tmp_path):
    from armani.evaluation.prompts import PromptFileError, default_prompts, load_prompts, save_prompts

    prompts = default_prompts(3)
    path = save_prompts(prompts, tmp_path / "p.jsonl")
    assert load_prompts(path) == prompts
    good = json.dumps(prompts[0])
    cases = {
        "not valid JSON": "{text: 1}",
        "expected an object": "[1, 2]",
        "'text' must be a non-empty string": json.dumps({"text": " ", "attributes": prompts[0]["attributes"]}),
        "no 'attributes'": json.dumps({"text": "a red shirt"}),
        "attributes.color": json.dumps({"text": "x", "attributes": {**prompts[0]["attributes"], "color": "teal"}}),
        "unknown part 'frill'": json.dumps({"text": "x", "attributes": {**prompts[0]["attributes"],
                                                                         "parts": {"body": 1, "frill": 1}}}),
        "lacks": json.dumps({"text": "x", "attributes": {"category": "shirt"}}),
    }
    for message, line in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(f"# a comment\n{good}\n\n{line}\n")
        with pytest.raises(PromptFileError, match=f"bad.jsonl:4: .*{message}"):
            load_prompts(bad)
    (tmp_path / "empty.jsonl").write_text("\n# nothing\n")
    with pytest.raises(PromptFileError, match="no prompts"):
        load_prompts(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.jsonl")


def test_controls_come_from_a_render_of_the_attributes():
    from armani.data.transforms import canny_sketch
    from armani.evaluation.prompts import default_prompts, make_controls

    attrs = default_prompts(1)[0]["attributes"]
    assert make_controls(attrs, "text", 32, np.random.default_rng(0)).pipeline_kwargs() == {}
    sk = make_controls(attrs, "text+sketch", 32, np.random.default_rng(0))
    assert np.array_equal(sk.sketch, canny_sketch(sk.reference)) and sk.sketch.any()
    pa = make_controls(attrs, "text+partial", 32, np.random.default_rng(0))
    assert abs(pa.keep_mask.mean() - 0.25) < 0.06 and np.array_equal(pa.partial, pa.reference)
    kwargs = pa.pipeline_kwargs()
    assert set(kwargs) == {"partial", "partial_keep_mask"}
    # The reference's exact mask comes with it: garment pixels differ from the studio background.
    garment = pa.reference_mask > 0
    assert 0.1 < garment.mean() < 0.9
    assert abs(pa.reference[garment].mean() - pa.reference[~garment].mean()) > 1
    drawn = make_controls(attrs, "sketch", 32, np.random.default_rng(0), sketch_style="drawn")
    assert drawn.sketch.dtype == np.uint8 and drawn.sketch.any() and drawn.partial is None
    with pytest.raises(ValueError, match="task"):
        make_controls(attrs, "photo", 32, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sketch_style"):
        make_controls(attrs, "sketch", 32, np.random.default_rng(0), sketch_style="crayon")


def test_drawn_sketch_follows_the_outline_with_thick_open_strokes():
    from armani.data.drawn_sketch import drawn_sketch
    from armani.data.garments import render_garment
    from armani.evaluation.prompts import default_prompts

    attrs = default_prompts(1)[0]["attributes"]
    _, mask = render_garment(attrs, 64, np.random.default_rng(0))
    sketch = drawn_sketch(mask, np.random.default_rng(1), gap_probability=1.0)
    strokes = sketch > 64
    garment = mask > 0
    # The strokes lie on and around the silhouette, not out in the background.
    import cv2

    near = cv2.dilate(garment.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert strokes[~near].mean() < 0.05 and strokes[near].mean() > 0.1
    # Thicker than a one-pixel line: more stroke pixels than the silhouette's perimeter.
    contours, _ = cv2.findContours(garment.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    assert strokes.sum() > 1.3 * sum(cv2.arcLength(c, True) for c in contours)
    # Not closed: with a gap in every contour, the background flood-filled from a corner
    # reaches the garment's interior.
    filled = (~strokes).astype(np.uint8)
    cv2.floodFill(filled, None, (0, 0), 2)
    centre = tuple(int(v) for v in np.argwhere(garment & ~strokes).mean(0).round())
    assert filled[centre] == 2
    with pytest.raises(ValueError, match="mask"):
        drawn_sketch(np.zeros((2, 3, 4)), np.random.default_rng(0))


def test_anchor_measures_on_known_answers():
    from armani.evaluation.anchors import fidelity, kept_region_psnr, silhouette_iou, summarise_psnr

    assert fidelity(0.75, 0.5, 1.0) == pytest.approx(0.5)
    assert fidelity(0.4, 0.5, 1.0) == pytest.approx(-0.2)  # worse than ignoring the prompt
    assert fidelity(None, 0.5, 1.0) is None and fidelity(0.7, 0.5, 0.5) is None
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2] = True  # 8 pixels
    b[0, :, :2] = True  # 8 pixels, 4 shared
    assert silhouette_iou(a, b).tolist() == pytest.approx([4 / 12, 1.0])  # two empty masks agree
    ref = np.full((2, 4, 4, 3), 100, np.uint8)
    img = ref.copy()
    img[0] += 10  # error 10 everywhere in image 0
    keep = np.ones((2, 4, 4), bool)
    psnr = kept_region_psnr(img, ref, keep)
    assert psnr[0] == pytest.approx(20 * np.log10(255 / 10)) and np.isinf(psnr[1])
    summary = summarise_psnr(psnr)
    assert summary["exact"] == 0.5 and summary["mean_db"] == pytest.approx((psnr[0] + 99) / 2)
    img[1, 0, 0] = 0  # outside the kept region: does not count
    keep[1, 0, 0] = False
    assert np.isinf(kept_region_psnr(img, ref, keep)[1])


# -- pipelines and the CLI ------------------------------------------------------------------------
def test_load_pipeline_dispatches_on_format(tiny_run, tmp_path, monkeypatch):
    from armani.loading import load_pipeline
    from armani.pipeline import ArmaniPipeline

    pipe = load_pipeline(tiny_run)
    assert isinstance(pipe, ArmaniPipeline)
    pipe.save_pretrained(tmp_path / "saved")
    again = load_pipeline(tmp_path / "saved")
    assert torch.equal(next(again.transformer.parameters()), next(pipe.transformer.parameters()))
    weird = tmp_path / "weird"
    weird.mkdir()
    (weird / "pipeline.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="unknown pipeline format"):
        load_pipeline(weird)
    (weird / "pipeline.json").write_text(json.dumps({"format": "armani-diffusion"}))
    monkeypatch.setitem(sys.modules, "armani.baselines.diffusion", None)  # as if the module were absent
    with pytest.raises(ImportError, match="diffusion-baseline"):
        load_pipeline(weird)
    with pytest.raises(FileNotFoundError, match="neither"):
        load_pipeline(tmp_path)


def test_the_shipped_checkpoint_is_found_without_the_repo_layout(tmp_path, monkeypatch):
    """$ARMANI_CHECKPOINT moves every default at once: the pipeline's and the data layer's segmenter."""
    from armani.data.prepare import resolve_segmenter_dir
    from armani.locations import checkpoints_dir, shipped_checkpoint

    moved = tmp_path / "elsewhere" / "armani"
    (moved / "segmenter").mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        (moved / "segmenter" / name).write_text("{}")
    monkeypatch.setenv("ARMANI_CHECKPOINT", str(moved))
    assert shipped_checkpoint() == moved and checkpoints_dir() == moved.parent
    assert resolve_segmenter_dir("shipped") == moved / "segmenter"
    monkeypatch.delenv("ARMANI_CHECKPOINT")
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here: the installed source checkout's copy
    assert (shipped_checkpoint() / "pipeline.json").is_file()


def test_cli_end_to_end_on_tiny(tiny_run, classifier_dir, tmp_path, capsys, monkeypatch):
    from armani.evaluation import generation

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # offline: no Inception
    monkeypatch.delenv("ARMANI_OPENCLIP_WEIGHTS", raising=False)
    out, fig = tmp_path / "report.json", tmp_path / "acc.png"
    rc = generation.main(["--checkpoint", str(tiny_run), "--classifier", str(classifier_dir), "--num-prompts", "3",
                          "--samples-per-prompt", "1", "--task", "text+sketch", "--out", str(out),
                          "--figure", str(fig), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    for row in ("FID", "IS (mean +- std)", "MaskCLIP score", "CLIPScore", "acc count:button", "not trusted"):
        assert row in printed
    report = json.loads(out.read_text())
    for key in ("fid", "is", "feature_extractor", "clip_score", "maskclip_score", "attributes", "part_accuracy",
                "trusted_attributes", "counts", "seconds_per_image", "config", "classifier_validation"):
        assert key in report
    assert report["feature_extractor"].startswith("attribute-classifier")
    assert report["clip_score"] == "unavailable"
    assert np.isfinite(report["fid"]) and report["fid"] >= 0
    assert 1.0 - 1e-5 <= report["is"]["mean"] <= 12.0  # IS >= 1 up to float rounding (1 when every image looks alike)
    assert -1.0 <= report["maskclip_score"] <= 1.0 and report["maskclip_judge"] == "the evaluated checkpoint"
    assert report["counts"]["generated_images"] == 3 == report["counts"]["real_images"]
    assert report["config"]["task"] == "text+sketch" and report["config"]["image_size"] == 32
    real = report["classifier_validation"]["accuracy"]
    for key, v in report["attributes"].items():
        assert v["classifier_real_accuracy"] == real[key]
        assert v["trusted"] == (real[key] >= 0.95)
        assert abs(v["accuracy"] * 3 - round(v["accuracy"] * 3)) < 1e-9  # 3 images: thirds
    trusted = [v["accuracy"] for v in report["attributes"].values() if v["trusted"]]
    assert report["part_accuracy"] == (pytest.approx(np.mean(trusted)) if trusted else None)
    wrong = round((1 - report["attributes"]["category"]["accuracy"]) * 3)
    assert sum(report["category_misses"].values()) == wrong and "category misses" in printed
    assert fig.is_file() and fig.stat().st_size > 1000
    # Anchors: real renders of the prompts are read far better than random garments are.
    ceiling, floor = report["anchors"]["ceiling"], report["anchors"]["floor"]
    # The tiny classifier trusts no attribute and reads few well; category it reads best.
    assert ceiling["attributes"]["category"] > floor["attributes"]["category"]
    assert set(ceiling["attributes"]) == set(report["attributes"])
    for anchor in (ceiling, floor):
        assert sum(anchor["category_misses"].values()) == round((1 - anchor["attributes"]["category"]) * 3)
    assert ceiling["fid"] < floor["fid"]
    assert ceiling["maskclip_score"] > floor["maskclip_score"]
    assert report["part_accuracy"] is None and report["fidelity"]["part_accuracy"] is None
    assert report["fidelity"]["maskclip_score"] == pytest.approx(
        (report["maskclip_score"] - floor["maskclip_score"]) / (ceiling["maskclip_score"] - floor["maskclip_score"]))
    iou = report["controls"]["silhouette_iou"]
    assert 0 <= iou["floor"] < iou["ceiling"] <= 1 and 0 <= iou["value"] <= 1  # the tiny segmenter is rough
    assert "floor" in printed and "silhouette IoU (canny sketch)" in printed
    # The codebook anchor: the same measures on the image codebook's reconstructions of real renders.
    codebook = report["anchors"]["codebook"]
    assert set(codebook["attributes"]) == set(report["attributes"]) and np.isfinite(codebook["fid"])
    assert "codebook" in printed


def test_codebook_anchor_scores_the_round_trip(tiny_run, classifier_dir):
    """A lossless codebook scores what the ceiling scores; one that loses the garment scores worse;
    the tiny checkpoint's own round trip returns images of the right size and range."""
    from armani.evaluation import generation
    from armani.evaluation.metrics import choose_extractors
    from armani.loading import load_pipeline

    pipe = load_pipeline(tiny_run)
    cfg = generation.EvalConfig(checkpoint=str(tiny_run), classifier=str(classifier_dir), num_prompts=4,
                                samples_per_prompt=1, task="text", progress=False, inception="auto")
    classifier, validation, _ = generation._load_classifier(cfg.classifier)
    prompts, size, kwargs = generation._task_setup(cfg, pipe)
    controls = generation._controls(prompts, cfg, size, kwargs)
    args = (cfg, prompts, controls, size, classifier, validation, choose_extractors(classifier, "auto"),
            generation._judge(cfg, pipe))
    lossless, _ = generation.score_anchors(*args, codebook=lambda images, texts: images)
    assert lossless["codebook"]["fid"] == pytest.approx(lossless["ceiling"]["fid"], rel=1e-4)
    blank, _ = generation.score_anchors(*args, codebook=lambda images, texts: torch.ones_like(images))
    assert blank["codebook"]["fid"] > blank["ceiling"]["fid"]
    assert blank["codebook"]["maskclip_score"] < blank["ceiling"]["maskclip_score"]
    images = torch.rand(2, 3, size, size) * 2 - 1
    out = generation.codebook_round_trip(pipe)(images, [p["text"] for p in prompts[:2]])
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    assert generation.codebook_round_trip(object()) is None


def test_partial_task_reports_the_kept_region(tiny_run, classifier_dir, tmp_path):
    from armani.evaluation import generation
    from armani.loading import load_pipeline

    pipe = load_pipeline(tiny_run)
    cfg = generation.EvalConfig(checkpoint=str(tiny_run), classifier=str(classifier_dir), num_prompts=2,
                                samples_per_prompt=1, task="partial", progress=False, inception="off")
    report = generation.evaluate(cfg, pipe)
    psnr = report["controls"]["kept_region_psnr"]
    assert psnr["value"]["exact"] == 1.0  # pasted back
    assert psnr["model_only"]["mean_db"] < 60 and psnr["floor"]["mean_db"] < 60
    pipe.settings.composite_partial = False
    report = generation.evaluate(cfg, pipe)
    psnr = report["controls"]["kept_region_psnr"]
    assert psnr["value"] == psnr["model_only"] and psnr["value"]["exact"] == 0.0


def test_sampler_precision_is_the_reports_own_and_put_back(tiny_run, classifier_dir, monkeypatch):
    """--sampler-precision float32 on a checkpoint that stores a bf16 sampler samples exactly what a
    float32-stored sampler samples, says so in the report, and leaves the pipeline's sampler as it was."""
    from armani.evaluation import generation
    from armani.loading import load_pipeline
    from armani.sampling import fast_path

    pipe = load_pipeline(tiny_run)
    stored = pipe.sampler.with_options(dtype="bfloat16")
    cfg = dict(checkpoint=str(tiny_run), classifier=str(classifier_dir), num_prompts=2, samples_per_prompt=1,
               progress=False, inception="off")
    pipe.sampler = stored
    as_float = generation.evaluate(generation.EvalConfig(sampler_precision="float32", **cfg), pipe)
    assert pipe.sampler is stored
    as_bf16 = generation.evaluate(generation.EvalConfig(**cfg), pipe)
    pipe.sampler = stored.with_options(dtype="float32")
    reference = generation.evaluate(generation.EvalConfig(**cfg), pipe)
    assert (as_float["sampler_precision"], as_bf16["sampler_precision"], reference["sampler_precision"]) == (
        "float32", "bfloat16", "float32")
    assert as_float["fid"] == reference["fid"] and as_float["maskclip_score"] == reference["maskclip_score"]
    assert as_float["config"]["sampler_precision"] == "float32"

    for native in ("float32", "bfloat16"):
        monkeypatch.setattr(fast_path, "native_precision", lambda native=native: native)
        assert fast_path.resolve_sampler_precision("native", "bfloat16") == native
    assert fast_path.resolve_sampler_precision("stored", "bfloat16") == "bfloat16"
    assert fast_path.resolve_sampler_precision("float32", "bfloat16") == "float32"
    with pytest.raises(ValueError, match="sampler precision"):
        fast_path.resolve_sampler_precision("fp8", "float32")
    with pytest.raises(ValueError, match="--sampler-precision"):
        generation.evaluate(generation.EvalConfig(sampler_precision="half", **cfg), pipe)


def test_cli_reports_bad_inputs_clearly(tiny_run, tmp_path, capsys):
    from armani.evaluation import generation

    rc = generation.main(["--checkpoint", str(tiny_run), "--classifier", str(tmp_path / "nope"),
                          "--num-prompts", "1", "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert rc == 2 and "holds no attribute classifier" in capsys.readouterr().err
    rc = generation.main(["--checkpoint", str(tmp_path), "--num-prompts", "1", "--out", str(tmp_path / "r.json"),
                          "--no-progress"])
    assert rc == 2 and "neither a saved pipeline" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_armani_evaluate_is_a_thin_entry_point():
    """``python -m armani.evaluate`` (the documented command) runs the generation evaluation's own CLI."""
    import armani.evaluate as entry
    from armani.evaluation import generation

    assert entry.main is generation.main
    for name in entry.__all__:
        assert getattr(entry, name) is getattr(generation, name)
    with pytest.raises(SystemExit) as exit_info:
        entry.parse_args(["--help"])
    assert exit_info.value.code == 0


def test_partial_category_pairs_replays_the_pipeline_and_pairs_its_readings(tiny_run, classifier_dir, tmp_path):
    """research/partial_category_pairs.py: the composite it replays step by step ends in exactly the
    pipeline's output (it raises otherwise), and the paired table adds up to every sample."""
    sys.path.insert(0, str(ROOT / "research"))
    import partial_category_pairs as pairs

    assert pairs.mcnemar_exact(0, 0) == 1.0
    assert pairs.mcnemar_exact(5, 5) == 1.0
    assert pairs.mcnemar_exact(18, 4) == pytest.approx(0.0043, abs=1e-4)  # a textbook binomial tail
    out = tmp_path / "pairs.json"
    summary = pairs.main(["--checkpoint", str(tiny_run), "--classifier", str(classifier_dir), "--num-prompts", "3",
                          "--samples-per-prompt", "2", "--out", str(out), "--figure", str(tmp_path / "f.png"),
                          "--category", "none"])
    saved = json.loads(out.read_text())
    assert summary["samples"] == 6 and sum(summary["pairs"].values()) == 6
    assert len(saved["records"]) == 3
    for record in saved["records"]:
        assert all(len(record[name]) == 2 for name in ("text_alone", *pairs.VARIANTS))
    assert set(summary["misses"]) == {"text_alone", *pairs.VARIANTS}
    assert not (tmp_path / "f.png").exists()  # no prompt of that category, so no figure

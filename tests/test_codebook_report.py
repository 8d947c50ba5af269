"""The codebook report: known answers for its metrics, then the CLI on the tiny run (a cross-modal
codebook under two names, and a product-quantised one trained in seconds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from armani.evaluation.codebook_report import (
    PartSurvival,
    attributes_read,
    encode_with_words,
    evaluate_one,
    health,
    json_safe,
    load_codebook,
    main,
    parse_checkpoints,
    reconstruction_metrics,
    validation_set,
)
from armani.parts import PART_ID

ROOT = Path(__file__).resolve().parents[1]


# -- known answers, no model -----------------------------------------------------------------
def test_psnr_ssim_known_answers():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    perfect = reconstruction_metrics(x, x)
    assert perfect["psnr"] == math.inf
    assert perfect["ssim"] == pytest.approx(1.0, abs=1e-5)
    # A constant offset of 0.1 in [0, 1] units (0.2 in [-1, 1]) is an MSE of 0.01: 20 dB.
    shifted = (x + 0.2).clamp(-1, 1)
    y = x.clamp(-0.8, 1.0) - 0.2  # keep the shift exact inside the range
    m = reconstruction_metrics(y + 0.2, y)
    assert m["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert m["ssim"] < 1.0
    noisy = reconstruction_metrics(x, (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1))
    assert noisy["psnr"] < reconstruction_metrics(x, shifted)["psnr"] and noisy["ssim"] < 0.9


def test_health_per_group_and_overall():
    K = 8
    g0 = torch.arange(K).repeat(4)  # every code of group 0, evenly: perplexity K
    g1 = torch.full((4 * K,), 3)  # group 1 collapsed onto code 3: perplexity 1
    ids = torch.stack([g0, g1], dim=-1).reshape(2, 2 * K, 2)  # (B, N, G)
    out, overall = health(ids, K)
    assert out["num_groups"] == 2 and out["codebook_size"] == K
    assert out["per_group"][0] == {"usage": 1.0, "used": K, "dead": 0, "perplexity": pytest.approx(K)}
    assert out["per_group"][1]["used"] == 1 and out["per_group"][1]["perplexity"] == pytest.approx(1.0)
    assert out["used"] == K + 1 and out["dead"] == K - 1 and out["usage"] == pytest.approx((K + 1) / (2 * K))
    # Overall: code 3 of group 1 is entry K + 3, distinct from group 0's code 3.
    assert overall.counts[K + 3] == 4 * K and overall.counts[3] == 4
    vq, _ = health(g0.reshape(4, K), K)  # plain VQ: one group, equal to the overall numbers
    assert vq["num_groups"] == 1 and vq["per_group"][0]["perplexity"] == pytest.approx(vq["perplexity"])


def test_part_survival_counts_lost_parts():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = PART_ID["body"]
    target[0, 3, 3:5] = PART_ID["button"]  # 2 button pixels
    s = PartSurvival()
    s.update(target.clone(), target)
    perfect = s.compute()
    assert perfect["pixel_accuracy"] == 1.0 and perfect["mean_iou"] == 1.0
    assert set(perfect["per_part"]) == {"background", "body", "button"}  # absent parts left out
    pred = target.clone()
    pred[0, 3, 3] = PART_ID["body"]  # one of the two buttons pixels lost
    s = PartSurvival()
    s.update(pred, target)
    r = s.compute()["per_part"]
    assert r["button"]["accuracy"] == pytest.approx(0.5) and r["button"]["iou"] == pytest.approx(0.5)
    assert r["body"]["accuracy"] == 1.0 and r["body"]["iou"] == pytest.approx(14 / 15)
    assert r["button"]["pixels"] == 2


class _ReadsPixels:
    """A stand-in attribute classifier: "red" when the image's mean red channel is positive,
    "blue" otherwise; every other field copied from a fixed record."""

    def __init__(self, record):
        self.record = record

    def eval(self):
        return self

    def requires_grad_(self, flag):
        return self

    def predict(self, images):
        return [dict(self.record, color="red" if float(im[0].mean()) > 0 else "blue") for im in images]


def test_attribute_readings_known_answer():
    record = {"category": "shirt", "color": "red", "pattern": "solid", "sleeve": "long",
              "parts": {"body": 1, "sleeve": 1, "button": 3}, "pocket_side": None}
    reader = _ReadsPixels(record)
    images = -torch.ones(4, 3, 8, 8)
    images[:2, 0] = 1.0  # two red garments, two blue
    targets = [dict(record, color=c) for c in ("red", "red", "blue", "blue")]
    assert attributes_read(reader, images, targets)["color"] == 1.0
    faded = images.clone()
    faded[0, 0] = -1.0  # a "codebook" that lost the first garment's red
    read = attributes_read(reader, faded, targets)
    assert read["color"] == 0.75
    assert read["category"] == read["count:button"] == read["part:pocket"] == 1.0


def test_json_safe_and_checkpoint_names(tmp_path):
    assert json_safe({"a": [math.inf, -math.inf, math.nan, 1.5]}) == {"a": ["inf", "-inf", "nan", 1.5]}
    assert parse_checkpoints(["x=/a/b", "/c/armani"]) == {"x": Path("/a/b"), "armani": Path("/c/armani")}
    with pytest.raises(ValueError, match="two checkpoints"):
        parse_checkpoints(["x=/a", "x=/b"])
    with pytest.raises(FileNotFoundError, match="neither a saved pipeline"):
        load_codebook(tmp_path)


# -- on the tiny run --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pq_run(tiny_run, tmp_path_factory) -> Path:
    """The M6-style product-quantised codebook, trained alone (its segmenter is reused)."""
    run = tmp_path_factory.mktemp("m6_run")
    cmd = [sys.executable, str(ROOT / "src" / "armani" / "train.py"), "--config", "tiny", "--variant", "m6",
           "--stage", "segmenter,vqgan", "--reuse", str(tiny_run), "--output", str(run),
           f"data.cache_dir={tiny_run / 'data'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "[segmenter] reused" in proc.stdout
    return run


def test_encoding_matches_the_pipeline(tiny_run, tiny_pipeline):
    cb = load_codebook(tiny_run, "armani")
    assert cb.kind == "cross-modal"
    data = validation_set(8, cb.vqgan.config.image_size, seed=3)
    ids, index, tokens = encode_with_words(cb, data.images, data.captions)
    for b in range(len(data)):  # the pipeline encodes one caption at a time
        text_ids = tiny_pipeline.tokenizer(data.captions[b], warn=False).ids
        assert torch.equal(ids[b : b + 1], tiny_pipeline.encode_image(data.images[b : b + 1], text_ids))
    assert index.shape == ids.shape and int(index.max()) < tokens.ids.shape[1]
    # Every fused word is a word of that sample's caption.
    for b in range(len(data)):
        for t in index[b][index[b] >= 0].tolist():
            assert tokens.word_ids[b, t] >= 0


def test_words_per_code_accounts_for_every_fused_cell(tiny_run):
    cb = load_codebook(tiny_run, "armani")
    data = validation_set(12, cb.vqgan.config.image_size, seed=5)
    result = evaluate_one(cb, data, judge=cb.segmenter, batch_size=5, num_examples=3, top_words=10_000)
    _, index, tokens = encode_with_words(cb, data.images, data.captions)
    assert sum(c for row in result.words.values() for _, c in row) == int((index >= 0).sum())
    caption_words = {w for ws in tokens.words for w in ws}
    assert {w for row in result.words.values() for w, _ in row} <= caption_words
    assert result.examples.shape == (3, 3, 32, 32) and result.examples.abs().max() <= 1
    # Batching does not change the numbers.
    again = evaluate_one(cb, data, judge=cb.segmenter, batch_size=12, num_examples=3, top_words=10_000)
    assert again.metrics["psnr"] == pytest.approx(result.metrics["psnr"], rel=1e-5)
    a, b = (r.metrics["segmenter_on_reconstructions"] for r in (again, result))
    assert a["pixel_accuracy"] == pytest.approx(b["pixel_accuracy"], abs=1e-4)
    assert {p: v["pixels"] for p, v in a["per_part"].items()} == {p: v["pixels"] for p, v in b["per_part"].items()}
    assert [v["accuracy"] for v in a["per_part"].values()] == pytest.approx(
        [v["accuracy"] for v in b["per_part"].values()], abs=1e-3)


def test_cli_compares_codebooks(tiny_run, pq_run, tmp_path, capsys):
    out, fig, words = tmp_path / "codebook.json", tmp_path / "codebook.png", tmp_path / "words.md"
    assert main(["--checkpoint", f"armani={tiny_run}", "--checkpoint", f"again={tiny_run}",
                 "--checkpoint", f"m6={pq_run}", "--num", "24", "--batch-size", "16", "--out", str(out),
                 "--figure", str(fig), "--words-table", str(words)]) == 0
    report = json.loads(out.read_text())
    assert report["num_images"] == 24 and report["image_size"] == 32
    assert str(tiny_run) in report["judge_segmenter"]
    books = report["codebooks"]
    assert list(books) == ["armani", "again", "m6"]
    # The same codebook under two names gives the same numbers: encoding is deterministic.
    for key in ("codebook", "psnr", "ssim", "segmenter_on_reconstructions", "words_per_code",
                "classifier_on_reconstructions"):
        assert books["armani"][key] == books["again"][key]
    # The shipped attribute classifier read every reconstruction and the originals, per attribute.
    assert report["classifier"] == "checkpoints/attribute_classifier"
    from armani.evaluation.attributes import ATTRIBUTE_KEYS

    assert set(report["classifier_on_originals"]) == set(ATTRIBUTE_KEYS)
    for book in books.values():
        read = book["classifier_on_reconstructions"]
        assert set(read) == set(ATTRIBUTE_KEYS) and all(0 <= v <= 1 for v in read.values())
    for name, book in books.items():
        cb = book["codebook"]
        assert 0 < cb["usage"] <= 1 and cb["used"] + cb["dead"] == cb["codebook_size"] * cb["num_groups"]
        assert 1 <= cb["perplexity"] <= cb["used"] + 1e-6
        assert 0 < book["psnr"] < 60 and -1 <= book["ssim"] <= 1
        seg = book["segmenter_on_reconstructions"]
        assert 0 <= seg["pixel_accuracy"] <= 1 and "body" in seg["per_part"]
        assert all(0 <= p["accuracy"] <= 1 and 0 <= p["iou"] <= 1 for p in seg["per_part"].values())
    assert books["armani"]["kind"] == "cross-modal" and books["m6"]["kind"] == "product-quantised"
    pq = books["m6"]["codebook"]
    assert pq["num_groups"] == 4 and pq["codebook_size"] == 256 and len(pq["per_group"]) == 4
    assert pq["used"] == sum(g["used"] for g in pq["per_group"])
    assert "words_per_code" in books["armani"] and "words_per_code" not in books["m6"]
    # The judge on the original images: the ceiling, over the same parts.
    assert set(report["segmenter_on_originals"]["per_part"]) == set(books["m6"]["segmenter_on_reconstructions"]["per_part"])

    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| metric"))
    assert header.split("|")[2:-1] == [" armani (cross-modal) ", " again (cross-modal) ", " m6 (product-quantised) ",
                                       " originals "]
    for row in ("| codebook usage %", "| perplexity", "| dead codes", "| PSNR (dB)", "| SSIM", "| usage % per group",
                "| body: accuracy / IoU", "| classifier reads the true color", "| classifier: mean over all attributes"):
        assert row in printed
    table = words.read_text()
    assert "### armani" in table and "### again" in table and "### m6" not in table
    section = table.split("### again")[0].split("### armani: part words")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| code")]
    if books["armani"].get("codes_per_part_word"):  # the reverse view follows, word by word
        assert "### armani: part words and the codes they were fused into" in table
    assert len(rows) == min(50, len(books["armani"]["words_per_code"])) > 0
    code, _, cell = rows[0].strip("| ").split(" | ")
    assert cell == ", ".join(f"{w} ({n})" for w, n in books["armani"]["words_per_code"][code])
    assert fig.stat().st_size > 10_000
    assert (tmp_path / "codebook-armani.png").is_file() and not (tmp_path / "codebook-m6.png").exists()


def test_cli_without_classifier(tiny_run, tmp_path):
    out = tmp_path / "plain.json"
    assert main(["--checkpoint", f"armani={tiny_run}", "--num", "4", "--no-classifier", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["classifier"] is None and report["classifier_on_originals"] is None
    assert "classifier_on_reconstructions" not in report["codebooks"]["armani"]
    with pytest.raises(FileNotFoundError, match="holds no attribute classifier"):
        main(["--checkpoint", f"armani={tiny_run}", "--num", "4", "--classifier", str(tmp_path)])


def test_codebook_of_a_pipeline_sharing_components(tiny_pipeline, tmp_path):
    """Baselines ship their segmenter / MaskCLIP as references to checkpoints/armani's."""
    tiny_pipeline.save_pretrained(tmp_path / "armani")
    tiny_pipeline.save_pretrained(tmp_path / "variant", share_with=tmp_path / "armani")
    meta = json.loads((tmp_path / "variant" / "pipeline.json").read_text())
    assert {"segmenter", "maskclip", "vqgan"} <= set(meta["shared"])  # identical, so referenced
    cb = load_codebook(tmp_path / "variant", "variant")
    assert cb.kind == "cross-modal" and cb.segmenter is not None and cb.maskclip is not None
    data = validation_set(4, cb.vqgan.config.image_size, seed=2)
    ids, _, _ = encode_with_words(cb, data.images, data.captions)
    again, _, _ = encode_with_words(load_codebook(tmp_path / "armani"), data.images, data.captions)
    assert torch.equal(ids, again)

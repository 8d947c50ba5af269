"""research/prompt_grid.py, compute_curve.py, ce_split.py, condition_gain.py, codebook_anchor.py, fid_anatomy.py,
lineage_curve.py, sleeve_completion.py, train_on_gpu.py (at tiny size) and the benchmarks' building blocks
(bench_attention.py whole)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research"))

import bench_attention  # noqa: E402
import bench_tokenizing  # noqa: E402
import bench_transformer_compile  # noqa: E402
import ce_split  # noqa: E402
import codebook_anchor  # noqa: E402
import compute_curve  # noqa: E402
import condition_gain  # noqa: E402
import condition_probe  # noqa: E402
import fid_anatomy  # noqa: E402
import lineage_curve  # noqa: E402
import prompt_grid  # noqa: E402
import train_on_gpu  # noqa: E402


def test_pick_prompts_covers_every_category_before_repeating():
    from armani.data.garments import CATEGORIES

    prompts = prompt_grid.pick_prompts(16)
    cats = [p["attributes"]["category"] for p in prompts]
    assert len(prompts) == 16 and set(cats[: len(CATEGORIES)]) == set(CATEGORIES)
    assert len({p["text"] for p in prompts}) == 16


def test_prompt_grid_draws_every_prompt(tiny_pipeline):
    prompts = prompt_grid.pick_prompts(3)
    grid = prompt_grid.prompt_grid(tiny_pipeline, prompts, task="text+sketch", samples=1, columns=2)
    side = tiny_pipeline.image_size * prompt_grid.SCALE
    a = np.asarray(grid)
    assert a.shape[1] >= 2 * 3 * side  # two tiles a row: control, sample, reference each
    assert (a < 250).mean() > 0.2  # garments drawn, not a blank page


def test_compute_curve_finds_checkpoints_and_loads_their_weights(tiny_run, tmp_path):
    points = compute_curve.find_points(tiny_run, [])
    assert points and [p["step"] for p in points] == sorted(p["step"] for p in points)
    last = Path(points[-1]["dir"]) / "model.safetensors"
    pipe = compute_curve.pipeline_with(str(tiny_run), last)
    from safetensors.torch import load_file

    stored = load_file(str(last))
    for name, value in pipe.transformer.state_dict().items():
        assert torch.equal(value, stored["model." + name].to(value.dtype)), name
    bad = tmp_path / "nope"
    bad.mkdir()
    with pytest.raises(FileNotFoundError, match="engine checkpoint"):
        compute_curve.find_points(None, [f"x={bad}"])
    with pytest.raises(ValueError, match="NAME=DIR"):
        compute_curve.find_points(None, [str(bad)])
    assert compute_curve.main(["--point", str(bad), "--out", str(tmp_path / "c.json")]) == 2
    assert not (tmp_path / "c.json").exists()


def test_the_shipped_transformer_reads_the_category_and_colour_words(tmp_path):
    """Lead 2 of issue 14, by content: swapping the category word of a real garment's caption
    makes the garment's own tokens less likely under the shipped transformer, by more than
    three standard errors (the colour word too). A model that ignored the word scores ~0."""
    out = tmp_path / "probe.json"
    assert condition_probe.main(["--num", "24", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for word in ("category", "color"):
        r = result[word]
        assert r["garments"] == 24
        assert r["delta_nll_nats"] > 3 * r["stderr"] > 0, (word, r)


def test_compute_curve_loads_a_run_that_switched_on_grid_positions(tiny_run, tmp_path):
    """The curve's step 0 is the base's plain transformer; the run's points carry the 2D code."""
    import dataclasses

    from safetensors.torch import save_file

    from armani.loading import load_pipeline
    from armani.models.transformer import CrossModalTransformer

    base = load_pipeline(tiny_run).transformer
    grid = CrossModalTransformer(dataclasses.replace(base.config, grid_positions=True))
    with torch.no_grad():
        grid.grid_row_emb.weight.normal_()
    save_file({"model." + k: v.contiguous() for k, v in grid.state_dict().items()}, str(tmp_path / "model.safetensors"))
    pipe = compute_curve.pipeline_with(str(tiny_run), tmp_path / "model.safetensors")
    assert pipe.transformer.config.grid_positions
    assert torch.equal(pipe.transformer.grid_row_emb.weight, grid.grid_row_emb.weight)
    assert not compute_curve.pipeline_with(str(tiny_run), None).transformer.config.grid_positions


def test_ce_split_is_the_per_token_cross_entropy_split_by_the_stored_garment_masks(tiny_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from armani.models.transformer import CrossModalTransformer

    path = tiny_run / "transformer" / "tokens-val.safetensors"
    tokens = load_file(str(path))
    model = CrossModalTransformer.from_pretrained(tiny_run / "transformer" / "final").eval()
    out = ce_split.ce_split(model, tokens, batch_size=3)
    share = out["garment_share"]
    assert out["rows"] == len(tokens["image_ids"]) and 0 < share < 1
    assert share == pytest.approx(tokens["garment_tokens"].float().mean().item())
    # the whole-file mean is the share-weighted mean of its two parts
    assert out["ce_all"] == pytest.approx(share * out["ce_garment"] + (1 - share) * out["ce_background"], rel=1e-5)
    with torch.no_grad():
        direct = model.token_losses(*(tokens[k] for k in ce_split.KEYS)).mean().item()
    assert out["ce_all"] == pytest.approx(direct, rel=1e-4)
    old = tmp_path / "old.safetensors"
    save_file({k: v for k, v in tokens.items() if k != "garment_tokens"}, str(old))
    with pytest.raises(ValueError, match="garment_tokens"):
        ce_split.main(["--tokens", str(old), "--checkpoint", f"t={tiny_run / 'transformer' / 'final'}"])


def test_condition_gain_scores_each_condition_alone_and_reads_draw_0_of_a_multi_draw_file(tiny_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from armani.models.transformer import CrossModalTransformer

    folder = tiny_run / "transformer" / "final"
    model = CrossModalTransformer.from_pretrained(folder).eval()
    tokens = {k: v for k, v in load_file(str(tiny_run / "transformer" / "tokens-val.safetensors")).items()
              if k in condition_gain.KEYS}
    with torch.no_grad():
        every = model.token_losses(*(tokens[k] for k in condition_gain.KEYS)).mean().item()
        nothing = model.token_losses(*(tokens[k] for k in condition_gain.KEYS),
                                     drop={"text": True, "sketch": True, "partial": True}).mean().item()
        text_only = model.token_losses(*(tokens[k] for k in condition_gain.KEYS),
                                       drop={"text": False, "sketch": True, "partial": True}).mean().item()
    assert condition_gain.mean_ce(model, tokens, "all", batch_size=3) == pytest.approx(every, rel=1e-5)
    assert condition_gain.mean_ce(model, tokens, "none", batch_size=3) == pytest.approx(nothing, rel=1e-5)
    assert condition_gain.mean_ce(model, tokens, "text", batch_size=3) == pytest.approx(text_only, rel=1e-5)
    assert abs(text_only - nothing) > 1e-6  # the caption is really dropped in one of them (tiny model: small)

    # a training file with two draws per row: the probe scores draw 0, what the first epoch saw
    run = tmp_path / "run" / "transformer"
    run.mkdir(parents=True)
    views = {k: torch.stack([v, torch.flip(v, [0])], dim=1) if k in ("sketch_ids", "partial_ids") else v
             for k, v in tokens.items()}
    save_file({k: v.contiguous() for k, v in views.items()}, str(run / "tokens-train.safetensors"))
    save_file({k: v.contiguous() for k, v in tokens.items()}, str(run / "tokens-val.safetensors"))
    rows = condition_gain.load_rows(run / "tokens-train.safetensors", 2)
    assert torch.equal(rows["partial_ids"], tokens["partial_ids"][:2])
    out = condition_gain.main(["--run", str(tmp_path / "run"), "--checkpoint", str(folder), "--rows", "4",
                               "--out", str(tmp_path / "gain.json")])
    # draw 0 of the train file is the val file itself, so both splits score the same
    assert out["ce"]["train"] == pytest.approx(out["ce"]["val"], rel=1e-6)
    assert out["gain"]["val"]["all"] == pytest.approx(out["ce"]["val"]["none"] - out["ce"]["val"]["all"])
    assert json.loads((tmp_path / "gain.json").read_text())["rows"] == 4


class _RoundTrip:
    """Just enough of a pipeline for ``codebook_round_trip``: the 'codes' are the image itself,
    and decoding applies ``change``."""

    image_size = 64

    def __init__(self, change):
        self.change = change
        self.vqgan = self

    def tokenizer(self, texts, warn=False):
        return type("Read", (), {"ids": torch.zeros(len(texts), 4, dtype=torch.long)})()

    def encode_image(self, images, text_ids):
        return images

    def decode(self, images):
        return self.change(images)


def test_colour_shift_is_zero_for_a_lossless_codebook_and_reads_a_yellow_tint():
    lossless = codebook_anchor.colour_shift(_RoundTrip(lambda x: x), seed=0, num_prompts=4)
    assert lossless["delta_e"] == pytest.approx(0, abs=1e-6) and lossless["delta_e_of_mean"] == pytest.approx(0, abs=1e-6)
    yellow = torch.tensor([0.1, 0.1, -0.1]).view(1, 3, 1, 1)  # more red and green, less blue
    tinted = codebook_anchor.colour_shift(_RoundTrip(lambda x: (x + yellow).clamp(-1, 1)), seed=0, num_prompts=4)
    assert tinted["delta_b"] > 3 and tinted["delta_e"] > 3 and tinted["delta_e_of_mean"] > 3


class _Encoder:
    """Just enough of a pipeline for ``ids_kept``: its image codebook is a function of the image."""

    image_size = 64

    def __init__(self, vqgan):
        self.vqgan = vqgan

    def tokenizer(self, texts, warn=False):
        return type("Read", (), {"ids": torch.zeros(len(texts), 4, dtype=torch.long)})()

    def encode_image(self, images, text_ids):
        return self.vqgan(images)


def test_ids_kept_counts_the_token_ids_a_new_codebook_keeps_and_restores_the_old_one():
    bright = lambda x: (x.mean(1) > 0).long()  # noqa: E731  (B, H, W) ids 0/1
    dark = lambda x: (x.mean(1) <= 0).long()  # noqa: E731  every id changes
    half = lambda x: torch.where(torch.arange(x.shape[-1]) < x.shape[-1] // 2, bright(x), 2)  # noqa: E731
    pipe = _Encoder(bright)
    assert codebook_anchor.ids_kept(pipe, bright, seed=0, num_prompts=3) == 1.0
    assert codebook_anchor.ids_kept(pipe, dark, seed=0, num_prompts=3) == 0.0
    assert codebook_anchor.ids_kept(pipe, half, seed=0, num_prompts=3) == pytest.approx(0.5)
    assert pipe.vqgan is bright  # the pipeline keeps its own codebook


def test_fid_anatomy_splices_along_the_garment_and_decodes_as_the_anchor_does(tiny_pipeline, tmp_path):
    from armani.evaluation.generation import codebook_round_trip
    from armani.evaluation.metrics import to_uint8
    from armani.evaluation.prompts import default_prompts

    size = tiny_pipeline.image_size
    prompts = default_prompts(3, "val", 0)
    renders, garment = fid_anatomy.ceiling_renders(prompts, seed=0, size=size, k=2)
    assert renders.shape == (6, size, size, 3) and garment.shape == (6, size, size) and garment.any()
    texts = [p["text"] for p in prompts for _ in range(2)]
    recon, unquantised = fid_anatomy.codebook_views(tiny_pipeline, renders, texts)
    x = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    anchor = to_uint8(codebook_round_trip(tiny_pipeline)(x, texts)).permute(0, 2, 3, 1).numpy()
    assert np.abs(recon.astype(int) - anchor.astype(int)).max() <= 1  # the anchor's own round trip
    assert unquantised.shape == recon.shape
    sets = fid_anatomy.variants(renders, garment, recon, unquantised, np.random.default_rng(0))
    inside = garment[..., None].repeat(3, -1)
    spliced = sets["codebook garment on the real background"]
    assert (spliced[inside] == recon[inside]).all() and (spliced[~inside] == renders[~inside]).all()
    interior = sets["renders, garment interior blurred (sigma 1)"]
    assert (interior[~inside] == renders[~inside]).all() and (interior[inside] != renders[inside]).any()
    assert fid_anatomy.psnr(renders, renders) is None and fid_anatomy.psnr(renders, recon) > 0
    from PIL import Image

    fid_anatomy.figure(sets, {name: 100.0 for name in sets}, str(tmp_path / "anatomy.png"), columns=3)
    with Image.open(tmp_path / "anatomy.png") as picture:  # one row per drawn variant, three garments each
        assert picture.size[0] > 3 * size and picture.size[1] > len(fid_anatomy.FIGURE_ROWS) * size


def test_lineage_curve_reads_the_kept_reports_in_order(tmp_path):
    for name, part in (("a", 0.6), ("b", 0.8)):
        folder = tmp_path / name
        folder.mkdir()
        for seed in (0, 1):
            report = {"part_accuracy": part + seed * 0.01, "fid": 100.0 - seed, "config": {"seed": seed},
                      "attributes": {"category": {"accuracy": part}},
                      "anchors": {"floor": {"part_accuracy": 0.5, "fid": 500.0, "attributes": {"category": 0.1}},
                                  "ceiling": {"part_accuracy": 0.99, "fid": 120.0, "attributes": {"category": 1.0}}}}
            (folder / f"text_seed{seed}.json").write_text(json.dumps(report))
    out = tmp_path / "curve.json"
    argv = ["--point", f"first|100|30|{tmp_path / 'a'}", "--point", f"second|300|60|{tmp_path / 'b'}",
            "--out", str(out), "--figure", str(tmp_path / "curve.png")]
    assert lineage_curve.main(argv) == 0
    rows = json.loads(out.read_text())["points"]
    assert [r["steps"] for r in rows] == [100, 300] and [r["cumulative_hours"] for r in rows] == [0.5, 1.5]
    assert rows[1]["part_accuracy"] == pytest.approx(0.805) and rows[1]["category"] == pytest.approx(0.8)
    assert rows[1]["part_accuracy:floor"] == 0.5 and rows[1]["fid:ceiling"] == 120.0
    assert rows[0]["fid:codebook"] is None and (tmp_path / "curve.png").is_file()
    # a branch that was not continued: its hours are its own, the next point continues from "first"
    argv = ["--point", f"first|100|30|{tmp_path / 'a'}", "--point", f"side|200|30|{tmp_path / 'b'}|branch",
            "--point", f"next|200|60|{tmp_path / 'b'}", "--out", str(out), "--figure", str(tmp_path / "curve.png")]
    assert lineage_curve.main(argv) == 0
    rows = json.loads(out.read_text())["points"]
    assert [r["cumulative_hours"] for r in rows] == [0.5, 1.0, 1.5] and [r["branch"] for r in rows] == [False, True, False]
    assert lineage_curve.main(["--point", f"x|1|1|{tmp_path / 'a'}|sideways", "--out", str(out)]) == 2
    assert lineage_curve.main(["--point", f"x|1|1|{tmp_path / 'missing'}", "--out", str(out)]) == 2


def test_bench_transformer_compile_times_real_training_steps():
    import dataclasses

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "armani" / "transformer" / "config.json"
    config = bench_transformer_compile.load_config(shipped)
    assert config.image_len == 256 and config.grid_positions  # the shipped sizes are read
    small = dataclasses.replace(config, width=32, layers=1, heads=2)
    row = bench_transformer_compile.time_steps(small, compiled=False, batch_size=2, steps=2, warmup=1)
    assert row["median_s_per_step"] > 0 and np.isfinite(row["final_loss"]) and not row["compiled"]


def test_bench_attention_counts_what_torch_counts_and_times_every_head_split(tmp_path):
    """Its FLOP count is torch's own count of the (unmasked) math path, halved for the causal
    mask; every head split and dtype gets a row."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    assert counter.get_total_flops() == 2 * bench_attention.attention_flops(2, 16, 32)
    out = tmp_path / "att.json"
    report = bench_attention.main(["--batch", "2", "--seq", "24", "--width", "32", "--heads", "4", "2",
                                   "--repeats", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert [(r["heads"], r["head_dim"], r["dtype"]) for r in report["rows"]] == [
        (4, 8, "bfloat16"), (4, 8, "float32"), (2, 16, "bfloat16"), (2, 16, "float32")]
    assert all(r["median_ms"] > 0 and r["gflops_per_s"] > 0 for r in report["rows"])
    with pytest.raises(SystemExit):
        bench_attention.main(["--width", "32", "--heads", "3"])


def test_bench_tokenizing_encodes_real_rows_alike_in_both_layouts(tmp_path):
    """The stage's tokenize_batch on the shipped models: every id of both layouts is there and
    (nearly) all agree; the report is written."""
    out = tmp_path / "tok.json"
    report = bench_tokenizing.main(["--rows", "16", "--batch-size", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert report["contiguous"]["rows_per_s"] > 0 and report["channels_last"]["rows_per_s"] > 0
    assert report["ids_equal"]["image_ids"]["of"] == 16 * 256 and report["ids_equal"]["sketch_ids"]["of"] == 16 * 64
    assert all(v["share"] >= 0.99 for v in report["ids_equal"].values()), report["ids_equal"]


def test_the_shipped_model_draws_the_usual_sleeves_once_the_prompt_is_completed(tmp_path):
    """Coats and hoodies asked for without a sleeve length: with the pipeline's completion the
    attribute classifier reads the category's usual length (long) in (nearly) every image, and
    in clearly fewer without it over the two (the v12 / v13 mean: coats 0.25, hoodies 0.42
    without; the v14 mean draws hoodies' long sleeves more often unprompted: 0.33 and 0.83)."""
    import sleeve_completion

    out = tmp_path / "s.json"
    assert sleeve_completion.main(["--categories", "coat", "hoodie", "--samples", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["per_category"]
    for category in ("coat", "hoodie"):
        assert rows[category]["with: usual length"] >= 0.8, rows
        assert rows[category]["without: usual length"] <= rows[category]["with: usual length"], rows
    mean = report["tops_with_sleeves_mean"]
    assert mean["without: usual length"] <= mean["with: usual length"] - 0.3, mean


def test_train_on_gpu_runs_its_recipe_at_tiny_size_inside_the_budgets(tiny_run, tmp_path, monkeypatch):
    """The GPU recipe end to end on the CPU at tiny size: the wider, rebalanced codebook, the
    transplant of the base transformer onto its codes, stage 2 from that start, and a pipeline
    that generates, each stage inside its 1.2 s budget."""
    from armani.pipeline import ArmaniPipeline

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "gpu"
    args = ["--out", str(out), "--config", "tiny", "--base", str(tiny_run), "--codebook-minutes", "0.02",
            "--transformer-minutes", "0.02", "--max-steps", "60", "--batch", "4", "--rows", "64",
            "--stage2-rows", "64", "--gan-start", "10", "--workers", "0", "--transplant-rows", "32",
            f"data.cache_dir={tmp_path / 'data'}", "train.tracker=none"]
    assert train_on_gpu.main(args) == 0
    vq = json.loads((out / "pipeline" / "vqgan" / "config.json").read_text())
    design = (vq["base_channels"], vq["num_res_blocks"], vq["decoder_refine_blocks"], vq["disc_weight"])
    assert design == (64, 2, 1, 0.3)
    # The codebook (~0.5 s a step here) is stopped by its budget, fitted once half of it is spent;
    # tiny stage 2 (~0.02 s a step) fits all 60 into its own.
    report = json.loads((out / "vqgan" / "final" / "training_report.json").read_text())
    assert 3 <= report["steps"] < 60, report["steps"]
    report = json.loads((out / "transformer" / "final" / "training_report.json").read_text())
    assert report["steps"] <= 60 and report["train_seconds"] < 0.02 * 60 * 3  # the final evaluation is extra
    assert report["init_from"] == str(out / "init_transplant")
    assert [t["step"] for t in json.loads((out / "gpu_timings.json").read_text())] == [
        "codebook", "transplant", "stage2", "assemble"]
    pipe = ArmaniPipeline.from_pretrained(out / "pipeline")
    assert pipe.vqgan.config.base_channels == 64
    images = pipe("a red dress", num_images=1, seed=0).images
    assert images[0].size == (pipe.vqgan.config.image_size,) * 2

"""Diffusion baseline: the ``diffusion`` stage trains through train.py on a tiny run that
already has MaskCLIP, exports a pipeline folder that loads alone, and the pipeline samples
seeded images with DPM-Solver++ and DDIM, classifier-free guidance and clear input errors."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from armani.baselines.diffusion import (
    DiffusionBaseline,
    DiffusionBaselineConfig,
    DiffusionBaselinePipeline,
    tiny_diffusion_config,
)
from armani.pipeline import PipelineInputError


@pytest.fixture(scope="module")
def diffusion_run(tiny_run_with_stage):
    """A copy of the tiny run with the diffusion stage trained on top (6 steps)."""
    return tiny_run_with_stage("diffusion")


@pytest.fixture(scope="module")
def pipe(diffusion_run):
    # float32 so that batch composition (guided vs unguided passes) does not change rounding
    return DiffusionBaselinePipeline.from_run(diffusion_run, dtype="float32")


def _arrays(out) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in out.images])


def test_stage_exports_a_pipeline_folder(diffusion_run):
    final = diffusion_run / "diffusion" / "final"
    assert (final / "DONE").is_file()
    meta = json.loads((final / "pipeline.json").read_text())
    assert meta["format"] == "armani-diffusion"
    assert (final / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (final / "scheduler" / "scheduler_config.json").is_file()
    assert (final / "text_encoder" / "model.safetensors").is_file()
    assert (final / "tokenizer" / "tokenizer.json").is_file()
    assert not list(final.rglob("*.bin")) and not list(final.rglob("*.pt"))
    report = json.loads((final / "training_report.json").read_text())
    assert report["steps"] == 6
    assert math.isfinite(report["final_loss"]) and report["final_loss"] > 0
    # validation loss at the fixed timesteps (10%, 30%, ..., 90% of 1000)
    keys = {f"loss_t{t}" for t in (100, 300, 500, 700, 900)}
    assert keys <= set(report["metrics"]), report["metrics"]
    assert all(math.isfinite(report["metrics"][k]) and report["metrics"][k] > 0 for k in keys)


def test_text_tower_is_the_frozen_maskclip_text_encoder(diffusion_run, pipe):
    from armani.models.maskclip import MaskCLIP

    maskclip = MaskCLIP.from_pretrained(diffusion_run / "maskclip" / "final")
    # frozen: the exported weights are MaskCLIP's, bit for bit
    own = pipe.text_encoder.text_encoder.state_dict()
    for k, v in maskclip.text_encoder.state_dict().items():
        assert torch.equal(own[k], v), k
    # and the features are MaskCLIP's tokens before its projection
    ids = pipe.tokenizer(["red shirt with two pockets", "dress"]).ids
    states, attend = pipe.text_encoder(ids)
    words, _ = maskclip.encode_text(ids)
    projected = torch.nn.functional.normalize(states @ maskclip.text_encoder.text_projection, dim=-1)
    torch.testing.assert_close(projected, words, atol=1e-5, rtol=1e-5)
    assert torch.equal(attend, ids != 0)
    assert states.shape == (2, ids.shape[1], maskclip.config.text_width)


def test_seeded_images_of_the_right_size(pipe):
    a = pipe(text="red t-shirt with short sleeves and a chest pocket", num_images=2, seed=0, num_inference_steps=4)
    b = pipe(text="red t-shirt with short sleeves and a chest pocket", num_images=2, seed=0, num_inference_steps=4)
    c = pipe(text="red t-shirt with short sleeves and a chest pocket", num_images=2, seed=1, num_inference_steps=4)
    assert len(a.images) == 2 and all(im.size == (32, 32) and im.mode == "RGB" for im in a.images)
    assert np.array_equal(_arrays(a), _arrays(b))
    assert not np.array_equal(_arrays(a), _arrays(c))
    assert a.text == "red t - shirt with short sleeves and a chest pocket"
    assert a.ids.shape == (2, 0)
    assert _arrays(a).std() > 5  # not a flat image


def test_guidance_mixes_conditional_and_unconditional(pipe):
    text = "blue dress with a belt"
    g1 = pipe(text=text, num_images=2, seed=3, guidance_scale=1.0, num_inference_steps=4)
    g4 = pipe(text=text, num_images=2, seed=3, guidance_scale=4.0, num_inference_steps=4)
    assert np.abs(_arrays(g1) - _arrays(g4)).mean() > 1.0
    # scale 0 keeps only the unconditional prediction: the same as sampling without text
    g0 = pipe(text=text, num_images=2, seed=3, guidance_scale=0.0, num_inference_steps=4)
    uncond = pipe(text=None, num_images=2, seed=3, num_inference_steps=4, allow_unconditional=True)
    assert np.abs(_arrays(g0) - _arrays(uncond)).max() <= 2
    assert np.abs(_arrays(g0) - _arrays(g1)).mean() > 1.0


def test_ddim_and_dpm_solver_both_sample(pipe):
    dpm = pipe(text="black coat", num_images=1, seed=5, sampler="dpm++", num_inference_steps=5)
    ddim = pipe(text="black coat", num_images=1, seed=5, sampler="ddim", num_inference_steps=5)
    assert type(pipe.model.sampling_scheduler("dpm++")).__name__ == "DPMSolverMultistepScheduler"
    assert type(pipe.model.sampling_scheduler("ddim")).__name__ == "DDIMScheduler"
    assert np.abs(_arrays(dpm) - _arrays(ddim)).mean() > 0.5  # different solvers, different images
    assert np.array_equal(_arrays(ddim), _arrays(pipe(text="black coat", num_images=1, seed=5, sampler="ddim",
                                                      num_inference_steps=5)))


def test_bad_input_errors(pipe):
    with pytest.raises(PipelineInputError, match="text only"):
        pipe(text="shirt", sketch=np.zeros((32, 32), np.uint8))
    with pytest.raises(PipelineInputError, match="text only"):
        pipe(text="shirt", partial=np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(PipelineInputError, match="needs a text"):
        pipe(text="   ")
    with pytest.raises(PipelineInputError, match="no words"):
        pipe(text="!!! ???")
    with pytest.raises(PipelineInputError, match="string"):
        pipe(text=42)
    with pytest.raises(PipelineInputError, match="num_images"):
        pipe(text="shirt", num_images=0)
    with pytest.raises(PipelineInputError, match="sampler"):
        pipe(text="shirt", sampler="euler")
    with pytest.raises(PipelineInputError, match="guidance"):
        pipe(text="shirt", guidance_scale=-1)
    with pytest.raises(PipelineInputError, match="num_inference_steps"):
        pipe(text="shirt", num_inference_steps=0)
    long = " ".join(["red shirt with two pockets"] * 20)
    out = pipe(text=long, num_images=1, num_inference_steps=2)
    assert any("was cut" in n for n in out.notes)
    # ArmaniPipeline-only options are accepted and ignored
    assert pipe(text="shirt", num_images=1, num_inference_steps=2, top_k=5, temperature=0.7).images


def test_save_load_roundtrip_gives_identical_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "pipeline.json").read_text())["format"] == "armani-diffusion"
    again = DiffusionBaselinePipeline.from_pretrained(tmp_path / "saved")
    assert again.settings == pipe.settings
    a = pipe(text="white shirt with five buttons", num_images=2, seed=7, num_inference_steps=3)
    b = again(text="white shirt with five buttons", num_images=2, seed=7, num_inference_steps=3)
    assert np.array_equal(_arrays(a), _arrays(b))
    meta = json.loads((tmp_path / "saved" / "pipeline.json").read_text())
    meta["format"] = "armani-pipeline"
    (tmp_path / "saved" / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="armani-diffusion"):
        DiffusionBaselinePipeline.from_pretrained(tmp_path / "saved")
    with pytest.raises(FileNotFoundError, match="diffusion"):
        DiffusionBaselinePipeline.from_run(tmp_path)


def test_cli_ships_a_diffusion_run_in_bf16(diffusion_run, pipe, tmp_path):
    """`python -m armani.assemble --run RUN --storage-dtype bfloat16` on a diffusion-only run:
    a baseline folder half the size that loads as float32 with the bf16-rounded weights."""
    from safetensors.torch import load_file

    from armani.assemble import main

    only = tmp_path / "run"  # the diffusion run without its ARMANI stages: what --stage diffusion leaves
    only.mkdir()
    for name in ("config.yaml", "tokenizer", "maskclip", "diffusion"):
        src = diffusion_run / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, only / name)
    out = tmp_path / "shipped"
    assert main(["--run", str(only), "--out", str(out), "--name", "diffusion", "--storage-dtype", "bfloat16"]) == 0
    stored = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    assert {t.dtype for t in load_file(str(out / "text_encoder" / "model.safetensors")).values()} == {torch.bfloat16}
    assert "diffusion baseline UNet" in (out / "README.md").read_text()
    assert (out / "unet" / "training_report.json").is_file()  # the stage's measurements travel with it
    again = DiffusionBaselinePipeline.from_pretrained(out)
    assert again.settings.name == "diffusion"
    for key, value in pipe.model.unet.state_dict().items():
        loaded = again.model.unet.state_dict()[key]
        assert loaded.dtype == torch.float32
        assert torch.equal(loaded, value.to(torch.bfloat16).float()), key
    out_images = again(text="red t-shirt with a pocket", num_images=1, seed=0, num_inference_steps=2)
    assert out_images.images[0].size == (pipe.image_size, pipe.image_size)


# -- the model alone ----------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_is_zero_for_the_exact_target(prediction_type, monkeypatch):
    """The loss compares the UNet with the right target: noise (epsilon) or
    v = sqrt(a) * noise - sqrt(1 - a) * x0."""
    torch.manual_seed(0)
    model = DiffusionBaseline(DiffusionBaselineConfig(**{**vars(tiny_diffusion_config(16)),
                                                         "prediction_type": prediction_type}))
    x0 = torch.rand(3, 3, 16, 16) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([10, 500, 990])
    a = model.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    exact = noise if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
    monkeypatch.setattr(model, "predict", lambda *args: exact)
    states, attend = torch.zeros(3, 4, 32), torch.ones(3, 4, dtype=torch.bool)
    assert model(x0, states, attend, noise, t).loss.item() < 1e-10
    monkeypatch.setattr(model, "predict", lambda *args: exact + 0.5)
    assert model(x0, states, attend, noise, t).loss.item() == pytest.approx(0.25, rel=1e-5)


def test_tiny_unet_learns_to_denoise():
    """Forty Adam steps on four fixed images lower the loss at fixed noise and timesteps."""
    torch.manual_seed(0)
    model = DiffusionBaseline(tiny_diffusion_config(16))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x0 = torch.zeros(4, 3, 16, 16)
    x0[:, 0, 4:12, 4:12] = 1.0  # a red square
    x0 = x0 * 2 - 1
    states, attend = torch.randn(4, 5, 32), torch.ones(4, 5, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    probe_noise, probe_t = torch.randn(x0.shape, generator=gen), torch.tensor([100, 300, 600, 900])

    def probe() -> float:
        with torch.no_grad():
            return model(x0, states, attend, probe_noise, probe_t).loss.item()

    before = probe()
    for _ in range(40):
        loss = model(x0, states, attend, torch.randn(x0.shape, generator=gen),
                     torch.randint(0, 1000, (4,), generator=gen)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = probe()
    assert after < 0.5 * before, (before, after)


def test_config_checks():
    with pytest.raises(ValueError, match="one entry per"):
        DiffusionBaselineConfig(attention_levels=(False, True))
    with pytest.raises(ValueError, match="lowest resolution"):
        DiffusionBaselineConfig(attention_levels=(True, True, False))
    with pytest.raises(ValueError, match="divisible"):
        DiffusionBaselineConfig(block_out_channels=(48, 128, 128))
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionBaselineConfig(prediction_type="sample")
    # the UNet gets channels // head_dim heads (diffusers' 'attention_head_dim' counts heads)
    model = DiffusionBaseline(tiny_diffusion_config(16))
    attn = model.unet.mid_block.attentions[0].transformer_blocks[0].attn2
    assert attn.heads == 32 // 8 and attn.inner_dim == 32

"""The detail refiner: the ``refiner`` stage trains through train.py on a tiny run and exports
a folder the pipeline loads as a component; the model learns to draw back a one-pixel detail
its conditioning image lacks; refinement is seeded, optional per call, and saved with the
pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from armani.models.refiner import DetailRefiner, RefinerConfig, tiny_refiner_config
from armani.pipeline import ArmaniPipeline


@pytest.fixture(scope="module")
def refiner_run(tiny_run_with_stage):
    """A copy of the tiny run with the refiner stage trained on top (6 steps)."""
    return tiny_run_with_stage("refiner")


def _arrays(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_stage_exports_a_component_the_pipeline_uses(refiner_run, tmp_path):
    final = refiner_run / "refiner" / "final"
    assert (final / "DONE").is_file() and (final / "model.safetensors").is_file()
    assert json.loads((final / "config.json").read_text())["model_type"] == "armani_detail_refiner"
    pipe = ArmaniPipeline.from_run(refiner_run)
    assert pipe.refiner is not None and "refiner" in pipe.modules()

    refined = pipe("a red t-shirt", num_images=2, seed=3)
    again = pipe("a red t-shirt", num_images=2, seed=3)
    plain = pipe("a red t-shirt", num_images=2, seed=3, refine=False)
    assert np.array_equal(_arrays(refined.images), _arrays(again.images))  # the refiner's noise is seeded
    assert torch.equal(refined.ids, plain.ids)  # refining changes pixels, never tokens
    assert not np.array_equal(_arrays(refined.images), _arrays(plain.images))
    assert np.array_equal(_arrays(plain.images), _arrays(pipe.decode(plain.ids)))

    # saved and loaded with the pipeline, in bf16 too
    pipe.save_pretrained(tmp_path / "ck", storage_dtype="bfloat16")
    meta = json.loads((tmp_path / "ck" / "pipeline.json").read_text())
    assert "refiner" in meta["components"]
    loaded = ArmaniPipeline.from_pretrained(tmp_path / "ck")
    assert loaded.refiner is not None
    assert loaded.settings.refine is True
    off = ArmaniPipeline.from_pretrained(tmp_path / "ck", refine=False)  # the setting, overridden on loading
    assert off.settings.refine is False
    assert np.array_equal(_arrays(off("a red t-shirt", num_images=2, seed=3).images),
                          _arrays(loaded("a red t-shirt", num_images=2, seed=3, refine=False).images))


def test_a_pipeline_without_refiner_decodes_as_before(tiny_pipeline):
    assert tiny_pipeline.refiner is None
    out = tiny_pipeline("a blue skirt", num_images=1, seed=0)
    assert np.array_equal(_arrays(out.images), _arrays(tiny_pipeline.decode(out.ids, refine=True, seed=0)))


def _seamed_pairs(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random 'decodings' and their 'real' images: the same plus dark one-pixel seams on
    every fourth column, the kind of detail a 4-pixel token grid blurs away."""
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=generator) * 1.2 - 0.6
    decoded = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    seams = torch.zeros(1, 1, size, size)
    seams[..., 2::4] = -0.3
    return (decoded + seams).clamp(-1, 1), decoded


def test_refiner_learns_to_draw_back_a_one_pixel_detail():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = RefinerConfig(image_size=16, channels=(16, 32), norm_groups=8, residual_scale=3.0, sample_steps=4)
    model = DetailRefiner(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(200):
        real, decoded = _seamed_pairs(16, 16, g)
        loss = model(real, decoded, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    real, decoded = _seamed_pairs(8, 16, torch.Generator().manual_seed(99))
    refined = model.eval().refine(decoded, generator=torch.Generator().manual_seed(1))
    before = (decoded - real).abs().mean().item()
    after = (refined - real).abs().mean().item()
    assert after < 0.5 * before, (before, after)
    # the seams are drawn where they belong: on the seam columns the image darkens, elsewhere it stays
    drawn = (refined - decoded).mean(dim=(0, 1, 2))  # (W,)
    assert drawn[2::4].mean() < -0.15 and drawn[0::4].abs().mean() < 0.1, drawn


def test_refine_is_seeded_and_keeps_range():
    model = DetailRefiner(tiny_refiner_config(16)).eval()
    decoded = torch.rand(2, 3, 16, 16) * 2 - 1
    a = model.refine(decoded, generator=torch.Generator().manual_seed(5))
    b = model.refine(decoded, generator=torch.Generator().manual_seed(5))
    c = model.refine(decoded, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == decoded.shape and a.min() >= -1 and a.max() <= 1


def test_bad_input_and_config_errors():
    model = DetailRefiner(tiny_refiner_config(16))
    with pytest.raises(ValueError, match="16, 16"):
        model.refine(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="16, 16"):
        model(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="norm_groups"):
        RefinerConfig(channels=(12, 24))
    with pytest.raises(ValueError, match="divisible"):
        RefinerConfig(image_size=18, channels=(16, 32, 64))
    with pytest.raises(ValueError, match="prediction_type"):
        RefinerConfig(prediction_type="x0")

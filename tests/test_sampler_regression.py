"""The samplers' exact output for a tiny transformer with seeded weights, pinned.

``tests/data/sampler_regression.json`` was written by the samplers before they became
objects (the functions of the earlier ``armani/sampling.py``) and is unchanged since: a
refactor that changes a single token fails here. The bf16 grids depend on the CPU's matmul
kernels, so they are compared only on the kind of CPU that wrote them; float32 always.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from armani.models.transformer import CrossModalTransformer, TransformerConfig
from armani.sampling import AutoregressiveSampler, MaskPredictSampler, sample_autoregressive, sample_mask_predict
from armani.sampling.fast_path import packing_works

PINNED = json.loads((Path(__file__).parent / "data" / "sampler_regression.json").read_text())
TEXT, SKETCH, PARTIAL = torch.tensor([[1, 5, 7, 3, 2]]), torch.tensor([[1, 2, 3, 4]]), torch.tensor([[5, 6, 7, 8]])


def seeded_model(causal: bool) -> CrossModalTransformer:
    torch.manual_seed(0)
    config = TransformerConfig(text_vocab_size=20, text_len=5, sketch_codebook_size=10, sketch_len=4,
                               partial_codebook_size=12, partial_len=4, image_codebook_size=32, image_len=16,
                               width=32, layers=2, heads=4, causal=causal)
    model = CrossModalTransformer(config).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)  # peaked logits, so every setting changes the tokens
    return model


def grids(dtype: str) -> dict[str, list]:
    ar, nar = seeded_model(True), seeded_model(False)
    return {
        f"ar_{dtype}": sample_autoregressive(ar, TEXT, SKETCH, PARTIAL, num_images=3, generator=11, temperature=1.0,
                                             top_k=8, top_p=0.9, guidance_scale=2.5, dtype=dtype).tolist(),
        f"ar_text_only_{dtype}": sample_autoregressive(ar, TEXT, num_images=2, generator=3, dtype=dtype).tolist(),
        f"nar_{dtype}": sample_mask_predict(nar, TEXT, SKETCH, None, num_images=3, generator=5, steps=6, top_k=10,
                                            guidance_scale=2.0, dtype=dtype).tolist(),
    }


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # how the grids were written
    yield
    torch.set_num_threads(threads)


def test_float32_samples_are_the_pinned_ones():
    for key, value in grids("float32").items():
        assert value == PINNED["grids"][key], key


def test_bf16_samples_are_the_pinned_ones_on_the_same_kind_of_cpu():
    if torch.backends.cpu.get_cpu_capability() != PINNED["cpu_capability"]:
        pytest.skip(f"pinned on a {PINNED['cpu_capability']} CPU; bf16 kernels differ on others")
    for key, value in grids("bfloat16").items():
        assert value == PINNED["grids"][key], key


def test_the_objects_and_the_shorthands_sample_the_same():
    ar = seeded_model(True)
    sampler = AutoregressiveSampler(temperature=1.0, top_k=8, top_p=0.9, guidance_scale=2.5, dtype="float32")
    assert sampler(ar, TEXT, SKETCH, PARTIAL, num_images=3, generator=11).tolist() == PINNED["grids"]["ar_float32"]
    nar = seeded_model(False)
    sampler = MaskPredictSampler(steps=6, top_k=10, guidance_scale=2.0, dtype="float32")
    assert sampler(nar, TEXT, SKETCH, None, num_images=3, generator=5).tolist() == PINNED["grids"]["nar_float32"]


def test_the_cpu_fast_path_gives_the_plain_bf16_samples():
    """Packed oneDNN linears are a speed trick only: the tokens are those of plain bf16 layers."""
    if not packing_works():
        pytest.skip("this torch build lacks oneDNN's linear packing")
    ar, nar = seeded_model(True), seeded_model(False)
    for model, cls, extra in ((ar, AutoregressiveSampler, {"top_p": 0.9}), (nar, MaskPredictSampler, {"steps": 6})):
        fast = cls(guidance_scale=2.0, top_k=8, dtype="bfloat16", pack_linears=True, **extra)
        plain = cls(guidance_scale=2.0, top_k=8, dtype="bfloat16", pack_linears=False, **extra)
        assert torch.equal(fast(model, TEXT, SKETCH, num_images=3, generator=4),
                           plain(model, TEXT, SKETCH, num_images=3, generator=4))


def test_a_sampler_round_trips_through_its_dict():
    from armani.sampling import sampler_from_dict

    for sampler in (AutoregressiveSampler(top_k=7, guidance_scale=2.0), MaskPredictSampler(steps=4, remask="confidence")):
        data = json.loads(json.dumps(sampler.to_dict()))  # as pipeline.json stores it
        assert sampler_from_dict(data) == sampler
    with pytest.raises(ValueError, match="unknown sampler type"):
        sampler_from_dict({"type": "beam"})
    with pytest.raises(ValueError, match="no setting"):
        sampler_from_dict({"type": "ar", "steps": 3})

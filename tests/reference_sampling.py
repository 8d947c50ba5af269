"""Slow, obviously-right references the tests hold the library's samplers to."""

from __future__ import annotations

import torch

from armani.sampling import AutoregressiveSampler
from armani.sampling.autoregressive import _Raster
from armani.sampling.tokens import make_generator, nucleus


@torch.inference_mode()
def reference_sample_autoregressive(model, text_ids=None, sketch_ids=None, partial_ids=None, num_images: int = 1,
                                    generator=None, fixed_ids=None, fixed_mask=None, callback=None, **settings):
    """The AR sampler without a cache: ``model(...)`` over the whole sequence for every token,
    in float32. O(N) times slower; the cached sampler must give exactly its tokens."""
    sampler = AutoregressiveSampler(**settings)
    was_training = model.training
    model.eval()
    try:
        s = _Raster(sampler, model, num_images, make_generator(generator, model.type_ids.device),
                    dict(text_ids=text_ids, sketch_ids=sketch_ids, partial_ids=partial_ids),
                    fixed_ids, fixed_mask, callback)
        for t in range(s.N):
            so_far = s.ids[:, :t]
            so_far = torch.cat([so_far, so_far]) if s.guided else so_far
            logits = model(s.conds["text"], s.conds["sketch"], s.conds["partial"], so_far, drop=s.drop)
            s.step(t, logits[:, -1])
        return s.ids
    finally:
        model.train(was_training)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, top-k and top-p on full-width ``(..., K)`` logits; removed entries -> -inf.
    The distribution ``choose_tokens`` draws from, spelled out."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (temperature 0 means greedy)")
    logits = logits / temperature
    K = logits.shape[-1]
    k = K if top_k is None else min(int(top_k), K)
    values, order = torch.topk(logits, k, dim=-1) if (k < K or top_p is not None) else (logits, None)
    if order is None:
        return logits
    values = nucleus(values, top_p)
    return torch.full_like(logits, float("-inf")).scatter(-1, order, values)

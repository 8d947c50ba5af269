"""ARMANI's sampler: one image token per step, with a KV cache and classifier-free guidance.

The KV cache ``(layers, 2, B, heads, T_max, head_dim)`` is allocated once and written in
place; the condition prefix goes through the network in one pass. Guidance runs the
unconditional branch (the guided conditions replaced by their NULL tokens) in the same
batch of 2B rows: ``logits = uncond + s * (cond - uncond)``. ``fixed_ids`` / ``fixed_mask``
teacher-force tokens, which is token-level part editing: only the part's tokens are
regenerated and every other token is kept exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from armani.models.transformer import CONDITIONS, CrossModalTransformer, KVCache
from armani.sampling.base import Sampler
from armani.sampling.fast_path import check_precision, model_for_sampling
from armani.sampling.tokens import choose_tokens, condition_rows, guide, make_generator, per_row

# research/bench_sampling.py measured bf16 weights faster on this project's CPU (AVX-512 bf16):
# AR batch 8, 1 thread, busy machine: 0.075 vs 0.111 s/image (mask-predict: 0.186 vs 0.369).
# Tests of exactness pass dtype="float32".
DEFAULT_DTYPE = "bfloat16"

Callback = Callable[[int, torch.Tensor], None]


@dataclass
class AutoregressiveSampler(Sampler):
    """Raster-order sampling from a causal transformer (ARMANI, DALL-E style baselines)."""

    type = "ar"
    causal = True

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance_scale: float = 1.0
    guidance_conditions: tuple[str, ...] = CONDITIONS
    dtype: str = DEFAULT_DTYPE  # "bfloat16": sample with a bf16 copy of the weights (see fast_path)
    pack_linears: bool = True  # the CPU fast path's packed bf16 linears (never changes a sample)
    pack_float32: bool = False  # packed float32 linears too: faster, equal up to float32 rounding (fast_path)
    callback_every: int = 32  # tokens between progress callbacks

    def __post_init__(self):
        self.guidance_conditions = tuple(self.guidance_conditions)
        check_precision(self.dtype)
        if self.temperature < 0 or self.guidance_scale < 0:
            raise ValueError("temperature and guidance_scale must be >= 0")

    def num_steps(self, image_len: int) -> int:
        return image_len

    @torch.inference_mode()
    def __call__(self, model: CrossModalTransformer, text_ids: torch.Tensor | None = None,
                 sketch_ids: torch.Tensor | None = None, partial_ids: torch.Tensor | None = None, *,
                 num_images: int = 1, generator: torch.Generator | int | None = None,
                 fixed_ids: torch.Tensor | None = None, fixed_mask: torch.Tensor | None = None,
                 callback: Callback | None = None) -> torch.Tensor:
        """Sample ``num_images`` token grids ``(num_images, N[, G])``.

        Conditions are ``(L,)`` / ``(1, L)`` (one prompt, broadcast) or ``(num_images, L)``; a
        missing one is NULL. ``generator`` is a torch.Generator or an int seed. ``fixed_mask``
        ``(N,)`` or ``(B, N)`` bool marks positions taken from ``fixed_ids`` instead of sampled.
        ``callback(step, ids_so_far (B, step))`` runs every ``callback_every`` tokens and at the end.
        """
        was_training = model.training
        model.eval()
        try:
            state = _Raster(self, model, num_images, make_generator(generator, model.type_ids.device),
                            dict(text_ids=text_ids, sketch_ids=sketch_ids, partial_ids=partial_ids),
                            fixed_ids, fixed_mask, callback)
            c, net = model.config, model_for_sampling(model, self.dtype, self.pack_linears, self.pack_float32)
            # allocated once; the last image token is never fed back, so T_max = P + N - 1
            cache = KVCache(c, state.rows, c.prefix_len + c.image_len - 1, dtype=torch.float32, device=state.device)
            h = net.embed_prefix(state.conds["text"], state.conds["sketch"], state.conds["partial"],
                                 batch=state.rows, drop=state.drop)  # (R, P, D)
            logits = net.run(h, cache, start=0)[:, -1]  # (R, [G,] K): predicts token 0
            terms = net._position_terms(c.prefix_len, state.N).unsqueeze(1)  # (N, 1, D), once
            for t in range(state.N):
                nxt = state.step(t, logits)
                if t + 1 < state.N:
                    h = net.embed_image(nxt, start=t, terms=terms[t])  # (R, 1, D)
                    logits = net.run(h, cache, start=c.prefix_len + t)[:, -1]
            return state.ids
        finally:
            model.train(was_training)


class _Raster:
    """One AR sampling run: its condition rows, fixed tokens, the grid so far and token choice.
    (Shared with the cache-free reference sampler of the tests.)"""

    def __init__(self, sampler: AutoregressiveSampler, model: CrossModalTransformer, num_images: int,
                 generator: torch.Generator, ids: dict, fixed_ids, fixed_mask, callback: Callback | None):
        c = model.config
        if not c.causal:
            raise ValueError("autoregressive sampling needs a causal model (config.causal=True)")
        self.sampler, self.device = sampler, model.type_ids.device
        self.B, self.N, self.G = num_images, c.image_len, c.pq_groups
        self.conds, self.drop, self.guided = condition_rows(
            model, num_images, sampler.guidance_scale, sampler.guidance_conditions, **ids)
        self.rows = 2 * num_images if self.guided else num_images
        self.gen = generator
        self.fixed_mask = per_row(fixed_mask, self.B, self.N, torch.bool, "fixed_mask", self.device)
        self.fixed_ids = per_row(fixed_ids, self.B, self.N, torch.long, "fixed_ids", self.device)
        if (self.fixed_mask is None) != (self.fixed_ids is None):
            raise ValueError("fixed_ids and fixed_mask go together")
        self.callback, self.every = callback, max(1, int(sampler.callback_every))
        shape = (self.B, self.N) + ((self.G,) if self.G > 1 else ())
        self.ids = torch.zeros(shape, dtype=torch.long, device=self.device)

    def step(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        """Choose image token t from (R, [G,] K) logits; returns the (R, 1[, G]) next input."""
        s = self.sampler
        tokens, _ = choose_tokens(guide(logits, self.guided, s.guidance_scale), self.gen,
                                  s.temperature, s.top_k, s.top_p)  # (B[, G])
        if self.fixed_mask is not None:
            keep = self.fixed_mask[:, t]
            keep = keep.unsqueeze(-1) if self.G > 1 else keep
            tokens = torch.where(keep, self.fixed_ids[:, t], tokens)
        self.ids[:, t] = tokens
        if self.callback is not None and ((t + 1) % self.every == 0 or t + 1 == self.N):
            self.callback(t + 1, self.ids[:, : t + 1].clone())
        nxt = tokens.unsqueeze(1)  # (B, 1[, G])
        return torch.cat([nxt, nxt]) if self.guided else nxt


__all__ = ["AutoregressiveSampler", "DEFAULT_DTYPE"]

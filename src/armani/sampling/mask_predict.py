"""M6-Fashion's progressive mask-predict ("SMART", Sec. 3.2) for a bidirectional transformer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from armani.models.transformer import CONDITIONS, CrossModalTransformer
from armani.sampling.autoregressive import DEFAULT_DTYPE
from armani.sampling.base import Sampler
from armani.sampling.fast_path import check_precision, model_for_sampling
from armani.sampling.tokens import choose_tokens, condition_rows, guide, make_generator, per_row

Callback = Callable[[int, torch.Tensor], None]
REMASK_RULES = ("multinomial", "confidence")


def remask_count(n_editable: torch.Tensor | int, i: int, steps: int, start: float = 0.8, end: float = 0.2):
    """How many editable tokens mask-predict re-masks after step i (0 <= i < steps - 1):
    ``floor(r_i * n)`` with ``r_i`` linear from ``start`` (i = 0) to ``end`` (i = steps - 2)."""
    ratio = start + (end - start) * i / max(steps - 2, 1)
    # + 1e-6: 0.8 + (0.2 - 0.8) * 8/8 is 0.19999999999999996 in floats
    if isinstance(n_editable, torch.Tensor):
        return torch.floor(ratio * n_editable + 1e-6).long()
    return math.floor(ratio * n_editable + 1e-6)


@dataclass
class MaskPredictSampler(Sampler):
    """Exactly what runs, with E = the editable positions of a row (all, unless
    ``editable_mask``; the rest keep ``init_ids`` and are never masked):

    1. Every position of E is set to [MASK].
    2. For i = 0 .. steps-1 (one forward pass each):
       a. predict: sample a token (temperature, top-k, guidance) at every currently masked
          position and record its probability as the position's score (for PQ tokens the
          geometric mean of the G sub-code probabilities); kept tokens keep the score they
          were drawn with (as in Mask-Predict);
       b. unless i is the last step, re-mask ``floor(r_i * |E|)`` positions of E, with the
          ratio decaying linearly ``r_i = start + (end - start) * i / (steps - 2)`` (0.8 on the
          first re-mask, 0.2 on the last). Which ones: ``remask='multinomial'`` (the paper:
          the kept tokens are drawn without replacement with probability proportional to
          their scores, via Gumbel-top-k) or ``'confidence'`` (Mask-Predict: re-mask the
          lowest scores).
    3. The last step leaves no [MASK]: the result holds only codebook ids.

    The paper's "dynamic termination" and relevance/fidelity estimators are not reproduced.
    """

    type = "nar"
    causal = False

    steps: int = 10
    mask_ratio_start: float = 0.8
    mask_ratio_end: float = 0.2
    temperature: float = 1.0
    top_k: int | None = None
    guidance_scale: float = 1.0
    guidance_conditions: tuple[str, ...] = CONDITIONS
    remask: str = "multinomial"
    dtype: str = DEFAULT_DTYPE
    pack_linears: bool = True
    pack_float32: bool = False  # see AutoregressiveSampler

    def __post_init__(self):
        self.guidance_conditions = tuple(self.guidance_conditions)
        check_precision(self.dtype)
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.remask not in REMASK_RULES:
            raise ValueError(f"remask must be one of {REMASK_RULES}, got {self.remask!r}")
        if self.temperature < 0 or self.guidance_scale < 0:
            raise ValueError("temperature and guidance_scale must be >= 0")

    def num_steps(self, image_len: int) -> int:
        return self.steps

    @torch.inference_mode()
    def __call__(self, model: CrossModalTransformer, text_ids: torch.Tensor | None = None,
                 sketch_ids: torch.Tensor | None = None, partial_ids: torch.Tensor | None = None, *,
                 num_images: int = 1, generator: torch.Generator | int | None = None,
                 init_ids: torch.Tensor | None = None, editable_mask: torch.Tensor | None = None,
                 callback: Callback | None = None) -> torch.Tensor:
        """``(num_images, N[, G])`` token grids; ``callback(i + 1, ids)`` sees each step's prediction."""
        c = model.config
        if c.causal:
            raise ValueError("mask-predict needs a bidirectional model (config.causal=False)")
        was_training = model.training
        model.eval()
        try:
            return self._sample(model, dict(text_ids=text_ids, sketch_ids=sketch_ids, partial_ids=partial_ids),
                                num_images, generator, init_ids, editable_mask, callback)
        finally:
            model.train(was_training)

    def _sample(self, model, ids_in: dict, B: int, generator, init_ids, editable_mask, callback) -> torch.Tensor:
        c = model.config
        device = model.type_ids.device
        N, G = c.image_len, c.pq_groups
        conds, drop, guided = condition_rows(model, B, self.guidance_scale, self.guidance_conditions, **ids_in)
        gen = make_generator(generator, device)
        ids = _initial_ids(init_ids, editable_mask, (B, N) + ((G,) if G > 1 else ()), device)
        editable = per_row(editable_mask, B, N, torch.bool, "editable_mask", device)
        editable = torch.ones(B, N, dtype=torch.bool, device=device) if editable is None else editable.clone()
        n_edit = editable.sum(1)  # (B,)

        def spread(m):  # (B, N) -> broadcastable to ids
            return m.unsqueeze(-1) if G > 1 else m

        masked = editable.clone()
        ids = torch.where(spread(masked), torch.full_like(ids, c.mask_id), ids)
        score = torch.zeros(B, N, device=device)
        net = model_for_sampling(model, self.dtype, self.pack_linears, self.pack_float32)
        for i in range(self.steps):
            model_ids = torch.cat([ids, ids]) if guided else ids
            logits = net(conds["text"], conds["sketch"], conds["partial"], model_ids, drop=drop)
            tokens, probs = choose_tokens(guide(logits, guided, self.guidance_scale), gen, self.temperature,
                                          self.top_k)
            if G > 1:
                probs = probs.clamp_min(1e-30).log().mean(-1).exp()  # geometric mean over groups
            ids = torch.where(spread(masked), tokens, ids)
            score = torch.where(masked, probs, score)
            if callback is not None:
                callback(i + 1, ids.clone())
            if i == self.steps - 1:
                break
            n_keep = n_edit - remask_count(n_edit, i, self.steps, self.mask_ratio_start, self.mask_ratio_end)
            key = score.clamp_min(1e-30).log()
            if self.remask == "multinomial":  # Gumbel-top-k = sampling without replacement ∝ score
                u = torch.rand(B, N, generator=gen, device=device).clamp(1e-12, 1 - 1e-12)
                key = key - torch.log(-torch.log(u))
            key = key.masked_fill(~editable, float("-inf"))
            order = key.argsort(dim=1, descending=True)
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=device).expand(B, N))
            masked = editable & (rank >= n_keep.unsqueeze(1))
            ids = torch.where(spread(masked), torch.full_like(ids, c.mask_id), ids)
        return ids


def _initial_ids(init_ids, editable_mask, shape: tuple[int, ...], device) -> torch.Tensor:
    if init_ids is None:
        if editable_mask is not None:
            raise ValueError("editable_mask needs init_ids (the tokens to keep)")
        return torch.zeros(shape, dtype=torch.long, device=device)
    ids = torch.as_tensor(init_ids, device=device).long()
    ids = ids.unsqueeze(0) if ids.dim() == len(shape) - 1 else ids
    return ids.expand(shape).clone()


__all__ = ["MaskPredictSampler", "REMASK_RULES", "remask_count"]

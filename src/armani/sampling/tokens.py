"""What both samplers share: the condition rows, classifier-free guidance and token choice.

Token choice (:func:`choose_tokens`): ``logits / temperature``, then top-k, then top-p
(nucleus), then an inverse-CDF draw with one uniform per row from the caller's generator;
``temperature=0`` is greedy. The random stream advances the same way whatever the
probabilities, so two samplers fed the same seed make the same choices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from armani.models.transformer import CONDITIONS, CrossModalTransformer
from armani.parts import NUM_PARTS


def make_generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator:
    """A torch.Generator as given, seeded from an int, or freshly seeded for None."""
    if isinstance(generator, torch.Generator):
        return generator
    gen = torch.Generator(device=device)
    if generator is None:
        gen.seed()
    else:
        gen.manual_seed(int(generator))
    return gen


def condition_rows(model: CrossModalTransformer, batch: int, guidance_scale: float,
                   guidance_conditions: Iterable[str], **ids: torch.Tensor | None):
    """Broadcast the given conditions to ``batch`` rows; with guidance, double them.

    Returns (conditions dict, drop dict or None, guided: bool). The second half of a guided
    batch has the guided conditions replaced by their NULL tokens (``drop``). Guidance is
    skipped when the scale is 1 or none of the guided conditions is given (uncond would
    equal cond).
    """
    guidance_conditions = tuple(guidance_conditions)
    unknown = set(guidance_conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown guidance_conditions {sorted(unknown)}; use {CONDITIONS}")
    device = model.type_ids.device
    conds = {}
    for name in CONDITIONS:
        x = ids.get(f"{name}_ids")
        conds[name] = None if x is None else model.condition_ids(name, torch.as_tensor(x), batch, None).to(device)
    guided = guidance_scale != 1.0 and any(conds[c] is not None for c in guidance_conditions)
    if not guided:
        return conds, None, False
    conds = {k: None if v is None else torch.cat([v, v]) for k, v in conds.items()}
    flag = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)]).to(device)
    return conds, {c: flag for c in guidance_conditions}, True


def guide(logits: torch.Tensor, guided: bool, scale: float) -> torch.Tensor:
    """(R, ...) logits -> (B, ...) float32: cond rows, or uncond + s * (cond - uncond)."""
    logits = logits.float()
    if not guided:
        return logits
    cond, uncond = logits.chunk(2)
    if scale == 1.0:  # exactly the conditional logits (the formula rounds)
        return cond
    return uncond + scale * (cond - uncond)


def nucleus(sorted_logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Top-p on logits sorted in descending order: drop a token when the tokens ranked
    above it already hold ``top_p`` of the probability (the first is always kept)."""
    if top_p is None or top_p >= 1.0:
        return sorted_logits
    probs = sorted_logits.softmax(-1)
    remove = (probs.cumsum(-1) - probs) >= top_p
    return sorted_logits.masked_fill(remove, float("-inf"))


def choose_tokens(logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of ``(..., K)`` logits: (tokens (...), their probabilities (...)).

    ``temperature=0`` is greedy. Otherwise: divide by the temperature, keep the top-k,
    apply top-p on them (sorted), softmax, and invert the cumulative distribution at a
    uniform number drawn from the caller's generator. One uniform per row is drawn whatever
    the logits (also when greedy), so two samplers given the same seed make the same choices.
    """
    shape, K = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, K).float()  # (R, K)
    # One uniform per row, drawn first whatever the settings, so two samplers (or greedy
    # and sampled runs) given the same seed stay in step.
    u = torch.rand(flat.shape[0], 1, generator=generator, device=flat.device)  # (R, 1)
    if temperature == 0:
        tokens = flat.argmax(-1)
        probs = flat.softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return tokens.reshape(shape), probs.reshape(shape)
    if temperature <= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    flat = flat / temperature
    k = K if top_k is None else max(1, min(int(top_k), K))
    use_nucleus = top_p is not None and top_p < 1.0
    if k < K or use_nucleus:
        # top-p needs the kept logits in descending order; top-k alone does not (cheaper)
        values, order = torch.topk(flat, k, dim=-1, sorted=use_nucleus)  # (R, k)
        probs = nucleus(values, top_p).softmax(-1)
    else:
        order, probs = None, flat.softmax(-1)
    # Inverse-CDF draw with the row's uniform: torch.multinomial would draw an exponential
    # per entry (K of them) and costs ~3x more per token here (measured, 8 x 100 entries).
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # (R, 1)
    pick = pick.clamp_(max=probs.shape[-1] - 1)  # rounding at the top end
    p = probs.gather(-1, pick).squeeze(-1)
    tokens = pick.squeeze(-1) if order is None else order.gather(-1, pick).squeeze(-1)
    return tokens.reshape(shape), p.reshape(shape)


def per_row(x: torch.Tensor | None, batch: int, length: int, dtype: torch.dtype, name: str, device) -> torch.Tensor | None:
    """``(length,)`` or ``(1 | batch, length, ...)`` -> ``(batch, length, ...)`` (None stays None)."""
    if x is None:
        return None
    x = torch.as_tensor(x, device=device).to(dtype)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.shape[0] == 1 and batch > 1:
        x = x.expand(batch, *x.shape[1:])
    if x.shape[0] != batch or x.shape[1] != length:
        raise ValueError(f"{name} must be ({length},) or ({batch}, {length}...), got {tuple(x.shape)}")
    return x


def token_mask_from_part_mask(part_mask: torch.Tensor, part_ids: int | Sequence[int], grid: int,
                              min_coverage: float = 0.0) -> torch.Tensor:
    """Which tokens of a ``grid x grid`` raster a part covers: ``(..., grid*grid)`` bool.

    ``part_mask`` is an int ``(H, W)`` or ``(B, H, W)`` part map (values index PART_NAMES).
    A token is marked when the fraction of its pixels inside the part(s) exceeds
    ``min_coverage`` (0 = any pixel; the safe choice for editing, since a token's receptive
    field reaches beyond its cell). Feed the result as ``fixed_mask=~mask`` (AR) or
    ``editable_mask=mask`` (mask-predict).
    """
    part_mask = torch.as_tensor(part_mask)
    squeeze = part_mask.dim() == 2
    part_mask = part_mask.unsqueeze(0) if squeeze else part_mask
    ids = torch.as_tensor([part_ids] if isinstance(part_ids, int) else list(part_ids), device=part_mask.device)
    inside = torch.isin(part_mask, ids).float().unsqueeze(1)  # (B, 1, H, W)
    coverage = F.adaptive_avg_pool2d(inside, grid).flatten(1)  # (B, grid*grid)
    out = coverage > min_coverage
    return out[0] if squeeze else out


def kept_token_mask(keep: torch.Tensor, grid: int, margin: int = 1) -> torch.Tensor:
    """The tokens of a ``grid x grid`` raster that lie wholly inside a kept region, at least
    ``margin`` cells in from its edge: ``(grid*grid,)`` bool from a bool/float ``(H, W)`` or
    ``(1, H, W)`` keep-mask. The margin keeps out cells whose encoding the blanked pixels next
    to them reach (a codebook encoder's receptive field is wider than one cell); the image
    border counts as inside."""
    keep = torch.as_tensor(keep).float()
    keep = keep.reshape(1, 1, *keep.shape[-2:])
    full = F.adaptive_avg_pool2d(keep, grid) > 1 - 1e-6  # (1, 1, grid, grid): every pixel kept
    if margin > 0:  # erode: a cell stays when no cell within ``margin`` of it is outside
        outside = F.max_pool2d((~full).float(), 2 * margin + 1, stride=1, padding=margin)
        full = full & (outside == 0)
    return full.flatten()


def garment_token_mask(part_mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Which tokens cover any garment pixel (every part but background): ``(..., grid*grid)`` bool."""
    return token_mask_from_part_mask(part_mask, list(range(1, NUM_PARTS)), grid)


__all__ = ["choose_tokens", "condition_rows", "garment_token_mask", "guide", "kept_token_mask", "make_generator",
           "nucleus", "per_row", "token_mask_from_part_mask"]

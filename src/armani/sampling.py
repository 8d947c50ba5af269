"""Samplers for the stage-2 Transformer: autoregressive (ARMANI) and mask-predict (M6-Fashion).

* :func:`sample_autoregressive` — one image token per step with a preallocated KV cache
  (``(layers, 2, B, heads, T_max, head_dim)``, allocated once, written in place); the
  condition prefix goes through the network in one pass. Classifier-free guidance runs the
  unconditional branch (the guided conditions replaced by their NULL tokens) in the same
  batch of 2B rows: ``logits = uncond + s * (cond - uncond)``. ``fixed_ids/fixed_mask``
  teacher-force tokens, which is token-level part editing: only the part's tokens are
  regenerated and every other token is kept exactly.
* :func:`reference_sample_autoregressive` — the same algorithm without a cache (a full
  forward over the whole sequence per token). Slow and obviously right; the tests check
  that the cached sampler gives exactly its tokens.
* :func:`sample_mask_predict` — M6-Fashion's progressive non-autoregressive sampler for the
  bidirectional model (see its docstring for exactly what is implemented).
* :func:`token_mask_from_part_mask` — which tokens of the grid a part (pixel mask) covers.

Token choice (:func:`choose_tokens`): ``logits / temperature``, then top-k, then top-p
(nucleus), then an inverse-CDF draw with one uniform per row from the caller's generator;
``temperature=0`` is greedy. The random stream advances the same way whatever the probabilities, so two
samplers fed the same seed make the same choices.
"""

from __future__ import annotations

import copy
import functools
import math
import weakref
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from armani.models.transformer import CONDITIONS, CrossModalTransformer, KVCache

# research/bench_sampling.py measured bf16 weights faster on this project's CPU (AVX-512 bf16):
# AR batch 8, 1 thread, busy machine: 0.075 vs 0.111 s/image (mask-predict: 0.186 vs 0.369).
# Tests of exactness pass dtype="float32".
DEFAULT_DTYPE = "bfloat16"

Callback = Callable[[int, torch.Tensor], None]
_LOW_PRECISION: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> (fingerprint, bf16 copy)


# -- shared pieces ----------------------------------------------------------------------
def _generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    gen = torch.Generator(device=device)
    if generator is None:
        gen.seed()
    else:
        gen.manual_seed(int(generator))
    return gen


def _at_precision(model: CrossModalTransformer, dtype: str | torch.dtype) -> CrossModalTransformer:
    """The model to sample with: itself for 'float32', a bf16 copy for 'bfloat16'.

    Why a copy with bf16 weights rather than autocast: on this CPU, autocast re-casts the
    weights and sends SDPA to bf16 kernels that are several times slower than float32 for
    one-token queries (measured in research/bench_sampling.py). The copy runs the matmuls in
    bf16 (oneDNN AVX-512 bf16) and keeps attention and the KV cache in float32.
    """
    name = str(dtype).removeprefix("torch.")
    if name == "float32":
        return model
    if name != "bfloat16":
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    # Reuse the copy while the weights are unchanged (an optimizer step bumps _version).
    fingerprint = tuple((id(p), p._version) for p in model.parameters())
    cached = _LOW_PRECISION.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    low = copy.deepcopy(model).to(torch.bfloat16).eval()
    for module in low.modules():
        if hasattr(module, "attention_dtype"):
            module.attention_dtype = torch.float32
    if low.type_ids.device.type == "cpu" and _packing_works():
        _pack_linears(low)
    _LOW_PRECISION[model] = (fingerprint, low)
    return low


class _PackedLinear(nn.Module):
    """A bf16 ``nn.Linear`` whose weight is reordered once into oneDNN's blocked layout.

    A plain bf16 ``F.linear`` reorders the weight on every call; for the few-row matmuls of
    token-by-token sampling that costs as much as the product (measured here: 50 -> 26 us for
    a 256 x 768 layer at 8 rows, results bit-identical). This is what ``torch.compile``'s
    weight freezing does on CPU, without the compile: it calls the same two oneDNN ops that
    Inductor emits (``mkldnn._reorder_linear_weight`` / ``mkldnn._linear_pointwise``), which
    are private, so :func:`_packing_works` checks them once and the plain layers stay if not.
    """

    def __init__(self, linear: nn.Linear, batch_hint: int = 8):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def _pack_linears(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(parent, name, _PackedLinear(child))


@functools.cache
def _packing_works() -> bool:
    """Whether this torch build has the oneDNN ops and they match ``F.linear`` exactly."""
    try:
        gen = torch.Generator().manual_seed(0)
        lin = nn.Linear(32, 48).to(torch.bfloat16)
        x = torch.randn(3, 5, 32, generator=gen).to(torch.bfloat16)
        with torch.inference_mode():
            return bool(torch.equal(_PackedLinear(lin)(x), lin(x)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def _conditions(model: CrossModalTransformer, batch: int, guidance_scale: float,
                guidance_conditions: Iterable[str], **ids: torch.Tensor | None):
    """Broadcast the given conditions to ``batch`` rows; with guidance, double them.

    Returns (conditions dict, drop dict or None, guided: bool). Guidance is skipped when the
    scale is 1 or none of the guided conditions is given (uncond would equal cond).
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


def _guide(logits: torch.Tensor, guided: bool, scale: float) -> torch.Tensor:
    """(R, ...) logits -> (B, ...) float32: cond rows, or uncond + s * (cond - uncond)."""
    logits = logits.float()
    if not guided:
        return logits
    cond, uncond = logits.chunk(2)
    if scale == 1.0:  # exactly the conditional logits (the formula rounds)
        return cond
    return uncond + scale * (cond - uncond)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, top-k and top-p (nucleus) on ``(..., K)`` logits; removed entries -> -inf.

    (The samplers use the cheaper :func:`choose_tokens`, which applies the same rules on
    the top-k slice only; this full-width form is for callers that want the distribution.)
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (temperature 0 means greedy)")
    logits = logits / temperature
    K = logits.shape[-1]
    k = K if top_k is None else min(int(top_k), K)
    values, order = torch.topk(logits, k, dim=-1) if (k < K or top_p is not None) else (logits, None)
    if order is None:
        return logits
    values = _nucleus(values, top_p)
    return torch.full_like(logits, float("-inf")).scatter(-1, order, values)


def _nucleus(sorted_logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
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
    nucleus = top_p is not None and top_p < 1.0
    if k < K or nucleus:
        # top-p needs the kept logits in descending order; top-k alone does not (cheaper)
        values, order = torch.topk(flat, k, dim=-1, sorted=nucleus)  # (R, k)
        probs = _nucleus(values, top_p).softmax(-1)
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


def _per_row(x: torch.Tensor | None, batch: int, length: int, dtype: torch.dtype, name: str, device) -> torch.Tensor | None:
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


# -- autoregressive ---------------------------------------------------------------------
class _ARState:
    """Everything both AR samplers share: conditions, guidance, fixed tokens, token choice."""

    def __init__(self, model, text_ids, sketch_ids, partial_ids, num_images, generator, temperature, top_k,
                 top_p, guidance_scale, guidance_conditions, fixed_ids, fixed_mask, callback, callback_every):
        c = model.config
        if not c.causal:
            raise ValueError("autoregressive sampling needs a causal model (config.causal=True)")
        self.device = model.type_ids.device
        self.B, self.N, self.G = num_images, c.image_len, c.pq_groups
        self.conds, self.drop, self.guided = _conditions(
            model, num_images, guidance_scale, guidance_conditions,
            text_ids=text_ids, sketch_ids=sketch_ids, partial_ids=partial_ids)
        self.rows = 2 * num_images if self.guided else num_images
        self.gen = _generator(generator, self.device)
        self.temperature, self.top_k, self.top_p, self.scale = temperature, top_k, top_p, guidance_scale
        self.fixed_mask = _per_row(fixed_mask, self.B, self.N, torch.bool, "fixed_mask", self.device)
        self.fixed_ids = _per_row(fixed_ids, self.B, self.N, torch.long, "fixed_ids", self.device)
        if (self.fixed_mask is None) != (self.fixed_ids is None):
            raise ValueError("fixed_ids and fixed_mask go together")
        self.callback, self.every = callback, max(1, int(callback_every))
        shape = (self.B, self.N) + ((self.G,) if self.G > 1 else ())
        self.ids = torch.zeros(shape, dtype=torch.long, device=self.device)

    def step(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        """Choose image token t from (R, [G,] K) logits; returns the (R, 1[, G]) next input."""
        tokens, _ = choose_tokens(_guide(logits, self.guided, self.scale), self.gen,
                                  self.temperature, self.top_k, self.top_p)  # (B[, G])
        if self.fixed_mask is not None:
            keep = self.fixed_mask[:, t]
            keep = keep.unsqueeze(-1) if self.G > 1 else keep
            tokens = torch.where(keep, self.fixed_ids[:, t], tokens)
        self.ids[:, t] = tokens
        if self.callback is not None and ((t + 1) % self.every == 0 or t + 1 == self.N):
            self.callback(t + 1, self.ids[:, : t + 1].clone())
        nxt = tokens.unsqueeze(1)  # (B, 1[, G])
        return torch.cat([nxt, nxt]) if self.guided else nxt


@torch.inference_mode()
def sample_autoregressive(
    model: CrossModalTransformer,
    text_ids: torch.Tensor | None = None,
    sketch_ids: torch.Tensor | None = None,
    partial_ids: torch.Tensor | None = None,
    num_images: int = 1,
    generator: torch.Generator | int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale: float = 1.0,
    guidance_conditions: Sequence[str] = CONDITIONS,
    fixed_ids: torch.Tensor | None = None,
    fixed_mask: torch.Tensor | None = None,
    callback: Callback | None = None,
    callback_every: int = 32,
    dtype: str = DEFAULT_DTYPE,
) -> torch.Tensor:
    """Sample ``num_images`` token grids ``(num_images, N[, G])`` with a KV cache.

    Conditions are ``(L,)``/``(1, L)`` (one prompt, broadcast) or ``(num_images, L)``; a
    missing one is NULL. ``generator`` is a torch.Generator or an int seed. ``fixed_mask``
    ``(N,)`` or ``(B, N)`` bool marks positions taken from ``fixed_ids`` instead of sampled.
    ``callback(step, ids_so_far (B, step))`` runs every ``callback_every`` tokens and at the
    end. ``dtype='bfloat16'`` samples with a bf16 copy of the weights (attention and the
    KV cache stay float32).
    """
    was_training = model.training
    model.eval()
    try:
        s = _ARState(model, text_ids, sketch_ids, partial_ids, num_images, generator, temperature, top_k,
                     top_p, guidance_scale, guidance_conditions, fixed_ids, fixed_mask, callback, callback_every)
        c, net = model.config, _at_precision(model, dtype)
        # allocated once; the last image token is never fed back, so T_max = P + N - 1
        cache = KVCache(c, s.rows, c.prefix_len + c.image_len - 1, dtype=torch.float32, device=s.device)
        h = net.embed_prefix(s.conds["text"], s.conds["sketch"], s.conds["partial"],
                             batch=s.rows, drop=s.drop)  # (R, P, D)
        logits = net.run(h, cache, start=0)[:, -1]  # (R, [G,] K): predicts token 0
        terms = net._position_terms(c.prefix_len, s.N).unsqueeze(1)  # (N, 1, D), once
        for t in range(s.N):
            nxt = s.step(t, logits)
            if t + 1 < s.N:
                h = net.embed_image(nxt, start=t, terms=terms[t])  # (R, 1, D)
                logits = net.run(h, cache, start=c.prefix_len + t)[:, -1]
        return s.ids
    finally:
        model.train(was_training)


@torch.inference_mode()
def reference_sample_autoregressive(
    model: CrossModalTransformer,
    text_ids: torch.Tensor | None = None,
    sketch_ids: torch.Tensor | None = None,
    partial_ids: torch.Tensor | None = None,
    num_images: int = 1,
    generator: torch.Generator | int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale: float = 1.0,
    guidance_conditions: Sequence[str] = CONDITIONS,
    fixed_ids: torch.Tensor | None = None,
    fixed_mask: torch.Tensor | None = None,
    callback: Callback | None = None,
    callback_every: int = 32,
) -> torch.Tensor:
    """:func:`sample_autoregressive` without a cache: ``model(...)`` over the full sequence
    for every token (float32). For tests; O(N) times slower."""
    was_training = model.training
    model.eval()
    try:
        s = _ARState(model, text_ids, sketch_ids, partial_ids, num_images, generator, temperature, top_k,
                     top_p, guidance_scale, guidance_conditions, fixed_ids, fixed_mask, callback, callback_every)
        for t in range(s.N):
            so_far = s.ids[:, :t]
            so_far = torch.cat([so_far, so_far]) if s.guided else so_far
            logits = model(s.conds["text"], s.conds["sketch"], s.conds["partial"], so_far, drop=s.drop)
            s.step(t, logits[:, -1])
        return s.ids
    finally:
        model.train(was_training)


# -- non-autoregressive (M6-Fashion) ----------------------------------------------------
def remask_count(n_editable: torch.Tensor | int, i: int, steps: int, start: float = 0.8, end: float = 0.2):
    """How many editable tokens mask-predict re-masks after step i (0 <= i < steps - 1):
    ``floor(r_i * n)`` with ``r_i`` linear from ``start`` (i = 0) to ``end`` (i = steps - 2)."""
    ratio = start + (end - start) * i / max(steps - 2, 1)
    # + 1e-6: 0.8 + (0.2 - 0.8) * 8/8 is 0.19999999999999996 in floats
    if isinstance(n_editable, torch.Tensor):
        return torch.floor(ratio * n_editable + 1e-6).long()
    return math.floor(ratio * n_editable + 1e-6)


@torch.inference_mode()
def sample_mask_predict(
    model: CrossModalTransformer,
    text_ids: torch.Tensor | None = None,
    sketch_ids: torch.Tensor | None = None,
    partial_ids: torch.Tensor | None = None,
    num_images: int = 1,
    generator: torch.Generator | int | None = None,
    steps: int = 10,
    mask_ratio_start: float = 0.8,
    mask_ratio_end: float = 0.2,
    temperature: float = 1.0,
    top_k: int | None = None,
    guidance_scale: float = 1.0,
    guidance_conditions: Sequence[str] = CONDITIONS,
    init_ids: torch.Tensor | None = None,
    editable_mask: torch.Tensor | None = None,
    callback: Callback | None = None,
    remask: str = "multinomial",
    dtype: str = DEFAULT_DTYPE,
) -> torch.Tensor:
    """M6-Fashion's progressive mask-predict ("SMART", Sec. 3.2) for a bidirectional model.

    Exactly what runs, with E = the editable positions of a row (all, unless
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
    ``callback(i + 1, ids)`` sees the completed prediction of each step.
    Returns ``(num_images, N[, G])``.
    """
    c = model.config
    if c.causal:
        raise ValueError("mask-predict needs a bidirectional model (config.causal=False)")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if remask not in ("multinomial", "confidence"):
        raise ValueError(f"remask must be 'multinomial' or 'confidence', got {remask!r}")
    was_training = model.training
    model.eval()
    try:
        device = model.type_ids.device
        B, N, G = num_images, c.image_len, c.pq_groups
        conds, drop, guided = _conditions(model, B, guidance_scale, guidance_conditions,
                                          text_ids=text_ids, sketch_ids=sketch_ids, partial_ids=partial_ids)
        gen = _generator(generator, device)
        shape = (B, N) + ((G,) if G > 1 else ())
        if init_ids is None:
            if editable_mask is not None:
                raise ValueError("editable_mask needs init_ids (the tokens to keep)")
            ids = torch.zeros(shape, dtype=torch.long, device=device)
        else:
            ids = torch.as_tensor(init_ids, device=device).long()
            ids = ids.unsqueeze(0) if ids.dim() == len(shape) - 1 else ids
            ids = ids.expand(shape).clone()
        editable = _per_row(editable_mask, B, N, torch.bool, "editable_mask", device)
        editable = torch.ones(B, N, dtype=torch.bool, device=device) if editable is None else editable.clone()
        n_edit = editable.sum(1)  # (B,)

        def spread(m):  # (B, N) -> broadcastable to ids
            return m.unsqueeze(-1) if G > 1 else m

        masked = editable.clone()
        ids = torch.where(spread(masked), torch.full_like(ids, c.mask_id), ids)
        score = torch.zeros(B, N, device=device)
        net = _at_precision(model, dtype)
        for i in range(steps):
            model_ids = torch.cat([ids, ids]) if guided else ids
            logits = net(conds["text"], conds["sketch"], conds["partial"], model_ids, drop=drop)
            tokens, probs = choose_tokens(_guide(logits, guided, guidance_scale), gen, temperature, top_k)
            if G > 1:
                probs = probs.clamp_min(1e-30).log().mean(-1).exp()  # geometric mean over groups
            ids = torch.where(spread(masked), tokens, ids)
            score = torch.where(masked, probs, score)
            if callback is not None:
                callback(i + 1, ids.clone())
            if i == steps - 1:
                break
            n_keep = n_edit - remask_count(n_edit, i, steps, mask_ratio_start, mask_ratio_end)  # (B,)
            key = score.clamp_min(1e-30).log()
            if remask == "multinomial":  # Gumbel-top-k = sampling without replacement ∝ score
                u = torch.rand(B, N, generator=gen, device=device).clamp(1e-12, 1 - 1e-12)
                key = key - torch.log(-torch.log(u))
            key = key.masked_fill(~editable, float("-inf"))
            order = key.argsort(dim=1, descending=True)
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=device).expand(B, N))
            masked = editable & (rank >= n_keep.unsqueeze(1))
            ids = torch.where(spread(masked), torch.full_like(ids, c.mask_id), ids)
        return ids
    finally:
        model.train(was_training)


# -- part editing -----------------------------------------------------------------------
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

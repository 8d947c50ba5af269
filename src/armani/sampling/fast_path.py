"""The CPU fast path of the samplers: a bf16 (or float32) copy of the transformer with prepacked linears.

Sampling feeds one token (AR) or one grid (mask-predict) at a time through a small model,
so on a CPU the cost is in the matmuls' weight handling, not the arithmetic. Two tricks,
each measured in research/bench_sampling.py and switchable on its own:

* ``dtype="bfloat16"``: sample with a copy whose weights are bf16 (oneDNN AVX-512 bf16
  matmuls). Attention and the KV cache stay float32: autocast instead would re-cast the
  weights every call and send SDPA to bf16 kernels that are several times slower than float32
  for one-token queries. This changes the numbers (bf16 rounding), so it is a precision
  setting of the sampler, stored with it.
* ``pack_linears=True``: reorder each bf16 ``nn.Linear`` weight once into oneDNN's blocked
  layout. A plain bf16 ``F.linear`` reorders it on every call, which for few-row matmuls costs
  as much as the product (50 -> 26 us for a 256 x 768 layer at 8 rows). This is what
  ``torch.compile``'s weight freezing does on CPU, without compiling: it calls the same two
  oneDNN ops Inductor emits (``mkldnn._reorder_linear_weight`` / ``mkldnn._linear_pointwise``).
  They are private, so :func:`packing_works` checks once that they exist and give exactly
  ``F.linear``'s result; the plain layers stay otherwise. Packing never changes a sample.
* ``pack_float32=True``: the same packing for a float32 sampler, for CPUs without native bf16
  (where float32 is the faster precision). On a 2-core AVX2 EPYC the sampler took 4 images in
  1.16 s instead of 1.40 (medians of 8 alternating calls, 2026-12-06). Unlike bf16, oneDNN's packed float32
  product is not bit-identical to ``F.linear``'s (they differ by float32 rounding, ~1e-7
  relative), so it is off by default and the app switches it on (demo/models.py): exactness
  tests and evaluation keep the plain layers.

The copy is cached per model (weakly) and rebuilt when a parameter changes (an optimiser
step bumps its ``_version``), so a training loop's periodic samples stay correct.
"""

from __future__ import annotations

import copy
import functools
import weakref

import torch
from torch import nn

from armani.models.transformer import CrossModalTransformer, SelfAttention

PRECISIONS = ("float32", "bfloat16")
# model -> {(precision, packed): (fingerprint, copy)}
_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def check_precision(dtype: str | torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in PRECISIONS:
        raise ValueError(f"dtype must be one of {PRECISIONS}, got {dtype!r}")
    return name


def model_for_sampling(model: CrossModalTransformer, dtype: str | torch.dtype = "bfloat16",
                       pack_linears: bool = True, pack_float32: bool = False) -> CrossModalTransformer:
    """The module to sample with: its cached bf16 copy (linears packed with ``pack_linears``),
    for float32 ``model`` itself, or with ``pack_float32`` a cached float32 copy whose linears
    are packed."""
    precision = check_precision(dtype)
    low, torch_dtype = precision == "bfloat16", getattr(torch, precision)
    wanted = pack_linears if low else pack_float32
    pack = wanted and model.type_ids.device.type == "cpu" and packing_works(torch_dtype)
    if not low and not pack:
        return model
    fingerprint = tuple((id(p), p._version) for p in model.parameters())
    copies = _COPIES.setdefault(model, {})
    cached = copies.get((precision, pack))
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    fast = copy.deepcopy(model).to(torch_dtype).eval()
    if low:
        for module in fast.modules():
            if isinstance(module, SelfAttention):
                module.attention_dtype = torch.float32  # attention and the KV cache stay float32
    if pack:
        _pack_linears(fast, torch_dtype)
    copies[(precision, pack)] = (fingerprint, fast)
    return fast


class PackedLinear(nn.Module):
    """An ``nn.Linear`` whose weight was reordered once into oneDNN's blocked layout (bf16:
    bit-identical to ``F.linear``; float32: equal up to float32 rounding)."""

    def __init__(self, linear: nn.Linear, batch_hint: int = 8):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def _pack_linears(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == dtype:
                setattr(parent, name, PackedLinear(child))


@functools.cache
def native_bf16() -> bool:
    """Whether oneDNN runs bf16 matmuls natively on this CPU (AVX-512 BF16 or AMX). Without
    them it emulates bf16 and the bf16 sampler is slower than float32: on a 2-core AVX2 EPYC,
    4 images took 2.2-2.7 s in bf16 against 1.3-1.6 s in float32 (2026-12-06)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (RuntimeError, AttributeError):
        return False


def native_precision() -> str:
    """The faster sampling precision on this CPU: "bfloat16" where bf16 matmuls are native,
    else "float32" (the two differ only by rounding)."""
    return "bfloat16" if native_bf16() else "float32"


SAMPLER_PRECISION_CHOICES = ("stored", "native") + PRECISIONS


def resolve_sampler_precision(choice: str, stored: str) -> str:
    """What a ``--sampler-precision`` choice samples in: "stored" keeps ``stored`` (the
    checkpoint's own), "native" is :func:`native_precision`, or a precision by name."""
    if choice == "stored":
        return check_precision(stored)
    if choice == "native":
        return native_precision()
    if choice not in PRECISIONS:
        raise ValueError(f"sampler precision must be one of {SAMPLER_PRECISION_CHOICES}, got {choice!r}")
    return choice


@functools.cache
def packing_works(dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether this torch build has the oneDNN ops for ``dtype`` and they match ``F.linear``:
    exactly in bf16, up to float32 rounding in float32."""
    try:
        gen = torch.Generator().manual_seed(0)
        lin = nn.Linear(32, 48).to(dtype)
        x = torch.randn(3, 5, 32, generator=gen).to(dtype)
        with torch.inference_mode():
            packed, plain = PackedLinear(lin)(x), lin(x)
        if dtype == torch.bfloat16:
            return bool(torch.equal(packed, plain))
        return bool(torch.allclose(packed, plain, rtol=1e-5, atol=1e-6))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


__all__ = ["PRECISIONS", "SAMPLER_PRECISION_CHOICES", "PackedLinear", "check_precision", "model_for_sampling",
           "native_bf16", "native_precision", "packing_works", "resolve_sampler_precision"]

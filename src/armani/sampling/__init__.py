"""Samplers for the stage-2 transformer, as objects that hold their settings.

* :class:`AutoregressiveSampler` (``"ar"``, ARMANI): one token per step with a KV cache and
  classifier-free guidance; teacher-forced tokens give part editing.
* :class:`MaskPredictSampler` (``"nar"``, M6-Fashion): progressive mask-predict for a
  bidirectional transformer.

A pipeline stores its sampler in ``pipeline.json`` (:meth:`Sampler.to_dict`) and takes
another per call. ``sample_autoregressive(model, ...)`` / ``sample_mask_predict(model, ...)``
are shorthands that build the sampler from keyword settings and call it once. The CPU fast
path (bf16 weight copy, prepacked linears) is :mod:`armani.sampling.fast_path`.
"""

from __future__ import annotations

from armani.sampling.autoregressive import DEFAULT_DTYPE, AutoregressiveSampler
from armani.sampling.base import SAMPLERS, Sampler, make_sampler, sampler_from_dict
from armani.sampling.mask_predict import MaskPredictSampler, remask_count
from armani.sampling.tokens import choose_tokens, garment_token_mask, kept_token_mask, token_mask_from_part_mask


def sample_autoregressive(model, text_ids=None, sketch_ids=None, partial_ids=None, num_images: int = 1,
                          generator=None, fixed_ids=None, fixed_mask=None, callback=None, **settings):
    """``AutoregressiveSampler(**settings)(model, ...)``: token grids ``(num_images, N[, G])``."""
    return AutoregressiveSampler(**settings)(model, text_ids, sketch_ids, partial_ids, num_images=num_images,
                                             generator=generator, fixed_ids=fixed_ids, fixed_mask=fixed_mask,
                                             callback=callback)


def sample_mask_predict(model, text_ids=None, sketch_ids=None, partial_ids=None, num_images: int = 1,
                        generator=None, init_ids=None, editable_mask=None, callback=None, **settings):
    """``MaskPredictSampler(**settings)(model, ...)``: token grids ``(num_images, N[, G])``."""
    return MaskPredictSampler(**settings)(model, text_ids, sketch_ids, partial_ids, num_images=num_images,
                                          generator=generator, init_ids=init_ids, editable_mask=editable_mask,
                                          callback=callback)


__all__ = [
    "DEFAULT_DTYPE", "SAMPLERS", "AutoregressiveSampler", "MaskPredictSampler", "Sampler", "choose_tokens",
    "garment_token_mask", "kept_token_mask", "make_sampler", "remask_count", "sample_autoregressive",
    "sample_mask_predict", "sampler_from_dict", "token_mask_from_part_mask",
]

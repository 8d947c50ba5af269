"""The cross-modal encoding of an image into stage-1 tokens (Sec. 3.3, Eq. 9).

A cross-modal codebook fuses each cell's visual feature with the caption word MaskCLIP finds
most similar to the part under that cell before quantising it. Encoding therefore needs the
part probabilities (ground truth or the segmenter's), MaskCLIP and the tokenized caption;
a visual-only codebook (``fusion=False``) or a missing caption encodes from pixels alone.
The pipeline, stage-2 training (tokenizing its data) and the codebook report all encode
through :func:`encode_cross_modal`, so the three can never disagree.
"""

from __future__ import annotations

import torch

from armani.models.maskclip import MaskCLIP
from armani.models.segmenter import Segmenter
from armani.models.vqgan import VQGAN


@torch.no_grad()
def encode_cross_modal(vqgan: VQGAN, images: torch.Tensor, text_ids: torch.Tensor | None = None, *,
                       part_probs: torch.Tensor | None = None, segmenter: Segmenter | None = None,
                       maskclip: MaskCLIP | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, 3, S, S) in [-1, 1] -> (token ids (B, N[, G]), word index (B, N) or None).

    ``text_ids`` (1 | B, L); ``part_probs`` (B, 15, S, S), predicted by ``segmenter`` when not
    given. The word index is each cell's position in the caption's ids (-1: no word fused).
    """
    if not vqgan.config.fusion or text_ids is None:
        return vqgan.encode(images), None
    if maskclip is None or (part_probs is None and segmenter is None):
        raise ValueError("a cross-modal codebook encodes with MaskCLIP and part probabilities (or the segmenter)")
    if part_probs is None:
        part_probs = segmenter.probs(images)  # (B, 15, S, S)
    words, index = maskclip.best_words(images, part_probs, text_ids.expand(images.shape[0], -1))  # (B, N, D), (B, N)
    return vqgan.encode(images, words, index), index


__all__ = ["encode_cross_modal"]

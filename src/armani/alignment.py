"""Word-part alignment: MaskCLIP heatmaps (the paper's Fig. 6) and the pointing game.

A word's heatmap is its similarity with every part token, laid out on the patch grid.
Choices the paper leaves open:

- **Words, not BPE pieces.** A word split into several BPE pieces ("buttoned" may be two)
  gets the per-patch *max* over its pieces, so it points wherever any of its pieces does.
- **Only part patches can be pointed at.** The best patch of a word is searched among the
  valid (not background-only) patches, as in MaskCLIP's own max (Eq. 5).
- **The pointed part** of a word is the label with the largest probability mass inside its
  best patch, not counting background, and not counting the garment body either when the
  patch holds more than 0.05 px of some other part (a 2x2 px button in a 4x4 patch is
  what that patch is about, even though body pixels outnumber it).
- **Pointing game hit:** the best patch counts as a hit when *any* pixel of the named part
  lies inside it. "Most pixels" would make 2-3 px parts (buttons) impossible to hit at a
  4x4 patch. The ``chance`` returned beside each accuracy is the hit rate of a patch drawn
  uniformly among the valid patches, the baseline a useless model gets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from armani.models.maskclip import MaskCLIP
from armani.parts import BACKGROUND, NUM_PARTS, PART_COLORS, PART_ID, PART_NAMES, PART_WORDS, colorize_mask
from armani.text import GarmentTokenizer

BODY = PART_ID["body"]


@dataclass
class HeatmapResult:
    """Word-part heatmaps of one image-text pair.

    words:        the caption's words, in order (TokenizedText.words)
    heatmaps:     (num_words, grid, grid) float similarity of each word with each patch
    patch_valid:  (grid, grid) bool, patches that hold a part (the others are ignored)
    best_patch:   (num_words,) int64 flat index (row * grid + col) of each word's best valid patch
    best_score:   (num_words,) float similarity at that patch
    pointed_part: per word, the part name its best patch holds most of
    part_mask:    (H, W) int64 the part mask used (argmax of the soft mask)
    """

    words: list[str]
    heatmaps: torch.Tensor
    patch_valid: torch.Tensor
    best_patch: torch.Tensor
    best_score: torch.Tensor
    pointed_part: list[str]
    part_mask: torch.Tensor


def _as_image_tensor(image, size: int) -> torch.Tensor:
    """PIL image / path / array or a (3, H, W) / (1, 3, H, W) tensor in [-1, 1] -> (1, 3, size, size)."""
    if not isinstance(image, torch.Tensor):
        from armani.data.images import fit_image, load_image, pil_to_tensor

        image = pil_to_tensor(fit_image(load_image(image), size))
    image = image.float()
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected one RGB image (3, H, W), got a tensor of shape {tuple(image.shape)}")
    if image.shape[-1] != size or image.shape[-2] != size:
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    return image


def _as_part_probs(part_probs: torch.Tensor, size: int) -> torch.Tensor:
    """int mask (H, W) / (1, H, W) or soft mask (15, H, W) / (1, 15, H, W) -> (1, 15, size, size) float."""
    if not part_probs.is_floating_point():
        mask = part_probs.reshape(1, *part_probs.shape[-2:]).long()
        part_probs = F.one_hot(mask, NUM_PARTS).permute(0, 3, 1, 2).float()  # (1, 15, H, W)
    if part_probs.ndim == 3:
        part_probs = part_probs.unsqueeze(0)
    if part_probs.shape[:2] != (1, NUM_PARTS):
        raise ValueError(f"expected a part mask (H, W) or soft mask ({NUM_PARTS}, H, W), got {tuple(part_probs.shape)}")
    if part_probs.shape[-1] != size:
        part_probs = F.interpolate(part_probs, size=(size, size), mode="nearest")
    return part_probs


def _word_scores(scores: torch.Tensor, word_ids: torch.Tensor, num_words: int) -> torch.Tensor:
    """Token scores (L, N) -> word scores (num_words, N): max over each word's BPE pieces."""
    out = scores.new_full((num_words, scores.shape[1]), float("-inf"))
    for t, w in enumerate(word_ids.tolist()):
        if w >= 0:
            out[w] = torch.maximum(out[w], scores[t])
    return out


def _patch_part_mass(part_probs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 15, H, W) -> (B, N, 15) summed probability of each part in each patch."""
    mass = F.avg_pool2d(part_probs, patch_size) * patch_size**2  # (B, 15, g, g)
    return mass.flatten(2).transpose(1, 2)  # (B, N, 15)


@torch.no_grad()
def word_part_heatmaps(
    maskclip: MaskCLIP,
    tokenizer: GarmentTokenizer,
    image,
    text: str,
    part_probs: torch.Tensor | None = None,
    segmenter=None,
) -> HeatmapResult:
    """One heatmap per word of ``text`` over the part tokens of ``image``.

    The part mask is ``part_probs`` (an int mask or a soft mask) when given, else the
    ``segmenter``'s prediction (its soft output, as MaskCLIP saw it in training).
    """
    cfg = maskclip.config
    device = next(maskclip.parameters()).device
    img = _as_image_tensor(image, cfg.image_size).to(device)  # (1, 3, H, W)
    if part_probs is None:
        if segmenter is None:
            raise ValueError("word_part_heatmaps needs part_probs or a segmenter to predict them")
        probs = segmenter.probs(img)  # (1, 15, H, W)
    else:
        probs = _as_part_probs(part_probs, cfg.image_size).to(device)
    tokens = tokenizer(text)
    part_tok, part_valid = maskclip.encode_parts(img, probs)  # (1, N, D), (1, N)
    word_tok, _ = maskclip.encode_text(tokens.ids.to(device))  # (1, L, D)
    scores = torch.einsum("nd,ld->ln", part_tok[0], word_tok[0])  # (L, N)
    words = tokens.words[0]
    heat = _word_scores(scores, tokens.word_ids[0], len(words))  # (W, N)
    masked = heat.masked_fill(~part_valid[0], float("-inf"))
    best_score, best_patch = masked.max(dim=1)  # (W,)
    mass = _patch_part_mass(probs, cfg.patch_size)[0]  # (N, 15)
    mass[:, BACKGROUND] = 0.0  # name a part, not the background around it
    parts_only = mass.clone()
    parts_only[:, BODY] = 0.0  # ... nor the body it sits on, when the patch holds a part
    if part_valid.any():
        pointed = [
            PART_NAMES[int(parts_only[p].argmax()) if parts_only[p].max() > 0.05 else int(mass[p].argmax())]
            for p in best_patch.tolist()
        ]
    else:
        pointed = ["background"] * len(words)
    g = cfg.grid
    return HeatmapResult(
        words=words,
        heatmaps=heat.reshape(len(words), g, g).cpu(),
        patch_valid=part_valid[0].reshape(g, g).cpu(),
        best_patch=best_patch.cpu(),
        best_score=best_score.cpu(),
        pointed_part=pointed,
        part_mask=probs[0].argmax(0).cpu(),
    )


def to_display(image) -> np.ndarray:
    """Tensor in [-1, 1] (3, H, W) / (1, 3, H, W), PIL or array -> (H, W, 3) uint8."""
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    from armani.data.images import load_image

    return np.asarray(load_image(image))


def plot_heatmaps(result: HeatmapResult, image, max_cols: int = 6):
    """The paper's Fig. 6: one panel per word (heatmap over the image), plus the part mask.

    Background-only patches are left uncoloured; the word's best patch is outlined. Panel
    titles read ``word -> pointed part (score)``. Returns a ``matplotlib.figure.Figure``
    (built without pyplot, so it is safe in servers and threads).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    rgb = to_display(image)
    H, W = rgb.shape[:2]
    g = result.heatmaps.shape[-1]
    n = len(result.words) + 1
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows), layout="constrained")
    valid = result.patch_valid.numpy()
    finite = result.heatmaps[:, result.patch_valid]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (-1.0, 1.0)
    for w, word in enumerate(result.words):
        ax = fig.add_subplot(rows, cols, w + 1)
        ax.imshow(rgb, extent=(0, W, H, 0))
        heat = np.ma.masked_where(~valid, result.heatmaps[w].numpy())
        ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=vmin, vmax=vmax, extent=(0, W, H, 0), interpolation="nearest")
        if valid.any():
            r, c = divmod(int(result.best_patch[w]), g)
            ax.add_patch(Rectangle((c * W / g, r * H / g), W / g, H / g, fill=False, edgecolor="cyan", linewidth=1.5))
        ax.set_title(f"{word} -> {result.pointed_part[w]} ({float(result.best_score[w]):.2f})", fontsize=8)
        ax.set_axis_off()
    ax = fig.add_subplot(rows, cols, n)
    mask = result.part_mask.numpy()
    ax.imshow(colorize_mask(mask), interpolation="nearest")
    present = [k for k in range(NUM_PARTS) if (mask == k).any()]
    handles = [Patch(color=np.asarray(PART_COLORS[k]) / 255.0, label=PART_NAMES[k]) for k in present]
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title("part mask", fontsize=8)
    ax.set_axis_off()
    return fig


@torch.no_grad()
def pointing_game(
    maskclip: MaskCLIP,
    tokenizer: GarmentTokenizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    captions: list[str],
    batch_size: int = 32,
) -> dict:
    """Does the best patch of each part word fall on that part? Ground-truth masks only.

    For every caption word naming a part (``armani.parts.PART_WORDS``) whose part occurs in
    the sample's ground-truth mask, MaskCLIP (fed the one-hot ground truth) picks the
    valid patch most similar to the word; a hit is a patch holding any pixel of the part.

    Returns ``{"accuracy", "chance", "hits", "count", "per_part": {part: {same keys}}}``;
    accuracy/chance are NaN where count is 0.
    """
    cfg = maskclip.config
    device = next(maskclip.parameters()).device
    if not (len(images) == len(masks) == len(captions)):
        raise ValueError(f"got {len(images)} images, {len(masks)} masks and {len(captions)} captions")
    hits: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    chance: dict[str, float] = defaultdict(float)
    was_training = maskclip.training
    maskclip.eval()
    try:
        for start in range(0, len(images), batch_size):
            img = images[start : start + batch_size].to(device).float()
            mask = masks[start : start + batch_size].to(device).long()
            probs = F.one_hot(mask, NUM_PARTS).permute(0, 3, 1, 2).float()  # (b, 15, H, W)
            tokens = tokenizer(captions[start : start + batch_size])
            part_tok, part_valid = maskclip.encode_parts(img, probs)  # (b, N, D), (b, N)
            word_tok, _ = maskclip.encode_text(tokens.ids.to(device))  # (b, L, D)
            scores = torch.einsum("bnd,bld->bln", part_tok, word_tok)  # (b, L, N)
            holds = _patch_part_mass(probs, cfg.patch_size) > 0  # (b, N, 15)
            for b, words in enumerate(tokens.words):
                heat = _word_scores(scores[b], tokens.word_ids[b], len(words))  # (W, N)
                heat = heat.masked_fill(~part_valid[b], float("-inf"))
                for w, word in enumerate(words):
                    part = PART_WORDS.get(word)
                    if part is None or not holds[b, :, PART_ID[part]].any():
                        continue
                    best = int(heat[w].argmax())
                    on_part = holds[b, :, PART_ID[part]]  # (N,)
                    hits[part] += int(on_part[best])
                    count[part] += 1
                    chance[part] += float(on_part[part_valid[b]].float().mean())
    finally:
        maskclip.train(was_training)

    def summary(h: int, c: int, ch: float) -> dict:
        return {"accuracy": h / c if c else float("nan"), "chance": ch / c if c else float("nan"), "hits": h, "count": c}

    total_h, total_c, total_ch = sum(hits.values()), sum(count.values()), sum(chance.values())
    out = summary(total_h, total_c, total_ch)
    out["per_part"] = {p: summary(hits[p], count[p], chance[p]) for p in sorted(count, key=PART_ID.get)}
    return out

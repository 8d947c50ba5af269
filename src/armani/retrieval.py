"""Cross-modal retrieval with MaskCLIP (UniFashion's retrieval task): text -> image search and
Recall@K in both directions.

The scores are MaskCLIP's own token-wise similarities, not a pooled embedding:

- **text -> image** ranks images p for a text q by ``sim_T[p, q]`` (mean over the query's
  words of the best part token of image p), the direction of Eq. 5 / L_T;
- **image -> text** ranks texts q for an image p by ``sim_M[p, q]`` (Eq. 4 / L_M).

So the index stores every image's part tokens (fp16 to halve memory) and their validity,
not one vector per image. Ties count against the model: a matched pair is ranked behind
every other candidate scoring at least as high.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from armani.models.maskclip import MaskCLIP, reduce_token_scores
from armani.parts import NUM_PARTS
from armani.text import GarmentTokenizer


def _one_hot(mask: torch.Tensor) -> torch.Tensor:
    """int64 (B, H, W) -> float (B, 15, H, W)."""
    return F.one_hot(mask.long(), NUM_PARTS).permute(0, 3, 1, 2).float()


def _split_item(item) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A dataset row -> (image (3, H, W), mask (H, W) or None). Rows: dict, (image, mask) or image."""
    if isinstance(item, dict):
        return item["image"], item.get("mask")
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else None)
    return item, None


def _batches(items: Iterable, batch_size: int):
    """Group single rows (or already batched dicts/tensors) into (images, masks|None) batches."""
    images, masks = [], []
    for item in items:
        image, mask = _split_item(item)
        if image.ndim == 4:  # already a batch (e.g. a DataLoader over collate)
            yield image, mask
            continue
        images.append(image)
        masks.append(mask)
        if len(images) == batch_size:
            yield torch.stack(images), (None if masks[0] is None else torch.stack(masks))
            images, masks = [], []
    if images:
        yield torch.stack(images), (None if masks[0] is None else torch.stack(masks))


@dataclass
class MaskCLIPIndex:
    """Part tokens of a gallery of images, searchable by text.

    part_tokens: (num_images, N, D) float16, L2-normalised
    part_valid:  (num_images, N) bool
    """

    maskclip: MaskCLIP
    part_tokens: torch.Tensor
    part_valid: torch.Tensor
    tokenizer: GarmentTokenizer | None = None

    def __len__(self) -> int:
        return self.part_tokens.shape[0]

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        maskclip: MaskCLIP,
        images: Iterable,
        part_probs_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_size: int = 32,
        tokenizer: GarmentTokenizer | None = None,
    ) -> "MaskCLIPIndex":
        """Encode a gallery. ``images`` yields rows (dicts with "image" and maybe "mask",
        (image, mask) tuples, or bare image tensors) or whole batches of them.

        ``part_probs_fn(images (B, 3, H, W)) -> (B, 15, H, W)`` gives the part masks, e.g.
        ``segmenter.probs``; without it the rows' ground-truth masks are used (one-hot).
        """
        device = next(maskclip.parameters()).device
        tokens, valid = [], []
        for image, mask in _batches(images, batch_size):
            image = image.to(device).float()
            if part_probs_fn is not None:
                probs = part_probs_fn(image)
            elif mask is not None:
                probs = _one_hot(mask.to(device))
            else:
                raise ValueError("rows have no 'mask': pass part_probs_fn (e.g. segmenter.probs)")
            tok, val = maskclip.encode_parts(image, probs)  # (b, N, D), (b, N)
            tokens.append(tok.half().cpu())
            valid.append(val.cpu())
        if not tokens:
            raise ValueError("cannot build an index from an empty gallery")
        return cls(maskclip=maskclip, part_tokens=torch.cat(tokens), part_valid=torch.cat(valid), tokenizer=tokenizer)

    @torch.no_grad()
    def scores(self, text_ids: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """sim_T of every gallery image with each query: (Q, L) ids -> (Q, num_images)."""
        device = next(self.maskclip.parameters()).device
        word_tok, word_valid = self.maskclip.encode_text(text_ids.to(device))  # (Q, L, D), (Q, L)
        out = []
        for start in range(0, len(self), chunk):
            part = self.part_tokens[start : start + chunk].to(device, word_tok.dtype)  # (P, N, D)
            pv = self.part_valid[start : start + chunk].to(device)
            s = torch.einsum("pnd,qld->pqnl", part, word_tok)  # (P, Q, N, L)
            _, sim_t = reduce_token_scores(s, pv[:, None], word_valid[None])  # (P, Q)
            out.append(sim_t.T.cpu())
        return torch.cat(out, dim=1)

    def search(self, query: str | torch.Tensor, k: int = 10) -> list[tuple[int, float]]:
        """The k gallery rows most similar to one query (a string, or ids (L,) / (1, L))."""
        if isinstance(query, str):
            if self.tokenizer is None:
                raise ValueError("a text query needs a tokenizer: pass tokenizer= to MaskCLIPIndex.build")
            ids = self.tokenizer(query).ids
        else:
            ids = query.reshape(1, -1)
        scores = self.scores(ids)[0]  # (num_images,)
        top = scores.topk(min(k, len(self)))
        return [(int(i), float(s)) for s, i in zip(top.values, top.indices)]


@torch.no_grad()
def similarity_matrices(
    maskclip: MaskCLIP, images: torch.Tensor, part_probs: torch.Tensor, text_ids: torch.Tensor, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sim_m, sim_t), each (N, N) [image p, text q], computed in chunks."""
    device = next(maskclip.parameters()).device
    parts, pvalid, words, wvalid = [], [], [], []
    for s in range(0, len(images), batch_size):
        t, v = maskclip.encode_parts(images[s : s + batch_size].to(device), part_probs[s : s + batch_size].to(device))
        parts.append(t)
        pvalid.append(v)
        t, v = maskclip.encode_text(text_ids[s : s + batch_size].to(device))
        words.append(t)
        wvalid.append(v)
    parts, pvalid, words, wvalid = (torch.cat(x) for x in (parts, pvalid, words, wvalid))
    sim_m = torch.empty(len(parts), len(words))
    sim_t = torch.empty(len(parts), len(words))
    for p in range(0, len(parts), batch_size):
        for q in range(0, len(words), batch_size):
            m, t = maskclip.similarity(
                parts[p : p + batch_size], pvalid[p : p + batch_size], words[q : q + batch_size], wvalid[q : q + batch_size]
            )
            sim_m[p : p + batch_size, q : q + batch_size] = m.cpu()
            sim_t[p : p + batch_size, q : q + batch_size] = t.cpu()
    return sim_m, sim_t


def _recall(scores: torch.Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """Rows are queries, the matching candidate is on the diagonal; ties count as misses."""
    diag = scores.diagonal().unsqueeze(1)  # (N, 1)
    others = scores >= diag
    others.fill_diagonal_(False)
    rank = others.sum(dim=1)  # 0 = matched candidate strictly first
    return {k: float((rank < k).float().mean()) for k in ks}


def recall_at_k(
    maskclip: MaskCLIP,
    images: torch.Tensor,
    part_probs: torch.Tensor,
    text_ids: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    batch_size: int = 32,
) -> dict[str, float]:
    """Recall@K on N aligned pairs (image i matches text i), both directions.

    Keys: ``"image_to_text@K"`` (rows of sim_M) and ``"text_to_image@K"`` (rows of sim_T^T).
    ``part_probs`` is (N, 15, H, W) soft, or an int64 (N, H, W) mask (one-hot).
    """
    if not part_probs.is_floating_point():
        part_probs = _one_hot(part_probs)
    sim_m, sim_t = similarity_matrices(maskclip, images, part_probs, text_ids, batch_size)
    i2t, t2i = _recall(sim_m, ks), _recall(sim_t.T.contiguous(), ks)
    out = {f"image_to_text@{k}": v for k, v in i2t.items()}
    out.update({f"text_to_image@{k}": v for k, v in t2i.items()})
    return out

"""Do the sketch tokens reach the image positions they lie under? (issue 14, lead 3)

The stage-2 transformer has one learned position table for the whole sequence
``[text][SEP][sketch 8x8][SEP][partial 8x8][SEP][image 16x16]``, so nothing tells it that
sketch cell (r, c) lies over image cells (2r..2r+1, 2c..2c+1): it must learn that from data.
Two measurements:

1. **2D structure of the learned positions.** Within each grid segment, the Pearson
   correlation between two positions' cosine similarity and their distance on the grid
   (the position code as the model adds it: the table, plus the shared 2D code if on). A
   table that encodes 2D layout gives a clearly negative value (near cells look alike);
   an unstructured one gives ~0.
2. **Where image positions look in the sketch.** For validation garments with their Canny
   sketch, the attention of each image position (the position that predicts token j) over
   the 64 sketch keys, per layer, averaged over heads. Reported: the share of the sketch
   attention that falls on the 3x3 sketch cells around the one over token j, against the
   share a spatially blind head would give (9/64 in the interior, less at the borders), and
   how often the most-attended sketch cell is one of those.

    python research/position_probe.py --checkpoint checkpoints/armani --num 32 \\
        --out research/results/position_probe_<name>.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def grid_structure(pos: torch.Tensor, side: int) -> float:
    """Pearson r between cosine similarity and grid distance over all pairs of a side x side grid."""
    e = torch.nn.functional.normalize(pos.float(), dim=-1)
    sim = e @ e.T
    rc = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2).float()
    dist = torch.cdist(rc, rc)
    upper = torch.triu(torch.ones_like(sim, dtype=torch.bool), diagonal=1)
    return float(np.corrcoef(sim[upper].numpy(), dist[upper].numpy())[0, 1])


def neighbourhoods(image_side: int, sketch_side: int) -> torch.Tensor:
    """(N_image, N_sketch) bool: the 3x3 sketch cells around the cell over each image token."""
    scale = image_side // sketch_side
    j = torch.arange(image_side * image_side)
    r, c = (j // image_side) // scale, (j % image_side) // scale  # the sketch cell over token j
    k = torch.arange(sketch_side * sketch_side)
    kr, kc = k // sketch_side, k % sketch_side
    return ((kr[None] - r[:, None]).abs() <= 1) & ((kc[None] - c[:, None]).abs() <= 1)


@torch.no_grad()
def sketch_attention(transformer, text_ids, sketch_ids, image_ids) -> torch.Tensor:
    """(layers, B, N_image, N_sketch): each image query's attention on the sketch keys, head mean.

    Query ``prefix_len - 1 + j`` predicts image token j, so row j is "while drawing token j".
    """
    c = transformer.config
    inputs = []
    hooks = [b.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for b in transformer.blocks]
    try:
        transformer(text_ids, sketch_ids, None, image_ids)
    finally:
        for h in hooks:
            h.remove()
    s0 = c.segment_start("sketch")
    q0 = c.prefix_len - 1
    out = []
    for block, x in zip(transformer.blocks, inputs):
        att = block.attn
        B, T, D = x.shape
        q, k, _ = att.qkv(x).view(B, T, 3, att.heads, att.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(att.head_dim)  # (B, H, T, T)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        probs = scores.softmax(-1)[:, :, q0 : q0 + c.image_len, s0 : s0 + c.sketch_len]  # (B, H, N, 64)
        out.append(probs.mean(1))
    return torch.stack(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "armani"))
    ap.add_argument("--num", type=int, default=32, help="validation garments")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    from condition_probe import report, val_garments

    from armani.loading import load_pipeline

    pipe = load_pipeline(args.checkpoint)
    tr, c = pipe.transformer.float().eval(), pipe.transformer.config
    side, sketch_side = math.isqrt(c.image_len), math.isqrt(c.sketch_len)
    with torch.no_grad():  # the position code a token gets: the learned table, plus the shared 2D code if on
        pos = tr._position_terms(0, c.max_len) - tr.type_emb(tr.type_ids)
    structure = {name: grid_structure(pos[c.segment_start(name) : c.segment_start(name) + n], math.isqrt(n))
                 for name, n in (("sketch", c.sketch_len), ("partial", c.partial_len), ("image", c.image_len))}

    rows, text_ids, image_ids = val_garments(pipe, args.num)
    sketches = [pipe.prepare_sketch(r["image"], [], mode="photo")[0] for r in rows]
    sketch_ids = torch.cat([pipe.sketch_tokenizer.encode(s) for s in sketches])
    att = sketch_attention(tr, text_ids, sketch_ids, image_ids)  # (L, B, N, 64)
    near = neighbourhoods(side, sketch_side)  # (N, 64)
    share = att / att.sum(-1, keepdim=True).clamp_min(1e-12)  # attention within the sketch, sums to 1
    layers = []
    for layer in range(att.shape[0]):
        on_near = (share[layer] * near).sum(-1)  # (B, N)
        top = share[layer].argmax(-1)  # (B, N)
        top_near = near.gather(1, top.T).T  # (B, N)
        layers.append({"layer": layer, "sketch_attention_mass": float(att[layer].sum(-1).mean()),
                       "share_on_aligned_3x3": float(on_near.mean()),
                       "top_cell_in_aligned_3x3": float(top_near.float().mean())})
    blind = float(near.float().mean(1).mean())  # uniform attention's share on the 3x3
    result = {"checkpoint": str(args.checkpoint), "num": args.num,
              "position_grid_structure_r": structure,
              "spatially_blind_share": blind, "layers": layers}
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

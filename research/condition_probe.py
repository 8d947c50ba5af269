"""How much each caption word moves the transformer's likelihood of a real garment (issue 14, lead 2).

For validation garments of the procedural set, encode each render into image tokens (the
pipeline's own Eq. 9 encoding with its true caption), then score those tokens under the
stage-2 transformer with (a) the true caption, (b) the caption with its category word
swapped for another category's, (c) with its colour word swapped for another colour. A model
that reads a word loses likelihood when it is swapped: the report gives the mean increase of
the negative log-likelihood in nats per garment (and per token), with its standard error.

    python research/condition_probe.py --checkpoint checkpoints/armani --num 96 \\
        --out research/results/condition_probe_<name>.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def swapped(caption: str, attributes: dict, what: str, rng: np.random.Generator) -> str | None:
    """The caption with its category (or colour) word replaced by another one; None if absent."""
    from armani.data.captions import CATEGORY_WORDS
    from armani.data.garments import COLORS

    if what == "category":
        words = sorted(CATEGORY_WORDS[attributes["category"]], key=len, reverse=True)
        others = [w for c, ws in CATEGORY_WORDS.items() if c != attributes["category"] for w in ws]
    else:
        words = [attributes["color"]]
        others = [c for c in COLORS if c != attributes["color"]]
    for word in words:
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        if pattern.search(caption):
            return pattern.sub(str(rng.choice(others)), caption, count=1)
    return None


def val_garments(pipe, num: int) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """The first ``num`` procedural val rows, their caption ids (B, L) and their image tokens
    (B, N[, G]) from the pipeline's own Eq. 9 encoding with the true caption."""
    from armani.data.synthetic import generate_row
    from armani.data.transforms import image_tensor

    rows = [generate_row(i, size=pipe.image_size, seed=0, split="val") for i in range(num)]
    images = torch.stack([image_tensor(r["image"]) for r in rows])  # (B, 3, S, S)
    text_ids = pipe.tokenizer([r["caption"] for r in rows], warn=False).ids
    image_ids = torch.cat([pipe.encode_image(images[i : i + 1], text_ids[i : i + 1]) for i in range(num)])
    return rows, text_ids, image_ids


def report(result: dict, out: str | None) -> None:
    """Print ``result`` as JSON and write it to ``out`` when given."""
    print(json.dumps(result, indent=2))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


@torch.no_grad()
def token_nll(pipe, text_ids: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """-log p(token | caption, earlier tokens) of every image token: (B, N) nats."""
    # token_losses averages over the product-quantiser groups; a token's NLL is their sum
    return pipe.transformer.token_losses(text_ids, None, None, image_ids) * pipe.transformer.config.pq_groups


def image_nll(pipe, text_ids: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """Sum over image tokens: (B,) nats."""
    return token_nll(pipe, text_ids, image_ids).sum(1)


def background_share(pipe, rows: list[dict], nll: torch.Tensor) -> dict:
    """Lead 6: how many image tokens cover no garment pixel (label 0; label 1 "body" is the
    garment's main panel), and how much of the loss they take."""
    from armani.sampling import garment_token_mask

    masks = torch.stack([torch.as_tensor(r["mask"]) for r in rows]).long()  # (B, S, S) part ids
    garment = garment_token_mask(masks, pipe.vqgan.grid_size)  # (B, N): any garment pixel
    background = ~garment
    return {"background_token_fraction": float(background.float().mean()),
            "background_nll_share": float((nll * background).sum() / nll.sum()),
            "nll_per_background_token": float(nll[background].mean()),
            "nll_per_garment_token": float(nll[garment].mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "armani"))
    ap.add_argument("--num", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    from armani.loading import load_pipeline

    pipe = load_pipeline(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    rows, true_ids, image_ids = val_garments(pipe, args.num)
    per_token = token_nll(pipe, true_ids, image_ids)  # (B, N)
    base = per_token.sum(1)
    result = {"checkpoint": str(args.checkpoint), "num": args.num, "tokens_per_image": int(image_ids[0].numel()),
              "nll_true_caption": float(base.mean()), "background": background_share(pipe, rows, per_token)}
    for what in ("category", "color"):
        keep, captions = [], []
        for i, r in enumerate(rows):
            text = swapped(r["caption"], r["attributes"], what, rng)
            if text is not None:
                keep.append(i)
                captions.append(text)
        ids = pipe.tokenizer(captions, warn=False).ids
        delta = image_nll(pipe, ids, image_ids[keep]) - base[keep]  # (n,)
        result[what] = {"garments": len(keep), "delta_nll_nats": float(delta.mean()),
                        "stderr": float(delta.std() / len(keep) ** 0.5),
                        "delta_per_token": float(delta.mean() / image_ids[0].numel()),
                        "example": captions[0]}
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

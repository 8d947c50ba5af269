"""Where a stage-2 transformer's cross entropy goes: garment tokens against studio background.

    python research/ce_split.py --tokens runs/v7/transformer/tokens-val.safetensors \\
        --checkpoint v6=<v6 transformer folder> --checkpoint v7=checkpoints/armani/transformer \\
        --out research/results/ce_split_v7.json

Reads a run's stage-2 token file (written when the stage tokenizes its data; it holds each
row's ``garment_tokens``, the image cells that cover a garment pixel) and scores every row
with every condition given, as validation does, but over the whole file, not 16 batches.
For each checkpoint it reports the mean CE over all image tokens, over garment tokens and
over background tokens, so a ``transformer.background_weight`` run can be compared with one
without it on the tokens the weight moves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from armani.models.transformer import CrossModalTransformer

KEYS = ("text_ids", "sketch_ids", "partial_ids", "image_ids")


@torch.no_grad()
def ce_split(model: CrossModalTransformer, tokens: dict[str, torch.Tensor], batch_size: int = 50) -> dict:
    """Mean CE over all / garment / background image tokens of every row in ``tokens``."""
    if "garment_tokens" not in tokens:
        raise ValueError("this token file has no garment_tokens (tokenized before they were stored); "
                         "delete it and let the stage tokenize again")
    sums = {"all": [0.0, 0], "garment": [0.0, 0], "background": [0.0, 0]}
    for start in range(0, len(tokens["image_ids"]), batch_size):
        rows = slice(start, start + batch_size)
        per_token = model.token_losses(*(tokens[k][rows] for k in KEYS))  # (B, N)
        garment = tokens["garment_tokens"][rows].bool()
        for name, where in (("all", torch.ones_like(garment)), ("garment", garment), ("background", ~garment)):
            sums[name][0] += per_token[where].sum().item()
            sums[name][1] += int(where.sum())
    out = {f"ce_{name}": total / count for name, (total, count) in sums.items() if count}
    out["garment_share"] = sums["garment"][1] / sums["all"][1]
    out["rows"] = len(tokens["image_ids"])
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True, help="a stage-2 token file (runs/<run>/transformer/tokens-val.safetensors)")
    ap.add_argument("--checkpoint", action="append", required=True, metavar="NAME=FOLDER",
                    help="a transformer folder to score (repeatable)")
    ap.add_argument("--out", help="write the JSON report here")
    args = ap.parse_args(argv)
    tokens = load_file(args.tokens)
    report = {"tokens": args.tokens, "command": "python research/ce_split.py " + " ".join(argv or sys.argv[1:]),
              "checkpoints": {}}
    for spec in args.checkpoint:
        name, _, folder = spec.rpartition("=")
        model = CrossModalTransformer.from_pretrained(folder).eval()
        report["checkpoints"][name or folder] = {"folder": folder, **ce_split(model, tokens)}
        print(name or folder, json.dumps(report["checkpoints"][name or folder]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

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

from condition_probe import report as write_report

from armani.models.transformer import CrossModalTransformer
from armani.training.stages.transformer import VIEWED_KEYS, garment_background_ce

KEYS = ("text_ids", "sketch_ids", "partial_ids", "image_ids")


@torch.no_grad()
def ce_split(model: CrossModalTransformer, tokens: dict[str, torch.Tensor], batch_size: int = 50) -> dict:
    """Mean CE over all / garment / background image tokens of every row in ``tokens`` (of a
    training file with several sketch / partial draws per row, the first draw)."""
    tokens = {k: v[:, 0] if k in VIEWED_KEYS and v.dim() == 3 else v for k, v in tokens.items()}
    if "garment_tokens" not in tokens:
        raise ValueError("this token file has no garment_tokens (tokenized before they were stored); "
                         "delete it and let the stage tokenize again")
    batches = []
    for start in range(0, len(tokens["image_ids"]), batch_size):
        rows = slice(start, start + batch_size)
        batches.append((model.token_losses(*(tokens[k][rows] for k in KEYS)), tokens["garment_tokens"][rows].bool()))
    garment = tokens["garment_tokens"].bool()
    ce_all = torch.cat([per_token for per_token, _ in batches]).mean().item()
    return {"ce_all": ce_all, **garment_background_ce(batches), "garment_share": garment.float().mean().item(),
            "rows": len(garment)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True,
                    help="a stage-2 token file (runs/<run>/transformer/tokens-val.safetensors)")
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
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()

"""How much each single condition is worth to a stage-2 transformer, on training rows and on
validation rows: a check for memorised conditions.

    python research/condition_gain.py --run runs/v8 --checkpoint checkpoints/armani/transformer \\
        --out research/results/condition_gain_v8.json

Stage 2 tokenizes its data once, so (unless ``transformer.condition_views`` > 1) every training
row keeps the same partial-image crop and the same sketch for all its epochs. If the model had
learnt those crops by heart, the partial image would lower the CE of a training row's image
tokens much more than it lowers a new row's. For the first ``--rows`` rows of the run's train and
val token files, this scores the image tokens with no condition, with each condition alone and
with all of them, and reports every condition's gain (CE without it minus CE with it alone) on
both splits. The train-minus-val difference of a gain is what the model knows about those rows'
particular conditions beyond what carries over to new ones.
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
from armani.training.stages.transformer import VIEWED_KEYS

KEYS = ("text_ids", "sketch_ids", "partial_ids", "image_ids")
CONDITIONS = ("text", "sketch", "partial")
GIVEN = ("none", *CONDITIONS, "all")


@torch.no_grad()
def mean_ce(model: CrossModalTransformer, tokens: dict[str, torch.Tensor], given: str, batch_size: int = 100) -> float:
    """Mean CE over the image tokens of every row, with only ``given`` conditions kept."""
    drop = {c: given != "all" and c != given for c in CONDITIONS}
    total, count = 0.0, 0
    for start in range(0, len(tokens["image_ids"]), batch_size):
        rows = slice(start, start + batch_size)
        losses = model.token_losses(*(tokens[k][rows] for k in KEYS), drop=drop)
        total += losses.sum().item()
        count += losses.numel()
    return total / count


def load_rows(path: Path, rows: int) -> dict[str, torch.Tensor]:
    """The first ``rows`` rows of a token file (of a multi-draw training file, draw 0: the one
    the first epoch trained on)."""
    tokens = load_file(str(path))
    return {k: (v[:rows, 0] if k in VIEWED_KEYS and v.dim() == 3 else v[:rows]) for k in KEYS for v in [tokens[k]]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a stage-2 run folder holding transformer/tokens-{train,val}")
    ap.add_argument("--checkpoint", required=True, help="the transformer folder to score")
    ap.add_argument("--rows", type=int, default=1000, help="rows of each split")
    ap.add_argument("--out", help="write the JSON report here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = CrossModalTransformer.from_pretrained(args.checkpoint).eval()
    ce: dict[str, dict[str, float]] = {}
    for split in ("train", "val"):
        path = Path(args.run) / "transformer" / f"tokens-{split}.safetensors"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (the run tokenizes it when stage 2 starts)")
        tokens = load_rows(path, args.rows)
        ce[split] = {g: mean_ce(model, tokens, g) for g in GIVEN}
        print(split, json.dumps({g: round(v, 4) for g, v in ce[split].items()}), flush=True)
    gain = {s: {g: ce[s]["none"] - ce[s][g] for g in GIVEN if g != "none"} for s in ce}
    report = {
        "command": "python research/condition_gain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": args.rows,
        "ce": ce,
        "gain": gain,
        "gain_train_minus_val": {g: gain["train"][g] - gain["val"][g] for g in gain["train"]},
    }
    for g in gain["train"]:
        print(f"{g:8s} gain train {gain['train'][g]:.4f}  val {gain['val'][g]:.4f}  "
              f"train - val {report['gain_train_minus_val'][g]:+.4f}")
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()

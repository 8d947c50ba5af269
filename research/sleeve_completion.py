"""Prompts that name a top but not its sleeve length, with and without the pipeline's completion.

Every training caption names the sleeve length, so a prompt such as "a pink coat with a belt"
is one the transformer has never seen, and it draws the garment without sleeves. The pipeline
completes such prompts with the category's usual length (``PipelineSettings.complete_sleeve_length``,
``armani.data.captions.complete_sleeve_length``). This script generates short prompts,
"a <colour> <top>" and "a <colour> <top> with <part>", both ways on the same seeds, reads every
image with the attribute classifier, and reports per category how often the sleeves come out as
the usual length and how often sleeveless; it also writes a grid (a row per category: its
prompts' first samples without the completion, then with it).

    python research/sleeve_completion.py --checkpoint checkpoints/armani \\
        --out research/results/sleeve_completion.json --grid research/results/sleeve_completion.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

COLOURS = ("pink", "black", "green")
# one part each top can have (so the prompt asks for nothing the data never draws)
PART_PHRASE = {"t-shirt": "a chest pocket", "shirt": "five buttons", "polo": "a logo", "dress": "a belt",
               "jacket": "a zipper", "coat": "a belt and two buttons", "hoodie": "a hood",
               "tank top": "two straps", "sweater": "a banded hem"}


def prompts(categories: list[str] | None = None) -> list[tuple[str, str]]:
    """(category, prompt) pairs; none names a sleeve length."""
    out = []
    for category, part in PART_PHRASE.items():
        if categories and category not in categories:
            continue
        for i, colour in enumerate(COLOURS):
            out.append((category, f"a {colour} {category}" + (f" with {part}" if i % 2 else "")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "armani"))
    ap.add_argument("--samples", type=int, default=4, help="images per prompt and setting")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", nargs="+", choices=sorted(PART_PHRASE), help="only these tops (default: all)")
    ap.add_argument("--out", default=None, help="write the report here (JSON)")
    ap.add_argument("--grid", default=None, help="write a grid of the first sample of each prompt here (PNG)")
    args = ap.parse_args(argv)

    from PIL import Image

    from armani.data.captions import TYPICAL_SLEEVE
    from armani.data.transforms import image_tensor
    from armani.evaluation.attributes import load_classifier
    from armani.loading import load_pipeline

    pipe = load_pipeline(args.checkpoint)
    classifier, _, _ = load_classifier(None)
    if classifier is None:
        sys.exit("needs the attribute classifier (checkpoints/attribute_classifier)")
    per_category: dict[str, dict[str, list[str]]] = {}
    tiles: dict[bool, list[np.ndarray]] = {False: [], True: []}
    read: dict[str, str] = {}
    for n, (category, text) in enumerate(prompts(args.categories)):
        for complete in (False, True):
            pipe.settings.complete_sleeve_length = complete
            out = pipe(text=text, num_images=args.samples, seed=args.seed * 1000 + n)
            if complete:
                read[text] = out.text
            images = torch.stack([image_tensor(np.asarray(im.convert("RGB"))) for im in out.images])
            sleeves = [r["sleeve"] for r in classifier.predict(images)]
            per_category.setdefault(category, {"without": [], "with": []})["with" if complete else "without"] += sleeves
            tiles[complete].append(np.asarray(out.images[0].convert("RGB")))
    pipe.settings.complete_sleeve_length = True

    def share(sleeves: list[str], value: str) -> float:
        return round(float(np.mean([s == value for s in sleeves])), 3)

    rows = {}
    for category, got in per_category.items():
        usual = TYPICAL_SLEEVE[category]
        rows[category] = {"usual": usual, **{f"{k}: usual length": share(v, usual) for k, v in got.items()},
                          **{f"{k}: sleeveless": share(v, "sleeveless") for k, v in got.items()}}
    tops = [c for c in rows if TYPICAL_SLEEVE[c] != "sleeveless"]
    summary = {k: round(float(np.mean([rows[c][k] for c in tops])), 3)
               for k in ("without: usual length", "with: usual length", "without: sleeveless", "with: sleeveless")}
    result = {"checkpoint": args.checkpoint, "samples_per_prompt": args.samples, "seed": args.seed,
              "prompts": [t for _, t in prompts(args.categories)], "read_with_completion": read,
              "per_category": rows, "tops_with_sleeves_mean": summary,
              "what": "the attribute classifier's sleeve reading of each image; 'usual' is the category's "
                      "most common length in training, the one the completion adds"}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.grid:
        # one row per category: its prompts without the completion, then the same with it
        k = len(COLOURS)
        grid = np.concatenate([np.concatenate(tiles[False][i : i + k] + tiles[True][i : i + k], 1)
                               for i in range(0, len(tiles[False]), k)], 0)
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(args.grid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Text alone against text + partial image, paired sample by sample, and which step of the
partial-image composite moves each category reading.

``python -m armani.evaluate`` reports one category accuracy per task, so two reports can only
be compared as totals. This script replays its prompts, seeds and controls (the same
``seed * 100_003 + i`` per prompt, the same random 25% crops) and keeps every sample's reading
by the attribute classifier, so the two tasks can be paired: for each sample, was the category
right with text alone, with the partial image, and with the partial image at every step of the
pipeline's composite (the model's own decoding; the kept region pasted back; + the background
tint matched; + the garment shade matched, which is what the pipeline returns).

    python research/partial_category_pairs.py --seed 0 --num-prompts 250 --out pairs_seed0.json
    python research/partial_category_pairs.py --seed 0 --num-prompts 250 --figure sweaters.png --category sweater

The JSON has one record per prompt and a summary: misses per variant, the 2 x 2 table of the
paired verdicts (text alone / text + partial) and McNemar's exact two-sided p-value on its
discordant pairs. Sampling is float32 (``--sampler-precision`` of ``armani.evaluate``), so the
shipped checkpoint gives the same samples as ``python -m armani.evaluate --sampler-precision
float32`` with the same seed and number of prompts.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from armani.evaluation.generation import EvalConfig, _controls, _images_to_tensor, _load_classifier, _task_setup
from armani.loading import load_pipeline
from armani.pipeline import composite_kept_region, harmonise_background, harmonise_garment

VARIANTS = ("own", "paste", "paste+background", "paste+background+garment")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for discordant counts ``b`` and ``c`` (a binomial test
    of min(b, c) in b + c draws at one half)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def composites(pipe, own: list[Image.Image], partial, keep) -> dict[str, list[Image.Image]]:
    """The pipeline's composite of the model's own decoding, one step at a time."""
    seg, feather = pipe.segmenter, pipe.settings.keep_feather
    background = harmonise_background(own, partial, keep, seg)
    return {
        "own": own,
        "paste": composite_kept_region(own, partial, keep, feather=feather),
        "paste+background": composite_kept_region(background, partial, keep, feather=feather),
        "paste+background+garment": composite_kept_region(harmonise_garment(background, partial, keep, seg),
                                                          partial, keep, feather=feather),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--classifier", default=None, help="attribute classifier folder (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-prompts", type=int, default=250)
    ap.add_argument("--samples-per-prompt", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--figure", type=Path, default=None,
                    help="rows of render, partial image, text-alone samples, text + partial samples, own decodings")
    ap.add_argument("--category", default="sweater", help="the category the figure shows")
    args = ap.parse_args(argv)

    pipe = load_pipeline(args.checkpoint)
    pipe.sampler = pipe.sampler.with_options(dtype="float32")
    classifier, _, _ = _load_classifier(args.classifier)
    cfg = EvalConfig(task="text+partial", seed=args.seed, num_prompts=args.num_prompts,
                     samples_per_prompt=args.samples_per_prompt, progress=False)
    prompts, size, control_kwargs = _task_setup(cfg, pipe)
    controls = _controls(prompts, cfg, size, control_kwargs)
    k = args.samples_per_prompt

    def categories(images: list[Image.Image]) -> list[str]:
        return [r["category"] for r in classifier.predict(_images_to_tensor(images))]

    records, rows = [], []
    for i, (prompt, control) in enumerate(zip(prompts, controls)):
        seed = cfg.seed * 100_003 + i
        kwargs = control.pipeline_kwargs()
        alone = pipe(text=prompt["text"], num_images=k, seed=seed)
        given = pipe(text=prompt["text"], num_images=k, seed=seed, **kwargs)
        partial, keep, _, _ = pipe.prepare_partial(kwargs["partial"], kwargs.get("partial_keep_mask"), [], seed)
        steps = composites(pipe, given.uncomposited, partial[0], keep[0])
        if any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(steps["paste+background+garment"], given.images)):
            raise RuntimeError("the replayed composite differs from the pipeline's output; the pipeline's "
                               "composite steps changed, so update composites()")
        want = prompt["attributes"]["category"]
        record = {"index": i, "text": prompt["text"], "category": want,
                  "render": categories([Image.fromarray(control.reference)])[0],
                  "text_alone": categories(list(alone.images))}
        record.update({name: categories(images) for name, images in steps.items()})
        records.append(record)
        if args.figure is not None and want == args.category:
            shown = np.where(control.keep_mask[..., None] > 0, control.reference, 255).astype(np.uint8)
            rows.append([Image.fromarray(control.reference), Image.fromarray(shown), *alone.images,
                         *given.images, *given.uncomposited])

    final = "paste+background+garment"
    pairs = Counter((a == r["category"], b == r["category"])
                    for r in records for a, b in zip(r["text_alone"], r[final]))
    only_text, only_partial = pairs[(True, False)], pairs[(False, True)]
    n = len(records) * k
    summary = {
        "samples": n,
        "misses": {name: sum(x != r["category"] for r in records for x in r[name])
                   for name in ("text_alone", *VARIANTS)},
        "renders_misread": sum(r["render"] != r["category"] for r in records),
        "pairs": {"both right": pairs[(True, True)], "text alone only": only_text,
                  "text + partial only": only_partial, "both wrong": pairs[(False, False)]},
        "mcnemar_p": mcnemar_exact(only_text, only_partial),
        "what": "category readings by the attribute classifier; text + partial is the pipeline's output "
                f"({final}); 'own' is the model's decoding before the composite",
    }
    summary["accuracy"] = {name: 1 - m / n for name, m in summary["misses"].items()}
    per_category: dict[str, dict[str, int]] = {}
    for r in records:
        row = per_category.setdefault(r["category"], Counter())
        row["samples"] += k
        for name in ("text_alone", *VARIANTS):
            row[name] += sum(x == r["category"] for x in r[name])
    summary["right_per_category"] = {c: dict(v) for c, v in sorted(per_category.items())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seed": args.seed, "num_prompts": args.num_prompts, "summary": summary,
                                    "records": records}, indent=1))
    print(json.dumps(summary, indent=1))
    if args.figure is not None and rows:
        cols = len(rows[0])
        canvas = Image.new("RGB", (size * cols, size * len(rows)), "white")
        for y, row in enumerate(rows):
            for x, im in enumerate(row):
                canvas.paste(im.convert("RGB").resize((size, size)), (size * x, size * y))
        canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST).save(args.figure)
    return summary


if __name__ == "__main__":
    main()

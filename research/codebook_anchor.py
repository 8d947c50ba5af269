"""The best a stage 2 could score through an image codebook: its round trip of real renders.

    python research/codebook_anchor.py                                  # the shipped codebook
    python research/codebook_anchor.py --vqgan runs/vq2/vqgan/final --seeds 0 1 2 \\
        --out research/results/codebook_anchor_vq2.json

``python -m armani.evaluate`` reports, beside its floor and ceiling, a ``codebook`` anchor:
real renders of the prompts encoded by the checkpoint's image codebook and decoded again (every
token right), scored by the same classifier, FID and MaskCLIP judge. This script computes only
that anchor (no generation), for the shipped codebook or for another one swapped into the
pipeline (``--vqgan``: a trained ``vqgan`` stage folder), so a codebook can be judged by what
it would let stage 2 reach before a transformer is trained on its tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from condition_probe import report as write_report

from armani.evaluation.generation import EvalConfig, anchors_report
from armani.loading import load_pipeline
from armani.models.vqgan import VQGAN


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--vqgan", default=None, help="an image codebook folder to use instead of the pipeline's")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--num-prompts", type=int, default=50)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    pipe = load_pipeline(args.checkpoint)
    if args.vqgan:
        pipe.vqgan = VQGAN.from_pretrained(args.vqgan).eval()
    rows = []
    for seed in args.seeds:
        cfg = EvalConfig(checkpoint=args.checkpoint, num_prompts=args.num_prompts, seed=seed, progress=False)
        anchors = anchors_report(cfg, pipe)["anchors"]
        rows.append({"seed": seed, **{name: {k: v for k, v in a.items() if k != "attributes"}
                                      for name, a in anchors.items()}})
        print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in ("codebook", "ceiling", "floor"):
        for key in ("fid", "part_accuracy", "maskclip_score"):
            values = [r[name][key] for r in rows if r.get(name, {}).get(key) is not None]
            if values:
                summary[f"{name}.{key}"] = {"mean": statistics.mean(values),
                                            "std": statistics.stdev(values) if len(values) > 1 else None}
    report = {"checkpoint": args.checkpoint, "vqgan": args.vqgan, "seeds": args.seeds, "rows": rows,
              "summary": summary, "command": "python research/codebook_anchor.py " + " ".join(argv or sys.argv[1:])}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()

"""Word-part alignment report: MaskCLIP pointing game, MaskCLIP retrieval, segmenter IoU.

    python -m armani.evaluation.alignment_report                       # the shipped checkpoint
    python -m armani.evaluation.alignment_report --checkpoint runs/default --out alignment.json \\
        --figure alignment.png

On the procedural validation split (ground-truth part masks, so alignment is measured,
not eyeballed) it reports:

- pointing accuracy: for each caption word naming a part present in the image, does the
  patch most similar to that word lie on the part? Per part and overall, with chance;
- image <-> text retrieval recall@1/5/10 over N pairs (UniFashion's task) with MaskCLIP's
  token-wise similarity, the masks predicted by the segmenter (as at inference) and, for
  reference, the ground-truth masks;
- segmenter IoU per part and the mean.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm


def _load_parts(checkpoint: str | None):
    from armani.pipeline import ArmaniPipeline

    if checkpoint is not None and (Path(checkpoint) / "maskclip" / "final").is_dir():
        pipe = ArmaniPipeline.from_run(checkpoint)
    else:
        pipe = ArmaniPipeline.from_pretrained(checkpoint)
    if pipe.maskclip is None or pipe.segmenter is None:
        raise ValueError("the checkpoint has no MaskCLIP/segmenter to evaluate")
    return pipe


@torch.no_grad()
def alignment_report(maskclip, segmenter, tokenizer, num: int = 1000, seed: int = 1234, batch_size: int = 64) -> dict:
    from armani.alignment import pointing_game
    from armani.data.synthetic import generate_dataset
    from armani.models.segmenter import mean_iou
    from armani.retrieval import recall_at_k

    size = maskclip.config.image_size
    ds = generate_dataset(num, size=size, seed=seed, split="val", progress=False)
    images = torch.from_numpy(np.stack([np.asarray(im) for im in ds["image"]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    masks = torch.from_numpy(np.stack([np.asarray(m) for m in ds["mask"]]).astype(np.int64))
    captions = list(ds["caption"])
    text_ids = tokenizer(captions, warn=False).ids

    t0 = time.perf_counter()
    preds, probs = [], []
    for i in tqdm(range(0, num, batch_size), desc="segmenting", leave=False):
        p = segmenter.probs(images[i : i + batch_size])
        probs.append(p)
        preds.append(p.argmax(1))
    pred, pred_probs = torch.cat(preds), torch.cat(probs)
    iou = mean_iou(pred, masks)
    pointing = pointing_game(maskclip, tokenizer, images, masks, captions, batch_size=batch_size)
    recall_pred = recall_at_k(maskclip, images, pred_probs, text_ids, batch_size=batch_size)
    recall_gt = recall_at_k(maskclip, images, masks, text_ids, batch_size=batch_size)
    return {
        "num_pairs": num,
        "image_size": size,
        "pointing": pointing,
        "retrieval_predicted_masks": recall_pred,
        "retrieval_ground_truth_masks": recall_gt,
        "segmenter_iou": iou,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def format_report(r: dict) -> str:
    lines = [f"Word-part alignment on {r['num_pairs']} procedural validation pairs ({r['image_size']} px)", ""]
    lines.append(f"{'part':12s} {'pointing':>9s} {'chance':>7s} {'words':>6s} {'seg IoU':>8s}")
    per = r["pointing"]["per_part"]
    for part, iou in r["segmenter_iou"].items():
        if part == "mean":
            continue
        p = per.get(part, {"accuracy": float("nan"), "chance": float("nan"), "count": 0})
        lines.append(f"{part:12s} {p['accuracy']:9.3f} {p['chance']:7.3f} {p['count']:6d} {iou:8.3f}")
    pt = r["pointing"]
    lines.append(f"{'overall':12s} {pt['accuracy']:9.3f} {pt['chance']:7.3f} {pt['count']:6d} "
                 f"{r['segmenter_iou']['mean']:8.3f}")
    lines.append("")
    lines.append("retrieval recall@K        predicted masks   ground-truth masks")
    for key in r["retrieval_predicted_masks"]:
        lines.append(f"  {key:22s} {r['retrieval_predicted_masks'][key]:10.3f} {r['retrieval_ground_truth_masks'][key]:16.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m armani.evaluation.alignment_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="saved pipeline or training run (default: shipped)")
    ap.add_argument("--num", type=int, default=1000, help="validation pairs")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=None, help="write the JSON report here")
    ap.add_argument("--figure", default=None, help="also save word-part heatmaps of a few garments (Fig. 6)")
    args = ap.parse_args(argv)
    pipe = _load_parts(args.checkpoint)
    report = alignment_report(pipe.maskclip, pipe.segmenter, pipe.tokenizer, args.num, args.seed)
    print(format_report(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.out}")
    if args.figure:
        for path in save_heatmap_figure(pipe, args.figure, seed=args.seed):
            print(f"wrote {path}")
    return 0


def save_heatmap_figure(pipe, path: str, seed: int = 0, num: int = 3) -> list[Path]:
    """The paper's Fig. 6 on procedural garments: one row of word heatmaps per garment."""
    from armani.alignment import plot_heatmaps, word_part_heatmaps
    from armani.data.synthetic import generate_row

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stem, written = Path(path), []
    for i in range(num):
        row = generate_row(i, size=pipe.image_size, seed=seed, split="val")
        result = word_part_heatmaps(pipe.maskclip, pipe.tokenizer, row["image"], row["caption"],
                                    segmenter=pipe.segmenter)
        fig = plot_heatmaps(result, row["image"])
        target = stem if num == 1 else stem.with_name(f"{stem.stem}-{i}{stem.suffix}")
        fig.savefig(target, dpi=110, bbox_inches="tight")
        written.append(target)
    return written


if __name__ == "__main__":
    raise SystemExit(main())

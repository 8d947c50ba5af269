"""How fast does stage 2 tokenize its training rows, and does the memory layout change the ids?

Stage 2 encodes every training row once before it trains: the image through the cross-modal
codebook (fused with the caption's MaskCLIP words), the sketch and the partial crop through
their codebooks. This times that code path (``tokenize_batch``, what the stage runs) on the
shipped checkpoint's models with their convolution weights in the default (NCHW) layout and in
channels-last, side by side in one run, batch by batch in alternation, and counts the token
ids the two layouts disagree on.

    .venv/bin/python research/bench_tokenizing.py --rows 512 --out outputs/bench_tokenizing.json

Run it on a quiet machine: a second busy process halves the 2 cores and the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from armani.data.synthetic import generate_dataset
from armani.data.transforms import GarmentTorchDataset, collate
from armani.locations import shipped_checkpoint
from armani.models.maskclip import MaskCLIP
from armani.models.vqgan import VQGAN
from armani.text import GarmentTokenizer
from armani.training.stages.transformer import tokenize_batch

LAYOUTS = ("contiguous", "channels_last")


def load_models(checkpoint: Path, layout: str) -> tuple:
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    vq, sk, pa = (VQGAN.from_pretrained(checkpoint / name).eval().to(memory_format=fmt)
                  for name in ("vqgan", "sketch_tokenizer", "partial_tokenizer"))
    helpers = {"maskclip": MaskCLIP.from_pretrained(checkpoint / "maskclip").eval().to(memory_format=fmt)}
    return vq, sk, pa, helpers


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=None, help="a saved pipeline folder (default: the shipped one)")
    ap.add_argument("--rows", type=int, default=512, help="training rows to tokenize per layout")
    ap.add_argument("--batch-size", type=int, default=64, help="the stage's tokenizing batch")
    ap.add_argument("--drawn-sketch-prob", type=float, default=0.3, help="as the shipped run's recipe")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ckpt = Path(args.checkpoint) if args.checkpoint else shipped_checkpoint()
    torch.manual_seed(0)
    rows = generate_dataset(args.rows, size=64, seed=0, split="train", progress=False)
    data = GarmentTorchDataset(rows, image_size=64, tokenizer=GarmentTokenizer.from_pretrained(ckpt / "tokenizer"),
                               seed=0, sketch_thresholds=(100, 200), keep_fraction=0.25)
    data.drawn_sketch_prob = args.drawn_sketch_prob
    batches = [collate([data[i] for i in range(a, min(a + args.batch_size, len(data)))])
               for a in range(0, len(data), args.batch_size)]  # drawn once: the data side is not timed
    models = {layout: load_models(ckpt, layout) for layout in LAYOUTS}
    seconds = dict.fromkeys(LAYOUTS, 0.0)
    ids: dict[str, list[dict]] = {layout: [] for layout in LAYOUTS}
    for layout in LAYOUTS:  # warm-up: the first call of each layout builds oneDNN kernels
        tokenize_batch(batches[0], *models[layout])
    for batch in batches:
        for layout in LAYOUTS:  # alternate, so a change in machine load hits both alike
            t = time.perf_counter()
            ids[layout].append(tokenize_batch(batch, *models[layout]))
            seconds[layout] += time.perf_counter() - t
    report = {"rows": args.rows, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.machine(), "checkpoint": str(ckpt),
              "note": "model time only (tokenize_batch); drawing rows and collating are not timed"}
    for layout in LAYOUTS:
        report[layout] = {"seconds": round(seconds[layout], 2), "rows_per_s": round(args.rows / seconds[layout], 1)}
    report["speedup"] = round(seconds["contiguous"] / seconds["channels_last"], 2)
    report["ids_equal"] = {}
    for key in ("image_ids", "sketch_ids", "partial_ids"):
        a = torch.cat([b[key] for b in ids["contiguous"]])
        b = torch.cat([b[key] for b in ids["channels_last"]])
        report["ids_equal"][key] = {"share": float((a == b).float().mean()), "differing": int((a != b).sum()),
                                    "of": a.numel()}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

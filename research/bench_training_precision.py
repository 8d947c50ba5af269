"""Which precision should training use on this CPU? Times one optimiser step (forward,
backward, AdamW) of each default-config model in float32 and in bf16 autocast, side by
side in one run, and writes JSON.

    .venv/bin/python research/bench_training_precision.py --out outputs/bench_precision.json

Run it on a quiet machine: a second busy process halves the 2 cores and the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from armani.config import default
from armani.models.maskclip import MaskCLIP
from armani.models.segmenter import Segmenter
from armani.models.transformer import CrossModalTransformer
from armani.models.vqgan import VQGAN
from armani.parts import NUM_PARTS


def _steps(model, loss_fn, batch_size, repeats, bf16):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        with ctx:
            loss = loss_fn(model)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up oneDNN kernels
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = default().resolved()
    B, S = args.batch_size, cfg.data.image_size
    g = torch.Generator().manual_seed(0)
    image = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    mask = torch.randint(0, NUM_PARTS, (B, S, S), generator=g)
    probs = F.one_hot(mask, NUM_PARTS).permute(0, 3, 1, 2).float()
    text = torch.randint(4, 300, (B, cfg.data.context_length), generator=g)
    c = cfg.transformer
    tr_inputs = dict(
        text_ids=torch.randint(4, 300, (B, c.text_len), generator=g),
        sketch_ids=torch.randint(0, c.sketch_codebook_size, (B, c.sketch_len), generator=g),
        partial_ids=torch.randint(0, c.partial_codebook_size, (B, c.partial_len), generator=g),
        image_ids=torch.randint(0, c.image_codebook_size, (B, c.image_len), generator=g),
    )
    cases = {
        "segmenter": (lambda: Segmenter(cfg.segmenter), lambda m: m.loss(image, mask).loss),
        "maskclip": (lambda: MaskCLIP(cfg.maskclip), lambda m: m(image, probs, text).loss),
        "vqgan (no GAN)": (lambda: VQGAN(cfg.vqgan), lambda m: (m(image).reconstruction - image).abs().mean()),
        "transformer": (lambda: CrossModalTransformer(cfg.transformer).train(), lambda m: m.loss(**tr_inputs).total),
    }
    rows = []
    print(f"batch {B}, {S}px, threads {torch.get_num_threads()}")
    print(f"{'model':18s} {'fp32 s/step':>12s} {'bf16 s/step':>12s} {'speed-up':>9s}")
    for name, (build, loss_fn) in cases.items():
        torch.manual_seed(0)
        fp32 = _steps(build(), loss_fn, B, args.repeats, bf16=False)
        torch.manual_seed(0)
        bf16 = _steps(build(), loss_fn, B, args.repeats, bf16=True)
        rows.append({"model": name, "fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16})
        print(f"{name:18s} {fp32:12.3f} {bf16:12.3f} {fp32 / bf16:8.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"batch_size": B, "image_size": S, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

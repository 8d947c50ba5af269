"""Stage 2's attention at the shipped shape with the same width split into fewer, wider heads.

Half of a stage-2 training step is ``F.scaled_dot_product_attention`` (research/README,
"Training throughput"). Its FLOPs do not depend on how the width is split into heads, but the
softmax work does (one exp per score, and there is one score matrix per head), so wider heads
do the same matmul work with less of it. This times causal SDPA forward + backward on
``(batch, heads, sequence, width / heads)`` tensors for each head count, in bf16 and float32,
each setting called in turn so a busy spell falls on all alike, and reports the median and the
attention GFLOP/s (QK^T and AV, halved for the causal mask, backward counted as twice the
forward).

    python research/bench_attention.py --heads 8 4 2 --out bench_attention.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def attention_flops(batch: int, seq: int, width: int) -> float:
    """Forward + backward FLOPs of causal attention (any head split): 3 x 2 matmuls x 2*B*L^2*D / 2."""
    return 3 * 2 * 2 * batch * seq * seq * width / 2


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=432, help="32 text + 64 sketch + 64 partial + 256 image tokens (shipped)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, nargs="+", default=[8, 4, 2], help="the shipped transformer has 8")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if any(args.width % h for h in args.heads):
        ap.error("every head count must divide --width")

    gen = torch.Generator().manual_seed(0)
    settings = [(h, d) for h in args.heads for d in args.dtypes]
    tensors = {}
    for h, d in settings:
        shape = (args.batch, h, args.seq, args.width // h)
        tensors[h, d] = [torch.randn(shape, generator=gen).to(getattr(torch, d)).requires_grad_() for _ in range(3)]

    def step(h: int, d: str) -> float:
        q, k, v = tensors[h, d]
        start = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        return time.perf_counter() - start

    for s in settings:  # warm-up
        step(*s)
    seconds = {s: [] for s in settings}
    for _ in range(args.repeats):
        for s in settings:
            seconds[s].append(step(*s))
    flops = attention_flops(args.batch, args.seq, args.width)
    medians = {s: statistics.median(t) for s, t in seconds.items()}
    rows = [{"heads": h, "head_dim": args.width // h, "dtype": d, "median_ms": 1e3 * m, "gflops_per_s": flops / m / 1e9}
            for (h, d), m in medians.items()]
    report = {"what": "causal SDPA forward + backward, one layer", "batch": args.batch, "seq": args.seq,
              "width": args.width, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    for r in rows:
        print(f"{r['heads']} heads x {r['head_dim']:>3} {r['dtype']:>8}: {r['median_ms']:7.1f} ms  "
              f"{r['gflops_per_s']:6.1f} GFLOP/s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()

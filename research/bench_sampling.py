"""Sampling speed: our AR sampler (fp32, fp32 packed, bf16) vs Hugging Face GPT-2 generate(), and mask-predict.

Same GPT size for all (default 4 layers, 256 wide, 8 heads), random weights, a ~100-token
condition prefix and 256 image tokens, batch sizes 1 and 8. The peer is
``GPT2LMHeadModel.generate(do_sample=True, top_k=..., min_new_tokens=max_new_tokens=256)``
with its KV cache, on a GPT2Config of the same width/depth whose vocabulary is the image
codebook (the prefix ids are drawn from it).

FLOPs per forward token: 2 * (non-embedding weights) + 4 * layers * width * context
(QK^T and AV); the prefix is counted once, every generated token with its context.

    python research/bench_sampling.py --quick --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from armani.models.transformer import CrossModalTransformer, TransformerConfig
from armani.sampling import sample_autoregressive, sample_mask_predict


def flops_ar(weights: int, layers: int, width: int, prefix: int, new: int) -> float:
    """Forward FLOPs for a prefix pass + ``new`` cached steps (per sequence)."""
    total = 2 * weights * prefix + 4 * layers * width * prefix * (prefix + 1) / 2
    for t in range(new):
        total += 2 * weights + 4 * layers * width * (prefix + t + 1)
    return total


def matmul_weights(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n and "wte" not in n
               and "wpe" not in n)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN kernels)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--codebook", type=int, default=1024)
    parser.add_argument("--image-len", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--nar-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="one repeat; for a busy machine")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)

    # text 32 + sketch 6x6 + partial 5x5 + 3 SEP = 96-token prefix
    cfg = TransformerConfig(text_vocab_size=1000, text_len=32, sketch_codebook_size=256, sketch_len=36,
                            partial_codebook_size=256, partial_len=25, image_codebook_size=args.codebook,
                            image_len=args.image_len, width=args.width, layers=args.layers, heads=args.heads)
    ours = CrossModalTransformer(cfg).eval()
    nar = CrossModalTransformer(TransformerConfig(**{**cfg.to_dict(), "causal": False})).eval()
    P, N = cfg.prefix_len, cfg.image_len

    from transformers import GPT2Config, GPT2LMHeadModel

    peer = GPT2LMHeadModel(GPT2Config(vocab_size=args.codebook, n_positions=P + N, n_embd=args.width,
                                      n_layer=args.layers, n_head=args.heads)).eval()

    w_ours, w_peer = matmul_weights(ours), matmul_weights(peer)
    rows = []
    for B in args.batch:
        g = torch.Generator().manual_seed(0)
        text = torch.randint(0, cfg.text_vocab_size, (cfg.text_len,), generator=g)
        sketch = torch.randint(0, 256, (cfg.sketch_len,), generator=g)
        partial = torch.randint(0, 256, (cfg.partial_len,), generator=g)
        prompt = torch.randint(0, args.codebook, (B, P), generator=g)

        def run_peer():
            with torch.inference_mode():
                out = peer.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=args.top_k,
                                    min_new_tokens=N, max_new_tokens=N, pad_token_id=0)
            assert out.shape == (B, P + N)

        cases = [
            ("hf-gpt2-generate", run_peer, flops_ar(w_peer, args.layers, args.width, P, N - 1)),
            *[(f"armani-ar-{name}",
               (lambda dt=dt, pk=pk: sample_autoregressive(ours, text, sketch, partial, num_images=B, generator=0,
                                                           top_k=args.top_k, dtype=dt, pack_float32=pk)),
               flops_ar(w_ours, args.layers, args.width, P, N - 1))
              for name, dt, pk in (("float32", "float32", False), ("float32-packed", "float32", True),
                                   ("bfloat16", "bfloat16", False))],
            *[(f"armani-mask-predict-{dt}",
               (lambda dt=dt: sample_mask_predict(nar, text, sketch, partial, num_images=B, generator=0,
                                                  steps=args.nar_steps, top_k=args.top_k, dtype=dt)),
               args.nar_steps * (2 * w_ours * (P + N) + 4 * args.layers * args.width * (P + N) ** 2))
              for dt in ("float32", "bfloat16")],
        ]
        peer_tps = None
        for name, fn, flops in cases:
            seconds = timed(fn, repeats)
            tps = B * N / seconds
            peer_tps = tps if name.startswith("hf") else peer_tps
            rows.append({"sampler": name, "batch": B, "seconds": seconds, "seconds_per_image": seconds / B,
                         "tokens_per_s": tps, "gflops_per_s": B * flops / seconds / 1e9,
                         "speedup_vs_peer": tps / peer_tps})
            r = rows[-1]
            print(f"{name:28s} B={B:<2d} {r['seconds_per_image']:8.3f} s/img {tps:9.0f} tok/s "
                  f"{r['gflops_per_s']:6.1f} GFLOP/s  x{r['speedup_vs_peer']:.2f} vs peer", flush=True)

    result = {
        "config": {"layers": args.layers, "width": args.width, "heads": args.heads, "codebook": args.codebook,
                   "prefix_len": P, "image_len": N, "top_k": args.top_k, "nar_steps": args.nar_steps,
                   "repeats": repeats, "params_ours": ours.num_parameters, "params_peer": peer.num_parameters()},
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                    "cores": os.cpu_count()},
        "results": rows,
    }
    print(f"\n{'sampler':28s} {'B':>2s} {'s/img':>8s} {'tok/s':>9s} {'GFLOP/s':>8s} {'vs peer':>8s}")
    for r in rows:
        print(f"{r['sampler']:28s} {r['batch']:2d} {r['seconds_per_image']:8.3f} {r['tokens_per_s']:9.0f} "
              f"{r['gflops_per_s']:8.1f} {r['speedup_vs_peer']:8.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

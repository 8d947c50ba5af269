"""Does ``torch.compile`` speed up the stage-2 transformer's training step on this CPU?

    python research/bench_transformer_compile.py            # eager, then compiled blocks

The shipped transformer's config (``checkpoints/armani/transformer/config.json``), fresh
weights, one random batch of 16 (random garment-token mask, as the background weight needs),
bf16 autocast, forward + backward + AdamW step, median of ``--steps`` steps after
``--warmup`` (the compiled run compiles in its warm-up). Compiling wraps each transformer
block; the loss, embeddings and head stay eager. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_config(path: Path):
    """A saved transformer's config (``path``: its ``config.json``), read as ``from_pretrained`` reads it."""
    from armani.models.checkpoint import build_config, read_config
    from armani.models.transformer import CrossModalTransformer

    data = read_config(path.parent, CrossModalTransformer.__name__)
    data.pop("model_type", None)
    return build_config(CrossModalTransformer.config_class, data, path.parent, CrossModalTransformer.config_from_dict)


def time_steps(config, compiled: bool, batch_size: int, steps: int, warmup: int) -> dict:
    from armani.models.transformer import CrossModalTransformer

    torch.manual_seed(0)
    model = CrossModalTransformer(config).train()
    if compiled:
        for i, block in enumerate(model.blocks):
            model.blocks[i] = torch.compile(block)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = config
    batch = dict(text_ids=torch.randint(1, c.text_vocab_size, (batch_size, c.text_len)),
                 sketch_ids=torch.randint(0, c.sketch_codebook_size, (batch_size, c.sketch_len)),
                 partial_ids=torch.randint(0, c.partial_codebook_size, (batch_size, c.partial_len)),
                 image_ids=torch.randint(0, c.image_codebook_size, (batch_size, c.image_len)),
                 garment_tokens=torch.rand(batch_size, c.image_len) < 0.4)
    gen = torch.Generator().manual_seed(0)
    times, start = [], time.perf_counter()
    for step in range(warmup + steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.loss(**batch, generator=gen).total
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == warmup - 1:
            warm = time.perf_counter() - start
        if step >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    return {"compiled": compiled, "median_s_per_step": times[len(times) // 2], "warmup_s": warm,
            "final_loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "checkpoints" / "armani" / "transformer" / "config.json"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    config = load_config(Path(args.config))
    rows = [time_steps(config, compiled, args.batch_size, args.steps, args.warmup) for compiled in (False, True)]
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()

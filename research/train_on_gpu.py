"""The route research/README names for the FID gap, as one command for one CUDA GPU and a fixed slot.

    # on a GPU: 3 + 3 minutes of training; drawing rows, tokenizing and the transplant come on top
    python research/train_on_gpu.py --out runs/gpu1 --workers 14
    # the same steps at tiny size on a CPU (runs/tiny: train.py --config tiny --stage all)
    python research/train_on_gpu.py --out runs/t --config tiny --base runs/tiny --codebook-minutes 0.1 \
        --transformer-minutes 0.1 --max-steps 60 --batch 4 --rows 64 --stage2-rows 64 --gan-start 10

What it trains, in order, each stage inside its own wall-clock budget (``train.<stage>.max_minutes``:
the trainer times its first steps and fits the step count and the learning-rate schedule to the
minutes given, so the same command fills the slot on any GPU):

1. **A wider image codebook** (run ae2's design: 64 base channels, two residual blocks per level,
   one refine block at full resolution) with the discriminator's weight lowered from 0.8 to 0.3,
   since ae3 and ae4 showed the full-weight GAN destabilising a longer run. It trains on
   ``--rows`` procedural rows at batch 64.
2. **The codebook transplant** of the base transformer onto the new codes
   (``armani.training.codebook_transplant``): a start 1.4 nats ahead of fresh tables.
3. **Stage 2 on the new tokens** from that start: the shipped recipe's switches (shared 2D
   positions, background tokens weighed 0.5, drawn-style sketches, semantic loss off), batch 64,
   on ``--stage2-rows`` rows, tokenized with the sketches and crops drawn in ``--workers``
   processes.
4. **A pipeline folder** (``armani.assemble``, weights stored in bf16) at ``OUT/pipeline``, ready
   for ``python -m armani.evaluate --checkpoint OUT/pipeline`` on any machine.

Segmenter, MaskCLIP and the sketch / partial codebooks are the base checkpoint's, copied by
``--reuse`` (the stage-1 overrides below make their configs match the shipped ones). Every step
is resumable: run the same command again and finished stages are skipped, unfinished ones
continue from their last checkpoint. Each step's wall time goes to ``OUT/gpu_timings.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from armani.config import SKETCH_EDGES_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]

# The shipped stage-1 settings (model card), so --reuse finds the base's segmenter, MaskCLIP and
# condition codebooks identical.
STAGE1 = ["maskclip.text_attention_radius=0", *SKETCH_EDGES_OVERRIDES]


def codebook_overrides(args) -> list[str]:
    return [
        "vqgan.base_channels=64", "vqgan.num_res_blocks=2", "vqgan.decoder_refine_blocks=1",
        f"vqgan.disc_weight={args.disc_weight}", f"vqgan.gan_start_step={args.gan_start}",
        f"train.vqgan.batch_size={args.batch}", "train.vqgan.lr=4e-4", "train.vqgan.warmup_steps=200",
        f"train.vqgan.max_steps={args.max_steps}", f"train.vqgan.max_minutes={args.codebook_minutes}",
        f"train.vqgan.num_train={args.rows}", f"train.vqgan.num_workers={args.workers}",
        "train.vqgan.checkpoint_every=1000", "train.vqgan.eval_every=0", "train.vqgan.log_every=50",
    ]


def transformer_overrides(args, init: Path) -> list[str]:
    heads = [f"transformer.heads={args.heads}"] if args.heads else []
    return heads + [
        f"train.transformer.init_from={init}", "train.transformer.init_strict=false",
        "train.transformer.lr=6e-4", "train.transformer.warmup_steps=200",
        f"train.transformer.batch_size={args.batch}", f"train.transformer.max_steps={args.max_steps}",
        f"train.transformer.max_minutes={args.transformer_minutes}", f"train.transformer.num_train={args.stage2_rows}",
        f"train.transformer.num_workers={args.workers}", "train.transformer.checkpoint_every=1000",
        "train.transformer.eval_every=0", "train.transformer.log_every=50",
        "transformer.semantic_start_step=1000000000", "transformer.grid_positions=true",
        "transformer.background_weight=0.5", "transformer.condition_views=1", "transformer.drawn_sketch_prob=0.3",
    ]


def run(cmd: list[str], timings: list, name: str, out: Path) -> None:
    """Run one step; append its wall time to ``OUT/gpu_timings.json`` (a rerun appends again)."""
    print(f"\n[train_on_gpu] {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    timings.append({"step": name, "seconds": round(time.perf_counter() - start, 1),
                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    (out / "gpu_timings.json").write_text(json.dumps(timings, indent=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directory (resumable)")
    ap.add_argument("--config", default="default")
    ap.add_argument("--base", default="checkpoints/armani", help="pipeline or run whose stage-1 parts are reused "
                    "and whose transformer starts stage 2")
    ap.add_argument("--codebook-minutes", type=float, default=3.0)
    ap.add_argument("--transformer-minutes", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=200_000, help="upper bound per stage; the minutes decide")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rows", type=int, default=100_000, help="procedural rows of the codebook stage")
    ap.add_argument("--stage2-rows", type=int, default=100_000, help="procedural rows stage 2 tokenizes")
    ap.add_argument("--gan-start", type=int, default=1500, help="codebook step the discriminator joins at")
    ap.add_argument("--disc-weight", type=float, default=0.3)
    ap.add_argument("--heads", type=int, default=0, help="stage-2 attention heads (0: the base's)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                    help="DataLoader processes for the codebook's images and stage 2's tokenizing")
    ap.add_argument("--transplant-rows", type=int, default=2000)
    ap.add_argument("overrides", nargs="*", help="more section.key=value overrides for every train.py call")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = Path(args.base).resolve()
    py = sys.executable
    train = [py, "src/armani/train.py", "--config", args.config, "--output", str(out), "--reuse", str(base),
             "--resume", *STAGE1]
    codebook = codebook_overrides(args)
    timings_file = out / "gpu_timings.json"  # kept across reruns of a resumed run
    timings: list[dict] = json.loads(timings_file.read_text()) if timings_file.is_file() else []
    # The other stage-1 parts are listed so that a base they do not match (another config) gets
    # them trained here; with the shipped base they are copied and skipped.
    run([*train, "--stage", "segmenter,maskclip,sketch_tokenizer,partial_tokenizer,vqgan", *codebook,
         *args.overrides], timings, "codebook", out)
    init = out / "init_transplant"
    if not (init / "model.safetensors").is_file():
        run([py, "-m", "armani.training.codebook_transplant", "--checkpoint", str(base),
             "--vqgan", str(out / "vqgan" / "final"), "--rows", str(args.transplant_rows), "--out", str(init)],
            timings, "transplant", out)
    run([*train, "--stage", "transformer", *codebook, *transformer_overrides(args, init), *args.overrides],
        timings, "stage2", out)
    run([py, "-m", "armani.assemble", "--run", str(out), "--out", str(out / "pipeline"), "--name", out.name,
         "--description", f"ARMANI trained on one GPU ({out.name})", "--storage-dtype", "bfloat16"],
        timings, "assemble", out)
    print(f"\n[train_on_gpu] done: {out / 'pipeline'}; " +
          ", ".join(f"{t['step']} {t['seconds']} s" for t in timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of every stage, side by side: samples/s and GFLOP/s as a share of
this CPU's bf16 (and fp32) matmul ceiling.

Each stage is built the way ``src/armani/train.py`` builds it: the stage class from the
engine's registry makes its models, frozen helpers and optimisers, an Accelerate
``Accelerator`` set up like :class:`armani.training.engine.Trainer`'s prepares them, and each
step is the stage's own ``training_step`` (forward, backward, clipping, optimiser and
scheduler step) under the same ``accumulate`` + ``autocast`` context as the engine's loop,
i.e. bf16 autocast on a CPU where ``train.mixed_precision=auto`` resolves to bf16.

What is not the real run's: the weights of the frozen stage-1 models that later stages load
(segmenter, MaskCLIP, the three codebooks) are freshly initialised stand-ins written to a
temporary run directory (same configs, so the same compute); the data is a few procedural
garments drawn into a temporary cache (one batch of each stage's batch size); the run's
tokenizer is built from the captions of the first 1,000 training rows (or all of them when
``data.num_train`` is smaller); the compact vocabulary stops growing after ~500. One
batch is reused for every step, so the step times exclude data loading; the time to load one
batch with the stage's own dataset and collate function (what the engine's ``num_workers=0``
loader does) is reported beside them (``data_s``).

Stages with a phase switch inside their budget get a second row at that phase: ``vqgan+gan``
(the discriminator joins at ``vqgan.gan_start_step``) and ``transformer+semantic`` (the
semantic loss joins at ``transformer.semantic_start_step``).

FLOPs of one step are counted by ``torch.utils.flop_counter.FlopCounterMode``: matrix
multiplies, convolutions and attention (forward and backward, the frozen helpers' passes
inside the step included) only; every other op (elementwise, normalisation, softmax, the
optimiser, ...) is not counted, so the GFLOP/s and the share of the matmul ceiling are lower
bounds of the work done. A "step" is one micro-batch (``grad_accum`` is 1 in the presets).

    .venv/bin/python research/bench_training.py                      # default config, every stage
    .venv/bin/python research/bench_training.py --stages transformer,transformer+semantic --steps 10
    .venv/bin/python research/bench_training.py --config tiny --steps 1 --warmup 1 --out /tmp/b.json
    .venv/bin/python research/bench_training.py train.transformer.batch_size=32   # overrides as in train.py

Run it on a quiet machine: a second busy process halves the 2 cores and the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXTRA_STAGES = ("attribute_classifier", "diffusion")  # not in --stage all, but trained on demand
TOKENIZER_CAPTIONS = 1000  # the compact vocabulary stops growing after ~500 procedural captions
FLOP_NOTE = ("FLOPs from torch.utils.flop_counter.FlopCounterMode: matmul, convolution and attention "
             "(forward + backward) only; elementwise ops, norms, softmax and the optimiser are not counted")


@dataclass
class Case:
    """One row of the benchmark: a stage trained at a given global step (its phase)."""

    name: str  # e.g. "vqgan+gan"
    stage: str  # the registered stage
    step: int  # the global step passed to training_step (selects the phase)
    phase: str  # what is active at that step, in words


# -- the CPU's ceiling ----------------------------------------------------------------------
def device() -> torch.device:
    """Where the engine's Accelerator puts the models: CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_gflops(size: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of the best of ``repeats`` (size x size) @ (size x size) matmuls in ``dtype``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device(), dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device(), dtype=dtype)
    out = torch.empty(size, size, dtype=dtype, device=device())
    torch.mm(a, b, out=out)  # warm-up: oneDNN picks and caches its kernel
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def matmul_ceiling(size: int, repeats: int) -> dict:
    out = {"size": size, "repeats": repeats,
           "bf16_gflops": matmul_gflops(size, torch.bfloat16, repeats),
           "fp32_gflops": matmul_gflops(size, torch.float32, repeats)}
    # The fastest matmul path of this CPU: bf16 where it is native (AVX-512 BF16, AMX), fp32
    # where bf16 is emulated (an AVX2 EPYC: 0.3 GFLOP/s in bf16 against 180 in fp32, measured),
    # and there the engine's mixed_precision=auto trains in fp32.
    out["best"] = "bf16" if out["bf16_gflops"] >= out["fp32_gflops"] else "fp32"
    out["best_gflops"] = max(out["bf16_gflops"], out["fp32_gflops"])
    return out


# -- which rows -----------------------------------------------------------------------------
def stage_names() -> tuple[str, ...]:
    from armani.training.stages import ORDER

    return tuple(ORDER) + EXTRA_STAGES


def all_cases(cfg) -> list[Case]:
    """Every stage at step 0, plus a row per phase switch that falls inside the stage's budget."""
    from armani.training import STAGES

    resolved = cfg.resolved()
    cases = []
    for name in stage_names():
        optim = STAGES[name](cfg, Path(tempfile.gettempdir())).optim  # optim reads the config only
        if name in ("vqgan", "sketch_tokenizer", "partial_tokenizer"):
            start = getattr(resolved, name).gan_start_step
            cases.append(Case(name, name, 0, "no GAN" if start > 0 else "GAN"))
            if 0 < start < optim.max_steps:
                cases.append(Case(f"{name}+gan", name, start, "GAN"))
        elif name == "transformer":
            tc = resolved.transformer
            start = tc.semantic_start_step if tc.semantic_loss else math.inf
            cases.append(Case(name, name, 0, "CE + semantic" if start <= 0 else "CE"))
            if 0 < start < optim.max_steps:
                cases.append(Case(f"{name}+semantic", name, int(start), "CE + semantic"))
        else:
            cases.append(Case(name, name, 0, "-"))
    return cases


def select_cases(cfg, spec: str) -> list[Case]:
    cases = all_cases(cfg)
    if spec == "all":
        return cases
    by_name = {c.name: c for c in cases}
    chosen = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name in by_name:
            chosen.append(by_name[name])
            continue
        base, _, phase = name.partition("+")
        if base in stage_names() and phase in ("gan", "semantic"):
            raise SystemExit(f"--stages {name}: that phase does not start within the stage's max_steps in "
                             f"this config; rows available: {', '.join(by_name)}")
        raise SystemExit(f"--stages: unknown row {name!r}; choose from {', '.join(by_name)} or 'all'")
    return chosen


# -- a temporary run directory with what the stages load ------------------------------------
def bench_config(cfg, rows: int, cache_dir: Path):
    """The run config with a procedural train split of ``rows`` garments drawn into ``cache_dir``."""
    if cfg.data.source != "procedural":
        raise SystemExit("bench_training draws procedural garments; the step's compute depends on the shapes "
                         "only, so leave data.source at 'procedural'")
    data = dataclasses.replace(cfg.data, num_train=rows, num_val=max(1, min(cfg.data.num_val, 8)),
                               cache_dir=str(cache_dir))
    return dataclasses.replace(cfg, data=data)


def write_tokenizer(cfg, run_dir: Path, num_captions: int):
    """The run's tokenizer (``RUN/tokenizer``), built the way the first stage builds it, from
    the captions of the first ``num_captions`` training rows (drawn without their images)."""
    import datasets

    from armani.data.captions import write_caption
    from armani.data.synthetic import DEFAULT_HELDOUT, row_rng, sample_attributes
    from armani.training.data import run_tokenizer

    heldout = DEFAULT_HELDOUT if cfg.data.heldout else ()
    captions = []
    for i in range(num_captions):
        rng = row_rng(cfg.data.seed, "train", i)
        captions.append(write_caption(sample_attributes(rng, "train", heldout), rng))
    return run_tokenizer(cfg.data, run_dir, datasets.Dataset.from_dict({"caption": captions}))


def write_stand_ins(cfg, run_dir: Path, tokenizer) -> None:
    """Freshly initialised stage-1 artefacts (``RUN/<stage>/final``) for the stages that load
    them: the same configs as the real ones, so the same compute, but random weights."""
    from armani.models.maskclip import MaskCLIP
    from armani.models.segmenter import Segmenter
    from armani.models.vqgan import VQGAN

    rc = cfg.resolved(tokenizer)
    torch.manual_seed(0)
    models = {"segmenter": Segmenter(rc.segmenter), "maskclip": MaskCLIP(rc.maskclip), "vqgan": VQGAN(rc.vqgan),
              "sketch_tokenizer": VQGAN(rc.sketch_tokenizer), "partial_tokenizer": VQGAN(rc.partial_tokenizer)}
    for name, model in models.items():
        final = run_dir / name / "final"
        model.save_pretrained(final)
        (final / "DONE").write_text("stand-in for bench_training\n")


# -- one stage ------------------------------------------------------------------------------
def prepare_stage(stage, seed: int, mixed_precision: str):
    """A Trainer's accelerator and the stage's prepared models, as ``Trainer.setup`` makes them
    (without the data loaders)."""
    from armani.training.engine import Trainer, warmup_cosine

    trainer = Trainer(stage, seed=seed, mixed_precision=mixed_precision, tracker="none")
    acc, optim = trainer.accelerator, stage.optim
    models = stage.build_models()
    frozen = stage.build_frozen()
    optimizers = stage.build_optimizers(models)
    schedulers = {k: warmup_cosine(o, optim.warmup_steps, optim.max_steps) for k, o in optimizers.items()}
    prepared = acc.prepare(*models.values(), *optimizers.values(), *schedulers.values())
    n, k = len(models), len(optimizers)
    stage.models = dict(zip(models, prepared[:n]))
    stage.optimizers = dict(zip(optimizers, prepared[n : n + k]))
    stage.schedulers = dict(zip(schedulers, prepared[n + k : n + 2 * k]))
    stage.frozen = {name: m.to(acc.device).eval().requires_grad_(False) for name, m in frozen.items()}
    stage.on_prepared()
    return acc


def load_batch(stage, batch_size: int, device) -> tuple[dict, float]:
    """One batch from the stage's own training dataset and collate function, and the time a
    second load of it takes (the first one pays for one-off decoding caches)."""
    from accelerate.utils import send_to_device
    from torch.utils.data import default_collate

    dataset = stage.train_dataset()
    if len(dataset) < batch_size:
        raise RuntimeError(f"{stage.name}: the drawn training set has {len(dataset)} rows, fewer than a batch")
    collate = stage.collate_fn() or default_collate
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    collate([dataset[i] for i in range(batch_size)])
    t0 = time.perf_counter()
    batch = collate([dataset[i] for i in range(batch_size)])
    data_s = time.perf_counter() - t0
    return send_to_device(batch, device), data_s


def train_step(stage, acc, batch: dict, step: int):
    """One engine step (Trainer.train's loop body): models in train mode, the whole step under
    ``accumulate`` and ``autocast``; the stage's ``optimize`` does backward + optimiser step."""
    for model in stage.models.values():
        model.train()
    with acc.accumulate(*stage.models.values()), acc.autocast():
        return stage.training_step(batch, step)


def bench_case(case: Case, cfg, run_dir: Path, steps: int, warmup: int, mixed_precision: str) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from armani.training import STAGES
    from armani.training.engine import batch_size

    stage = STAGES[case.stage](cfg, run_dir)
    acc = prepare_stage(stage, cfg.train.seed, mixed_precision)
    optim = stage.optim
    batch, data_s = load_batch(stage, optim.batch_size, acc.device)

    step = case.step
    for _ in range(warmup):
        train_step(stage, acc, batch, step)
        step += 1
    sync()
    times, out = [], None
    for _ in range(steps):
        t0 = time.perf_counter()
        out = train_step(stage, acc, batch, step)  # its loss.item() waits for the step to finish
        sync()
        times.append(time.perf_counter() - t0)
        step += 1
    # Counted on one more step, untimed (the counter's dispatch slows the step down).
    # FlopCounterMode counts matmul / convolution / attention FLOPs only (see FLOP_NOTE).
    with FlopCounterMode(display=False) as counter:
        train_step(stage, acc, batch, step)
    flops = counter.get_total_flops()

    samples = (out.num_samples if out is not None else 0) or batch_size(batch)
    s_per_step = statistics.median(times)
    gflop = flops / 1e9
    gflops = gflop / s_per_step
    trainable = sum(p.numel() for m in stage.models.values() for p in m.parameters() if p.requires_grad)
    row = {
        "name": case.name, "stage": case.stage, "phase": case.phase, "step": case.step,
        "batch_size": samples, "grad_accum": optim.grad_accum, "precision": acc.mixed_precision,
        "trainable_params": trainable,
        "s_per_step": s_per_step, "s_per_step_min": min(times), "step_times_s": times,
        "samples_per_s": samples / s_per_step,
        "gflop_per_step": gflop, "gflop_per_sample": gflop / samples, "gflops": gflops,
        "data_s": data_s, "samples_per_s_with_data": samples / (s_per_step + data_s),
        "loss": None if out is None else out.loss,
    }
    del stage, acc, batch
    gc.collect()
    return row


# -- report ---------------------------------------------------------------------------------
def print_table(result: dict) -> None:
    m = result["matmul"]
    print(f"\nmatmul ceiling ({m['size']}^3, {result['threads']} threads): bf16 {m['bf16_gflops']:.1f} GFLOP/s, "
          f"fp32 {m['fp32_gflops']:.1f} GFLOP/s; the fastest path is {m['best']}"
          + ("" if m["best"] == "bf16" else " (bf16 is emulated on this CPU, so '% best' is the share of fp32)"))
    head = (f"{'stage':24s} {'phase':14s} {'prec':>5s} {'batch':>5s} {'s/step':>8s} {'samples/s':>10s} "
            f"{'GFLOP/step':>10s} {'GFLOP/s':>8s} {'% bf16':>7s} {'% fp32':>7s} {'% best':>7s} {'data s':>7s}")
    print(head)
    print("-" * len(head))
    for r in result["stages"]:
        print(f"{r['name']:24s} {r['phase']:14s} {r['precision']:>5s} {r['batch_size']:5d} {r['s_per_step']:8.3f} "
              f"{r['samples_per_s']:10.1f} {r['gflop_per_step']:10.2f} {r['gflops']:8.1f} "
              f"{100 * r['share_of_bf16_peak']:6.1f}% {100 * r['share_of_fp32_peak']:6.1f}% "
              f"{100 * r['share_of_best_peak']:6.1f}% {r['data_s']:7.3f}")
    print(f"({result['flop_note']})")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="preset (tiny, default, paper) or a YAML file")
    parser.add_argument("--variant", default="armani", help="baseline/ablation switches (armani.config.VARIANTS)")
    parser.add_argument("--stages", default="all",
                        help="comma-separated rows (stage names, vqgan+gan, transformer+semantic) or 'all'")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (oneDNN kernels, k-means init)")
    parser.add_argument("--mixed-precision", default=None, choices=("auto", "no", "bf16", "fp16"),
                        help="default: the config's train.mixed_precision, resolved as the engine does")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, as train.py)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul of the ceiling")
    parser.add_argument("--matmul-repeats", type=int, default=5)
    parser.add_argument("--out", default=None,
                        help="JSON path (default research/results/bench_training_<date>.json)")
    parser.add_argument("overrides", nargs="*", help="section.key=value config overrides, as in train.py")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")

    from armani.config import load_config
    from armani.training.engine import resolve_mixed_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides, variant=args.variant)
    setting = args.mixed_precision or cfg.train.mixed_precision
    resolved_mp = resolve_mixed_precision(setting)
    cases = select_cases(cfg, args.stages)
    if not cases:
        raise SystemExit("--stages selected nothing")

    from armani.training import STAGES

    load_before = os.getloadavg()
    print(f"config {cfg.name}, mixed precision {setting} -> {resolved_mp}, threads {torch.get_num_threads()}, "
          f"rows: {', '.join(c.name for c in cases)}")
    ceiling = matmul_ceiling(args.matmul_size, args.matmul_repeats)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_training-") as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        batch_rows = max(STAGES[c.stage](cfg, run_dir).optim.batch_size for c in cases)
        bcfg = bench_config(cfg, batch_rows, tmp / "data")
        tokenizer = write_tokenizer(bcfg, run_dir, min(TOKENIZER_CAPTIONS, cfg.data.num_train))
        if any(c.stage in ("maskclip", "vqgan", "transformer", "diffusion") for c in cases):
            write_stand_ins(bcfg, run_dir, tokenizer)
        for case in cases:
            print(f"[{case.name}] ...", flush=True)
            torch.manual_seed(0)
            rows.append(bench_case(case, bcfg, run_dir, args.steps, args.warmup, setting))
    for row in rows:
        row["share_of_bf16_peak"] = row["gflops"] / ceiling["bf16_gflops"]
        row["share_of_fp32_peak"] = row["gflops"] / ceiling["fp32_gflops"]
        row["share_of_best_peak"] = row["gflops"] / ceiling["best_gflops"]

    result = {
        "date": datetime.date.today().isoformat(),
        "config": cfg.name, "variant": args.variant, "overrides": args.overrides,
        "mixed_precision": {"setting": setting, "resolved": resolved_mp},
        "threads": torch.get_num_threads(), "cpu": cpu_name(), "device": str(device()), "torch": torch.__version__,
        # A quiet machine has a 1-minute load average near 0 before the run and near the thread count after.
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
        "steps": args.steps, "warmup": args.warmup,
        "matmul": ceiling, "flop_note": FLOP_NOTE,
        "stages": rows,
    }
    print_table(result)
    out = Path(args.out) if args.out else ROOT / "research" / "results" / f"bench_training_{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

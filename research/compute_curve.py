"""Compute -> quality: how prompt-following grows with the stage-2 transformer's training.

    python research/compute_curve.py --run runs/more --base checkpoints/armani \\
        --out research/results/compute_curve.json --figure research/results/compute_curve.png

Every point is one transformer: the base pipeline's own (step 0) and each training
checkpoint of ``RUN/transformer`` (``checkpoints/step_*`` and any folder given with
``--point NAME=DIR`` that holds an engine checkpoint: ``model.safetensors`` +
``trainer_state.json``). Each is dropped into a fresh copy of the base pipeline (same
codebook, tokenizers, segmenter and MaskCLIP), and :mod:`armani.evaluation.generation`
(``python -m armani.evaluate``) scores it on the same prompts: part accuracy, category
accuracy, FID on the classifier's features, with the report's own floor (a random real
garment) and ceiling (a real render of the prompt) drawn as horizontal lines. The x axis is
training steps of this run, and wall-clock hours on the 2-core CPU read from the
checkpoints' ``elapsed_s``. Reports are cached beside ``--out`` (``--resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

METRICS = (("part_accuracy", "part accuracy", "part_accuracy"),
           ("attributes.category.accuracy", "category", "attributes.category"),
           ("fid", "FID (classifier features)", "fid"))


def _dig(d: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def find_points(run: Path | None, extra: list[str]) -> list[dict]:
    """``[{"name", "dir", "step", "elapsed_s"}]`` of every engine checkpoint, by step."""
    dirs = []
    if run is not None:
        ckpts = run / "transformer" / "checkpoints"
        dirs += sorted(ckpts.glob("step_*")) if ckpts.is_dir() else []
    for spec in extra:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"--point takes NAME=DIR, got {spec!r}")
        dirs.append(Path(path))
    points = []
    for d in dirs:
        state_file = d / "trainer_state.json"
        if not (state_file.is_file() and (d / "model.safetensors").is_file()):
            raise FileNotFoundError(f"{d} is not a finished engine checkpoint (model.safetensors + trainer_state.json)")
        state = json.loads(state_file.read_text())
        points.append({"name": f"step {state['global_step']}", "dir": str(d), "step": int(state["global_step"]),
                       "elapsed_s": float(state.get("elapsed_s", 0.0))})
    unique = {p["step"]: p for p in points}
    return [unique[s] for s in sorted(unique)]


def pipeline_with(base: str | None, weights: Path | None):
    """A fresh base pipeline whose transformer carries ``weights`` (an engine checkpoint's
    ``model.safetensors``, keys prefixed ``model.``); ``None`` keeps the base transformer."""
    from safetensors.torch import load_file

    from armani.loading import load_pipeline

    pipe = load_pipeline(base)
    if weights is not None:
        state = {k.removeprefix("model."): v for k, v in load_file(str(weights)).items()}
        if "grid_row_emb.weight" in state and not pipe.transformer.config.grid_positions:
            # a run that switched on the shared 2D position code on top of the base's transformer
            from armani.models.transformer import CrossModalTransformer

            config = dataclasses.replace(pipe.transformer.config, grid_positions=True)
            pipe.transformer = CrossModalTransformer(config).to(next(pipe.transformer.parameters()).dtype)
        pipe.transformer.load_state_dict(state, strict=True)
        pipe.transformer.eval()
    return pipe


def evaluate_points(points: list[dict], base: str | None, seeds: list[int], num_prompts: int, samples: int,
                    split: str, cache: Path, resume: bool) -> list[dict]:
    from armani.evaluation.generation import EvalConfig, evaluate

    rows = []
    for point in [{"name": "base", "dir": None, "step": 0, "elapsed_s": 0.0}, *points]:
        reports = []
        for seed in seeds:
            file = cache / f"step{point['step']:06d}_{split}_seed{seed}.json"
            if resume and file.is_file():
                reports.append(json.loads(file.read_text()))
                continue
            pipe = pipeline_with(base, Path(point["dir"]) / "model.safetensors" if point["dir"] else None)
            cfg = EvalConfig(checkpoint=base, num_prompts=num_prompts, samples_per_prompt=samples, split=split,
                             seed=seed, progress=False)
            report = evaluate(cfg, pipe)
            report["transformer_weights"] = point["dir"]
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(report, indent=2))
            reports.append(report)
            print(f"{point['name']:>10} seed {seed}: part accuracy {report['part_accuracy']:.3f}, "
                  f"category {report['attributes']['category']['accuracy']:.3f}, FID {report['fid']:.0f}", flush=True)
        row = {**point, "split": split, "reports": [str(cache / f"step{point['step']:06d}_{split}_seed{s}.json")
                                                     for s in seeds]}
        for key, _, anchor in METRICS:
            values = [_dig(r, key) for r in reports]
            row[key] = sum(values) / len(values)
            row[f"{key}:floor"] = sum(_dig(r["anchors"]["floor"], anchor) for r in reports) / len(reports)
            row[f"{key}:ceiling"] = sum(_dig(r["anchors"]["ceiling"], anchor) for r in reports) / len(reports)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4))
    steps = [r["step"] for r in rows]
    for ax, (key, label, _) in zip(axes, METRICS):
        ax.plot(steps, [r[key] for r in rows], "o-", color="tab:blue", label="ARMANI")
        ax.axhline(rows[-1][f"{key}:ceiling"], color="tab:green", ls="--", lw=1, label="real render (ceiling)")
        ax.axhline(rows[-1][f"{key}:floor"], color="tab:red", ls=":", lw=1, label="random garment (floor)")
        ax.set_xlabel("transformer steps of this run (batch 16)")
        ax.set_title(label, fontsize=10)
        if key == "fid":
            ax.set_yscale("log")
        top = ax.secondary_xaxis("top", functions=(
            lambda s, r=rows: _to_hours(s, r), lambda h, r=rows: _to_steps(h, r)))
        top.set_xlabel("wall-clock hours on the 2-core CPU", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _rate(rows):
    last = rows[-1]
    return last["elapsed_s"] / 3600 / last["step"] if last["step"] else 0.0


def _to_hours(steps, rows):
    return steps * _rate(rows)


def _to_steps(hours, rows):
    rate = _rate(rows)
    return hours / rate if rate else hours


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="training run whose transformer checkpoints are the points")
    p.add_argument("--point", action="append", default=[], help="NAME=DIR: another engine checkpoint")
    p.add_argument("--base", help="pipeline the transformers are dropped into (default: the shipped one)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--num-prompts", type=int, default=50)
    p.add_argument("--samples-per-prompt", type=int, default=2)
    p.add_argument("--split", default="val", choices=("val", "heldout"))
    p.add_argument("--out", default="outputs/compute_curve.json")
    p.add_argument("--figure", help="plot here")
    p.add_argument("--title", default="Prompt-following against stage-2 training compute")
    p.add_argument("--resume", action="store_true", help="reuse cached per-point reports")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    try:
        points = find_points(Path(args.run) if args.run else None, args.point)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows = evaluate_points(points, args.base, args.seeds, args.num_prompts, args.samples_per_prompt, args.split,
                           out.parent / (out.stem + "_reports"), args.resume)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"base": args.base, "run": args.run, "seeds": args.seeds,
                               "num_prompts": args.num_prompts, "samples_per_prompt": args.samples_per_prompt,
                               "points": rows}, indent=2))
    print(f"wrote {out}")
    if args.figure:
        print(f"wrote {plot(rows, Path(args.figure), args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much of a row's score is its sampler? One checkpoint evaluated with several sampling
settings on the same prompts and seeds (:mod:`armani.evaluation.generation`, the metrics of the tables).

Table 1 compares models *with their own samplers*: ARMANI and the DALL·E-style row sample
autoregressively (top-k 100, temperature 1), the M6-style row by mask-predict, which commits
the most confident tokens first and so draws nearer the mode. This script separates the two
effects for the autoregressive rows: sharper sampling (smaller top-k, lower temperature) trades
diversity (FID, IS) for prompt-following (MaskCLIP score, part accuracy)?

    python research/sampling_sweep.py --checkpoint checkpoints/armani --seeds 0 1 \\
        --setting top_k=100 --setting top_k=20 --setting top_k=5 --setting temperature=0.7 \\
        --out research/results/sampling_sweep_2026-11-23.json

Each setting is ``key=value[,key=value]`` over the fields of the samplers
(:class:`armani.sampling.AutoregressiveSampler`, :class:`armani.sampling.MaskPredictSampler`);
a tuple field takes its names joined by ``+`` (``guidance_conditions=text+sketch``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from research.tables import COLUMNS, METRIC_BY_KEY, portable, show, stats  # noqa: E402

# (report key of research.tables.METRICS, column label)
METRICS = (("fid", "FID ↓"), ("is.mean", "IS ↑"), ("maskclip_score", "MaskCLIP ↑"), ("part_accuracy", "part acc. ↑"))


def parse_setting(text: str) -> dict:
    """``"top_k=20,temperature=0.7"`` -> ``{"top_k": 20, "temperature": 0.7}`` (typed by the samplers' fields)."""
    from armani.sampling import AutoregressiveSampler, MaskPredictSampler

    types = {f.name: f.type for cls in (MaskPredictSampler, AutoregressiveSampler) for f in fields(cls)}
    types["sampler"] = "str"  # "ar" / "nar": which sampler the settings apply to
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise ValueError(f"setting {item!r}: expected key=value with key one of {sorted(types)}")
        kind = str(types[key])
        if value.strip().lower() == "none":
            out[key] = None
        elif "tuple" in kind:  # a list of names joined by "+" (commas separate settings)
            out[key] = tuple(v.strip() for v in value.split("+") if v.strip())
        elif "int" in kind:
            out[key] = int(value)
        elif "float" in kind:
            out[key] = float(value)
        else:
            out[key] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "armani"))
    ap.add_argument("--setting", action="append", required=True, help="key=value[,key=value] (repeatable)")
    ap.add_argument("--columns", nargs="+", default=["text", "heldout"], choices=[c.key for c in COLUMNS])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--num-prompts", type=int, default=50)
    ap.add_argument("--samples-per-prompt", type=int, default=2)
    ap.add_argument("--classifier", help="attribute classifier folder (default: the shipped one)")
    ap.add_argument("--out", help="JSON file for the results")
    args = ap.parse_args(argv)

    from tqdm.auto import tqdm

    from armani.evaluation.generation import EvalConfig, evaluate
    from armani.loading import load_pipeline

    try:
        settings = [parse_setting(s) for s in args.setting]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    columns = [c for c in COLUMNS if c.key in args.columns]
    pipe = load_pipeline(args.checkpoint)
    stored = pipe.sampler
    rows = []
    bar = tqdm(total=len(settings) * len(columns) * len(args.seeds), desc="sweep", unit="eval")
    for setting in settings:
        options = {k: v for k, v in setting.items() if k != "sampler"}
        try:  # each setting starts from the checkpoint's own sampler
            pipe.sampler = stored.converted(setting.get("sampler", stored.type)).with_options(**options)
        except (TypeError, ValueError) as err:
            print(f"error: setting {setting}: {err}", file=sys.stderr)
            return 2
        for col in columns:
            reports = []
            for seed in args.seeds:
                cfg = EvalConfig(checkpoint=args.checkpoint, task=col.task, split=col.split,
                                 num_prompts=args.num_prompts, samples_per_prompt=args.samples_per_prompt,
                                 classifier=args.classifier, seed=seed, progress=False)
                reports.append(portable(evaluate(cfg, pipe=pipe)))
                bar.update(1)
            rows.append({"setting": setting, "column": col.key,
                         "metrics": {m: stats([METRIC_BY_KEY[m].read(r) for r in reports]) for m, _ in METRICS},
                         "seconds_per_image": stats([METRIC_BY_KEY["seconds_per_image"].read(r) for r in reports])})
    bar.close()
    header = "| setting | column | " + " | ".join(label for _, label in METRICS) + " | s/image |"
    lines = [header, "|" + "---|" * (len(METRICS) + 3)]
    for row in rows:
        cells = []
        for m, _ in METRICS:
            s = row["metrics"][m]
            cells.append("—" if s["mean"] is None else f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["std"] else ""))
        name = ", ".join(f"{k}={v}" for k, v in row["setting"].items())
        lines.append(f"| {name} | {row['column']} | " + " | ".join(cells)
                     + f" | {row['seconds_per_image']['mean']:.3f} |")
    print("\n".join(lines))
    if args.out:
        result = {"checkpoint": show(Path(args.checkpoint)),
                  "command": "python research/sampling_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  "seeds": args.seeds, "num_prompts": args.num_prompts,
                  "samples_per_prompt": args.samples_per_prompt, "rows": rows, "markdown": "\n".join(lines)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m armani.assemble --run runs/default --out checkpoints/armani``: turn a training
run into a saved pipeline folder, with its model card and the stages' training reports.

A run that trained the stage-2 transformer assembles into an ARMANI pipeline; one that
trained only the ``diffusion`` stage assembles into the diffusion baseline's pipeline (its
text tower comes from the run's MaskCLIP). ``--prompt`` also renders a quick sample grid.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from armani.loading import load_pipeline, pipeline_kind
from armani.model_card import model_card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="training run directory to assemble from")
    ap.add_argument("--checkpoint", help="or a saved pipeline to load (for --prompt)")
    ap.add_argument("--out", help="where to save the assembled pipeline")
    ap.add_argument("--name", default=None, help="pipeline name stored in pipeline.json")
    ap.add_argument("--description", default=None, help="one line saying what it is (pipeline.json, model card)")
    ap.add_argument("--prompt", action="append", default=[], help="render samples for this text (repeatable)")
    ap.add_argument("--samples", default="outputs/samples.png")
    ap.add_argument("--share-with", help="a saved pipeline whose identical components are referenced, not copied")
    ap.add_argument("--storage-dtype", default="float32", choices=("float32", "bfloat16"),
                    help="dtype of the stored weights (bfloat16: half the size)")
    return ap.parse_args(argv)


def save_with_card(pipe, run: Path, out: Path, storage_dtype: str, share_with: str | None, diffusion: bool) -> None:
    """Save ``pipe`` to ``out`` with the run's model card, resolved config and stage reports."""
    shared = {} if diffusion else {"share_with": share_with}  # a diffusion pipeline shares nothing
    pipe.save_pretrained(out, storage_dtype=storage_dtype, **shared)
    (out / "README.md").write_text(model_card(run, pipe.settings.name, pipe.settings.description))
    shutil.copy(run / "config.yaml", out / "run_config.yaml")
    # Each component keeps its stage's training report, so the checkpoint can seed a later
    # run (`train.py --reuse CHECKPOINT`) and that run's model card stays whole.
    kept = {"diffusion": "unet"} if diffusion else {name: name for name in pipe.modules()}
    for name, folder in kept.items():
        report = run / name / "final" / "training_report.json"
        if report.is_file() and (out / folder).is_dir():
            shutil.copy(report, out / folder / "training_report.json")


def sample_grid(pipe, prompts: list[str], path: Path) -> None:
    """Four samples (seed 0) per prompt, one row each."""
    rows = []
    for prompt in prompts:
        out = pipe(text=prompt, num_images=4, seed=0)
        print(f"{out.seconds:.2f}s  {prompt}")
        rows.append(np.concatenate([np.asarray(im) for im in out.images], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    named = {k: v for k, v in (("name", args.name), ("description", args.description)) if v}
    if args.run:
        run = Path(args.run)
        diffusion = pipeline_kind(run) == "diffusion-run"
        pipe = load_pipeline(run, **named)
    else:
        diffusion = False
        pipe = load_pipeline(args.checkpoint, **named)
    if args.out:
        if args.run:
            save_with_card(pipe, Path(args.run), Path(args.out), args.storage_dtype, args.share_with, diffusion)
        else:
            pipe.save_pretrained(args.out, storage_dtype=args.storage_dtype)
        print(f"saved {args.out}")
    if args.prompt:
        sample_grid(pipe, args.prompt, Path(args.samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

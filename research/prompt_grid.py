"""A labelled grid of what a checkpoint makes: 16 validation prompts, two samples each.

    python research/prompt_grid.py --checkpoint checkpoints/armani --out docs/samples_text.png
    python research/prompt_grid.py --task text+sketch --out docs/samples_sketch.png

The prompts are procedural ``val`` prompts (seed 0) chosen to cover every garment category
once before any repeats, so a reader can check at a glance whether each garment is the one
asked for. With a sketch or partial image, the control is drawn left of the samples, and a
real render of the prompt (what the control was taken from) right of them.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCALE = 2  # 64 px garments drawn at 128 px (nearest), so the pixels stay honest


def pick_prompts(n: int = 16, split: str = "val", seed: int = 0, pool: int = 400) -> list[dict]:
    """``n`` prompts of ``split``: every category once (in the split's order) before any repeats."""
    from armani.evaluation.prompts import default_prompts

    candidates = default_prompts(pool, split, seed)
    chosen, seen = [], set()
    for p in candidates:
        if p["attributes"]["category"] not in seen:
            chosen.append(p)
            seen.add(p["attributes"]["category"])
    for p in candidates:
        if len(chosen) >= n:
            break
        if p not in chosen:
            chosen.append(p)
    return chosen[:n]


def _cell_image(image, size: int) -> Image.Image:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return img.convert("RGB").resize((size, size), Image.Resampling.NEAREST)


def prompt_grid(pipe, prompts: list[dict], task: str = "text", samples: int = 2, seed: int = 0,
                columns: int = 4, title: str | None = None) -> Image.Image:
    """One tile per prompt (its caption above; samples side by side; the control and the real
    render beside them for the sketch / partial tasks), ``columns`` tiles per row."""
    from armani.evaluation.prompts import make_controls, task_uses_text

    size = int(getattr(pipe, "image_size", 64))
    side = size * SCALE
    font = ImageFont.load_default(size=12)
    caption_h = 46
    n_images = samples + (2 if task != "text" else 0)
    tile_w, tile_h = n_images * side + (n_images - 1) * 2, side + caption_h
    pad = 10
    rows = -(-len(prompts) // columns)
    head = 28 if title else 0
    canvas = Image.new("RGB", (columns * (tile_w + pad) + pad, head + rows * (tile_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 8), title, fill="black", font=ImageFont.load_default(size=14))
    for i, prompt in enumerate(prompts):
        x0 = pad + (i % columns) * (tile_w + pad)
        y0 = head + pad + (i // columns) * (tile_h + pad)
        caption = "\n".join(textwrap.wrap(prompt["text"], width=max(20, tile_w // 7))[:3])
        draw.multiline_text((x0, y0), caption, fill="black", font=font, spacing=2)
        c = make_controls(prompt["attributes"], task, size, np.random.default_rng([seed, i, 1]))
        out = pipe(text=prompt["text"] if task_uses_text(task) else None, num_images=samples,
                   seed=seed * 100_003 + i, **c.pipeline_kwargs())
        images = list(out.images)
        if task != "text":
            control = c.sketch if c.sketch is not None else np.where(c.keep_mask[..., None], c.partial, 200)
            images = [control, *images, c.reference]
        for j, image in enumerate(images):
            canvas.paste(_cell_image(image, side), (x0 + j * (side + 2), y0 + caption_h))
    return canvas


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="saved pipeline or training run (default: the shipped one)")
    p.add_argument("--task", default="text", choices=("text", "text+sketch", "text+partial", "sketch", "partial"))
    p.add_argument("--num", type=int, default=16, help="prompts")
    p.add_argument("--samples", type=int, default=2, help="samples per prompt")
    p.add_argument("--split", default="val", choices=("val", "heldout"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", help="a line above the grid")
    p.add_argument("--out", default="outputs/prompt_grid.png")
    args = p.parse_args(argv)
    from armani.loading import load_pipeline

    try:
        pipe = load_pipeline(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    grid = prompt_grid(pipe, pick_prompts(args.num, args.split, args.seed), args.task, args.samples, args.seed,
                       title=args.title)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, optimize=True)
    print(f"wrote {out} ({grid.size[0]}x{grid.size[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

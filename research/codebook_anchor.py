"""The best a stage 2 could score through an image codebook: its round trip of real renders.

    python research/codebook_anchor.py                                  # the shipped codebook
    python research/codebook_anchor.py --vqgan runs/vq2/vqgan/final --seeds 0 1 2 \\
        --out research/results/codebook_anchor_vq2.json

``python -m armani.evaluate`` reports, beside its floor and ceiling, a ``codebook`` anchor:
real renders of the prompts encoded by the checkpoint's image codebook and decoded again (every
token right), scored by the same classifier, FID and MaskCLIP judge. This script computes only
that anchor (no generation), for the shipped codebook or for another one swapped into the
pipeline (``--vqgan``: a trained ``vqgan`` stage folder), so a codebook can be judged by what
it would let stage 2 reach before a transformer is trained on its tokens. Each row also gives the
colour shift of the round trip (``codebook.colour``, CIELAB over the renders' garment pixels): a
codebook can hold the garment's shape and still tint every colour. With ``--vqgan`` each row
also gives ``codebook.ids_kept``: the share of the pipeline's own token ids the swapped-in
codebook gives the same renders, i.e. how much of a transformer trained on the old ids carries
over to the new ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from condition_probe import report as write_report

from armani.evaluation.generation import EvalConfig, anchors_report
from armani.loading import load_pipeline
from armani.models.vqgan import VQGAN


def ceiling_renders(prompts: list[dict], seed: int, size: int, k: int):
    """``k`` renders of each prompt seeded as the anchors' ceiling set (``score_anchors``), with
    their garment masks: ``(uint8 (N*k, S, S, 3), bool (N*k, S, S))``."""
    import numpy as np

    from armani.evaluation.prompts import render_reference_with_mask

    pairs = [render_reference_with_mask(p["attributes"], size, np.random.default_rng([seed, i, 5, j]))
             for i, p in enumerate(prompts) for j in range(k)]
    return np.stack([image for image, _ in pairs]), np.stack([mask for _, mask in pairs]) > 0


def _val_renders(pipe, seed: int, num_prompts: int):
    """One render per val prompt at the pipeline's size, seeded as the codebook anchor's:
    ``(prompts, uint8 (N, S, S, 3), garment masks bool (N, S, S), float (N, 3, S, S) in [-1, 1])``."""
    import torch

    from armani.evaluation.prompts import default_prompts

    prompts = default_prompts(num_prompts, "val", seed)
    real, garment = ceiling_renders(prompts, seed, int(getattr(pipe, "image_size", 64)), 1)
    return prompts, real, garment, torch.from_numpy(real).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def colour_shift(pipe, seed: int, num_prompts: int) -> dict:
    """How the codebook's round trip moves garment colours: CIELAB differences (reconstruction
    minus render) over the render's exact garment pixels, one render per val prompt.

    ``delta_e``: mean CIE76 colour difference per pixel (about 2.3 is a just-noticeable
    difference); ``delta_L`` / ``delta_a`` / ``delta_b``: the mean signed shift of lightness,
    green(-)/red(+) and blue(-)/yellow(+), i.e. a tint that every garment gets; ``delta_e_of_mean``:
    the difference between each garment's mean colour before and after (what a person reads as
    "the colour"), averaged over garments.
    """
    import cv2
    import numpy as np

    from armani.evaluation.generation import codebook_round_trip
    from armani.evaluation.metrics import to_uint8

    prompts, real, garment, x = _val_renders(pipe, seed, num_prompts)
    recon = to_uint8(codebook_round_trip(pipe)(x, [p["text"] for p in prompts])).permute(0, 2, 3, 1).numpy()

    def lab(images: np.ndarray) -> np.ndarray:  # uint8 RGB -> float L* a* b*
        out = np.stack([cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2LAB) for im in images]).astype(np.float64)
        return np.stack([out[..., 0] * 100.0 / 255.0, out[..., 1] - 128.0, out[..., 2] - 128.0], axis=-1)

    diff = lab(recon) - lab(real)
    per_pixel = np.linalg.norm(diff, axis=-1)
    # the shift of a garment's mean colour is the mean of its per-pixel shifts
    means = [diff[i][garment[i]].mean(0) for i in range(len(real)) if garment[i].any()]
    return {"delta_e": float(per_pixel[garment].mean()),
            "delta_L": float(diff[..., 0][garment].mean()), "delta_a": float(diff[..., 1][garment].mean()),
            "delta_b": float(diff[..., 2][garment].mean()),
            "delta_e_of_mean": float(np.mean([np.linalg.norm(m) for m in means]))}


def ids_kept(pipe, other, seed: int, num_prompts: int) -> float:
    """The share of image token ids on which the pipeline's image codebook and ``other`` agree:
    one render per val prompt, encoded (fused with its caption's words) by each; the pipeline
    keeps its own codebook. A transformer trained on one codebook's tokens can be continued on
    the other's when most ids keep their place; near 0 it has to learn the new ones from scratch."""
    import torch

    prompts, _, _, x = _val_renders(pipe, seed, num_prompts)
    text_ids = pipe.tokenizer([p["text"] for p in prompts], warn=False).ids
    own = pipe.vqgan
    with torch.inference_mode():
        before = pipe.encode_image(x, text_ids)
        try:
            pipe.vqgan = other
            after = pipe.encode_image(x, text_ids)
        finally:
            pipe.vqgan = own
    return float((before == after).float().mean())


def codebook_parser(description: str) -> argparse.ArgumentParser:
    """The options this script shares with ``fid_anatomy.py``: a pipeline, an image codebook to
    swap into it, seeds, prompts per seed and the JSON to write."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--checkpoint", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--vqgan", default=None, help="an image codebook folder to use instead of the pipeline's")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--num-prompts", type=int, default=50)
    ap.add_argument("--out")
    return ap


def load_with_codebook(checkpoint: str | None, vqgan: str | None):
    """``(pipeline, its own image codebook)``, with ``vqgan``'s codebook swapped in when given."""
    pipe = load_pipeline(checkpoint)
    own = pipe.vqgan
    if vqgan:
        pipe.vqgan = VQGAN.from_pretrained(vqgan).eval()
    return pipe, own


def main(argv: list[str] | None = None) -> dict:
    args = codebook_parser(__doc__.splitlines()[0]).parse_args(argv)
    pipe, shipped = load_with_codebook(args.checkpoint, args.vqgan)  # shipped: for ids_kept
    rows = []
    for seed in args.seeds:
        cfg = EvalConfig(checkpoint=args.checkpoint, num_prompts=args.num_prompts, seed=seed, progress=False)
        anchors = anchors_report(cfg, pipe)["anchors"]
        rows.append({"seed": seed, **{name: {k: v for k, v in a.items() if k != "attributes"}
                                      for name, a in anchors.items()}})
        rows[-1]["codebook"]["colour"] = colour_shift(pipe, seed, args.num_prompts)
        if args.vqgan:  # how many of the pipeline's own token ids the swapped-in codebook keeps
            rows[-1]["codebook"]["ids_kept"] = ids_kept(pipe, shipped, seed, args.num_prompts)
        print(json.dumps(rows[-1]), flush=True)
    def mean_std(values: list[float]) -> dict:
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None}

    summary = {}
    for name in ("codebook", "ceiling", "floor"):
        for key in ("fid", "part_accuracy", "maskclip_score"):
            values = [r[name][key] for r in rows if r.get(name, {}).get(key) is not None]
            if values:
                summary[f"{name}.{key}"] = mean_std(values)
    for key in rows[0]["codebook"]["colour"] if rows else ():
        summary[f"codebook.colour.{key}"] = mean_std([r["codebook"]["colour"][key] for r in rows])
    if args.vqgan:
        summary["codebook.ids_kept"] = mean_std([r["codebook"]["ids_kept"] for r in rows])
    report = {"checkpoint": args.checkpoint, "vqgan": args.vqgan, "seeds": args.seeds, "rows": rows,
              "summary": summary, "command": "python research/codebook_anchor.py " + " ".join(argv or sys.argv[1:])}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()

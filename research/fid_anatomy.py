"""What the image codebook's FID is made of: real renders with one thing changed at a time.

    python research/fid_anatomy.py --seeds 0 1 2 --out research/results/fid_anatomy_<date>.json

``python -m armani.evaluate`` scores FID on the attribute classifier's features against real
renders of the prompts. The shipped transformer sits at its image codebook's own figure (the
codebook's reconstructions of real renders; ``research/codebook_anchor.py``), far above the
real renders' own (the ceiling). This script asks which difference between a reconstruction
and its render the FID responds to. On the ceiling's renders (the same prompts, seeds and
renders as the report's anchors) it scores FID against the report's real set for:

- generic degradations of the whole render: Gaussian blur, 2x down- and up-sampling, pixel
  noise, a per-image colour tint;
- the render with its garment interior or its background blurred, or with the fabric grain
  removed (3x3 median) inside the garment;
- the codebook's round trip, whole and spliced with the render along the garment mask (the
  reconstructed garment on the real background and the other way round), and with fabric
  grain added back inside the garment;
- the codebook's decoder applied to the encoder's fused features before quantisation (an
  unlimited code table with this decoder): how much of the gap the code table's size explains.

Each row also gives the PSNR against the render. No model is trained or changed. ``--figure``
draws a few renders of the first seed beside the variants that matter most.

    python research/fid_anatomy.py --seeds 0 --figure research/results/fid_anatomy.png
    python research/fid_anatomy.py --vqgan runs/ae2/vqgan/final --seeds 0 1 2   # another codebook
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from codebook_anchor import ceiling_renders, codebook_parser, load_with_codebook
from condition_probe import report as write_report


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """dB over all pixels; None for identical images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


@torch.inference_mode()
def codebook_views(pipe, renders: np.ndarray, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the codebook's round trip, the decoder on the unquantised fused features): uint8 (N, S, S, 3).

    The encoding is ``encode_cross_modal``'s, written out because it keeps no unquantised
    features; the test checks the round trip against ``codebook_round_trip``."""
    from armani.evaluation.metrics import to_uint8

    x = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    vq = pipe.vqgan
    text_ids = pipe.tokenizer(texts, warn=False).ids
    words, index = pipe.maskclip.best_words(x, pipe.segmenter.probs(x), text_ids)  # as encode_cross_modal
    z_tilde = vq.fuse(vq.encode_features(x), words, index)
    z_q, _, _ = vq.quantize(z_tilde, update_codebook=False)

    def decode(z: torch.Tensor) -> np.ndarray:
        return to_uint8(vq.decode_features(z).clamp(-1, 1)).permute(0, 2, 3, 1).numpy()

    return decode(z_q), decode(z_tilde)


def variants(renders: np.ndarray, garment: np.ndarray, recon: np.ndarray, unquantised: np.ndarray,
             rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every image set scored, by name (float or uint8 arrays, clipped to uint8 by the caller)."""
    import cv2

    def each(fn, images):
        return np.stack([fn(im) for im in images])

    m = garment[..., None]
    blur1 = each(lambda im: cv2.GaussianBlur(im, (0, 0), 1.0), renders)
    out: dict[str, np.ndarray] = {"renders (the ceiling)": renders}
    for sigma in (0.6, 0.8, 1.0):
        out[f"renders blurred, sigma {sigma}"] = blur1 if sigma == 1.0 else each(
            lambda im, s=sigma: cv2.GaussianBlur(im, (0, 0), s), renders)
    down_up = lambda im: cv2.resize(cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2),  # noqa: E731
                                               interpolation=cv2.INTER_AREA), im.shape[1::-1],
                                    interpolation=cv2.INTER_LINEAR)
    out["renders at half size, scaled back"] = each(down_up, renders)
    out["renders + pixel noise, std 12"] = renders + rng.normal(0, 12, renders.shape)
    out["renders + a colour tint, std 8 per channel"] = renders + rng.normal(0, 8, (len(renders), 1, 1, 3))
    out["renders, garment interior blurred (sigma 1)"] = np.where(m, blur1, renders)
    out["renders, background blurred (sigma 1)"] = np.where(m, renders, blur1)
    out["renders, fabric grain removed (3x3 median in the garment)"] = np.where(
        m, each(lambda im: cv2.medianBlur(im, 3), renders), renders)
    out["codebook round trip"] = recon
    out["codebook garment on the real background"] = np.where(m, recon, renders)
    out["real garment on the codebook's background"] = np.where(m, renders, recon)
    grain = rng.normal(0, 1, (len(renders), *renders.shape[1:3], 1)) * rng.uniform(2, 5, (len(renders), 1, 1, 1))
    out["codebook round trip + fabric grain in the garment (std 2-5, as rendered)"] = np.where(m, recon + grain, recon)
    out["codebook decoder on unquantised features (no code table limit)"] = unquantised
    return out


FIGURE_ROWS = ("renders (the ceiling)", "renders blurred, sigma 1.0",
               "renders, garment interior blurred (sigma 1)",
               "renders, fabric grain removed (3x3 median in the garment)", "codebook round trip",
               "codebook decoder on unquantised features (no code table limit)")


def figure(sets: dict[str, np.ndarray], fids: dict[str, float], path: str, columns: int = 6) -> None:
    """The first ``columns`` garments (one per prompt) in each of FIGURE_ROWS, labelled with the set's FID."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [name for name in FIGURE_ROWS if name in sets]
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.3 * columns, 1.45 * len(rows)), squeeze=False)
    for r, name in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.imshow(np.clip(np.round(sets[name][2 * c]), 0, 255).astype(np.uint8), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel(f"FID {fids[name]:.0f}", fontsize=8)
        axes[r][columns // 2].set_title(name, fontsize=8, loc="center")
    fig.tight_layout(pad=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    from armani.evaluation.attributes import load_classifier
    from armani.evaluation.generation import EvalConfig, _real_set, _u8_tensor
    from armani.evaluation.metrics import choose_extractors, frechet_distance
    from armani.evaluation.prompts import default_prompts

    ap = codebook_parser(__doc__.splitlines()[0])
    ap.add_argument("--figure", help="a PNG of the first seed's garments in the main variants")
    args = ap.parse_args(argv)
    classifier, _, _ = load_classifier(None)
    extractor = choose_extractors(classifier)
    if extractor is None:
        raise SystemExit("no attribute classifier or Inception weights to take FID features from")
    pipe, _ = load_with_codebook(args.checkpoint, args.vqgan)
    if not getattr(pipe.vqgan.config, "fusion", False):
        raise SystemExit("this script reads a cross-modal (fused) image codebook")
    size = int(getattr(pipe, "image_size", 64))
    rows = []
    for seed in args.seeds:
        cfg = EvalConfig(checkpoint=args.checkpoint, num_prompts=args.num_prompts, seed=seed, progress=False)
        prompts = default_prompts(args.num_prompts, "val", seed)
        real = _u8_tensor(_real_set(prompts, cfg, size))  # the set the report's FID compares with
        renders, garment = ceiling_renders(prompts, seed, size, cfg.samples_per_prompt)
        texts = [p["text"] for p in prompts for _ in range(cfg.samples_per_prompt)]
        recon, unquantised = codebook_views(pipe, renders, texts)
        row = {"seed": seed, "garment_share": float(garment.mean())}
        sets = variants(renders, garment, recon, unquantised, np.random.default_rng(seed))
        for name, images in sets.items():
            images = np.clip(np.round(images), 0, 255).astype(np.uint8)
            row[name] = {"fid": frechet_distance(real, _u8_tensor(list(images)), extractor),
                         "psnr": psnr(images, renders)}
        if args.figure and not rows:
            figure(sets, {name: row[name]["fid"] for name in sets}, args.figure)
        rows.append(row)
        print({k: (round(v["fid"], 1) if isinstance(v, dict) else v) for k, v in row.items()}, flush=True)
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    summary = {name: {"fid": statistics.mean(r[name]["fid"] for r in rows),
                      "fid_per_seed": [r[name]["fid"] for r in rows],
                      "psnr": None if rows[0][name]["psnr"] is None else statistics.mean(r[name]["psnr"] for r in rows)}
               for name in names}
    result = {"checkpoint": args.checkpoint, "vqgan": args.vqgan, "seeds": args.seeds, "rows": rows, "summary": summary,
              "command": "python research/fid_anatomy.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_report(result, args.out)
    return result


if __name__ == "__main__":
    main()

"""Evaluate a generation checkpoint: FID, IS, CLIPScore, MaskCLIP score and part-level accuracy.

    python -m armani.evaluate                                   # the shipped ARMANI checkpoint
    python -m armani.evaluate --checkpoint runs/default --task text+sketch --num-prompts 100 \\
        --samples-per-prompt 2 --split heldout --out outputs/eval/heldout.json --figure outputs/eval/heldout.png

Prompts are JSON lines ``{"text": ..., "attributes": <attribute record>}`` (``--prompts``),
or drawn from the procedural ``--split`` (val: the training distribution; heldout: the
attribute combinations kept out of training). The sketch / partial tasks take their
controls from a procedural render of each prompt's attributes (Canny edges / a random
25% crop, as in training). The real image set for FID is ``samples-per-prompt`` renders
of every prompt's attributes, as many real images as generated ones.

Part-level accuracy: the attribute classifier (``--classifier``, default
``checkpoints/attribute_classifier``, trained with ``--stage attribute_classifier``) reads
every generated image; each attribute's verdicts (:func:`armani.evaluation.attributes.compare`)
count only when the classifier itself is >= 95% accurate on real renders of the val split
(its ``validation.json``); the rest are reported but marked "not trusted". The overall
part accuracy is the mean over trusted attributes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLASSIFIER = ROOT / "checkpoints" / "attribute_classifier"
TRUST_THRESHOLD = 0.95


@dataclass
class EvalConfig:
    """Everything that decides a report (stored in it under ``config``)."""

    checkpoint: str | None = None  # None: the shipped ARMANI checkpoint
    prompts: str | None = None  # a JSON-lines file; None: procedural prompts of `split`
    task: str = "text"  # text | text+sketch | text+partial
    samples_per_prompt: int = 2
    num_prompts: int = 50  # procedural prompts only (a file is used whole)
    split: str = "val"  # val | heldout
    classifier: str | None = None  # None: checkpoints/attribute_classifier when present
    judge: str | None = None  # pipeline whose segmenter + MaskCLIP give the MaskCLIP score
    inception: str = "auto"  # auto | on | off
    clip_weights: str | None = None  # open_clip .safetensors (or $ARMANI_OPENCLIP_WEIGHTS)
    clip_model: str | None = None
    seed: int = 0
    progress: bool = True


def _images_to_tensor(images) -> torch.Tensor:
    """PIL images / uint8 arrays -> float (B, 3, H, W) in [-1, 1]."""
    from armani.data.transforms import image_tensor

    return torch.stack([image_tensor(np.asarray(im.convert("RGB") if hasattr(im, "convert") else im))
                        for im in images])


def _load_classifier(path: str | None):
    from armani.evaluation.attributes import AttributeClassifier, load_validation

    folder = Path(path) if path else DEFAULT_CLASSIFIER
    if not (folder / "model.safetensors").is_file():
        if path:
            raise FileNotFoundError(f"--classifier {folder} holds no attribute classifier (model.safetensors)")
        return None, None, str(folder)
    return AttributeClassifier.from_pretrained(folder), load_validation(folder), str(folder)


def _judge(cfg: EvalConfig, pipe):
    """(tokenizer, segmenter, maskclip, name) for the MaskCLIP score, or None."""
    from armani.evaluation import load_any_pipeline

    candidates = []
    if cfg.judge:
        candidates.append((cfg.judge, None))
    else:
        candidates.append(("the evaluated checkpoint", pipe))
        candidates.append(("the shipped ARMANI checkpoint", "shipped"))
    for name, source in candidates:
        try:
            judge = load_any_pipeline(name) if source is None else (
                load_any_pipeline(None) if source == "shipped" else source)
        except (FileNotFoundError, ValueError, ImportError):
            if cfg.judge:
                raise
            continue
        if getattr(judge, "maskclip", None) is not None and getattr(judge, "segmenter", None) is not None:
            return judge.tokenizer, judge.segmenter, judge.maskclip, name
    return None


def evaluate(cfg: EvalConfig, pipe=None) -> dict:
    """Generate for every prompt and score the images; returns the report dict."""
    from tqdm.auto import tqdm

    from armani.evaluation import load_any_pipeline
    from armani.evaluation.attributes import ATTRIBUTE_KEYS, attribute_accuracy
    from armani.evaluation.metrics import (
        choose_extractors, clip_score, frechet_distance, inception_score, maskclip_scores, openclip_scorer, to_uint8,
    )
    from armani.evaluation.prompts import TASKS, default_prompts, load_prompts, make_controls, render_reference

    if cfg.task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.samples_per_prompt < 1:
        raise ValueError("--samples-per-prompt must be >= 1")
    started = time.perf_counter()
    classifier, validation, classifier_path = _load_classifier(cfg.classifier)  # fail before generating
    if pipe is None:
        pipe = load_any_pipeline(cfg.checkpoint)
    prompts = load_prompts(cfg.prompts) if cfg.prompts else default_prompts(cfg.num_prompts, cfg.split, cfg.seed)
    size = int(getattr(pipe, "image_size", 64))
    settings = getattr(pipe, "settings", None)
    keep_fraction = getattr(settings, "keep_fraction", 0.25)
    thresholds = (getattr(settings, "sketch_low", 100), getattr(settings, "sketch_high", 200))

    # -- generate ------------------------------------------------------------------------------
    generated, real, texts, targets = [], [], [], []
    gen_seconds = 0.0
    k = cfg.samples_per_prompt
    for i, prompt in enumerate(tqdm(prompts, desc=f"generating ({cfg.task})", unit="prompt",
                                    disable=not cfg.progress)):
        controls = make_controls(prompt["attributes"], cfg.task, size, np.random.default_rng([cfg.seed, i, 1]),
                                 keep_fraction=keep_fraction, sketch_thresholds=thresholds)
        t0 = time.perf_counter()
        out = pipe(text=prompt["text"], num_images=k, seed=cfg.seed * 100_003 + i, **controls.pipeline_kwargs())
        gen_seconds += time.perf_counter() - t0
        images = _images_to_tensor(out.images)  # (k, 3, S, S)
        generated.append(images)
        texts += [prompt["text"]] * k
        targets += [prompt["attributes"]] * k
        side = images.shape[-1]
        real += [render_reference(prompt["attributes"], side, np.random.default_rng([cfg.seed, i, 2, j]))
                 for j in range(k)]
    fake = torch.cat(generated)  # (N, 3, S, S) in [-1, 1]
    fake_u8 = to_uint8(fake)
    real_u8 = torch.from_numpy(np.stack(real)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S) uint8

    # -- attribute classifier -------------------------------------------------------------------
    attributes: dict[str, dict] = {}
    part_accuracy = None
    count_when_requested: dict[str, float | None] = {}
    if classifier is not None:
        preds = classifier.predict(fake)
        gen_acc = attribute_accuracy(preds, targets)
        real_acc = (validation or {}).get("accuracy", {})
        for key in ATTRIBUTE_KEYS:
            r = real_acc.get(key)
            attributes[key] = {"accuracy": gen_acc[key], "classifier_real_accuracy": r,
                               "trusted": r is not None and r >= TRUST_THRESHOLD}
        trusted = [v["accuracy"] for v in attributes.values() if v["trusted"]]
        part_accuracy = float(np.mean(trusted)) if trusted else None
        for part in ("button", "pocket"):
            idx = [j for j, t in enumerate(targets) if t["parts"].get(part, 0) > 0]
            count_when_requested[part] = (float(np.mean([preds[j]["parts"].get(part, 0) == targets[j]["parts"][part]
                                                         for j in idx])) if idx else None)

    # -- image metrics ---------------------------------------------------------------------------
    extractor = choose_extractors(classifier, cfg.inception)
    fid = is_mean = is_std = None
    if extractor is not None:
        fid = frechet_distance(real_u8, fake_u8, extractor) if len(fake_u8) >= 2 else None
        is_mean, is_std = inception_score(fake_u8, extractor, seed=cfg.seed)
    scorer = openclip_scorer(cfg.clip_weights, cfg.clip_model)
    clip = clip_score(scorer, fake_u8, texts) if scorer is not None else "unavailable"
    judge = _judge(cfg, pipe)
    maskclip = "unavailable"
    judge_name = None
    if judge is not None:
        tokenizer, segmenter, mc, judge_name = judge
        maskclip = float(maskclip_scores(fake, texts, tokenizer, segmenter, mc).mean())

    return {
        "checkpoint": cfg.checkpoint or "shipped (checkpoints/armani)",
        "pipeline": type(pipe).__name__,
        "task": cfg.task,
        "prompts": cfg.prompts or f"procedural {cfg.split} (seed {cfg.seed})",
        "fid": fid,
        "is": {"mean": is_mean, "std": is_std},
        "feature_extractor": extractor.name if extractor is not None else "unavailable (no Inception weights, "
                                                                            "no attribute classifier)",
        "clip_score": clip,
        "maskclip_score": maskclip,
        "maskclip_judge": judge_name,
        "part_accuracy": part_accuracy,
        "attributes": attributes,
        "trusted_attributes": [k for k, v in attributes.items() if v["trusted"]],
        "count_accuracy_when_requested": count_when_requested,
        "classifier": classifier_path if classifier is not None else None,
        "classifier_validation": validation,
        "counts": {"prompts": len(prompts), "samples_per_prompt": k, "generated_images": len(fake_u8),
                   "real_images": len(real_u8),
                   "prompts_with_buttons": sum(p["attributes"]["parts"].get("button", 0) > 0 for p in prompts),
                   "prompts_with_pockets": sum(p["attributes"]["parts"].get("pocket", 0) > 0 for p in prompts)},
        "seconds_per_image": gen_seconds / max(1, len(fake_u8)),
        "total_seconds": time.perf_counter() - started,
        "config": {**asdict(cfg), "image_size": size,
                   "pipeline_settings": asdict(settings) if settings is not None and hasattr(
                       settings, "__dataclass_fields__") else None,
                   "trust_threshold": TRUST_THRESHOLD},
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(report: dict) -> str:
    """The report as a two-column (metric, value) text table, then one row per attribute."""
    rows = [
        ("FID", _fmt(report["fid"])),
        ("IS (mean +- std)", f"{_fmt(report['is']['mean'])} +- {_fmt(report['is']['std'])}"),
        ("feature extractor", report["feature_extractor"]),
        ("CLIPScore", _fmt(report["clip_score"])),
        ("MaskCLIP score", _fmt(report["maskclip_score"])),
        ("part accuracy (trusted)", _fmt(report["part_accuracy"])),
        ("seconds per image", _fmt(report["seconds_per_image"])),
        ("images", str(report["counts"]["generated_images"])),
    ]
    for part, acc in report["count_accuracy_when_requested"].items():
        rows.append((f"{part} count (prompts with {part}s)", _fmt(acc)))
    for key, v in report["attributes"].items():
        trust = "trusted" if v["trusted"] else "not trusted"
        rows.append((f"acc {key}", f"{v['accuracy']:.3f}  (classifier on real: {_fmt(v['classifier_real_accuracy'])}, "
                                   f"{trust})"))
    width = max(len(r[0]) for r in rows)
    line = "-" * (width + 50)
    return "\n".join([f"{'metric':<{width}}  value", line, *(f"{m:<{width}}  {v}" for m, v in rows)])


def plot_attribute_accuracy(report: dict, path: str | Path) -> Path:
    """Bar chart of generated-image accuracy per attribute; the classifier's own real-image
    accuracy as a black tick; untrusted attributes hatched and grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(report["attributes"].items())
    if not items:
        raise ValueError("the report has no per-attribute accuracy (no attribute classifier)")
    keys = [k for k, _ in items]
    acc = [v["accuracy"] for _, v in items]
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(keys)), 4))
    bars = ax.bar(range(len(keys)), acc, color=["tab:blue" if v["trusted"] else "lightgrey" for _, v in items])
    for bar, (_, v) in zip(bars, items):
        if not v["trusted"]:
            bar.set_hatch("//")
        if v["classifier_real_accuracy"] is not None:
            x = bar.get_x()
            ax.plot([x, x + bar.get_width()], [v["classifier_real_accuracy"]] * 2, color="black", lw=2)
    ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy on generated images")
    ax.axhline(TRUST_THRESHOLD, color="tab:red", ls=":", lw=1)
    title = f"{report['task']} - part accuracy {_fmt(report['part_accuracy'])} (trusted mean)"
    ax.set_title(title + "\nbars: generated; black ticks: classifier on real renders; grey hatched: not trusted",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m armani.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="saved pipeline folder or training run dir (default: the shipped one)")
    p.add_argument("--prompts", help="JSON-lines prompt file {text, attributes}")
    p.add_argument("--task", default="text", choices=("text", "text+sketch", "text+partial"))
    p.add_argument("--samples-per-prompt", type=int, default=2)
    p.add_argument("--num-prompts", type=int, default=50, help="procedural prompts (without --prompts)")
    p.add_argument("--split", default="val", choices=("val", "heldout"))
    p.add_argument("--classifier", help=f"attribute classifier folder (default {DEFAULT_CLASSIFIER})")
    p.add_argument("--judge", help="pipeline whose segmenter + MaskCLIP compute the MaskCLIP score "
                                   "(default: the evaluated one, else the shipped one)")
    p.add_argument("--inception", default="auto", choices=("auto", "on", "off"),
                   help="Inception-v3 for FID/IS: auto = when its weights are in the local torch hub cache")
    p.add_argument("--clip-weights", help="open_clip .safetensors for CLIPScore (or $ARMANI_OPENCLIP_WEIGHTS)")
    p.add_argument("--clip-model", help="open_clip architecture of --clip-weights (default ViT-B-32)")
    p.add_argument("--out", default="outputs/eval/report.json", help="where to write the JSON report")
    p.add_argument("--figure", help="also write a bar chart of per-attribute accuracy here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = EvalConfig(checkpoint=args.checkpoint, prompts=args.prompts, task=args.task,
                     samples_per_prompt=args.samples_per_prompt, num_prompts=args.num_prompts, split=args.split,
                     classifier=args.classifier, judge=args.judge, inception=args.inception,
                     clip_weights=args.clip_weights, clip_model=args.clip_model, seed=args.seed,
                     progress=not args.no_progress)
    try:
        report = evaluate(cfg)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    if args.figure:
        if report["attributes"]:
            print(f"wrote {plot_attribute_accuracy(report, args.figure)}")
        else:
            print("no figure: no attribute classifier, so no per-attribute accuracy", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

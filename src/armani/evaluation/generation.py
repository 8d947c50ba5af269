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
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from armani.evaluation.attributes import TRUST_THRESHOLD, default_classifier_dir
from armani.evaluation.attributes import load_classifier as _load_classifier
from armani.sampling.fast_path import SAMPLER_PRECISION_CHOICES, resolve_sampler_precision


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
    sketch_style: str = "canny"  # canny (the training transform) | drawn (hand-drawn-style strokes)
    # stored: the checkpoint's sampler precision (as the published figures); native: the faster
    # one on this CPU (float32 where bf16 is emulated); or float32 / bfloat16
    sampler_precision: str = "stored"


def _images_to_tensor(images) -> torch.Tensor:
    """PIL images / uint8 arrays -> float (B, 3, H, W) in [-1, 1]."""
    from armani.data.transforms import image_tensor

    return torch.stack([image_tensor(np.asarray(im.convert("RGB") if hasattr(im, "convert") else im))
                        for im in images])


def _judge(cfg: EvalConfig, pipe):
    """(tokenizer, segmenter, maskclip, name) for the MaskCLIP score, or None."""
    from armani.loading import load_pipeline

    candidates = []
    if cfg.judge:
        candidates.append((cfg.judge, None))
    else:
        candidates.append(("the evaluated checkpoint", pipe))
        candidates.append(("the shipped ARMANI checkpoint", "shipped"))
    for name, source in candidates:
        try:
            judge = load_pipeline(name) if source is None else (
                load_pipeline(None) if source == "shipped" else source)
        except (FileNotFoundError, ValueError, ImportError):
            if cfg.judge:
                raise
            continue
        if getattr(judge, "maskclip", None) is not None and getattr(judge, "segmenter", None) is not None:
            return judge.tokenizer, judge.segmenter, judge.maskclip, name
    return None


def _attribute_report(preds: list[dict], targets: list[dict], validation: dict | None) -> tuple[dict, float | None]:
    """Per-attribute accuracy of classifier readings against the prompts' records, with the
    trust flag of each attribute; and the mean over trusted attributes (the part accuracy)."""
    from armani.evaluation.attributes import ATTRIBUTE_KEYS, attribute_accuracy

    acc = attribute_accuracy(preds, targets)
    real_acc = (validation or {}).get("accuracy", {})
    attributes = {}
    for key in ATTRIBUTE_KEYS:
        r = real_acc.get(key)
        attributes[key] = {"accuracy": acc[key], "classifier_real_accuracy": r,
                           "trusted": r is not None and r >= TRUST_THRESHOLD}
    trusted = [v["accuracy"] for v in attributes.values() if v["trusted"]]
    return attributes, (float(np.mean(trusted)) if trusted else None)


def _task_setup(cfg: EvalConfig, pipe=None):
    """Validate ``cfg``; return (prompts, image size, control settings) for its task."""
    from armani.evaluation.prompts import SKETCH_STYLES, TASKS, default_prompts, load_prompts

    if cfg.task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.sketch_style not in SKETCH_STYLES:
        raise ValueError(f"--sketch-style must be one of {SKETCH_STYLES}, got {cfg.sketch_style!r}")
    if cfg.samples_per_prompt < 1:
        raise ValueError("--samples-per-prompt must be >= 1")
    if cfg.sampler_precision not in SAMPLER_PRECISION_CHOICES:
        raise ValueError(f"--sampler-precision must be one of {SAMPLER_PRECISION_CHOICES}, "
                         f"got {cfg.sampler_precision!r}")
    prompts = load_prompts(cfg.prompts) if cfg.prompts else default_prompts(cfg.num_prompts, cfg.split, cfg.seed)
    settings = getattr(pipe, "settings", None)
    size = int(getattr(pipe, "image_size", 64))
    control_kwargs = dict(keep_fraction=getattr(settings, "keep_fraction", 0.25),
                          sketch_thresholds=(getattr(settings, "sketch_low", 100), getattr(settings, "sketch_high", 200)),
                          sketch_style=cfg.sketch_style)
    return prompts, size, control_kwargs


@contextmanager
def sampler_precision(pipe, choice: str = "stored"):
    """Sample in the precision ``choice`` resolves to (``resolve_sampler_precision``) inside
    the block; yields that precision, or None for a pipeline whose sampler has none (the
    diffusion baseline). The pipeline's own sampler is put back afterwards."""
    sampler = getattr(pipe, "sampler", None)
    stored = getattr(sampler, "dtype", None)
    if stored is None:
        yield None
        return
    precision = resolve_sampler_precision(choice, stored)
    if precision == stored:
        yield precision
        return
    pipe.sampler = sampler.with_options(dtype=precision)
    try:
        yield precision
    finally:
        pipe.sampler = sampler


def _controls(prompts: list[dict], cfg: EvalConfig, size: int, control_kwargs: dict) -> list:
    """The task's controls of every prompt (seeded by ``cfg.seed`` and the prompt's index)."""
    from armani.evaluation.prompts import make_controls

    return [make_controls(p["attributes"], cfg.task, size, np.random.default_rng([cfg.seed, i, 1]), **control_kwargs)
            for i, p in enumerate(prompts)]


def score_anchors(cfg: EvalConfig, prompts: list[dict], controls: list, size: int, classifier=None,
                  validation: dict | None = None, extractor=None, judge=None,
                  real: list[np.ndarray] | None = None, codebook=None) -> tuple[dict, dict]:
    """The floor and ceiling of every figure for these prompts, independent of any model.

    Returns ``(anchors, control_anchors)``: ``anchors[ceiling|floor]`` hold part accuracy,
    per-attribute accuracy, MaskCLIP score and FID against the real set; ``control_anchors``
    the silhouette IoU's ceiling/floor (sketch tasks) and the kept-region PSNR's floor
    (partial tasks). The real set is ``samples_per_prompt`` renders of each prompt (the set
    FID compares generated images with); the ceiling's FID compares it with a second,
    independent set of renders.

    ``codebook`` (a ``(images, texts) -> images`` round trip through a checkpoint's image
    codebook, :func:`codebook_round_trip`) adds ``anchors["codebook"]``: the same measures on
    the codebook's reconstructions of the ceiling's renders, what a stage 2 that picked every
    token perfectly would score. A figure near it is limited by the codebook, not the transformer.
    """
    from armani.evaluation.anchors import garment_masks, kept_region_psnr, silhouette_iou, summarise_psnr
    from armani.evaluation.attributes import category_misses
    from armani.evaluation.metrics import frechet_distance, maskclip_scores, to_uint8
    from armani.evaluation.prompts import random_garment, render_reference

    k = cfg.samples_per_prompt
    floor_split = cfg.split if not cfg.prompts else "val"
    sets = {"real": real if real is not None else _real_set(prompts, cfg, size), "ceiling": [], "floor": []}
    for i, prompt in enumerate(prompts):
        for j in range(k):
            sets["ceiling"].append(render_reference(prompt["attributes"], size,
                                                    np.random.default_rng([cfg.seed, i, 5, j])))
            sets["floor"].append(random_garment(size, np.random.default_rng([cfg.seed, i, 4, j]), floor_split))
    u8 = {name: _u8_tensor(images) for name, images in sets.items()}
    targets = [p["attributes"] for p in prompts for _ in range(k)]
    texts = [p["text"] for p in prompts for _ in range(k)]
    anchors: dict[str, dict] = {
        "ceiling": {"what": "real renders of each prompt's attributes"},
        "floor": {"what": f"real renders of random {floor_split} garments (the prompt ignored)"},
    }
    if codebook is not None:
        u8["codebook"] = to_uint8(codebook(_to_float(u8["ceiling"]), texts))
        anchors["codebook"] = {"what": "the image codebook's reconstructions of real renders of the prompts "
                                       "(every token right: the best a stage 2 could draw through it)"}
    for name in anchors:
        images = u8["real" if name == "ceiling" else name]
        if classifier is not None:
            preds = classifier.predict(_to_float(images))
            attrs, part = _attribute_report(preds, targets, validation)
            anchors[name]["part_accuracy"] = part
            anchors[name]["attributes"] = {key: v["accuracy"] for key, v in attrs.items()}
            anchors[name]["category_misses"] = category_misses(preds, targets)
        if extractor is not None and len(images) >= 2:
            anchors[name]["fid"] = frechet_distance(u8["real"], u8[name], extractor)
        if judge is not None:
            tokenizer, segmenter, mc, _ = judge
            anchors[name]["maskclip_score"] = float(maskclip_scores(_to_float(images), texts, tokenizer, segmenter,
                                                                    mc).mean())
    control_anchors: dict[str, dict] = {}
    references = [c.reference for c in controls for _ in range(k)]
    if cfg.task.endswith("sketch") and judge is not None:
        segmenter = judge[1]
        target = np.stack([c.reference_mask for c in controls for _ in range(k)]) > 0
        iou = lambda images: float(silhouette_iou(garment_masks(_to_float(images), segmenter), target).mean())  # noqa
        control_anchors["silhouette_iou"] = {"ceiling": iou(_u8_tensor(references)), "floor": iou(u8["floor"])}
    if cfg.task.endswith("partial"):
        keep = np.stack([c.keep_mask for c in controls for _ in range(k)])
        control_anchors["kept_region_psnr"] = {
            "floor": summarise_psnr(kept_region_psnr(_hwc(u8["floor"]), np.stack(references), keep))}
    return anchors, control_anchors


def codebook_round_trip(pipe, batch_size: int = 64):
    """``(images (N, 3, S, S) in [-1, 1], texts) -> images``: encode with ``pipe``'s image
    codebook (fused with each caption's words when the codebook is cross-modal) and decode
    again, the way the pipeline decodes its samples (its detail refiner included, when it has
    one and its settings use it); None for a pipeline without ``encode_image`` / ``vqgan`` /
    ``tokenizer``."""
    if not all(hasattr(pipe, name) for name in ("encode_image", "vqgan", "tokenizer")):
        return None
    refine = bool(getattr(pipe, "refiner", None) is not None and pipe.settings.refine)

    @torch.inference_mode()
    def round_trip(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            text_ids = pipe.tokenizer(texts[i:i + batch_size], warn=False).ids  # (b, L), padded to the context
            ids = pipe.encode_image(images[i:i + batch_size], text_ids)
            out.append(pipe.decode_tensor(ids, refine=True, seed=i) if refine
                       else pipe.vqgan.decode(ids).clamp(-1, 1))
        return torch.cat(out)

    return round_trip


def _u8_tensor(arrays) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> uint8 (N, 3, H, W)."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _to_float(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1.0


def _hwc(u8: torch.Tensor) -> np.ndarray:
    return u8.permute(0, 2, 3, 1).numpy()


def evaluate(cfg: EvalConfig, pipe=None) -> dict:
    """Generate for every prompt and score the images; returns the report dict.

    Beside the generated images the same measures score two anchor sets
    (:func:`score_anchors`, :mod:`armani.evaluation.anchors`): real renders of the prompts
    (``anchors.ceiling``) and random real garments that ignore the prompt
    (``anchors.floor``); ``fidelity`` puts the part accuracy and the MaskCLIP score on that
    scale. Sketch tasks add the silhouette IoU of the output with the sketched garment
    (``controls.silhouette_iou``), partial tasks the PSNR of the kept region.
    ``category_misses`` counts which requested category was read as which, for the generated
    images and for each anchor set.
    """
    from tqdm.auto import tqdm

    from armani.evaluation.anchors import fidelity, garment_masks, kept_region_psnr, silhouette_iou, summarise_psnr
    from armani.evaluation.attributes import category_misses
    from armani.evaluation.metrics import (
        choose_extractors,
        clip_score,
        frechet_distance,
        inception_score,
        maskclip_scores,
        openclip_scorer,
        to_uint8,
    )
    from armani.evaluation.prompts import task_uses_text
    from armani.loading import load_pipeline

    _task_setup(cfg)  # fail on bad settings before loading anything
    started = time.perf_counter()
    classifier, validation, classifier_path = _load_classifier(cfg.classifier)  # fail before generating
    if pipe is None:
        pipe = load_pipeline(cfg.checkpoint)
    prompts, size, control_kwargs = _task_setup(cfg, pipe)
    settings = getattr(pipe, "settings", None)
    controls = _controls(prompts, cfg, size, control_kwargs)
    uses_text = task_uses_text(cfg.task)

    # -- generate ------------------------------------------------------------------------------
    generated, uncomposited, texts, targets = [], [], [], []
    gen_seconds = 0.0
    k = cfg.samples_per_prompt
    with sampler_precision(pipe, cfg.sampler_precision) as precision:
        for i, (prompt, control) in enumerate(tqdm(list(zip(prompts, controls)), desc=f"generating ({cfg.task})",
                                                   unit="prompt", disable=not cfg.progress)):
            t0 = time.perf_counter()
            out = pipe(text=prompt["text"] if uses_text else None, num_images=k, seed=cfg.seed * 100_003 + i,
                       **control.pipeline_kwargs())
            gen_seconds += time.perf_counter() - t0
            images = _images_to_tensor(out.images)  # (k, 3, S, S)
            if images.shape[-1] != size:
                raise ValueError(f"the pipeline returned {images.shape[-1]} px images, expected {size} px")
            generated.append(images)
            raw = getattr(out, "uncomposited", None)
            uncomposited.append(_images_to_tensor(raw) if raw else images)
            texts += [prompt["text"]] * k
            targets += [prompt["attributes"]] * k
    fake = torch.cat(generated)  # (N, 3, S, S) in [-1, 1]
    fake_u8 = to_uint8(fake)
    real = _real_set(prompts, cfg, size)
    real_u8 = _u8_tensor(real)

    # -- scores of the generated images ----------------------------------------------------------
    attributes: dict[str, dict] = {}
    part_accuracy = misses = None
    count_when_requested: dict[str, float | None] = {}
    if classifier is not None:
        preds = classifier.predict(fake)
        attributes, part_accuracy = _attribute_report(preds, targets, validation)
        misses = category_misses(preds, targets)
        for part in ("button", "pocket"):
            idx = [j for j, t in enumerate(targets) if t["parts"].get(part, 0) > 0]
            count_when_requested[part] = (float(np.mean([preds[j]["parts"].get(part, 0) == targets[j]["parts"][part]
                                                         for j in idx])) if idx else None)
    extractor = choose_extractors(classifier, cfg.inception)
    fid = is_mean = is_std = None
    if extractor is not None:
        fid = frechet_distance(real_u8, fake_u8, extractor) if len(fake_u8) >= 2 else None
        is_mean, is_std = inception_score(fake_u8, extractor, seed=cfg.seed)
    scorer = openclip_scorer(cfg.clip_weights, cfg.clip_model)
    clip = clip_score(scorer, fake_u8, texts) if scorer is not None else "unavailable"
    judge = _judge(cfg, pipe)
    maskclip = "unavailable"
    if judge is not None:
        tokenizer, segmenter, mc, _ = judge
        maskclip = float(maskclip_scores(fake, texts, tokenizer, segmenter, mc).mean())

    # -- anchors and controls --------------------------------------------------------------------
    anchors, control_anchors = score_anchors(cfg, prompts, controls, size, classifier, validation, extractor, judge,
                                             real, codebook=codebook_round_trip(pipe))
    controls_report: dict[str, dict] = {}
    if "silhouette_iou" in control_anchors:
        target = np.stack([c.reference_mask for c in controls for _ in range(k)]) > 0
        value = float(silhouette_iou(garment_masks(fake, judge[1]), target).mean())
        a = control_anchors["silhouette_iou"]
        controls_report["silhouette_iou"] = {
            "value": value, **a, "fidelity": fidelity(value, a["floor"], a["ceiling"]),
            "what": "IoU of the segmenter's garment mask with the sketched garment's exact mask; ceiling: the "
                    "segmenter on the render the sketch was drawn from; floor: on a random garment",
            "sketch_style": cfg.sketch_style}
    if "kept_region_psnr" in control_anchors:
        refs = np.stack([c.reference for c in controls for _ in range(k)])
        keep = np.stack([c.keep_mask for c in controls for _ in range(k)])
        controls_report["kept_region_psnr"] = {
            "value": summarise_psnr(kept_region_psnr(_hwc(fake_u8), refs, keep)),
            "model_only": summarise_psnr(kept_region_psnr(_hwc(to_uint8(torch.cat(uncomposited))), refs, keep)),
            **control_anchors["kept_region_psnr"],
            "what": "PSNR (dB) inside the keep-mask between the output and the partial image; model_only: the "
                    "model's own decoding before the pipeline pasted the region back; floor: a random garment",
            "keep_fraction": float(keep.mean())}

    maskclip_value = maskclip if isinstance(maskclip, float) else None
    return {
        "checkpoint": cfg.checkpoint or "shipped (checkpoints/armani)",
        "pipeline": type(pipe).__name__,
        "sampler_precision": precision,
        "task": cfg.task,
        "prompts": cfg.prompts or f"procedural {cfg.split} (seed {cfg.seed})",
        "fid": fid,
        "is": {"mean": is_mean, "std": is_std},
        "feature_extractor": extractor.name if extractor is not None else "unavailable (no Inception weights, "
                                                                            "no attribute classifier)",
        "clip_score": clip,
        "maskclip_score": maskclip,
        "maskclip_judge": judge[3] if judge is not None else None,
        "part_accuracy": part_accuracy,
        "attributes": attributes,
        "trusted_attributes": [k for k, v in attributes.items() if v["trusted"]],
        "category_misses": misses,
        "count_accuracy_when_requested": count_when_requested,
        "anchors": anchors,
        "fidelity": {
            "part_accuracy": fidelity(part_accuracy, anchors["floor"].get("part_accuracy"),
                                      anchors["ceiling"].get("part_accuracy")),
            "maskclip_score": fidelity(maskclip_value, anchors["floor"].get("maskclip_score"),
                                       anchors["ceiling"].get("maskclip_score")),
            "what": "(x - floor) / (ceiling - floor): 0 = no better than a random garment, 1 = a real render"},
        "controls": controls_report,
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


def _real_set(prompts: list[dict], cfg: EvalConfig, size: int) -> list[np.ndarray]:
    """``samples_per_prompt`` renders of every prompt's attributes: the real set FID compares with."""
    from armani.evaluation.prompts import render_reference

    return [render_reference(p["attributes"], size, np.random.default_rng([cfg.seed, i, 2, j]))
            for i, p in enumerate(prompts) for j in range(cfg.samples_per_prompt)]


def anchors_report(cfg: EvalConfig, pipe=None) -> dict:
    """Only the anchors of ``cfg``'s prompts, scored as :func:`evaluate` scores them but
    without generating: ``{"anchors", "controls", "fidelity"}`` in the layout of its report
    (``fidelity`` of ``report``'s values when one is given). For reports made before anchors
    existed. ``pipe`` (default: ``cfg.checkpoint``) gives the image size and the MaskCLIP judge."""
    from armani.evaluation.metrics import choose_extractors
    from armani.loading import load_pipeline

    _task_setup(cfg)
    classifier, validation, _ = _load_classifier(cfg.classifier)
    if pipe is None:
        pipe = load_pipeline(cfg.checkpoint)
    prompts, size, control_kwargs = _task_setup(cfg, pipe)
    controls = _controls(prompts, cfg, size, control_kwargs)
    anchors, control_anchors = score_anchors(cfg, prompts, controls, size, classifier, validation,
                                             choose_extractors(classifier, cfg.inception), _judge(cfg, pipe),
                                             codebook=codebook_round_trip(pipe))
    return {"anchors": anchors, "controls": control_anchors}


def add_anchors(report: dict, extra: dict) -> dict:
    """Merge :func:`anchors_report`'s output into an older ``report`` (in place) and compute
    its ``fidelity``; the report's own measured values are not touched."""
    from armani.evaluation.anchors import fidelity

    report["anchors"] = extra["anchors"]
    floor, top = extra["anchors"]["floor"], extra["anchors"]["ceiling"]
    mc = report.get("maskclip_score")
    report["fidelity"] = {
        "part_accuracy": fidelity(report.get("part_accuracy"), floor.get("part_accuracy"), top.get("part_accuracy")),
        "maskclip_score": fidelity(mc if isinstance(mc, float) else None, floor.get("maskclip_score"),
                                   top.get("maskclip_score")),
        "what": "(x - floor) / (ceiling - floor): 0 = no better than a random garment, 1 = a real render"}
    controls = report.setdefault("controls", {})
    for key, anchors in extra["controls"].items():
        controls.setdefault(key, {}).update(anchors)
    return report


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _anchored(report: dict, key: str, value) -> str:
    """``value`` with the floor and ceiling of ``key`` beside it, when the report has them."""
    anchors = report.get("anchors") or {}
    floor, top = (anchors.get(a, {}).get(key) for a in ("floor", "ceiling"))
    if floor is None and top is None:
        return _fmt(value)
    text = f"{_fmt(value)}  (floor {_fmt(floor)}, ceiling {_fmt(top)}"
    if key in anchors.get("codebook", {}):
        text += f", codebook {_fmt(anchors['codebook'][key])}"
    fid = (report.get("fidelity") or {}).get(key)
    return text + (f"; fidelity {fid:.2f})" if isinstance(fid, float) else ")")


def _misses(misses: dict[str, int], most: int = 4) -> str:
    """``{"sweater -> t-shirt": 9, ...}`` -> ``"sweater -> t-shirt 9, ... (+2 more)"``; "none" when empty."""
    if not misses:
        return "none"
    shown = ", ".join(f"{pair} {n}" for pair, n in list(misses.items())[:most])
    return shown + (f" (+{len(misses) - most} more)" if len(misses) > most else "")


def format_table(report: dict) -> str:
    """The report as a two-column (metric, value) text table, then one row per attribute.
    Prompt-following figures carry their floor (a random real garment) and ceiling (a real
    render of the prompt) beside them."""
    rows = [
        ("FID", _anchored(report, "fid", report["fid"])),
        ("IS (mean +- std)", f"{_fmt(report['is']['mean'])} +- {_fmt(report['is']['std'])}"),
        ("feature extractor", report["feature_extractor"]),
        ("CLIPScore", _fmt(report["clip_score"])),
        ("MaskCLIP score", _anchored(report, "maskclip_score", report["maskclip_score"])),
        ("part accuracy (trusted)", _anchored(report, "part_accuracy", report["part_accuracy"])),
    ]
    controls = report.get("controls") or {}
    if "silhouette_iou" in controls:
        c = controls["silhouette_iou"]
        rows.append((f"silhouette IoU ({c['sketch_style']} sketch)",
                     f"{_fmt(c['value'])}  (floor {_fmt(c['floor'])}, ceiling {_fmt(c['ceiling'])})"))
    if "kept_region_psnr" in controls:
        c = controls["kept_region_psnr"]
        psnr = lambda d: ("exact" if d["exact"] == 1 else _fmt(d["mean_db"]))  # noqa: E731
        rows.append(("kept-region PSNR dB", f"{psnr(c['value'])}  (model alone {psnr(c['model_only'])}, "
                                            f"floor {psnr(c['floor'])})"))
    rows += [("seconds per image", _fmt(report["seconds_per_image"])),
             ("images", str(report["counts"]["generated_images"]))]
    for part, acc in report["count_accuracy_when_requested"].items():
        rows.append((f"{part} count (prompts with {part}s)", _fmt(acc)))
    anchors = report.get("anchors") or {}
    if report.get("category_misses") is not None:
        rows.append(("category misses", _misses(report["category_misses"])))
        if "category_misses" in anchors.get("ceiling", {}):
            rows.append(("  same, real renders", _misses(anchors["ceiling"]["category_misses"])))
    for key, v in report["attributes"].items():
        trust = "trusted" if v["trusted"] else "not trusted"
        floor, top = (anchors.get(a, {}).get("attributes", {}).get(key) for a in ("floor", "ceiling"))
        rows.append((f"acc {key}", f"{v['accuracy']:.3f}  (floor {_fmt(floor)}, ceiling {_fmt(top)}; "
                                   f"classifier on real: {_fmt(v['classifier_real_accuracy'])}, {trust})"))
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
    p.add_argument("--task", default="text", choices=("text", "text+sketch", "text+partial", "sketch", "partial"),
                   help="what the pipeline is given: the prompt's text, a sketch and/or a partial image of a render "
                        "of its attributes ('sketch' / 'partial': the control alone, no text)")
    p.add_argument("--sketch-style", default="canny", choices=("canny", "drawn"),
                   help="canny: edges of the render (as in training); drawn: hand-drawn-style strokes "
                        "(thicker, wobbly, unclosed) of its outline")
    p.add_argument("--samples-per-prompt", type=int, default=2)
    p.add_argument("--num-prompts", type=int, default=50, help="procedural prompts (without --prompts)")
    p.add_argument("--split", default="val", choices=("val", "heldout"))
    p.add_argument("--classifier", help=f"attribute classifier folder (default {default_classifier_dir()})")
    p.add_argument("--judge", help="pipeline whose segmenter + MaskCLIP compute the MaskCLIP score "
                                   "(default: the evaluated one, else the shipped one)")
    p.add_argument("--inception", default="auto", choices=("auto", "on", "off"),
                   help="Inception-v3 for FID/IS: auto = when its weights are in the local torch hub cache")
    p.add_argument("--clip-weights", help="open_clip .safetensors for CLIPScore (or $ARMANI_OPENCLIP_WEIGHTS)")
    p.add_argument("--clip-model", help="open_clip architecture of --clip-weights (default ViT-B-32)")
    p.add_argument("--out", default="outputs/eval/report.json", help="where to write the JSON report")
    p.add_argument("--figure", help="also write a bar chart of per-attribute accuracy here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler-precision", default="stored", choices=SAMPLER_PRECISION_CHOICES,
                   help="stored: the checkpoint's own (the default, as the published figures); native: the faster "
                        "one on this CPU (float32 where bf16 is emulated); samples in another precision differ by "
                        "rounding, which moves a 100-image FID by about as much as another seed does")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = EvalConfig(checkpoint=args.checkpoint, prompts=args.prompts, task=args.task,
                     samples_per_prompt=args.samples_per_prompt, num_prompts=args.num_prompts, split=args.split,
                     classifier=args.classifier, judge=args.judge, inception=args.inception,
                     clip_weights=args.clip_weights, clip_model=args.clip_model, seed=args.seed,
                     progress=not args.no_progress, sketch_style=args.sketch_style,
                     sampler_precision=args.sampler_precision)
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


__all__ = [
    "EvalConfig",
    "add_anchors",
    "anchors_report",
    "evaluate",
    "format_table",
    "main",
    "parse_args",
    "plot_attribute_accuracy",
    "score_anchors",
]


if __name__ == "__main__":
    sys.exit(main())

"""Codebook report: health and reconstruction quality of several image codebooks, side by side.

    python -m armani.evaluation.codebook_report                     # the shipped codebooks found in checkpoints/
    python -m armani.evaluation.codebook_report --checkpoint armani=runs/default \\
        --checkpoint dalle=runs/default-dalle --checkpoint m6=runs/default-m6 \\
        --num 1000 --out codebook.json --figure codebook.png --words-table words.md

Each ``--checkpoint NAME=DIR`` names a saved pipeline folder (``pipeline.json``) or a
training run directory (``RUN/vqgan/final``; a run that trained only its codebook is
enough). On ``--num`` procedural validation garments it measures, per codebook:

- **health**: codebook usage (fraction of codes used at least once), perplexity and dead
  codes (:func:`armani.evaluation.codebook_health.codebook_stats`). A product-quantised codebook
  (M6-style, G sub-codebooks of K entries) is reported per group and overall, where
  "overall" treats the G x K entries as one codebook (group g's id k counts as entry
  g * K + k);
- **reconstruction**: PSNR and SSIM (torchmetrics, images in [0, 1], data range 1). PSNR
  is computed per image and averaged, so a perfect reconstruction gives ``inf``;
- **parts that survive**: one *judge* segmenter (``--segmenter``, else the first
  checkpoint's) labels every reconstruction; against the ground-truth mask it gives the
  pixel accuracy per part (recall of that part's pixels: "are the buttons still there?")
  and its IoU. The same judge on the original images is the ceiling, printed beside;
- **attributes that survive**: the project's attribute classifier (``--classifier``, default
  ``checkpoints/attribute_classifier`` when present) reads every reconstruction; per
  attribute (category, colour, pattern, sleeve, each part, counts, pocket side) the share of
  reconstructions it reads as the original's true attribute. On the originals the same
  classifier gives the ceiling ("does the codebook keep the colour?");
- **words per code** (cross-modal codebooks only): which caption words Eq. 9 fused into
  each code (:func:`armani.evaluation.codebook_health.words_per_code`), e.g. ``code 417 <- button``.

Encoding follows :meth:`armani.pipeline.ArmaniPipeline.encode_image` (the codebook's own
segmenter and MaskCLIP choose each cell's word from the image's caption), but also keeps
the chosen word of every cell; a codebook without fusion ignores the caption.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from armani.evaluation.codebook_health import (
    CodebookStats,
    WordsTable,
    codebook_stats,
    codes_per_word,
    format_codes_per_word,
    format_words_table,
    plot_codebook_health,
    token_words,
    words_per_code,
)
from armani.loading import component_path
from armani.models.cross_modal_encoding import encode_cross_modal
from armani.models.maskclip import MaskCLIP
from armani.models.segmenter import Segmenter
from armani.models.vqgan import VQGAN
from armani.parts import NUM_PARTS, PART_NAMES, PART_WORDS
from armani.pipeline_protocol import checkpoints_dir
from armani.text import GarmentTokenizer

# What the command evaluates when no --checkpoint is given: whichever of these exist in
# checkpoints/. no_sem2 is left out: it shares checkpoints/armani's codebook.
SHIPPED_NAMES = ("armani", "dalle", "m6", "no_fusion", "no_sem1")
# The attributes the table prints (the JSON has every key of evaluation.attributes.compare).
TABLE_ATTRIBUTES = ("category", "color", "pattern", "sleeve")


# -- loading ---------------------------------------------------------------------------------
@dataclass
class Codebook:
    """An image codebook and what encoding with it needs (fusion: segmenter + MaskCLIP + tokenizer)."""

    name: str
    vqgan: VQGAN
    tokenizer: GarmentTokenizer | None = None
    segmenter: Segmenter | None = None
    maskclip: MaskCLIP | None = None
    source: str = ""

    def __post_init__(self):
        for module in (self.vqgan, self.segmenter, self.maskclip):
            if module is not None:
                module.eval().requires_grad_(False)
        if self.fused and (self.segmenter is None or self.maskclip is None or self.tokenizer is None):
            raise ValueError(f"codebook {self.name!r} is cross-modal: it needs its segmenter, MaskCLIP and tokenizer")

    @property
    def fused(self) -> bool:
        return bool(self.vqgan.config.fusion)

    @property
    def kind(self) -> str:
        if self.vqgan.num_groups > 1:
            return "product-quantised"
        return "cross-modal" if self.fused else "visual-only"


def load_codebook(path: str | Path, name: str | None = None) -> Codebook:
    """A saved pipeline folder or a training run directory -> :class:`Codebook`.

    Only the codebook (``vqgan``) is required; the segmenter, MaskCLIP and tokenizer are
    loaded where present (a cross-modal codebook fails without them).
    """
    path = Path(path)
    if not (path / "pipeline.json").is_file() and not (path / "vqgan" / "final" / "DONE").is_file():
        raise FileNotFoundError(
            f"{path} is neither a saved pipeline (pipeline.json) nor a training run with a finished "
            "codebook (vqgan/final/DONE)"
        )

    def part(component: str) -> Path | None:  # its own folder, one shared with a sibling, or RUN/<c>/final
        return component_path(path, component)

    vqgan_dir, seg_dir, clip_dir = part("vqgan"), part("segmenter"), part("maskclip")
    if vqgan_dir is None:
        raise FileNotFoundError(f"{path} has no image codebook (vqgan)")
    tok_dir = path / "tokenizer"
    return Codebook(
        name=name or path.name,
        vqgan=VQGAN.from_pretrained(vqgan_dir),
        tokenizer=GarmentTokenizer.from_pretrained(tok_dir) if tok_dir.is_dir() else None,
        segmenter=Segmenter.from_pretrained(seg_dir) if seg_dir else None,
        maskclip=MaskCLIP.from_pretrained(clip_dir) if clip_dir else None,
        source=str(path),
    )


# -- data ------------------------------------------------------------------------------------
@dataclass
class ValidationSet:
    images: torch.Tensor  # (B, 3, S, S) float32 in [-1, 1]
    masks: torch.Tensor  # (B, S, S) int64 ground-truth part labels
    captions: list[str]
    attributes: list[dict] = field(default_factory=list)  # the attribute record of each garment

    def __len__(self) -> int:
        return len(self.captions)


def validation_set(num: int, size: int, seed: int = 1234) -> ValidationSet:
    """``num`` procedural garments of the ``val`` split (never seen in training)."""
    from armani.data.synthetic import generate_dataset

    ds = generate_dataset(num, size=size, seed=seed, split="val", progress=False)
    images = torch.from_numpy(np.stack([np.asarray(im) for im in ds["image"]])).permute(0, 3, 1, 2)
    masks = torch.from_numpy(np.stack([np.asarray(m) for m in ds["mask"]]).astype(np.int64))
    return ValidationSet(images.float() / 127.5 - 1.0, masks, list(ds["caption"]),
                         [json.loads(a) for a in ds["attributes"]])


def attributes_read(classifier, images: torch.Tensor, targets: list[dict]) -> dict[str, float]:
    """Per attribute, the share of ``images`` the classifier reads as their ``targets``."""
    from armani.evaluation.attributes import attribute_accuracy

    return attribute_accuracy(classifier.predict(images), targets)


# -- measuring -------------------------------------------------------------------------------
@torch.no_grad()
def encode_with_words(codebook: Codebook, images: torch.Tensor, captions: list[str]):
    """``ArmaniPipeline.encode_image`` that also returns the fused word of each cell.

    Returns ``ids`` (B, N) or (B, N, G), and for a cross-modal codebook ``word_index``
    (B, N) (token position into the caption's ids, -1 = no word) with the tokenized
    captions; ``(ids, None, None)`` otherwise.
    """
    if not codebook.fused:
        return codebook.vqgan.encode(images), None, None
    tokens = codebook.tokenizer(captions, warn=False)
    ids, index = encode_cross_modal(codebook.vqgan, images, tokens.ids, segmenter=codebook.segmenter,
                                    maskclip=codebook.maskclip)
    return ids, index, tokens


class PartSurvival:
    """Per-part pixel recall and IoU of a segmenter's labels against ground truth, accumulated
    over batches (torchmetrics); parts absent from the ground truth are left out."""

    def __init__(self):
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex, MulticlassRecall

        self.recall = MulticlassRecall(num_classes=NUM_PARTS, average="none")
        self.iou = MulticlassJaccardIndex(num_classes=NUM_PARTS, average="none")
        self.accuracy = MulticlassAccuracy(num_classes=NUM_PARTS, average="micro")
        self.pixels = torch.zeros(NUM_PARTS, dtype=torch.long)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B, H, W) int64 part labels."""
        self.recall.update(pred, target)
        self.iou.update(pred, target)
        self.accuracy.update(pred, target)
        self.pixels += torch.bincount(target.reshape(-1), minlength=NUM_PARTS)

    def compute(self) -> dict:
        recall, iou = self.recall.compute(), self.iou.compute()
        present = [k for k in range(NUM_PARTS) if self.pixels[k] > 0]
        per_part = {PART_NAMES[k]: {"accuracy": float(recall[k]), "iou": float(iou[k]), "pixels": int(self.pixels[k])}
                    for k in present}
        parts = [p for p in per_part if p != "background"]
        return {
            "pixel_accuracy": float(self.accuracy.compute()),
            "mean_part_accuracy": float(np.mean([per_part[p]["accuracy"] for p in parts])) if parts else math.nan,
            "mean_iou": float(np.mean([v["iou"] for v in per_part.values()])),
            "per_part": per_part,
        }


def reconstruction_metrics(original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, float]:
    """PSNR (per image, averaged) and SSIM of (B, 3, H, W) images in [-1, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a, b = (reconstruction.clamp(-1, 1) + 1) / 2, (original.clamp(-1, 1) + 1) / 2
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, dim=(1, 2, 3), reduction="none")  # (B,)
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")  # (B,)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


def health(ids: torch.Tensor, codebook_size: int) -> tuple[dict, CodebookStats]:
    """Usage / perplexity / dead codes overall and per group; ids (B, N) or (B, N, G)."""
    groups = 1 if ids.ndim == 2 else ids.shape[-1]
    per_group = ids.reshape(ids.shape[0], ids.shape[1], groups)  # (B, N, G)
    offset = per_group + torch.arange(groups) * codebook_size  # group g's code k -> g * K + k
    overall = codebook_stats(offset, groups * codebook_size)

    def summary(s: CodebookStats) -> dict:
        return {"usage": s.usage_fraction, "used": s.used, "dead": s.dead, "perplexity": s.perplexity}

    out = {"codebook_size": codebook_size, "num_groups": groups, **summary(overall)}
    out["per_group"] = [summary(codebook_stats(per_group[..., g], codebook_size)) for g in range(groups)]
    return out, overall


@dataclass
class CodebookResult:
    name: str
    kind: str
    metrics: dict  # everything that goes to JSON
    stats: CodebookStats  # overall code counts (for the histogram)
    words: WordsTable | None  # cross-modal codebooks only
    examples: torch.Tensor  # (num_examples, 3, S, S) reconstructions in [-1, 1]
    ids: torch.Tensor = field(repr=False, default=None)  # (num, N[, G])


@torch.no_grad()
def evaluate_one(codebook: Codebook, data: ValidationSet, judge: Segmenter | None, batch_size: int = 64,
                 num_examples: int = 6, top_words: int = 3, classifier=None) -> CodebookResult:
    """Every metric of one codebook on ``data`` (``classifier``: an attribute classifier that
    reads the reconstructions; needs ``data.attributes``)."""
    if classifier is not None and len(data.attributes) != len(data):
        raise ValueError("reading attributes needs the attribute record of every validation garment")
    vq = codebook.vqgan
    if data.images.shape[-1] != vq.config.image_size:
        raise ValueError(f"codebook {codebook.name!r} works at {vq.config.image_size} px, the data is "
                         f"{data.images.shape[-1]} px")
    survival = PartSurvival() if judge is not None else None
    ids_all, index_all, psnr_sum, ssim_sum, examples = [], [], 0.0, 0.0, []
    words: list[list[str | None]] = []
    read: list[dict] = []  # the classifier's attribute records of the reconstructions
    for start in tqdm(range(0, len(data), batch_size), desc=f"{codebook.name}: encode/decode", leave=False):
        images = data.images[start : start + batch_size]
        ids, index, tokens = encode_with_words(codebook, images, data.captions[start : start + batch_size])
        recon = vq.decode(ids).clamp(-1, 1)  # (b, 3, S, S)
        m = reconstruction_metrics(images, recon)
        psnr_sum += m["psnr"] * len(images)
        ssim_sum += m["ssim"] * len(images)
        ids_all.append(ids)
        if index is not None:
            index_all.append(index)
            words += token_words(tokens.word_ids, tokens.words)
        if survival is not None:
            survival.update(judge.predict(recon), data.masks[start : start + batch_size])
        if classifier is not None:
            read += classifier.predict(recon)
        if len(examples) < num_examples:
            examples += list(recon[: num_examples - len(examples)])
    ids = torch.cat(ids_all)
    codes, stats = health(ids, vq.codebook_size)
    metrics = {"kind": codebook.kind, "source": codebook.source, "codebook": codes,
               "psnr": psnr_sum / len(data), "ssim": ssim_sum / len(data)}
    if survival is not None:
        metrics["segmenter_on_reconstructions"] = survival.compute()
    if classifier is not None:
        from armani.evaluation.attributes import attribute_accuracy

        metrics["classifier_on_reconstructions"] = attribute_accuracy(read, data.attributes)
    table = None
    if index_all:
        index = torch.cat(index_all)  # (num, N)
        groups = codes["num_groups"]
        flat = (ids.reshape(len(ids), -1, groups) + torch.arange(groups) * vq.codebook_size).reshape(len(ids), -1)
        cell_words = index.repeat_interleave(groups, dim=1)  # each group's id keeps its cell's word
        table = words_per_code(flat, cell_words, words, top=top_words)
        metrics["words_per_code"] = {str(code): [[w, c] for w, c in row] for code, row in table.items()}
        metrics["codes_with_words"] = len(table)
        # and per part word: which codes it lands in ("do the buttons get codes of their own?")
        metrics["codes_per_part_word"] = {
            w: {"cells": n, "codes": [[code, count] for code, count in top]}
            for w, (n, top) in codes_per_word(flat, cell_words, words, vocabulary=PART_WORDS).items()}
    return CodebookResult(codebook.name, codebook.kind, metrics, stats, table, torch.stack(examples), ids)


@dataclass
class CodebookReport:
    num_images: int
    image_size: int
    seed: int
    judge: str | None  # where the judge segmenter came from
    originals: dict | None  # the judge on the original images (the ceiling)
    results: list[CodebookResult]
    classifier: str | None = None  # where the attribute classifier came from
    classifier_originals: dict | None = None  # its readings of the originals (the ceiling)
    data: ValidationSet = field(repr=False, default=None)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return json_safe({
            "num_images": self.num_images, "image_size": self.image_size, "seed": self.seed,
            "judge_segmenter": self.judge, "segmenter_on_originals": self.originals,
            "classifier": self.classifier, "classifier_on_originals": self.classifier_originals,
            "codebooks": {r.name: r.metrics for r in self.results}, "seconds": round(self.seconds, 1),
        })


def codebook_report(codebooks: list[Codebook], num: int = 1000, seed: int = 1234, judge: Segmenter | None = None,
                    judge_source: str | None = None, batch_size: int = 64, num_examples: int = 6,
                    classifier=None, classifier_source: str | None = None) -> CodebookReport:
    """Evaluate every codebook on the same ``num`` validation garments.

    ``judge``: the segmenter that labels reconstructions; default the first codebook's
    segmenter that exists (one judge for all, so the columns compare codebooks, not judges).
    ``classifier``: an :class:`armani.evaluation.attributes.AttributeClassifier` that reads
    the attributes of every reconstruction and of the originals; None skips that part.
    """
    if not codebooks:
        raise ValueError("give at least one codebook")
    names = [c.name for c in codebooks]
    if len(set(names)) != len(names):
        raise ValueError(f"codebook names must differ, got {names}")
    sizes = {c.vqgan.config.image_size for c in codebooks}
    if len(sizes) != 1:
        raise ValueError(f"codebooks work at different image sizes {sorted(sizes)}; compare them in separate reports")
    if judge is None:
        owner = next((c for c in codebooks if c.segmenter is not None), None)
        if owner is not None:
            judge, judge_source = owner.segmenter, f"{owner.name} ({owner.source})"
    if judge is not None:
        judge.eval().requires_grad_(False)
    t0 = time.perf_counter()
    data = validation_set(num, sizes.pop(), seed)
    originals = None
    if judge is not None:
        survival = PartSurvival()
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                survival.update(judge.predict(data.images[start : start + batch_size]),
                                data.masks[start : start + batch_size])
        originals = survival.compute()
    read_originals = None
    if classifier is not None:
        read_originals = attributes_read(classifier, data.images, data.attributes)
    results = [evaluate_one(c, data, judge, batch_size, num_examples, classifier=classifier) for c in codebooks]
    return CodebookReport(len(data), data.images.shape[-1], seed, judge_source, originals, results,
                          classifier=classifier_source if classifier is not None else None,
                          classifier_originals=read_originals, data=data, seconds=time.perf_counter() - t0)


# -- presenting ------------------------------------------------------------------------------
def json_safe(x):
    """JSON has no inf/nan: write them as the strings "inf", "-inf", "nan"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _num(x: float, digits: int = 2) -> str:
    return "inf" if x == math.inf else ("n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}")


def format_table(report: CodebookReport) -> str:
    """One Markdown table: a column per codebook (plus the judge on the originals), a row per metric."""
    results = report.results
    with_originals = report.originals is not None or report.classifier_originals is not None
    header = ["metric"] + [f"{r.name} ({r.kind})" for r in results] + (["originals"] if with_originals else [])
    rows: list[list[str]] = []

    def row(label: str, cells: list[str], original: str = "") -> None:
        rows.append([label] + cells + ([original] if with_originals else []))

    cb = [r.metrics["codebook"] for r in results]
    row("codes", [f"{c['num_groups']} x {c['codebook_size']}" if c["num_groups"] > 1 else str(c["codebook_size"])
                  for c in cb])
    row("codebook usage %", [f"{100 * c['usage']:.1f}" for c in cb])
    if any(c["num_groups"] > 1 for c in cb):
        row("usage % per group", [" / ".join(f"{100 * g['usage']:.0f}" for g in c["per_group"]) for c in cb])
    row("perplexity", [f"{c['perplexity']:.1f}" for c in cb])
    if any(c["num_groups"] > 1 for c in cb):
        row("perplexity per group", [" / ".join(f"{g['perplexity']:.0f}" for g in c["per_group"]) for c in cb])
    row("dead codes", [str(c["dead"]) for c in cb])
    row("PSNR (dB)", [_num(r.metrics["psnr"]) for r in results])
    row("SSIM", [_num(r.metrics["ssim"], 3) for r in results])
    read = report.classifier_originals
    if read:
        cls = [r.metrics["classifier_on_reconstructions"] for r in results]
        for key in TABLE_ATTRIBUTES:
            row(f"classifier reads the true {key}", [_num(c[key], 3) for c in cls], _num(read[key], 3))
        row("classifier: mean over all attributes", [_num(float(np.mean(list(c.values()))), 3) for c in cls],
            _num(float(np.mean(list(read.values()))), 3))
    ref = report.originals
    if ref:
        seg = [r.metrics["segmenter_on_reconstructions"] for r in results]
        row("seg. pixel accuracy", [_num(s["pixel_accuracy"], 3) for s in seg], _num(ref["pixel_accuracy"], 3))
        row("seg. mean part accuracy", [_num(s["mean_part_accuracy"], 3) for s in seg],
            _num(ref["mean_part_accuracy"], 3))
        row("seg. mean IoU", [_num(s["mean_iou"], 3) for s in seg], _num(ref["mean_iou"], 3))
        for part in ref["per_part"]:
            if part == "background":
                continue
            cells = []
            for s in seg:
                p = s["per_part"].get(part)
                cells.append(f"{_num(p['accuracy'], 2)} / {_num(p['iou'], 2)}" if p else "n/a")
            o = ref["per_part"][part]
            row(f"{part}: accuracy / IoU", cells, f"{_num(o['accuracy'], 2)} / {_num(o['iou'], 2)}")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def format_words(report: CodebookReport, max_rows: int | None = 50) -> str:
    """Markdown words-per-code tables of the cross-modal codebooks ("" if there is none)."""
    parts = []
    for r in report.results:
        if r.words is not None:
            parts.append(f"### {r.name}: words fused into each code (most used codes first)\n\n"
                         + format_words_table(r.words, r.stats, max_rows=max_rows))
            per_word = r.metrics.get("codes_per_part_word")
            if per_word:
                table = {w: (v["cells"], [tuple(x) for x in v["codes"]]) for w, v in per_word.items()}
                parts.append(f"### {r.name}: part words and the codes they were fused into\n\n"
                             + format_codes_per_word(table))
    return "\n\n".join(parts)


def plot_report(report: CodebookReport, num_examples: int = 6):
    """One row per codebook: its sorted code-usage histogram, then reconstructions of the same
    validation garments (shown in the top row). Returns a ``matplotlib.figure.Figure``."""
    from matplotlib.figure import Figure

    from armani.alignment import to_display

    n = min(num_examples, len(report.data), *(len(r.examples) for r in report.results))
    rows, cols = 1 + len(report.results), 1 + n
    fig = Figure(figsize=(2.0 * n + 3.5, 2.0 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, cols, width_ratios=[3.5 / 2.0] + [1.0] * n)
    ax = fig.add_subplot(grid[0, 0])
    ax.axis("off")
    ax.text(0.0, 0.5, f"{report.num_images} validation garments\n({report.image_size} px)\ntop: originals",
            va="center", fontsize=9)
    for j in range(n):
        ax = fig.add_subplot(grid[0, 1 + j])
        ax.imshow(to_display(report.data.images[j]))
        ax.set_axis_off()
    for i, r in enumerate(report.results, start=1):
        ax = fig.add_subplot(grid[i, 0])
        counts = r.stats.counts.sort(descending=True).values.numpy()
        ax.bar(range(len(counts)), counts, width=1.0, color="tab:blue")
        ax.set_yscale("symlog")
        ax.set_title(f"{r.name}: ppl {r.stats.perplexity:.0f}/{len(counts)}, used {100 * r.stats.usage_fraction:.0f}%",
                     fontsize=8)
        ax.tick_params(labelsize=6)
        for j in range(n):
            ax = fig.add_subplot(grid[i, 1 + j])
            ax.imshow(to_display(r.examples[j]))
            m = reconstruction_metrics(report.data.images[j : j + 1], r.examples[j : j + 1])
            ax.set_title(f"{_num(m['psnr'], 1)} dB", fontsize=7)
            ax.set_axis_off()
    return fig


def save_figures(report: CodebookReport, path: str | Path) -> list[Path]:
    """``path``: :func:`plot_report`; ``<stem>-<name><suffix>``: the health figure with words of
    each cross-modal codebook (:func:`armani.evaluation.codebook_health.plot_codebook_health`)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_report(report).savefig(path, dpi=110)
    written = [path]
    for r in report.results:
        if r.words is not None:
            fig = plot_codebook_health(r.stats, r.words)
            target = path.with_name(f"{path.stem}-{r.name}{path.suffix}")
            fig.savefig(target, dpi=110)
            plt.close(fig)
            written.append(target)
    return written


# -- command line ----------------------------------------------------------------------------
def parse_checkpoints(items: list[str] | None) -> dict[str, Path]:
    """``["armani=runs/default", "runs/m6"]`` -> {name: dir}; none given -> the shipped ones present."""
    if not items:
        shipped = {name: checkpoints_dir() / name for name in SHIPPED_NAMES}
        found = {name: path for name, path in shipped.items() if path.is_dir()}
        if not found:
            raise FileNotFoundError(
                "no --checkpoint given and no shipped codebook in checkpoints/ (armani, dalle, m6); "
                "pass --checkpoint NAME=DIR with a saved pipeline or a training run"
            )
        return found
    out: dict[str, Path] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        name, folder = (name, folder) if sep else (Path(item).name, item)
        if name in out:
            raise ValueError(f"two checkpoints named {name!r}; name them NAME=DIR")
        out[name] = Path(folder)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m armani.evaluation.codebook_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", metavar="NAME=DIR",
                    help="a saved pipeline or training run (repeatable; default: the shipped codebooks: "
                         + ", ".join(f"checkpoints/{n}" for n in SHIPPED_NAMES) + ")")
    ap.add_argument("--num", type=int, default=1000, help="validation garments")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--segmenter", default=None,
                    help="judge segmenter: a segmenter folder, pipeline or run (default: the first checkpoint's)")
    ap.add_argument("--classifier", default=None,
                    help="attribute classifier that reads the reconstructions (default: "
                         "checkpoints/attribute_classifier when present)")
    ap.add_argument("--no-classifier", action="store_true", help="skip the attribute readings")
    ap.add_argument("--out", default=None, help="write the JSON report here")
    ap.add_argument("--figure", default=None, help="usage histograms + reconstructions (and words figures)")
    ap.add_argument("--words-table", default=None, help="write the words-per-code Markdown tables here")
    args = ap.parse_args(argv)

    codebooks = [load_codebook(folder, name) for name, folder in parse_checkpoints(args.checkpoint).items()]
    judge = judge_source = None
    if args.segmenter:
        judge, judge_source = _load_segmenter(Path(args.segmenter)), args.segmenter
    classifier, classifier_source = _load_classifier(args.classifier, args.no_classifier)
    report = codebook_report(codebooks, args.num, args.seed, judge, judge_source, args.batch_size,
                             classifier=classifier, classifier_source=classifier_source)
    print(f"Codebooks on {report.num_images} procedural validation garments ({report.image_size} px); "
          f"segmenter judge: {report.judge or 'none'}; attribute classifier: {report.classifier or 'none'}\n")
    print(format_table(report))
    words = format_words(report)
    if words:
        print("\n" + format_words(report, max_rows=15))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report.to_json(), indent=2))
        print(f"\nwrote {args.out}")
    if args.words_table:
        Path(args.words_table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.words_table).write_text((words or "No cross-modal codebook was evaluated.") + "\n")
        print(f"wrote {args.words_table}")
    if args.figure:
        for path in save_figures(report, args.figure):
            print(f"wrote {path}")
    return 0


def _load_classifier(path: str | None, skip: bool):
    """(classifier, where from) or (None, None), found the way ``python -m armani.evaluate`` finds it:
    ``--classifier`` must hold one; without it the shipped one is used when present."""
    if skip:
        return None, None
    from armani.evaluation.attributes import load_classifier

    classifier, _, folder = load_classifier(path)
    if classifier is None:
        return None, None
    try:
        shown = str(Path(folder).resolve().relative_to(checkpoints_dir().parent))
    except ValueError:
        shown = folder
    return classifier, shown


def _load_segmenter(path: Path) -> Segmenter:
    for folder in (path, path / "segmenter", path / "segmenter" / "final"):
        if (folder / "config.json").is_file():
            return Segmenter.from_pretrained(folder)
    raise FileNotFoundError(f"no segmenter in {path} (looked for config.json in ., segmenter/, segmenter/final/)")


__all__ = [
    "Codebook", "CodebookReport", "CodebookResult", "PartSurvival", "SHIPPED_NAMES", "ValidationSet", "attributes_read",
    "codebook_report", "encode_with_words", "evaluate_one", "format_table", "format_words", "health", "json_safe",
    "load_codebook", "main", "parse_checkpoints", "plot_report", "reconstruction_metrics", "save_figures",
    "validation_set",
]


if __name__ == "__main__":
    raise SystemExit(main())

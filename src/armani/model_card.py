"""Model cards for assembled checkpoints, written from what a training run recorded.

Every stage exports ``training_report.json`` (steps, samples, seconds, throughput,
precision, final validation metrics); the card collects them with the config, so the
card states what was measured, not what was hoped.
"""

from __future__ import annotations

import json
from pathlib import Path

from armani.config import ArmaniConfig, load_config

STAGE_TITLES = {
    "segmenter": "segmenter (mask prediction network M)",
    "maskclip": "MaskCLIP (Sec. 3.2)",
    "vqgan": "image codebook (Sec. 3.3)",
    "sketch_tokenizer": "sketch codebook",
    "partial_tokenizer": "partial-image codebook",
    "transformer": "cross-modal transformer (Sec. 3.4)",
    "diffusion": "diffusion baseline UNet",
    "attribute_classifier": "attribute classifier (evaluation)",
}

KEY_METRICS = {
    "segmenter": ("mean_iou", "iou/button", "iou/pocket"),
    "maskclip": ("pointing_accuracy", "pointing_chance", "recall/text_to_image@1", "recall/image_to_text@1"),
    "vqgan": ("psnr", "l1", "codebook_usage", "perplexity", "dead_codes"),
    "sketch_tokenizer": ("psnr", "edge_precision", "edge_recall", "edge_f1", "drawn_edge_recall", "codebook_usage",
                         "perplexity"),
    "partial_tokenizer": ("psnr", "codebook_usage", "perplexity"),
    "transformer": ("ce", "accuracy", "ce_gain"),
    "diffusion": ("loss",),
}


def stage_reports(run_dir: Path) -> dict[str, dict]:
    found = {p.parent.parent.name: p for p in Path(run_dir).glob("*/final/training_report.json")}
    order = list(STAGE_TITLES) + sorted(set(found) - set(STAGE_TITLES))
    return {s: json.loads(found[s].read_text()) for s in order if s in found}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def reproduce_lines(cfg: ArmaniConfig, reports: dict[str, dict]) -> list[str]:
    """The commands that really made this run (from the stage reports), in stage order, with
    the stages reused or warm-started from an earlier checkpoint called out."""
    default = (f"accelerate launch src/armani/train.py --config {cfg.name.split('-')[0]} --stage all "
               f"--output runs/{cfg.name}")
    commands: list[str] = []
    notes: list[str] = []
    for stage, rep in reports.items():
        cmd = rep.get("command")
        if cmd:
            cmd = cmd.replace(str(Path.cwd()) + "/", "")
            cmd = cmd if cmd.startswith(("accelerate", "python")) else f"python {cmd}"
            if cmd not in commands:
                commands.append(cmd)
        if rep.get("note"):
            notes.append(f"- {STAGE_TITLES.get(stage, stage)}: {rep['note']}.")
        if rep.get("init_from"):
            notes.append(f"- {STAGE_TITLES.get(stage, stage)}: warm-started from `{rep['init_from']}` "
                         "(the weights there when it was trained; see the git history of that folder).")
    lines = ["```bash", *(commands or [default]), "python -m armani.assemble --run runs/<run> --out checkpoints/<name>",
             "```"]
    if notes:
        lines += ["", "Not every stage was trained from scratch by these commands:", "", *notes]
    if commands:
        lines += ["", f"From scratch, the same budgets: `{default}`."]
    return lines


# The stages a diffusion-baseline checkpoint is made of: its UNet and the MaskCLIP whose text
# tower it reads (a run that trained it may have reused other stages it does not use).
DIFFUSION_STAGES = ("maskclip", "diffusion")


def model_card(run_dir: Path, name: str, description: str, extra: str = "") -> str:
    """The card of a pipeline assembled from ``run_dir``; for a diffusion-only run (a
    ``diffusion`` stage, no transformer) only the stages that checkpoint is made of."""
    run_dir = Path(run_dir)
    cfg: ArmaniConfig = load_config(str(run_dir / "config.yaml"))
    reports = stage_reports(run_dir)
    diffusion = "diffusion" in reports and "transformer" not in reports
    if diffusion:
        reports = {k: v for k, v in reports.items() if k in DIFFUSION_STAGES}
    lines = [
        f"# {name}",
        "",
        description,
        "",
        "## Data",
        "",
        f"Procedural garments (`armani.data.synthetic`), {cfg.data.num_train:,} training images at "
        f"{cfg.data.image_size} px, seed {cfg.data.seed}; validation: {cfg.data.num_val:,} images of the "
        f"`val` split. "
        + ("The held-out attribute combinations (t-shirt + zipper, dress + hood, checked trousers, pink "
           "coat) never appear in training." if cfg.data.heldout else "No combinations were held out.")
        if cfg.data.source == "procedural" else f"Source: `{cfg.data.source}`.",
        "",
        "## Training (measured on the machine that trained it)",
        "",
        "| stage | steps | batch | samples | time | samples/s | precision | validation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for stage, rep in reports.items():
        if stage == "diffusion":  # its budget may come from the preset, not cfg.train
            from armani.baselines.diffusion import diffusion_optim_for

            optim = diffusion_optim_for(cfg)
        else:
            optim = getattr(cfg.train, stage, None)
        batch = getattr(optim, "batch_size", "")
        metrics = rep.get("metrics", {})
        shown = ", ".join(f"{k}={_fmt(metrics[k])}" for k in KEY_METRICS.get(stage, ()) if k in metrics)
        total += rep["train_seconds"]
        lines.append(
            f"| {STAGE_TITLES.get(stage, stage)} | {rep['steps']} | {batch} | {rep['samples_seen']:,} | "
            f"{rep['train_seconds'] / 60:.1f} min | {rep['samples_per_second']} | {rep['mixed_precision']} on "
            f"{rep['device']} x{rep['num_processes']} | {shown} |"
        )
    perceptual = ("" if diffusion else
                  f" Perceptual loss of the image codebook: `{cfg.vqgan.perceptual}`"
                  + (" (distances between the frozen, trained segmenter's feature maps: no VGG/LPIPS weights "
                     "were available offline)" if cfg.vqgan.perceptual == "segmenter" else "") + ".")
    lines += [
        "",
        f"Total training time: {total / 60:.0f} min.{perceptual}",
        "",
        "## Reproduce",
        "",
        *reproduce_lines(cfg, reports),
        "",
        "## Config",
        "",
        _diffusion_sizes(cfg) if diffusion else
        "The full resolved config is `run_config.yaml` beside this card. Key sizes: "
        f"image codebook {cfg.vqgan.codebook_size} codes x {cfg.vqgan.code_dim} dims "
        f"({cfg.vqgan.quantizer}, fusion={'on' if cfg.vqgan.fusion else 'off'}, "
        f"semantic loss={'on' if cfg.vqgan.semantic_loss else 'off'}), transformer {cfg.transformer.layers} "
        f"layers x {cfg.transformer.width} wide ({'causal' if cfg.transformer.causal else 'bidirectional'}, "
        f"semantic loss={'on' if cfg.transformer.semantic_loss else 'off'}), MaskCLIP vision "
        f"{cfg.maskclip.vision_layers}x{cfg.maskclip.vision_width}, text {cfg.maskclip.text_layers}x"
        f"{cfg.maskclip.text_width}.",
    ]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def _diffusion_sizes(cfg: ArmaniConfig) -> str:
    from armani.baselines.diffusion import diffusion_config_for

    d = diffusion_config_for(cfg)
    attention = [f"{d.image_size // 2 ** i}x{d.image_size // 2 ** i}" for i, on in enumerate(d.attention_levels) if on]
    return ("The full resolved config is `run_config.yaml` beside this card, the UNet's own in "
            f"`diffusion_config.json`. Key sizes: pixel-space UNet at {d.image_size} px, channels "
            f"{'/'.join(map(str, d.block_out_channels))}, {d.layers_per_block} layer(s) per block, "
            f"cross-attention at {', '.join(attention) or 'no level'}, {d.num_train_timesteps}-step "
            f"{d.beta_schedule} schedule ({d.prediction_type}); the text tower of MaskCLIP "
            f"({cfg.maskclip.text_layers}x{cfg.maskclip.text_width}), frozen.")

"""ARMANI's config tree and its three presets: ``tiny`` (CI minutes), ``default`` (the
shipped checkpoint, trainable on a 2-core CPU) and ``paper`` (the paper's sizes, for GPUs).

Every model keeps its own ``XConfig`` dataclass beside its code; this module only
composes them, adds data and optimisation settings, and keeps the fields that must agree
across models in sync (:meth:`ArmaniConfig.resolved`): the MaskCLIP grid is the stage-1
token grid, the transformer's vocabularies are the tokenizers' codebooks, and the text
ids come from the tokenizer. Derived fields are always overwritten from their source.

Load one with :func:`load_config`: a preset name or a YAML file (which may start from a
preset with ``preset: default``), then ``section.key=value`` overrides. Unknown keys fail.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from armani.configuration import ConfigError, load_yaml, merge, parse_overrides, to_dict
from armani.models.maskclip import MaskCLIPConfig
from armani.models.refiner import RefinerConfig, tiny_refiner_config
from armani.models.segmenter import SegmenterConfig
from armani.models.transformer import TransformerConfig
from armani.models.vqgan import VQGANConfig


@dataclass
class OptimConfig:
    """Optimisation and loop settings of one stage."""

    batch_size: int = 32  # per process
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    max_steps: int = 1000  # optimiser steps (after gradient accumulation)
    # A wall-clock budget for the stage's loop in minutes (0: none). After its first 25 steps
    # the trainer times them and lowers max_steps to what fits, stretching the learning-rate
    # schedule to the new length, and lowers it again if later steps get slower; max_steps
    # stays the upper bound. For a fixed slot on a machine whose speed is not known in advance.
    max_minutes: float = 0.0
    grad_accum: int = 1
    grad_clip: float = 1.0
    log_every: int = 10
    eval_every: int = 500  # 0 = only at the end
    checkpoint_every: int = 200  # 0 = only at the end
    keep_checkpoints: int = 2
    num_workers: int = 0  # DataLoader workers per process
    # Warm start: a folder with the stage's ``model.safetensors`` (an exported ``RUN/<stage>/final``
    # or a saved pipeline's component, e.g. ``checkpoints/armani/transformer``) whose weights
    # initialise the trained model before step 0; optimiser and schedule start fresh. Lets a
    # later session train the shipped model further. The shapes must match exactly. A training
    # checkpoint (``RUN/<stage>/checkpoints/step_N``) loads every model of the stage, so a codebook
    # continues with its trained discriminator instead of a fresh one.
    init_from: str | None = None
    # False: load only the tensors whose names and shapes match (a baseline sharing ARMANI's
    # encoder and decoder but not its quantiser); the skipped ones are printed and recorded.
    init_strict: bool = True
    # Submodules that keep their (warm-started) weights: "model.submodule" names within the
    # stage's trained models, e.g. ``vqgan.encoder,vqgan.quantizer`` to train only the image
    # codebook's decoder, so the token ids stage 2 was trained on stay exactly the same. They get
    # no gradients and stay in eval mode (an EMA codebook neither moves nor restarts dead codes).
    freeze: tuple[str, ...] = ()
    # Procedural rows this stage trains on (None: ``data.num_train``). Rows are drawn row by row
    # from their own seeds, so the first ``data.num_train`` are the same rows. Lets stage 2 read
    # more rows than the stage-1 models it builds on were trained with, without changing their
    # inputs (``--reuse`` still finds them identical).
    num_train: int | None = None
    # Procedural only: train on rows ``first_row`` .. N-1 (N: ``num_train`` or ``data.num_train``)
    # instead of 0 .. N-1. A continued stage 2 then reads only garments its earlier runs never saw
    # and tokenizes only them, instead of every row from 0 again. The stage-1 inputs do not change.
    first_row: int = 0


@dataclass
class DataConfig:
    """Where training data comes from and how samples are prepared."""

    source: str = "procedural"  # "procedural", a hub id, a local imagefolder/saved dataset/parquet
    image_size: int = 64
    num_train: int = 20_000  # procedural only
    num_val: int = 1_000
    num_heldout: int = 500
    seed: int = 0
    cache_dir: str = "data"  # procedural datasets are generated here once and reused
    heldout: bool = True  # keep the held-out attribute combinations out of training
    train_split: str = "train"  # for real data sources
    val_split: str | None = "validation"
    image_column: str = "image"
    caption_column: str = "caption"
    mask_column: str | None = "mask"  # real data: absent from the source = no masks (predicted)
    attributes_column: str | None = "attributes"  # real data: per-row attribute records, if any
    # Real data (armani.data.prepare): the source's mask labels -> our 15 parts (a preset such as
    # deepfashion_multimodal, a JSON file or "label:part,..."; see armani.data.label_maps).
    label_map: str | None = None
    # The segmenter that predicts missing masks: "shipped" (checkpoints/armani/segmenter), a
    # segmenter folder, a saved pipeline or a training run.
    mask_segmenter: str = "shipped"
    # A saved tokenizer (folder, run or pipeline) to use instead of building one from the
    # captions: fine-tuning a checkpoint needs its vocabulary.
    tokenizer: str | None = None
    context_length: int = 48  # procedural captions: 99th percentile 41 tokens, max 46
    vocab: Literal["compact", "full"] = "compact"  # see armani.text
    sketch_low: int = 100
    sketch_high: int = 200
    keep_fraction: float = 0.25


@dataclass
class TrainConfig:
    """Run-wide settings, plus one OptimConfig per stage."""

    seed: int = 0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    tracker: Literal["tensorboard", "none"] = "tensorboard"
    audit: bool = False  # write per-rank parameter digests and seen rows (checks DDP sharding)
    # Stage 2's semantic loss decodes predicted code distributions through the decoder,
    # segmenter and MaskCLIP; on a CPU that costs more than the transformer step, so it is
    # applied to this many samples of each batch (all of them when 0).
    semantic_samples: int = 4
    # Budgets of the shipped default run on a 2-core CPU (bf16): see the model cards.
    segmenter: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, max_steps=1200, batch_size=32))
    maskclip: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, max_steps=1200, batch_size=48))
    vqgan: OptimConfig = field(default_factory=lambda: OptimConfig(lr=4e-4, max_steps=1800, batch_size=16))
    sketch_tokenizer: OptimConfig = field(default_factory=lambda: OptimConfig(lr=4e-4, max_steps=600, batch_size=32))
    partial_tokenizer: OptimConfig = field(default_factory=lambda: OptimConfig(lr=4e-4, max_steps=600, batch_size=32))
    transformer: OptimConfig = field(default_factory=lambda: OptimConfig(lr=8e-4, max_steps=1400, batch_size=16))
    # The evaluation judge (--stage attribute_classifier, not part of --stage all).
    attribute_classifier: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=2e-3, batch_size=64, warmup_steps=50, max_steps=1500, eval_every=500, checkpoint_every=250))
    # The detail refiner (--stage refiner, after the image codebook; not part of --stage all).
    refiner: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=4e-4, batch_size=32, warmup_steps=50, max_steps=1000, log_every=10, eval_every=250, checkpoint_every=100))


def _sketch_tokenizer(image_size: int, base: int, mult: tuple[int, ...], codes: int) -> VQGANConfig:
    return VQGANConfig(
        image_size=image_size, in_channels=1, out_channels=1, base_channels=base, channel_mult=mult,
        codebook_size=codes, code_dim=32, fusion=False, semantic_loss=False, perceptual="none",
        lambda_vq=1.0, lambda_semantic=0.0,
    )


def _partial_tokenizer(image_size: int, base: int, mult: tuple[int, ...], codes: int) -> VQGANConfig:
    return VQGANConfig(
        image_size=image_size, in_channels=4, out_channels=3, base_channels=base, channel_mult=mult,
        codebook_size=codes, code_dim=32, fusion=False, semantic_loss=False, perceptual="none",
        lambda_vq=1.0, lambda_semantic=0.0,
    )


@dataclass
class ArmaniConfig:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    maskclip: MaskCLIPConfig = field(default_factory=MaskCLIPConfig)
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    sketch_tokenizer: VQGANConfig = field(default_factory=lambda: _sketch_tokenizer(64, 32, (1, 2, 2, 2), 256))
    partial_tokenizer: VQGANConfig = field(default_factory=lambda: _partial_tokenizer(64, 32, (1, 2, 2, 2), 256))
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def resolved(self, tokenizer=None) -> "ArmaniConfig":
        """A copy whose cross-model fields agree (see the module docstring)."""
        size = self.data.image_size
        vq = dataclasses.replace(self.vqgan, image_size=size, fusion_dim=self.maskclip.embed_dim)
        sk = dataclasses.replace(self.sketch_tokenizer, image_size=size)
        pa = dataclasses.replace(self.partial_tokenizer, image_size=size)
        grid = size // 2 ** (len(vq.channel_mult) - 1)
        mc = dataclasses.replace(self.maskclip, image_size=size, grid=grid, context_length=self.data.context_length)
        tr_updates = dict(
            text_len=self.data.context_length,
            image_codebook_size=vq.codebook_size,  # per sub-codebook with product quantisation
            image_len=grid * grid,
            pq_groups=vq.pq_groups if vq.quantizer == "pq" else 1,
            sketch_codebook_size=sk.codebook_size,
            sketch_len=(size // 2 ** (len(sk.channel_mult) - 1)) ** 2,
            partial_codebook_size=pa.codebook_size,
            partial_len=(size // 2 ** (len(pa.channel_mult) - 1)) ** 2,
        )
        if tokenizer is not None:
            mc = dataclasses.replace(
                mc, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id,
                sot_id=tokenizer.sot_id, eot_id=tokenizer.eot_id,
            )
            tr_updates.update(
                text_vocab_size=tokenizer.vocab_size, text_pad_id=tokenizer.pad_id,
                text_sot_id=tokenizer.sot_id, text_eot_id=tokenizer.eot_id,
            )
        tr = dataclasses.replace(self.transformer, **tr_updates)
        rf = dataclasses.replace(self.refiner, image_size=size)
        return dataclasses.replace(self, vqgan=vq, sketch_tokenizer=sk, partial_tokenizer=pa, maskclip=mc,
                                   transformer=tr, refiner=rf)


def _optim(**kw) -> OptimConfig:
    return OptimConfig(**kw)


def tiny() -> ArmaniConfig:
    """Seconds-per-stage sizes for tests and CI: 32 px images, an 8x8 token grid."""
    fast = dict(batch_size=8, warmup_steps=2, max_steps=6, log_every=2, eval_every=0, checkpoint_every=3)
    return ArmaniConfig(
        name="tiny",
        data=DataConfig(image_size=32, num_train=96, num_val=16, num_heldout=8),
        segmenter=SegmenterConfig(base_channels=8, channel_mults=(1, 2), groups=4),
        maskclip=MaskCLIPConfig(vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                                text_layers=1, text_heads=2, embed_dim=32),
        vqgan=VQGANConfig(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attention=False,
                          code_dim=16, codebook_size=64, gan_start_step=3, disc_channels=8, disc_layers=2,
                          kmeans_init=False),
        sketch_tokenizer=dataclasses.replace(_sketch_tokenizer(32, 8, (1, 2, 2, 2), 32), kmeans_init=False,
                                             attention=False, disc_channels=8, disc_layers=2),
        partial_tokenizer=dataclasses.replace(_partial_tokenizer(32, 8, (1, 2, 2, 2), 32), kmeans_init=False,
                                              attention=False, disc_channels=8, disc_layers=2),
        transformer=TransformerConfig(width=32, layers=1, heads=2, semantic_loss=True),
        refiner=tiny_refiner_config(32),
        train=TrainConfig(
            mixed_precision="no", tracker="none",
            segmenter=_optim(lr=3e-3, **fast), maskclip=_optim(lr=1e-3, **fast), vqgan=_optim(lr=1e-3, **fast),
            sketch_tokenizer=_optim(lr=1e-3, **fast), partial_tokenizer=_optim(lr=1e-3, **fast),
            transformer=_optim(lr=1e-3, **fast), attribute_classifier=_optim(lr=3e-3, **fast),
            refiner=_optim(lr=1e-3, **fast),
        ),
    )


def default() -> ArmaniConfig:
    """The shipped checkpoint: 64 px, 16x16 image tokens (256, as in the paper)."""
    return ArmaniConfig(
        name="default",
        data=DataConfig(image_size=64),
        segmenter=SegmenterConfig(base_channels=24, channel_mults=(1, 2, 4), groups=8),
        # Patch-only image tokens and context-free words: see MaskCLIPConfig.
        maskclip=MaskCLIPConfig(vision_width=128, vision_layers=4, vision_heads=4, text_width=128,
                                text_layers=4, text_heads=4, embed_dim=128, attention_radius=0,
                                text_attention_radius=0),
        vqgan=VQGANConfig(base_channels=48, channel_mult=(1, 2, 2), num_res_blocks=1, code_dim=64,
                          codebook_size=512, gan_start_step=1200),
        # No dropout: one CPU session sees ~1 epoch, far from overfitting. The semantic loss
        # joins for the last quarter (see TransformerConfig.semantic_start_step).
        transformer=TransformerConfig(width=256, layers=4, heads=8, dropout=0.0, semantic_loss=True,
                                      semantic_start_step=1050),
    )


def paper() -> ArmaniConfig:
    """The paper's sizes (Sec. 4): 256 px, 16x16 codes, codebook 1024, CLIP-sized MaskCLIP
    (text 12 layers / 8 heads / 512 wide, ViT-B/16 image side), GPT2-medium-like stage 2
    (16 heads, 1024 wide, 16 blocks), lr 6e-6 (stage 1) and 8e-4 (stage 2). For GPUs."""
    return ArmaniConfig(
        name="paper",
        data=DataConfig(image_size=256, num_train=500_000, context_length=77, vocab="full"),
        segmenter=SegmenterConfig(base_channels=64, channel_mults=(1, 2, 4, 8), groups=32),
        maskclip=MaskCLIPConfig(vision_width=768, vision_layers=12, vision_heads=12, text_width=512,
                                text_layers=12, text_heads=8, embed_dim=512),
        vqgan=VQGANConfig(base_channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, code_dim=256,
                          codebook_size=1024, gan_start_step=30_000),
        sketch_tokenizer=_sketch_tokenizer(256, 64, (1, 1, 2, 2, 4), 512),
        partial_tokenizer=_partial_tokenizer(256, 64, (1, 1, 2, 2, 4), 1024),
        transformer=TransformerConfig(width=1024, layers=16, heads=16, dropout=0.1, semantic_loss=True),
        train=TrainConfig(
            mixed_precision="auto",
            vqgan=OptimConfig(lr=6e-6, batch_size=8, max_steps=200_000, checkpoint_every=2000, eval_every=5000),
            transformer=OptimConfig(lr=8e-4, batch_size=16, max_steps=300_000, checkpoint_every=2000,
                                    eval_every=5000),
        ),
    )


PRESETS = {"tiny": tiny, "default": default, "paper": paper}

# The baselines and ablations of the paper's Tables 1 and 2 are switches on the same code.
VARIANTS: dict[str, dict] = {
    "armani": {},
    # DALL-E-style: visual-only codebook, no semantic losses, same transformer (Table 1).
    "dalle": {"vqgan": {"fusion": False, "semantic_loss": False}, "transformer": {"semantic_loss": False}},
    # Table 2 ablations.
    "no_fusion": {"vqgan": {"fusion": False}},
    "no_sem1": {"vqgan": {"semantic_loss": False}},
    "no_sem2": {"transformer": {"semantic_loss": False}},
    # M6-Fashion-style: product quantisation (4 x 256) + bidirectional mask-predict transformer.
    "m6": {"vqgan": {"fusion": False, "semantic_loss": False, "quantizer": "pq", "pq_groups": 4,
                     "codebook_size": 256},
           "transformer": {"causal": False, "semantic_loss": False}},
    # Analysis row (not in the paper): ARMANI with the M6 row's bidirectional mask-predict
    # transformer, everything else ARMANI's; separates "direction of generation" from
    # "codebook" in the M6 row's lead in Table 1 (research/README.md).
    "armani_nar": {"transformer": {"causal": False}},
}

# Opt-in recipe for the sketch codebook (issue 14): edge loss (class-balanced BCE + Dice on
# edge logits) instead of L1, which decodes a blank page, and 30% hand-drawn-style training
# sketches so drawings on the canvas are coded too. Not a variant (it composes with any):
#   python src/armani/train.py --config default --stage all --output runs/X \
#       sketch_tokenizer.recon_loss=edges sketch_tokenizer.drawn_sketch_prob=0.3
# It changes only the sketch_tokenizer stage's fingerprint (every other stage can be reused).
SKETCH_EDGES_OVERRIDES: list[str] = ["sketch_tokenizer.recon_loss=edges", "sketch_tokenizer.drawn_sketch_prob=0.3"]

# Which config sections each stage's result depends on (its own and its inputs').
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "segmenter": ("data", "segmenter", "train.segmenter"),
    "maskclip": ("data", "maskclip", "train.maskclip"),
    "sketch_tokenizer": ("data", "sketch_tokenizer", "train.sketch_tokenizer"),
    "partial_tokenizer": ("data", "partial_tokenizer", "train.partial_tokenizer"),
    "vqgan": ("data", "segmenter", "train.segmenter", "maskclip", "train.maskclip", "vqgan", "train.vqgan"),
}


def load_config(name_or_path: str = "default", overrides: list[str] | dict | None = None,
                variant: str = "armani") -> ArmaniConfig:
    """A preset name or a YAML path, then a :data:`VARIANTS` entry, then overrides
    (``["vqgan.fusion=off", ...]`` or a dict)."""
    if name_or_path in PRESETS:
        cfg = PRESETS[name_or_path]()
    elif Path(name_or_path).is_file():
        data = load_yaml(name_or_path)
        base = data.pop("preset", "default")
        if base not in PRESETS:
            raise ConfigError(f"{name_or_path}: unknown preset {base!r}; choose from {sorted(PRESETS)}")
        cfg = merge(PRESETS[base](), data)
    else:
        raise ConfigError(f"--config {name_or_path!r} is neither a preset {sorted(PRESETS)} nor a YAML file")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    if VARIANTS[variant]:
        cfg = merge(cfg, VARIANTS[variant])
        cfg = dataclasses.replace(cfg, name=f"{cfg.name}-{variant}")
    if overrides:
        cfg = merge(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    return cfg


def stage_fingerprint(cfg: ArmaniConfig, stage: str) -> dict | None:
    """The config sections a stage's result depends on (None: depends on everything)."""
    if stage not in STAGE_INPUTS:
        return None
    out = {}
    for key in STAGE_INPUTS[stage]:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[key] = to_dict(node)
    out["seed"] = cfg.train.seed
    return out


def save_config(cfg: ArmaniConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

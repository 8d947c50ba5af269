"""The attribute classifier stage (evaluation judge): ``--stage attribute_classifier``.

Not part of ``--stage all``: it trains the classifier of :mod:`armani.evaluation.attributes`
on the procedural training split (the ``attributes`` JSON column) and validates it on the
procedural ``val`` split, i.e. on real renders, never on generated images. The final
per-attribute validation accuracy is exported beside the weights (``validation.json``);
``python -m armani.evaluate`` trusts an attribute's verdicts only where it is >= 95%.

Settings: ``cfg.train.attribute_classifier`` (override e.g. ``train.attribute_classifier.max_steps=4000``), else
:func:`default_optim` (sized by preset name: a few steps for ``tiny``). The classifier's
image size is the run's ``data.image_size``; its other sizes come from
:class:`AttributeStageDefaults`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch.utils.data import Dataset

from armani.evaluation.attributes import (
    ATTRIBUTE_KEYS,
    AttributeClassifier,
    AttributeClassifierConfig,
    attribute_accuracy,
    decode_attributes,
    degrade,
    encode_attributes,
)
from armani.training.engine import ForwardAs, OptimConfig, Stage, StepOutput, register_stage


@dataclass
class AttributeStageDefaults:
    """Defaults used when the run config has no ``train.attribute_classifier`` section."""

    classifier: AttributeClassifierConfig = field(default_factory=AttributeClassifierConfig)
    tiny_classifier: AttributeClassifierConfig = field(
        default_factory=lambda: AttributeClassifierConfig(base_channels=8, channel_mults=(1, 2), groups=4,
                                                          pool=2, feature_dim=32))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=2e-3, batch_size=64, warmup_steps=50, max_steps=1500, eval_every=500, checkpoint_every=250))
    tiny_optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=3e-3, batch_size=8, warmup_steps=2, max_steps=6, log_every=2, eval_every=0, checkpoint_every=3))


DEFAULTS = AttributeStageDefaults()


def default_optim(cfg) -> OptimConfig:
    return DEFAULTS.tiny_optim if getattr(cfg, "name", "") == "tiny" else DEFAULTS.optim


def classifier_config(cfg) -> AttributeClassifierConfig:
    """The classifier's sizes for a run: the run's image size, tiny widths for ``tiny``."""
    from dataclasses import replace

    base = getattr(cfg, "attribute_classifier", None)
    if base is None:
        base = DEFAULTS.tiny_classifier if getattr(cfg, "name", "") == "tiny" else DEFAULTS.classifier
    return replace(base, image_size=int(cfg.data.image_size))


class AttributeImageDataset(Dataset):
    """Rows of a procedural dataset -> ``{"image": (3, S, S), <targets>, "index"}``.

    ``augment`` applies :func:`armani.evaluation.attributes.degrade` with the generator
    ``(seed, epoch, index)``, so an item is the same in any worker or resumed run.
    """

    def __init__(self, hf_dataset, image_size: int, seed: int = 0, augment: bool = False):
        import datasets

        missing = {"image", "attributes"} - set(hf_dataset.column_names)
        if missing:
            raise ValueError(
                f"the attribute classifier needs the procedural dataset's 'image' and 'attributes' columns; "
                f"this one lacks {sorted(missing)} (it has {hf_dataset.column_names}). Use data.source=procedural."
            )
        ds = hf_dataset.select_columns(["image", "attributes"]).with_format(None)
        if isinstance(ds.features["image"], datasets.Image):
            ds = ds.cast_column("image", datasets.Image(decode=False))
        self.dataset = ds
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        from armani.data.images import fit_image, load_image
        from armani.data.transforms import image_tensor

        row = self.dataset[int(index)]
        cell = row["image"]
        pil = load_image(cell["bytes"] if isinstance(cell, dict) and cell.get("bytes") else cell.get("path"))
        if pil.size != (self.image_size, self.image_size):
            pil = fit_image(pil, self.image_size)
        image = np.asarray(pil)  # (S, S, 3) uint8
        if self.augment:
            image = degrade(image, np.random.default_rng((self.seed, self.epoch, int(index))))
        record = row["attributes"]
        targets = encode_attributes(json.loads(record) if isinstance(record, str) else record)
        return {"image": image_tensor(image), **targets, "index": torch.tensor(int(index), dtype=torch.int64)}


@register_stage
class AttributeClassifierStage(Stage):
    name = "attribute_classifier"

    @property
    def optim(self) -> OptimConfig:
        return getattr(self.cfg.train, self.name, None) or default_optim(self.cfg)

    @cached_property
    def classifier_config(self) -> AttributeClassifierConfig:
        return classifier_config(self.cfg)

    def _split(self, split: str):
        from armani.training.data import load_split

        if self.cfg.data.source != "procedural":
            raise ValueError(
                f"the attribute classifier trains on the procedural dataset (exact attribute records); "
                f"data.source is {self.cfg.data.source!r}"
            )
        return load_split(self.cfg.data, split, self.accelerator)

    def build_models(self):
        return {"classifier": ForwardAs(AttributeClassifier(self.classifier_config), "loss")}

    def train_dataset(self):
        return AttributeImageDataset(self._split("train"), self.cfg.data.image_size, seed=self.cfg.train.seed,
                                     augment=True)

    def val_dataset(self):
        # Real renders, not augmented: the accuracy the evaluator's trust threshold reads.
        return AttributeImageDataset(self._split("val"), self.cfg.data.image_size, augment=False)

    def training_step(self, batch, step):
        targets = {k: v for k, v in batch.items() if k not in ("image", "index")}
        parts = self.models["classifier"](batch["image"], targets)
        self.optimize(parts.loss)
        return StepOutput(parts.loss.item(), parts.scalars())

    @torch.no_grad()
    def evaluate(self, loader):
        model = self.unwrap("classifier")
        acc = self.accelerator
        answers: dict[str, list[torch.Tensor]] = {}
        truths: dict[str, list[torch.Tensor]] = {}
        for batch in loader:
            pred = model.head_answers(model(batch["image"]))
            pred["parts"] = pred["parts"].long()
            for key, value in acc.gather_for_metrics(pred).items():
                answers.setdefault(key, []).append(value.cpu())
            truth = {k: batch[k] for k in pred}
            for key, value in acc.gather_for_metrics(truth).items():
                truths.setdefault(key, []).append(value.cpu())
        pred_records = decode_attributes({k: torch.cat(v) for k, v in answers.items()})
        true_records = decode_attributes({k: torch.cat(v) for k, v in truths.items()})
        accuracy = attribute_accuracy(pred_records, true_records)
        self.last_validation = {"split": "val", "num_images": len(pred_records), "accuracy": accuracy,
                                "min_accuracy": min(accuracy.values()),
                                "below_95": [k for k in ATTRIBUTE_KEYS if accuracy[k] < 0.95]}
        return {"min_acc": self.last_validation["min_accuracy"], **{f"acc/{k}": v for k, v in accuracy.items()}}

    def export(self, out_dir):
        self.unwrap("classifier").save_pretrained(out_dir, validation=getattr(self, "last_validation", None))

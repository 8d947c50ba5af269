"""What every garment stage shares: the run's data, tokenizer and config bookkeeping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F

from armani.parts import NUM_PARTS
from armani.training.data import load_split, procedural_split, run_tokenizer, torch_dataset
from armani.training.engine import OptimConfig, Stage

# Fractions of a diffusion schedule at which a denoiser's validation loss is measured.
EVAL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


class GarmentStage(Stage):
    """A stage trained on the run's garment data (``cfg.data``)."""

    eval_batches = 8  # validation batches of a denoiser's fixed-noise evaluation

    def step_generator(self, step: int) -> torch.Generator:
        """The random draws of one training step (noise, timesteps, drops, flips): a function of
        (seed, step, rank), so a resumed run draws what the uninterrupted one did."""
        seed = (self.cfg.train.seed * 1_000_003 + step) * 64 + self.accelerator.process_index
        return torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def fixed_noise_losses(self, loader, num_train_timesteps: int,
                           losses_at: Callable[[dict, torch.Generator, list[int]], list[torch.Tensor]]
                           ) -> dict[str, float]:
        """A denoiser's mean validation loss at fixed timesteps (``EVAL_FRACTIONS`` of the
        schedule) with fixed noise, comparable across steps and runs, on up to ``eval_batches``
        batches. ``losses_at(batch, generator, timesteps)`` returns one (B,) per-sample loss per
        timestep, drawing its noise from ``generator``."""
        acc = self.accelerator
        ts = [min(num_train_timesteps - 1, int(f * num_train_timesteps)) for f in EVAL_FRACTIONS]
        sums = torch.zeros(len(ts), device=acc.device)
        count = torch.zeros((), device=acc.device)
        for i, batch in enumerate(loader):
            if i >= self.eval_batches:
                break
            gen = torch.Generator().manual_seed(10_000 + i * 64 + acc.process_index)
            with acc.autocast():
                per_t = losses_at(batch, gen, ts)
            for k, losses in enumerate(per_t):
                sums[k] += losses.sum()
            count += per_t[0].shape[0]
        sums, count = acc.reduce(sums, "sum"), acc.reduce(count, "sum")
        per_t = (sums / count.clamp(min=1)).tolist()
        metrics = {f"loss_t{t}": v for t, v in zip(ts, per_t)}
        metrics["loss"] = sum(per_t) / len(per_t)
        return metrics

    @property
    def optim(self) -> OptimConfig:
        return getattr(self.cfg.train, self.name)

    @cached_property
    def train_hf(self):
        data, rows, first = self.cfg.data, self.optim.num_train, int(self.optim.first_row)
        if rows is not None:
            if data.source != "procedural":
                raise ValueError(f"train.{self.name}.num_train sets how many procedural rows to draw; "
                                 f"data.source is {data.source!r}: leave it unset")
            if rows < 1:
                raise ValueError(f"train.{self.name}.num_train must be a positive number of rows, got {rows}")
            data = dataclasses.replace(data, num_train=int(rows))
        if first:
            if data.source != "procedural":
                raise ValueError(f"train.{self.name}.first_row picks procedural rows; data.source is "
                                 f"{data.source!r}: leave it at 0")
            if not 0 < first < data.num_train:
                raise ValueError(f"train.{self.name}.first_row must be below the {data.num_train:,} rows the stage "
                                 f"reads (train.{self.name}.num_train or data.num_train), got {first:,}")
            return procedural_split(data, "train", self.accelerator, first=first)
        return load_split(data, "train", self.accelerator)

    @cached_property
    def tokenizer(self):
        # built (if the run has none yet) from data.num_train's rows, whatever this stage reads
        own_rows = self.optim.num_train is not None
        return run_tokenizer(self.cfg.data, self.run_dir, None if own_rows else self.train_hf, self.accelerator)

    @cached_property
    def config(self):
        """The run config with cross-model fields synced to the tokenizer (see armani.config)."""
        return self.cfg.resolved(self.tokenizer)

    def train_dataset(self):
        return torch_dataset(self.cfg.data, self.train_hf, self.tokenizer, seed=self.cfg.train.seed)

    def val_dataset(self):
        val = load_split(self.cfg.data, "val", self.accelerator)
        return None if val is None else torch_dataset(self.cfg.data, val, self.tokenizer, seed=self.cfg.train.seed + 1)

    def collate_fn(self):
        from armani.data.transforms import collate

        return collate

    def export_common(self, out_dir: Path) -> None:
        """Every export carries the tokenizer and the resolved run config, so it loads alone."""
        from armani.config import save_config

        self.tokenizer.save_pretrained(out_dir)
        save_config(self.config, out_dir / "run_config.yaml")


def one_hot_parts(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) int64 part ids -> (B, 15, H, W) float one-hot (the 'soft' mask of ground truth)."""
    return F.one_hot(mask.long(), NUM_PARTS).permute(0, 3, 1, 2).float()


def part_probs_for(batch: dict, segmenter=None) -> torch.Tensor:
    """Ground-truth masks where the data has them, the segmenter's prediction elsewhere."""
    probs = one_hot_parts(batch["mask"])
    has = batch["has_mask"]
    if not bool(has.all()):
        if segmenter is None:
            raise ValueError("some samples have no part mask and no segmenter was given to predict them")
        with torch.no_grad():
            predicted = segmenter.probs(batch["image"])
        probs = torch.where(has[:, None, None, None], probs, predicted)
    return probs

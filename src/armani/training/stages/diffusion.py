"""Baseline stage ``diffusion``: a text-conditioned pixel-space UNet (``diffusers``) on the
run's garment data, conditioned on the frozen text tower of the run's trained MaskCLIP.

Not part of ``--stage all`` (ARMANI does not need it); train it after ``maskclip``::

    accelerate launch src/armani/train.py --config default --stage diffusion --output runs/default

The export ``RUN/diffusion/final`` is a complete :class:`DiffusionBaselinePipeline` folder
(``pipeline.json`` with ``"format": "armani-diffusion"``, the UNet and scheduler as diffusers
folders, the text tower and the tokenizer), so it loads alone.

Sizes and budget come from ``cfg.diffusion`` / ``cfg.train.diffusion`` when the config tree
has them, else from :func:`diffusion_config_for` / :func:`diffusion_optim_for`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from armani.baselines.diffusion import (
    DiffusionBaseline,
    DiffusionBaselineConfig,
    DiffusionBaselinePipeline,
    TextTower,
    diffusion_config_for,
    diffusion_optim_for,
)
from armani.models.maskclip import MaskCLIP
from armani.training.engine import OptimConfig, StepOutput, register_stage
from armani.training.stages.base import GarmentStage

# Fractions of the schedule at which the validation loss is measured (fixed noise, full text).
EVAL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


@register_stage
class DiffusionStage(GarmentStage):
    name = "diffusion"
    requires = ("maskclip",)
    eval_batches = 8

    @property
    def optim(self) -> OptimConfig:
        return diffusion_optim_for(self.cfg)

    @cached_property
    def text_tower(self) -> TextTower:
        tower = TextTower.from_maskclip(MaskCLIP.from_pretrained(self.artefact_dir("maskclip")))
        if tower.config.vocab_size != self.tokenizer.vocab_size:
            raise ValueError(f"the run's tokenizer ({self.tokenizer.vocab_size} ids) does not match its MaskCLIP "
                             f"({tower.config.vocab_size}); was maskclip trained in another run directory?")
        return tower

    @cached_property
    def model_config(self) -> DiffusionBaselineConfig:
        import dataclasses

        return dataclasses.replace(diffusion_config_for(self.cfg), cross_attention_dim=self.text_tower.width)

    def build_models(self):
        return {"diffusion": DiffusionBaseline(self.model_config)}

    def build_frozen(self):
        return {"text": self.text_tower}

    def on_prepared(self) -> None:
        self.empty_ids = self.tokenizer([""]).ids.to(self.accelerator.device)  # (1, L)

    def _generator(self, step: int) -> torch.Generator:
        """Noise, timesteps and caption drops of one step: a function of (seed, step, rank)."""
        seed = (self.cfg.train.seed * 1_000_003 + step) * 64 + self.accelerator.process_index
        return torch.Generator().manual_seed(seed)

    def training_step(self, batch, step):
        images, ids = batch["image"], batch["text_ids"]  # (B, 3, S, S), (B, L)
        B, device = images.shape[0], images.device
        c = self.model_config
        gen = self._generator(step)
        noise = torch.randn(images.shape, generator=gen).to(device)  # (B, 3, S, S)
        timesteps = torch.randint(0, c.num_train_timesteps, (B,), generator=gen).to(device)  # (B,)
        drop = (torch.rand(B, generator=gen) < c.text_drop).to(device)  # (B,)
        ids = torch.where(drop[:, None], self.empty_ids.expand(B, -1), ids)  # (B, L)
        with torch.no_grad():
            states, attend = self.frozen["text"](ids)  # (B, L, W), (B, L)
        out = self.models["diffusion"](images, states, attend, noise, timesteps)
        self.optimize(out.loss)
        return StepOutput(out.loss.item(), {"text_dropped": drop.float().mean().item()})

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        """Mean denoising loss at fixed timesteps with fixed noise (comparable across steps
        and runs), on up to ``eval_batches`` validation batches, captions kept."""
        acc, model, c = self.accelerator, self.unwrap("diffusion"), self.model_config
        ts = [min(c.num_train_timesteps - 1, int(f * c.num_train_timesteps)) for f in EVAL_FRACTIONS]
        sums = torch.zeros(len(ts), device=acc.device)
        count = torch.zeros((), device=acc.device)
        for i, batch in enumerate(loader):
            if i >= self.eval_batches:
                break
            images = batch["image"]
            gen = torch.Generator().manual_seed(10_000 + i * 64 + acc.process_index)
            noise = torch.randn(images.shape, generator=gen).to(images.device)
            with acc.autocast():
                states, attend = self.frozen["text"](batch["text_ids"])
                for k, t in enumerate(ts):
                    timesteps = torch.full((images.shape[0],), t, device=images.device, dtype=torch.long)
                    sums[k] += model(images, states, attend, noise, timesteps).per_sample.sum()
            count += images.shape[0]
        sums, count = acc.reduce(sums, "sum"), acc.reduce(count, "sum")
        per_t = (sums / count.clamp(min=1)).tolist()
        metrics = {f"loss_t{t}": v for t, v in zip(ts, per_t)}
        metrics["loss"] = sum(per_t) / len(per_t)
        return metrics

    def export(self, out_dir: Path) -> None:
        pipe = DiffusionBaselinePipeline(self.tokenizer, self.text_tower.cpu(), self.unwrap("diffusion").cpu())
        pipe.save_pretrained(out_dir)
        self.export_common(out_dir)

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


@register_stage
class DiffusionStage(GarmentStage):
    name = "diffusion"
    requires = ("maskclip",)

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

    def training_step(self, batch, step):
        images, ids = batch["image"], batch["text_ids"]  # (B, 3, S, S), (B, L)
        B, device = images.shape[0], images.device
        c = self.model_config
        gen = self.step_generator(step)
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
        model = self.unwrap("diffusion")

        def losses_at(batch, gen, ts):
            images = batch["image"]
            noise = torch.randn(images.shape, generator=gen).to(images.device)
            states, attend = self.frozen["text"](batch["text_ids"])
            return [model(images, states, attend, noise,
                          torch.full((images.shape[0],), t, device=images.device, dtype=torch.long)).per_sample
                    for t in ts]

        return self.fixed_noise_losses(loader, self.model_config.num_train_timesteps, losses_at)

    def export(self, out_dir: Path) -> None:
        pipe = DiffusionBaselinePipeline(self.tokenizer, self.text_tower.cpu(), self.unwrap("diffusion").cpu())
        pipe.save_pretrained(out_dir)
        self.export_common(out_dir)

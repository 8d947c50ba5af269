"""Stage ``refiner``: the detail refiner (:mod:`armani.models.refiner`) on the run's garment data.

Each training image goes through the run's image codebook (encoded, fused with its caption's
words, and decoded again: what stage 2's tokens decode to when every token is right), and the
refiner learns to draw the difference back. Not part of ``--stage all``; train it after the
image codebook::

    python src/armani/train.py --config default --stage refiner --output runs/refine --reuse checkpoints/armani

The export ``RUN/refiner/final`` is a :class:`DetailRefiner` folder; a pipeline uses it when
its folder has a ``refiner/`` component (``pipeline.json``'s ``"refiner"``).

The round trip runs under the step's bf16 autocast, where a few of the codebook's nearest-code
choices differ from a float32 encoding (research/README, "Tokenizing for stage 2"). That is
harmless here: each such decoding is another plausible set of tokens for the same garment,
which is what the refiner meets in the samples too.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from armani.models.refiner import DetailRefiner, RefinerConfig
from armani.models.vqgan import VQGAN
from armani.training.engine import StepOutput, register_stage
from armani.training.stages.base import GarmentStage
from armani.training.stages.transformer import channels_last, encode_image_tokens


@register_stage
class RefinerStage(GarmentStage):
    name = "refiner"
    requires = ("vqgan",)

    @cached_property
    def model_config(self) -> RefinerConfig:
        return self.config.refiner

    def build_models(self):
        return {"refiner": DetailRefiner(self.model_config)}

    def build_frozen(self):
        vqgan = VQGAN.from_pretrained(self.artefact_dir("vqgan")).eval()
        if vqgan.config.image_size != self.model_config.image_size:
            raise ValueError(f"the run's image codebook draws {vqgan.config.image_size} px images, the refiner "
                             f"{self.model_config.image_size} px: set refiner.image_size")
        out = {"vqgan": channels_last(vqgan)}
        if vqgan.config.fusion:  # a cross-modal codebook encodes with the part masks and MaskCLIP's words
            from armani.models.maskclip import MaskCLIP
            from armani.models.segmenter import Segmenter

            out["segmenter"] = channels_last(Segmenter.from_pretrained(self.artefact_dir("segmenter")).eval())
            out["maskclip"] = channels_last(MaskCLIP.from_pretrained(self.artefact_dir("maskclip")).eval())
        return out

    @torch.no_grad()
    def round_trip(self, batch: dict) -> torch.Tensor:
        """The batch's images through the frozen image codebook: (B, 3, S, S) in [-1, 1]."""
        vqgan = self.frozen["vqgan"]
        ids = encode_image_tokens(batch, vqgan, self.frozen)
        return vqgan.decode(ids).float().clamp(-1, 1)

    def training_step(self, batch, step):
        decoded = self.round_trip(batch)
        real = batch["image"].float()
        gen = self.step_generator(step)
        # mirror half the pairs (both images together): the detail is the same either way round
        flip = (torch.rand(real.shape[0], generator=gen) < 0.5).to(real.device)[:, None, None, None]
        real = torch.where(flip, real.flip(-1), real)
        decoded = torch.where(flip, decoded.flip(-1), decoded)
        loss = self.models["refiner"](real, decoded, generator=gen)
        self.optimize(loss)
        return StepOutput(loss.item(), {"residual_l1": (real - decoded).abs().mean().item()})

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        """Mean denoising loss at fixed timesteps with fixed noise (comparable across steps and
        runs), on up to ``eval_batches`` validation batches."""
        model, c = self.unwrap("refiner"), self.model_config

        def losses_at(batch, gen, ts):
            decoded = self.round_trip(batch)
            residual = (batch["image"].float() - decoded) * c.residual_scale
            noise = torch.randn(residual.shape, generator=gen).to(residual.device)
            out = []
            for t in ts:
                timesteps = torch.full((residual.shape[0],), t, device=residual.device, dtype=torch.long)
                noisy = model.noise_scheduler.add_noise(residual, noise, timesteps)
                pred = model.predict(noisy, timesteps, decoded).float()
                out.append(((pred - model.target(residual, noise, timesteps).float()) ** 2).mean(dim=(1, 2, 3)))
            return out

        return self.fixed_noise_losses(loader, c.num_train_timesteps, losses_at)

    def export(self, out_dir: Path) -> None:
        self.unwrap("refiner").cpu().save_pretrained(out_dir)

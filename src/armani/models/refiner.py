"""The detail refiner: a small residual diffusion model that redraws the one-pixel detail an
image codebook's decoder cannot hold.

The image codebook draws one token per 4 x 4 pixels. Its round trip of a real render loses the
renderer's one-pixel structure inside the garment (seams along part borders, button and pocket
edges), and that structure is what the classifier-feature FID responds to
(``research/fid_anatomy.py``): three decoder fine-tunes on the same tokens ended at the same
FID, and the decoder on *unquantised* features still scores 188 against the renders' 122. A
deterministic decoder trained with L1, perceptual and GAN terms draws the mean of the plausible
details, which is a blur; the detail itself is a sample. So the refiner is a conditional diffusion model (as the consistency
and diffusion decoders of recent text-to-image systems are), in pixel space at the garment's 64
px:

- **Conditioning.** The codebook's decoding ``c`` is concatenated to the noisy sample as three
  more input channels (SR3-style image conditioning). Nothing else: text and tokens are already
  in ``c``, and the refiner only has to draw what ``c`` lacks.
- **Residual target.** The model samples ``r = (x - c) * residual_scale``, the real image's
  difference from the decoding, scaled towards the unit noise the schedule assumes (the
  shipped codebook's round trips are 0.064 from the renders in mean absolute value, in [-1, 1]
  units, so about 0.5 after the default scale of 8). The refined image is
  ``c + r / residual_scale``: where the decoding is right the residual is near 0 and the refiner
  leaves it alone.
- **Schedule.** ``diffusers``' 1000-step DDPM cosine schedule for training, v-prediction (stable
  at few sampling steps), and DDIM with ``trailing`` spacing for sampling, so a handful of
  steps starts from pure noise.
- **Network.** ``diffusers.UNet2DModel`` with plain residual blocks and no attention: the
  detail is local, and attention at 64 x 64 would cost more than the convolutions.

Measured (run rf1, research/README "A detail refiner after the image codebook"): trained 1,000
steps it adds fabric grain, draws back none of the structure the tokens lost (belts, crosses,
buckles) and does not lower the round trip's FID (200.5 without it, 201.7 at its lightest
setting), so the shipped checkpoint has no refiner. The stage and the pipeline's support stay
for a refiner that sees more than the decoding.

    refiner = DetailRefiner(RefinerConfig())
    loss = refiner(real, decoded)                        # training, images in [-1, 1]
    images = refiner.refine(decoded, generator=g)        # sampling
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from armani.models.checkpoint import PretrainedMixin


@dataclass
class RefinerConfig:
    """The refiner's UNet and schedule. Defaults: the 64 px ``default`` run."""

    image_size: int = 64
    channels: tuple[int, ...] = (24, 48, 96)  # UNet widths from full resolution down
    layers_per_block: int = 1
    norm_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    residual_scale: float = 8.0  # (real - decoded) * scale is what the diffusion samples
    sample_steps: int = 6  # DDIM steps at sampling time
    sample_strength: float = 1.0  # the share of the noise schedule sampling runs through (refine())

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"every refiner channel count must be a multiple of norm_groups={self.norm_groups}, "
                             f"got {self.channels}")
        if self.image_size % (2 ** (len(self.channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^{len(self.channels) - 1}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {self.prediction_type!r}")
        if self.residual_scale <= 0 or self.sample_steps < 1 or not 0 < self.sample_strength <= 1:
            raise ValueError("residual_scale must be > 0, sample_steps >= 1 and sample_strength in (0, 1]")


def tiny_refiner_config(image_size: int = 32) -> RefinerConfig:
    """The CI size: two narrow levels."""
    return RefinerConfig(image_size=image_size, channels=(16, 32), norm_groups=8, sample_steps=2)


class DetailRefiner(PretrainedMixin, nn.Module):
    """Residual conditional diffusion from a codebook decoding to a detailed image (module doc)."""

    config_class = RefinerConfig
    model_type = "armani_detail_refiner"

    def __init__(self, config: RefinerConfig):
        super().__init__()
        self.config = config
        n = len(config.channels)
        self.unet = UNet2DModel(
            sample_size=config.image_size, in_channels=6, out_channels=3,
            layers_per_block=config.layers_per_block, block_out_channels=config.channels,
            down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
            norm_num_groups=config.norm_groups,
        )
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                                             beta_schedule=config.beta_schedule,
                                             prediction_type=config.prediction_type, clip_sample=False)

    def config_to_dict(self) -> dict:
        from dataclasses import asdict

        data = asdict(self.config)
        data["channels"] = list(self.config.channels)
        return data

    def _check(self, images: torch.Tensor, what: str) -> None:
        S = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, S, S):
            raise ValueError(f"{what} must be (B, 3, {S}, {S}) images in [-1, 1], got {tuple(images.shape)}")

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([noisy, decoded], dim=1), timesteps).sample

    def forward(self, real: torch.Tensor, decoded: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """The denoising loss (MSE on the scheduler's target) of the residual ``real - decoded``."""
        self._check(real, "real")
        self._check(decoded, "decoded")
        residual = (real - decoded) * self.config.residual_scale
        noise = torch.randn(residual.shape, generator=generator, dtype=residual.dtype, device=residual.device)
        t = torch.randint(0, self.config.num_train_timesteps, (residual.shape[0],), generator=generator,
                          device=residual.device)
        noisy = self.noise_scheduler.add_noise(residual, noise, t)
        return F.mse_loss(self.predict(noisy, t, decoded).float(), self.target(residual, noise, t).float())

    def target(self, residual: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict for ``prediction_type``."""
        if self.config.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(residual, noise, timesteps)
        return noise if self.config.prediction_type == "epsilon" else residual

    def sampling_scheduler(self) -> DDIMScheduler:
        # built from the training schedule's config; "trailing" spacing makes the first of a few
        # steps start at the last training timestep (pure noise)
        return DDIMScheduler.from_config(self.noise_scheduler.config, timestep_spacing="trailing",
                                         clip_sample=False, set_alpha_to_one=False)

    @torch.inference_mode()
    def refine(self, decoded: torch.Tensor, generator: torch.Generator | None = None,
               steps: int | None = None, strength: float | None = None) -> torch.Tensor:
        """Codebook decodings (B, 3, S, S) in [-1, 1] -> refined images in [-1, 1]. One sampled
        residual per image; ``generator`` makes it repeatable.

        ``strength`` (as in diffusers' image-to-image pipelines) is the share of the noise
        schedule the ``steps`` run through: 1 starts from pure noise; below 1 sampling starts at
        that noise level from a residual of 0 (the decoding itself), so less is redrawn."""
        self._check(decoded, "decoded")
        steps = int(steps or self.config.sample_steps)
        strength = float(self.config.sample_strength if strength is None else strength)
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        decoded = decoded.float()
        scheduler = self.sampling_scheduler()
        scheduler.set_timesteps(max(steps, math.ceil(steps / strength)))
        timesteps = scheduler.timesteps[-steps:]  # the last (least noisy) part of the schedule
        noise = torch.randn(decoded.shape, generator=generator, dtype=decoded.dtype)
        # a residual of 0 noised to the first step's level
        x = noise * (1 - scheduler.alphas_cumprod[timesteps[0]]).sqrt()
        for t in timesteps:
            out = self.predict(x, t.expand(x.shape[0]), decoded).float()
            x = scheduler.step(out, t, x).prev_sample
        return (decoded + x / self.config.residual_scale).clamp(-1, 1)

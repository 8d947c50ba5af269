"""The patch discriminator of VQGAN's adversarial loss (a PatchGAN, Isola et al. 2017).

It scores overlapping patches, not the whole image: the output is a grid of logits, one per
receptive field, so the GAN term pushes local texture (stitching, fabric, edges) towards
realism while L1 and the perceptual loss hold the global content.

Choice the paper leaves open: VQGAN's discriminator uses BatchNorm; we use GroupNorm
instead, because BatchNorm's running statistics differ across data-parallel ranks and are
noisy with the tiny batches of the offline configs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PatchDiscriminatorConfig:
    in_channels: int = 3
    channels: int = 64
    num_layers: int = 3  # stride-2 layers; receptive field grows with each

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class PatchDiscriminator(nn.Module):
    """image (B, C, H, W) -> patch logits (B, 1, h, w)."""

    def __init__(self, config: PatchDiscriminatorConfig):
        super().__init__()
        self.config = config
        width = config.channels
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, config.num_layers + 1):
            # num_layers - 1 more stride-2 convs, then one stride-1 conv before the logit conv
            stride = 2 if i < config.num_layers else 1
            out_width = config.channels * min(2**i, 8)
            layers += [nn.Conv2d(width, out_width, 4, stride=stride, padding=1, bias=False), _norm(out_width), nn.LeakyReLU(0.2)]
            width = out_width
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def _init_weights(module: nn.Module) -> None:
    # DCGAN/pix2pix initialisation, as VQGAN does for its discriminator.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


__all__ = ["PatchDiscriminator", "PatchDiscriminatorConfig"]

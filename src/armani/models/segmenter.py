"""The mask prediction network M: a small UNet that labels every pixel with one of 15 parts.

The paper uses PointRend trained on 45,000 private labelled images; we train our own on
data with part masks (the procedural garments, or any dataset with a mask column). M
serves three purposes: it gives MaskCLIP a part mask for images without one, its soft
output carries the semantic loss (Eq. 10) back into generated images, and its frozen
encoder features are the project's own perceptual loss for the VQGAN (no LPIPS/VGG
weights offline): :meth:`Segmenter.features` returns them, finest first.

Choices:
- A plain UNet, hand-written (the stack has no segmentation library; torchvision's
  FCN/DeepLab/LR-ASPP predict at 1/8 resolution, which loses 2-3 px buttons at 64 px).
  Full-resolution skip connections keep thin parts.
- GroupNorm, not BatchNorm: batch statistics differ across DDP ranks and under the tiny
  per-device batches of the semantic loss, GroupNorm does not care.
- Loss = class-weighted cross entropy + soft Dice (mean over the parts present in the
  batch's target). The CE weights are ``1 / sqrt(frequency)`` of each part in the
  batch, normalised to mean 1, so rare small parts (button, logo, zipper) are learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from armani.models.checkpoint import PretrainedMixin
from armani.parts import NUM_PARTS, PART_NAMES


@dataclass
class SegmenterConfig:
    in_channels: int = 3
    num_parts: int = NUM_PARTS
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)  # one UNet level per entry; len-1 downsamplings
    groups: int = 8  # GroupNorm groups (must divide every level's channels)
    dice_weight: float = 1.0

    def __post_init__(self):
        self.channel_mults = tuple(int(m) for m in self.channel_mults)  # JSON gives a list
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"groups {self.groups} must divide every level width {self.base_channels * m}")


@dataclass
class SegmenterLoss:
    loss: torch.Tensor  # ce + dice_weight * dice
    ce: torch.Tensor  # class-weighted cross entropy
    dice: torch.Tensor  # 1 - soft Dice


class ConvBlock(nn.Sequential):
    """Two 3x3 convs, each followed by GroupNorm and SiLU; the first may stride (downsample).
    Also the attribute classifier's block."""

    def __init__(self, cin: int, cout: int, groups: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
            nn.GroupNorm(groups, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.GroupNorm(groups, cout),
            nn.SiLU(),
        )


class Segmenter(PretrainedMixin, nn.Module):
    """UNet: image (B, 3, H, W) in [-1, 1] -> part logits (B, 15, H, W). H, W divisible by 2^(levels-1)."""

    config_class = SegmenterConfig

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        c = config
        widths = [c.base_channels * m for m in c.channel_mults]
        self.down = nn.ModuleList()
        cin = c.in_channels
        for w in widths:
            self.down.append(ConvBlock(cin, w, c.groups))
            cin = w
        self.up = nn.ModuleList()
        for w_skip, w_low in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(ConvBlock(w_low + w_skip, w_skip, c.groups))
        self.head = nn.Conv2d(widths[0], c.num_parts, 1)

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder feature maps, finest first: [(B, C0, H, W), (B, C1, H/2, W/2), ...].

        Used frozen as a perceptual loss by the VQGAN (compare features of the input and the
        reconstruction); they are trained to separate garment parts, which is what we want
        reconstructions to keep.
        """
        factor = 2 ** (len(self.down) - 1)
        if image.shape[-1] % factor or image.shape[-2] % factor:
            raise ValueError(f"image size {tuple(image.shape[-2:])} must be divisible by {factor}")
        feats = []
        x = image
        for i, block in enumerate(self.down):
            if i:
                x = F.avg_pool2d(x, 2)
            x = block(x)  # (B, C_i, H / 2^i, W / 2^i)
            feats.append(x)
        return feats

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feats = self.features(image)
        x = feats[-1]
        for block, skip in zip(self.up, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)  # (B, 15, H, W)

    def probs(self, image: torch.Tensor) -> torch.Tensor:
        """Soft part mask (B, 15, H, W), differentiable (what MaskCLIP takes)."""
        return self.forward(image).softmax(dim=1)

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Hard part mask (B, H, W) int64."""
        return self.forward(image).argmax(dim=1)

    def loss(self, image: torch.Tensor, mask: torch.Tensor) -> SegmenterLoss:
        """Class-weighted CE + soft Dice against an int64 (B, H, W) mask."""
        logits = self.forward(image)  # (B, K, H, W)
        K = self.config.num_parts
        counts = torch.bincount(mask.flatten(), minlength=K).float()  # (K,)
        weight = torch.where(counts > 0, counts.clamp(min=1).rsqrt(), torch.zeros_like(counts))
        weight = weight * (counts > 0).sum() / weight.sum()  # mean 1 over present parts
        ce = F.cross_entropy(logits, mask, weight=weight)
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(mask, K).permute(0, 3, 1, 2).to(probs.dtype)  # (B, K, H, W)
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        present = counts > 0
        dice = 1.0 - ((2 * inter + 1.0) / (total + 1.0))[present].mean()
        return SegmenterLoss(loss=ce + self.config.dice_weight * dice, ce=ce, dice=dice)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_PARTS) -> dict[str, float]:
    """Per-part IoU of two (B, H, W) int64 masks, plus ``"mean"`` over parts present.

    A part absent from both prediction and target is left out (not counted as 0 or 1).
    """
    from torchmetrics.functional.classification import multiclass_jaccard_index

    iou = multiclass_jaccard_index(pred, target, num_classes=num_classes, average="none", zero_division=float("nan"))
    names = PART_NAMES if num_classes == len(PART_NAMES) else [str(i) for i in range(num_classes)]
    out = {names[k]: float(iou[k]) for k in range(num_classes) if not torch.isnan(iou[k])}
    out["mean"] = sum(out.values()) / max(len(out), 1)
    return out

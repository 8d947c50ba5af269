"""Perceptual distances for the VQGAN reconstruction loss, all working offline.

VQGAN's perceptual term is LPIPS: distances between unit-normalised VGG16 feature maps. The
VGG weights cannot be downloaded here, so three choices, picked by ``VQGANConfig.perceptual``:

- ``"lpips"``: torchvision's VGG16 architecture with weights read from a LOCAL safetensors
  file (``perceptual_weights``). The file holds torchvision ``vgg16`` state-dict keys
  (``features.*``; ``classifier.*`` is ignored) and, optionally, LPIPS's learned per-channel
  weights as ``lins.{k}.weight`` of shape (1, C_k, 1, 1) for the five layers; without them
  every channel weighs the same (the "baseline" LPIPS variant). A missing file is an error;
  nothing is ever downloaded. To make the file from a torchvision checkpoint you already
  have: ``save_file(vgg16(weights=...).state_dict(), "vgg16.safetensors")``.
- ``"segmenter"`` (the default when no VGG weights are at hand): the same distance over the
  encoder feature maps of the project's own trained, frozen part segmenter
  (``segmenter.features``). It was trained on garments with part labels, so its features
  see exactly the structure we want reconstructions to keep (collars, pockets, buttons).
- ``"none"``: no perceptual term (L1 + GAN only; also the fastest for tests).

Both networks are frozen (``requires_grad_(False)``, kept in eval mode even when the loss
module is put in training mode); gradients still flow to the images. Inputs are images in
[-1, 1] with 3 channels; 1-channel sketches are repeated to RGB and a 4-channel partial
image (RGB + keep mask) is compared on its RGB channels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

# Last ReLU of each VGG16 block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) in vgg16().features.
VGG16_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
VGG16_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def as_rgb(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with C in {1, 3, 4} -> (B, 3, H, W) (see the module docstring)."""
    channels = image.shape[1]
    if channels == 3:
        return image
    if channels == 1:
        return image.expand(-1, 3, -1, -1)
    if channels == 4:
        return image[:, :3]
    raise ValueError(f"perceptual distances need 1, 3 or 4 channels, got {channels}")


def normalized_feature_distance(
    feats_a: list[torch.Tensor], feats_b: list[torch.Tensor], weights: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """LPIPS's distance: per layer, unit-normalise channels, square the difference, weigh
    channels (mean when ``weights`` is None), average over space; sum over layers -> (B,)."""
    total = 0.0
    for k, (a, b) in enumerate(zip(feats_a, feats_b, strict=True)):
        diff = (F.normalize(a, dim=1, eps=1e-10) - F.normalize(b, dim=1, eps=1e-10)) ** 2  # (B, C, h, w)
        per_pixel = diff.mean(dim=1) if weights is None else (diff * weights[k]).sum(dim=1)  # (B, h, w)
        total = total + per_pixel.mean(dim=(1, 2))
    return total


class _FrozenFeatureDistance(nn.Module):
    """Base: a frozen feature network that stays in eval mode."""

    net: nn.Module

    def _freeze(self) -> None:
        self.net.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> "_FrozenFeatureDistance":
        super().train(mode)
        self.net.eval()  # frozen: no dropout / norm statistics changes, ever
        return self


class VGGPerceptual(_FrozenFeatureDistance):
    """LPIPS-style distance on torchvision's VGG16, weights from a local safetensors file."""

    def __init__(self, weights_path: str | Path):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"perceptual='lpips' needs local VGG16 weights (safetensors), but {path} does not exist; "
                "set perceptual='segmenter' to use the project's own segmenter, or 'none'"
            )
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
        # torchvision's vgg16().features, built without the 120M-parameter classifier
        net = make_layers(cfgs["D"])[: VGG16_TAPS[-1] + 1]
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        try:
            net.load_state_dict(features, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} does not hold torchvision vgg16 'features.*' weights: {err}") from err
        self.net = net
        lins = [state.get(f"lins.{k}.weight") for k in range(len(VGG16_TAPS))]
        if any(w is not None for w in lins):
            if any(w is None or w.shape != (1, c, 1, 1) for w, c in zip(lins, VGG16_WIDTHS)):
                raise ValueError(f"{path}: lins.k.weight must be given for all 5 layers with shape (1, C_k, 1, 1)")
        self.has_lins = lins[0] is not None
        for k, w in enumerate(lins):
            # LPIPS keeps its channel weights non-negative
            self.register_buffer(f"lin{k}", None if w is None else w.float().clamp(min=0), persistent=False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = ((as_rgb(image) + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet statistics
        taps, out = set(VGG16_TAPS), []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance between two image batches -> (B,)."""
        weights = [getattr(self, f"lin{k}") for k in range(len(VGG16_TAPS))] if self.has_lins else None
        return normalized_feature_distance(self.features(a), self.features(b), weights)


class SegmenterPerceptual(_FrozenFeatureDistance):
    """LPIPS-style distance over the frozen segmenter's encoder feature maps."""

    def __init__(self, segmenter: nn.Module):
        super().__init__()
        if not hasattr(segmenter, "features"):
            raise TypeError("perceptual='segmenter' needs a segmenter with a .features(image) method")
        self.net = segmenter
        self._freeze()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance between two image batches -> (B,)."""
        return normalized_feature_distance(self.net.features(as_rgb(a)), self.net.features(as_rgb(b)))


def build_perceptual(config, segmenter: nn.Module | None = None) -> nn.Module | None:
    """The perceptual distance named by ``config.perceptual`` (a VQGANConfig), or None."""
    kind = config.perceptual
    if kind == "none":
        return None
    if kind == "lpips":
        if not config.perceptual_weights:
            raise ValueError("perceptual='lpips' needs perceptual_weights: a local VGG16 safetensors file")
        return VGGPerceptual(config.perceptual_weights)
    if kind == "segmenter":
        if segmenter is None:
            raise ValueError("perceptual='segmenter' needs the trained segmenter (pass segmenter=...)")
        return SegmenterPerceptual(segmenter)
    raise ValueError(f"unknown perceptual kind {kind!r}")


__all__ = ["SegmenterPerceptual", "VGGPerceptual", "as_rgb", "build_perceptual", "normalized_feature_distance"]

"""Image metrics of the evaluation harness: FID, IS, CLIPScore and the MaskCLIP score.

FID and IS go through torchmetrics. With torch-fidelity's Inception-v3 weights in the
local torch hub cache (``<torch.hub.get_dir()>/checkpoints/weights-inception-2015-12-05-
6726825d.pth``) they are the standard metrics; this module never downloads them (offline
the download fails after a long wait). Without them, FID is computed on the attribute
classifier's penultimate features and IS on its category logits (12 classes, so IS lies
in [1, 12]): numbers comparable between our own models, never with published ones. The
report always names the extractor.

Every image given to these functions is uint8 ``(B, 3, H, W)`` (0-255), whatever its size:
Inception resizes to 299 itself, the classifier wrappers resize to the classifier's size.

CLIPScore uses torchmetrics' ``CLIPScore`` (100 x cosine of image and text embeddings)
with an open_clip model behind a small adapter, because torchmetrics only builds Hugging
Face CLIP models itself and those need weights from the Hub. Weights come from a local
``.safetensors`` file (``--clip-weights`` or ``$ARMANI_OPENCLIP_WEIGHTS``); without one the
score is "unavailable". The MaskCLIP score (mean Eq. 10 pair similarity of generated image,
its segmenter-predicted soft mask and the prompt) needs no outside weights and is always
computed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity 0.4's URL_INCEPTION_V3 file name
OPENCLIP_ENV = "ARMANI_OPENCLIP_WEIGHTS"
OPENCLIP_MODEL_ENV = "ARMANI_OPENCLIP_MODEL"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [-1, 1] -> uint8 (B, 3, H, W)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0-255) (B, 3, H, W) -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


# -- feature extractors ----------------------------------------------------------------------------
class ClassifierFeatures(nn.Module):
    """FID features: uint8 images -> the attribute classifier's penultimate features (B, D)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = int(classifier.num_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(_to_unit(images).to(self.classifier.device)).float().cpu()


class ClassifierLogits(nn.Module):
    """IS logits: uint8 images -> the attribute classifier's category logits (B, 12)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(_to_unit(images).to(self.classifier.device))["category"].float().cpu()


def inception_weights_path() -> Path | None:
    """torch-fidelity's Inception-v3 weight file where torch's hub cache keeps it, if present."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return path if path.is_file() else None


@dataclass
class FeatureExtractors:
    """What FID and IS run on: torchmetrics ``feature`` arguments and a name for the report."""

    fid: nn.Module | int
    inception_score: nn.Module | str
    name: str


def choose_extractors(classifier: nn.Module | None = None, inception: str = "auto") -> FeatureExtractors | None:
    """Inception-v3 where its weights are local (``inception`` = "auto") or required ("on");
    else the classifier's features and category logits; None when neither is at hand."""
    if inception not in ("auto", "on", "off"):
        raise ValueError(f"inception must be 'auto', 'on' or 'off', got {inception!r}")
    if inception != "off" and inception_weights_path() is not None:
        return FeatureExtractors(fid=2048, inception_score="logits_unbiased",
                                 name="inception-v3 (torch-fidelity weights, pool3 2048-d / logits)")
    if inception == "on":
        raise FileNotFoundError(
            f"no Inception-v3 weights at {Path(torch.hub.get_dir()) / 'checkpoints' / INCEPTION_FILE}; "
            "copy torch-fidelity's file there or use --inception auto"
        )
    if classifier is None:
        return None
    return FeatureExtractors(
        fid=ClassifierFeatures(classifier), inception_score=ClassifierLogits(classifier),
        name=f"attribute-classifier (penultimate {classifier.num_features}-d features / 12 category logits)",
    )


# -- FID / IS ----------------------------------------------------------------------------------------
def frechet_distance(real: torch.Tensor, fake: torch.Tensor, extractor: FeatureExtractors,
                     batch_size: int = 64) -> float:
    """FID between uint8 image sets (each at least 2 images) with torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 real and 2 generated images, got {len(real)} and {len(fake)}")
    metric = FrechetInceptionDistance(feature=extractor.fid, normalize=False)
    for chunk in real.split(batch_size):
        metric.update(chunk, real=True)
    for chunk in fake.split(batch_size):
        metric.update(chunk, real=False)
    return float(metric.compute())


def inception_score(images: torch.Tensor, extractor: FeatureExtractors, splits: int = 10, seed: int = 0,
                    batch_size: int = 64) -> tuple[float, float]:
    """(mean, std) IS of uint8 images over ``min(splits, len(images))`` splits (torchmetrics).

    torchmetrics shuffles the features with the global torch RNG; it is seeded here (and
    restored afterwards) so the score is reproducible.
    """
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=extractor.inception_score, splits=max(1, min(splits, len(images))),
                                normalize=False)
    for chunk in images.split(batch_size):
        metric.update(chunk)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        mean, std = metric.compute()
    finally:
        torch.random.set_rng_state(state)
    return float(mean), float(std) if torch.isfinite(std) else 0.0


# -- MaskCLIP score ----------------------------------------------------------------------------------
@torch.no_grad()
def maskclip_scores(images: torch.Tensor, texts: list[str], tokenizer, segmenter: nn.Module, maskclip: nn.Module,
                    batch_size: int = 32) -> torch.Tensor:
    """Per image: MaskCLIP's Eq. 10 similarity of (image, segmenter(image), text) -> (B,) in [-1, 1].

    ``images`` float (B, 3, H, W) in [-1, 1], resized to MaskCLIP's size when they differ.
    """
    import torch.nn.functional as F

    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    size = maskclip.config.image_size
    device = next(maskclip.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float().to(device)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation warnings for long prompts
            ids = tokenizer(texts[start : start + batch_size]).ids.to(device)
        probs = segmenter.probs(x)  # (b, 15, S, S)
        out.append(maskclip.pair_similarity(x, probs, ids).float().cpu())
    return torch.cat(out)


# -- CLIPScore (open_clip behind torchmetrics) -----------------------------------------------------
class _OpenCLIPModel(nn.Module):
    """The two methods torchmetrics' CLIPScore calls, answered by an open_clip model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.config = object()  # torchmetrics probes config.text_config; open_clip truncates itself

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.encode_text(input_ids)


class _OpenCLIPProcessor:
    """torchmetrics' processor call (``images=`` or ``text=``) with open_clip's transforms."""

    def __init__(self, preprocess, tokenizer):
        self.preprocess = preprocess
        self.tokenizer = tokenizer

    def __call__(self, images=None, text=None, return_tensors="pt", padding=True):
        from PIL import Image

        if images is not None:
            pil = [Image.fromarray(im.permute(1, 2, 0).to(torch.uint8).numpy()) for im in images]
            return {"pixel_values": torch.stack([self.preprocess(p) for p in pil])}
        ids = self.tokenizer(list(text))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def openclip_scorer(weights: str | Path | None = None, model_name: str | None = None):
    """A torchmetrics ``CLIPScore`` over a local open_clip model, or None without weights.

    ``weights``: a ``.safetensors`` state dict (or ``$ARMANI_OPENCLIP_WEIGHTS``); ``model_name``
    its open_clip architecture (default ``$ARMANI_OPENCLIP_MODEL`` or "ViT-B-32").
    """
    weights = weights or os.environ.get(OPENCLIP_ENV)
    if not weights:
        return None
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"open_clip weights {weights} do not exist")
    if weights.suffix != ".safetensors":
        raise ValueError(f"open_clip weights must be a .safetensors file (this project loads no pickles): {weights}")
    import open_clip

    name = model_name or os.environ.get(OPENCLIP_MODEL_ENV, "ViT-B-32")
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(weights))
    return clip_score_metric(model, preprocess, open_clip.get_tokenizer(name))


def clip_score_metric(model: nn.Module, preprocess, tokenizer):
    """torchmetrics ``CLIPScore`` for an open_clip ``model`` with its ``preprocess`` and ``tokenizer``."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    return CLIPScore(model_name_or_path=lambda: (_OpenCLIPModel(model), _OpenCLIPProcessor(preprocess, tokenizer)))


def clip_score(metric, images: torch.Tensor, texts: list[str], batch_size: int = 32) -> float:
    """Mean CLIPScore (0-100) of uint8 images (B, 3, H, W) against their texts."""
    metric.reset()
    for start in range(0, len(images), batch_size):
        metric.update(list(images[start : start + batch_size]), texts[start : start + batch_size])
    return float(metric.compute())

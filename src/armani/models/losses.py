"""Stage-1 losses: VQGAN's loss (L1 + perceptual + hinge patch-GAN + commitment) and the
MaskCLIP semantic loss (paper Eq. 10-11), which stage 2 reuses on softly decoded images.

    L_VQGAN    = rec + perceptual + w_adapt * disc_weight * gan + commit
                 (rec = l1_weight * L1, or l1_weight * (bce + dice) with recon_loss="edges")
    L_semantic = 1 - D(M(G(z)), T)                                  (Eq. 10)
    L_stage1   = lambda_vq * L_VQGAN + lambda_semantic * L_semantic (Eq. 11; 0.9 / 0.1)

Choices the paper leaves open (it says "the training losses used in VQ-GAN"), taken from
VQGAN (Esser et al. 2021):

- The GAN term is the hinge loss with VQGAN's adaptive weight
  ``w_adapt = ||grad_L(rec)|| / (||grad_L(gan)|| + 1e-4)`` measured on the decoder's last
  layer, clamped to ``[0, adaptive_weight_max]`` and detached; it is zero before
  ``gan_start_step`` (the discriminator is not even run then) and zero without gradients
  (validation), where the ratio cannot be measured.
- The commitment loss is the quantiser's own (``VQGANOutput.commit_loss``, already times
  ``commitment_weight``); the codebook learns by EMA, so there is no codebook term.
- With ``recon_loss="edges"`` (sketch codebooks) the L1 term is replaced by
  :func:`edge_loss` on the decoder's edge logits (class-balanced BCE + soft Dice); ``l1`` is
  still reported, on the decoded image, but not trained on.
- The semantic loss averages over the batch; D is MaskCLIP's pair similarity between the
  image (with the segmenter's soft part masks) and its own caption. Segmenter and MaskCLIP
  are frozen (``requires_grad_(False)``, eval) but differentiable, so the gradient reaches
  the generated image and through it the decoder (and, in stage 2, the token logits).

Training-loop notes: the discriminator lives in ``VQGANLoss.discriminator`` (its own
optimiser; save it with ``save_file(loss.discriminator.state_dict(), ...)``). The
generator's GAN term also leaves gradients on the discriminator: zero the discriminator's
gradients before back-propagating :meth:`VQGANLoss.discriminator_loss`. Under data
parallelism, wrap ``loss.discriminator`` itself (``discriminator_loss`` calls it directly).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from armani.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from armani.models.perceptual import build_perceptual
from armani.models.vqgan import VQGANConfig, VQGANOutput


def freeze_(module: nn.Module) -> nn.Module:
    """Freeze a helper network in place: no parameter gradients, eval mode."""
    module.requires_grad_(False)
    module.eval()
    return module


def semantic_loss(
    images: torch.Tensor,
    text_ids: torch.Tensor,
    segmenter: nn.Module,
    maskclip: nn.Module,
    reduction: str = "mean",
) -> torch.Tensor:
    """Eq. 10: ``1 - maskclip.pair_similarity(images, segmenter.probs(images), text_ids)``.

    images (B, 3, H, W) in [-1, 1] (real, reconstructed or softly decoded), text_ids (B, L).
    Returns (B,) with ``reduction="none"``, else the batch mean. Both networks are frozen
    here (idempotent), and the result is differentiable with respect to ``images``.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    freeze_(segmenter)
    freeze_(maskclip)
    part_probs = segmenter.probs(images)  # (B, 15, H, W)
    loss = 1.0 - maskclip.pair_similarity(images, part_probs, text_ids)  # (B,)
    return loss.mean() if reduction == "mean" else loss


def edge_loss(logits: torch.Tensor, target: torch.Tensor, max_pos_weight: float = 100.0,
              eps: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction loss of a sparse binary map from logits: ``(bce, dice)``, both scalars.

    logits (B, 1, H, W); target (B, 1, H, W) with edges > 0 (a sketch in [-1, 1], or 0/1).

    Why this pair. Edges cover ~5-10% of a sketch's pixels. Under L1 (or plain BCE) the
    background dominates, and where an edge's exact position is uncertain the optimum is
    "no edge": the decoder learns a blank page. The class-balanced BCE of HED (Xie & Tu,
    2015) weighs edge pixels by ``pos_weight = #background / #edge`` of the batch, so both
    classes count equally: the decoder marks an edge wherever one is likelier than the base
    rate (high recall, but thick). The soft Dice term, ``1 - 2|P.T| / (|P| + |T|)`` per image,
    does not depend on the class ratio and rewards overlap against the union, so it pays
    for every extra pixel of a thick line (crisp edges, the pairing of Deng et al., 2018).
    BCE gives every pixel a gradient from the first step, when Dice's is still weak.

    ``max_pos_weight`` bounds the weight for nearly blank batches; ``eps`` smooths Dice so
    that an empty target and an empty prediction score 0.
    """
    target = (target > 0).to(logits.dtype)
    positives = target.sum()
    pos_weight = ((target.numel() - positives) / positives.clamp(min=1.0)).clamp(1.0, max_pos_weight).detach()
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    probs = torch.sigmoid(logits).flatten(1)  # (B, HW)
    flat = target.flatten(1)
    dice = 1 - (2 * (probs * flat).sum(1) + eps) / (probs.sum(1) + flat.sum(1) + eps)  # (B,)
    return bce, dice.mean()


@dataclass
class VQGANLossParts:
    """Named parts of the stage-1 generator loss; ``total`` is what is back-propagated."""

    total: torch.Tensor  # Eq. 11
    vqgan: torch.Tensor  # L_VQGAN
    l1: torch.Tensor
    perceptual: torch.Tensor
    gan: torch.Tensor  # generator hinge term, before weighting
    commit: torch.Tensor
    semantic: torch.Tensor
    disc_weight: torch.Tensor  # adaptive weight times disc_weight; 0 before gan_start_step
    bce: torch.Tensor | None = None  # the edge loss's parts (recon_loss="edges"; else None)
    dice: torch.Tensor | None = None

    def as_dict(self) -> dict[str, float]:
        """Plain floats for logging (parts that do not apply are left out)."""
        return {f.name: float(getattr(self, f.name).detach()) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class DiscLoss:
    total: torch.Tensor  # hinge loss of the discriminator
    real_logit: torch.Tensor  # mean patch logit on real images (detached)
    fake_logit: torch.Tensor  # mean patch logit on reconstructions (detached)

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name).detach()) for f in fields(self)}


def adaptive_gan_weight(
    rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """VQGAN's balance: ||d rec / d W|| / (||d gan / d W|| + 1e-4) at the last layer W, detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class VQGANLoss(nn.Module):
    """Stage-1 loss with its patch discriminator.

    ``segmenter`` is needed for ``perceptual="segmenter"`` and, with ``maskclip``, for the
    semantic loss (``config.semantic_loss``); both are frozen and stay in eval mode.
    """

    def __init__(
        self,
        config: VQGANConfig,
        segmenter: nn.Module | None = None,
        maskclip: nn.Module | None = None,
    ):
        super().__init__()
        self.config = config
        self.discriminator = PatchDiscriminator(
            PatchDiscriminatorConfig(config.out_channels, config.disc_channels, config.disc_layers)
        )
        self.perceptual = build_perceptual(config, segmenter)
        if config.semantic_loss:
            if segmenter is None or maskclip is None:
                raise ValueError("semantic_loss=True needs the trained segmenter and MaskCLIP")
            if config.out_channels != 3:
                raise ValueError("the semantic loss compares RGB images with text; it needs out_channels=3")
        self.segmenter = None if segmenter is None else freeze_(segmenter)
        self.maskclip = None if maskclip is None else freeze_(maskclip)

    def train(self, mode: bool = True) -> "VQGANLoss":
        super().train(mode)
        for frozen in (self.segmenter, self.maskclip):
            if frozen is not None:
                frozen.eval()
        return self

    def gan_active(self, step: int) -> bool:
        return step >= self.config.gan_start_step

    def forward(
        self,
        images: torch.Tensor,
        output: VQGANOutput,
        step: int,
        last_layer: torch.Tensor | None = None,
        text_ids: torch.Tensor | None = None,
    ) -> VQGANLossParts:
        """Generator-side loss for targets ``images`` and the model's ``output``.

        last_layer: ``vqgan.last_layer_weight`` (for the adaptive GAN weight).
        text_ids (B, L): the captions, needed when ``config.semantic_loss``.
        """
        cfg = self.config
        rec = output.reconstruction
        zero = rec.new_zeros(())
        l1 = (rec - images).abs().mean()
        bce = dice = None
        if cfg.recon_loss == "edges":
            if output.logits is None:
                raise ValueError("recon_loss='edges' trains on the decoder's logits: output.logits is None")
            bce, dice = edge_loss(output.logits, images)
            reconstruction = bce + dice
        else:
            reconstruction = l1
        perceptual = self.perceptual(rec, images).mean() if self.perceptual is not None else zero
        nll = cfg.l1_weight * reconstruction + cfg.perceptual_weight * perceptual

        gan, disc_weight = zero, zero
        if self.gan_active(step) and cfg.disc_weight > 0:
            gan = -self.discriminator(rec).mean()  # hinge generator loss
            if last_layer is not None and torch.is_grad_enabled() and rec.requires_grad:
                disc_weight = cfg.disc_weight * adaptive_gan_weight(nll, gan, last_layer, cfg.adaptive_weight_max)
        commit = output.commit_loss
        vqgan = nll + disc_weight * gan + commit

        semantic = zero
        if cfg.semantic_loss:
            if text_ids is None:
                raise ValueError("config.semantic_loss is on: pass text_ids (B, L)")
            semantic = semantic_loss(rec, text_ids, self.segmenter, self.maskclip)
        total = cfg.lambda_vq * vqgan + (cfg.lambda_semantic * semantic if cfg.semantic_loss else 0.0)
        return VQGANLossParts(total, vqgan, l1, perceptual, gan, commit, semantic, disc_weight, bce, dice)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, step: int | None = None) -> DiscLoss:
        """Hinge loss of the patch discriminator; ``fake`` is detached here.

        With ``step`` before ``gan_start_step`` the loss is zero (the discriminator is idle).
        """
        real_logits = self.discriminator(real)  # (B, 1, h, w)
        fake_logits = self.discriminator(fake.detach())
        total = 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())
        if step is not None and not self.gan_active(step):
            total = total * 0.0
        return DiscLoss(total, real_logits.detach().mean(), fake_logits.detach().mean())


__all__ = [
    "DiscLoss",
    "VQGANLoss",
    "VQGANLossParts",
    "adaptive_gan_weight",
    "edge_loss",
    "freeze_",
    "semantic_loss",
]

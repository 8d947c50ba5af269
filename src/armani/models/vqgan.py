"""Stage 1: the cross-modal codebook, a text-aware VQGAN (paper Sec. 3.3, Eq. 9-11).

An image goes through a convolutional encoder E to a feature grid ``z_hat`` (h x w x code_dim).
For every grid cell, the caller supplies the MaskCLIP token of the cell's most similar word
(Eq. 9, computed by :meth:`armani.models.maskclip.MaskCLIP.best_words`); the cell's feature
becomes the average of its visual feature and the projected word token,
``z_tilde = (z_hat + word_proj(x)) / 2``, and ``z_tilde`` is vector-quantised (Eq. 1) and
decoded by G. The codebook therefore learns codes that sit between visual and word features.

Choices the paper leaves open, fixed here:

- **Which cells are fused.** ``best_words`` marks cells with no valid word (no content token,
  or a background-only cell) with ``word_index == -1``; those cells keep ``z_hat`` unchanged.
- **The projection.** MaskCLIP tokens live in MaskCLIP's embedding space (``fusion_dim``), the
  visual features in ``code_dim``; a single ``nn.Linear`` maps one to the other (the paper
  averages the two vectors without saying how their widths are matched).
- **The quantiser** is ``vector_quantize_pytorch.VectorQuantize`` with EMA codebook updates
  (the codebook gets no gradient), optional k-means initialisation and dead-code restarts;
  gradients pass the quantiser with the plain straight-through estimator of VQ-VAE/VQGAN
  (the library's rotation trick is switched off to stay with the paper's VQGAN).
- **Product quantisation** (M6-Fashion's codebook, ``quantizer="pq"``): ``pq_groups``
  separate sub-codebooks, each of ``codebook_size`` entries and width ``code_dim // pq_groups``;
  ids then have a trailing group axis, ``(B, N, G)``.
- **Fusion off** (``fusion=False``) is the DALL-E-style visual-only codebook used as the
  paper's baseline; words passed to it are ignored, so one training loop serves both.
- **Edge maps** (``recon_loss="edges"``, sketch tokenizers only): the decoder's single output
  channel is read as edge logits and trained with the edge loss of
  :func:`armani.models.losses.edge_loss`; :meth:`VQGAN.decode` (and the ``reconstruction``
  of a forward pass) still return an image in [-1, 1], ``2 * sigmoid(logits) - 1``, so
  callers see the same kind of sketch either way. The logits are ``VQGANOutput.logits``.

The same class, with ``in_channels=1`` (sketch) or ``4`` (partial RGB + keep mask), no fusion
and a small codebook, is the tokenizer of each visual control signal.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.distributed as dist
from einops import rearrange
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from armani.configuration import from_dict as _config_from_dict
from armani.models.checkpoint import CONFIG_NAME as CONFIG_NAME  # re-exported: older imports
from armani.models.checkpoint import WEIGHTS_NAME as WEIGHTS_NAME
from armani.models.checkpoint import CheckpointError, PretrainedMixin


@dataclass
class VQGANConfig:
    """Everything that shapes a VQGAN and its stage-1 loss.

    The token grid is ``image_size / 2 ** (len(channel_mult) - 1)``: 64 px with three levels
    gives the 16 x 16 grid of the shipped config. ``codebook_size`` counts entries per
    sub-codebook (with ``quantizer="pq"`` each of the ``pq_groups`` groups has that many).
    """

    # images
    image_size: int = 64
    in_channels: int = 3  # 3 image, 1 sketch, 4 partial (RGB + keep mask)
    out_channels: int = 3
    # encoder / decoder
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True  # one self-attention block at the lowest resolution
    # Residual blocks the decoder adds at the output resolution, after its last level. The
    # finest detail of a render (one-pixel seams, part outlines) is drawn there, where the
    # decoder is narrowest. Their last convolution starts at zero, so a decoder grown from a
    # trained one (``train.vqgan.init_strict=false``) starts as exactly that decoder.
    decoder_refine_blocks: int = 0
    # quantiser
    code_dim: int = 64
    codebook_size: int = 512
    quantizer: Literal["vq", "pq"] = "vq"
    pq_groups: int = 4
    ema_decay: float = 0.99
    kmeans_init: bool = True
    dead_code_threshold: float = 2.0  # EMA cluster size under which a code is restarted; 0 = never
    commitment_weight: float = 0.25
    # cross-modal fusion (Eq. 9)
    fusion: bool = True
    fusion_dim: int = 512  # MaskCLIP embed_dim (MaskCLIPConfig default)
    # losses (Eq. 11)
    semantic_loss: bool = True
    lambda_vq: float = 0.9
    lambda_semantic: float = 0.1
    perceptual: Literal["lpips", "segmenter", "none"] = "segmenter"  # see armani.models.perceptual
    perceptual_weights: str | None = None  # local safetensors with VGG16 weights, for "lpips"
    perceptual_weight: float = 1.0
    l1_weight: float = 1.0  # weight of the reconstruction term (L1, or the edge loss: recon_loss)
    # "l1": L1 on the image (VQGAN's). "edges": for sparse binary maps (sketches, 1 output
    # channel): the output is edge logits, trained with class-balanced BCE + soft Dice (see
    # armani.models.losses.edge_loss). L1 alone is median-seeking: where an edge's position is
    # uncertain its optimum is "no edge", and a sketch codebook trained on it decodes blank.
    recon_loss: Literal["l1", "edges"] = "l1"
    gan_start_step: int = 10_000
    disc_weight: float = 0.8
    disc_channels: int = 64
    disc_layers: int = 3
    adaptive_weight_max: float = 1e4
    # training data (sketch tokenizer only): chance that a training row's Canny map is replaced
    # by a hand-drawn-style sketch of its part mask (armani.data.transforms.drawn_sketch_edges),
    # so the codebook also codes what people draw on the canvas. 0 = Canny maps only.
    drawn_sketch_prob: float = 0.0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if not self.channel_mult:
            raise ValueError("channel_mult needs at least one level")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the downsampling factor {factor} "
                f"implied by channel_mult={self.channel_mult}"
            )
        if self.quantizer not in ("vq", "pq"):
            raise ValueError(f"quantizer must be 'vq' or 'pq', got {self.quantizer!r}")
        if self.quantizer == "pq" and (self.pq_groups < 1 or self.code_dim % self.pq_groups):
            raise ValueError(f"code_dim {self.code_dim} must be divisible by pq_groups {self.pq_groups}")
        if self.perceptual not in ("lpips", "segmenter", "none"):
            raise ValueError(f"perceptual must be 'lpips', 'segmenter' or 'none', got {self.perceptual!r}")
        if self.fusion and self.fusion_dim < 1:
            raise ValueError("fusion=True needs fusion_dim (MaskCLIP embed_dim) >= 1")
        if self.decoder_refine_blocks < 0:
            raise ValueError(f"decoder_refine_blocks must be >= 0, got {self.decoder_refine_blocks}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.recon_loss not in ("l1", "edges"):
            raise ValueError(f"recon_loss must be 'l1' or 'edges', got {self.recon_loss!r}")
        if self.recon_loss == "edges" and self.out_channels != 1:
            raise ValueError(f"recon_loss='edges' reads one edge-logit channel; it needs out_channels=1, "
                             f"got {self.out_channels}")
        if not 0.0 <= self.drawn_sketch_prob <= 1.0:
            raise ValueError(f"drawn_sketch_prob must be in [0, 1], got {self.drawn_sketch_prob}")
        if self.drawn_sketch_prob > 0 and self.in_channels != 1:
            raise ValueError("drawn_sketch_prob > 0 replaces sketches: it needs a sketch tokenizer (in_channels=1)")

    @property
    def grid_size(self) -> int:
        return self.image_size // 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["channel_mult"] = list(self.channel_mult)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "VQGANConfig":
        """Strict: unknown keys and ill-typed values raise ``ConfigError`` (a ValueError)."""
        return _config_from_dict(cls, data)


@dataclass
class VQGANOutput:
    """What one forward pass returns.

    reconstruction: (B, out_channels, H, W) decoded image (the decoder output itself, or
                    ``2 * sigmoid(logits) - 1`` with ``recon_loss="edges"``).
    ids:            (B, N) int64 code ids in raster order; (B, N, G) with product quantisation.
    commit_loss:    scalar commitment loss (already times ``commitment_weight``; 0 in eval mode).
    z_hat:          (B, N, code_dim) encoder features.
    z_tilde:        (B, N, code_dim) quantiser input (``z_hat`` fused with words, Eq. 9).
    z_q:            (B, N, code_dim) quantised features fed to the decoder.
    logits:         (B, out_channels, H, W) the decoder's raw output: edge logits with
                    ``recon_loss="edges"``, else the same tensor as ``reconstruction``.
    """

    reconstruction: torch.Tensor
    ids: torch.Tensor
    commit_loss: torch.Tensor
    z_hat: torch.Tensor
    z_tilde: torch.Tensor
    z_q: torch.Tensor
    logits: torch.Tensor | None = None


# -- building blocks ------------------------------------------------------------------------
def _norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in VQGAN, fewer when the (tiny) width is not a multiple of 32.
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a 1x1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1),
            _norm(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the spatial positions of a feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.attn = nn.MultiheadAttention(channels, num_heads=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        seq = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, hw, C)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + rearrange(out, "b (h w) c -> b c h w", h=h, w=w)


class Encoder(nn.Module):
    """E: image (B, in_channels, H, W) -> features (B, code_dim, h, w)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mult]
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)]
        width = config.base_channels
        for level, out_width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers.append(ResBlock(width, out_width))
                width = out_width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))  # strided downsampling
        layers += [ResBlock(width, width)]
        if config.attention:
            layers.append(AttnBlock(width))
        layers += [ResBlock(width, width), _norm(width), nn.SiLU(), nn.Conv2d(width, config.code_dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """G: quantised features (B, code_dim, h, w) -> image (B, out_channels, H, W)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        widths = [config.base_channels * m for m in reversed(config.channel_mult)]
        width = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(config.code_dim, width, 3, padding=1), ResBlock(width, width)]
        if config.attention:
            layers.append(AttnBlock(width))
        layers.append(ResBlock(width, width))
        for level, out_width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers.append(ResBlock(width, out_width))
                width = out_width
            if level < len(widths) - 1:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(width, width, 3, padding=1)]
        self.layers = nn.Sequential(*layers, _norm(width), nn.SiLU())
        # Applied before the final norm and activation (the last two of ``layers``), so that
        # ``layers``' parameter names stay those of a decoder without them.
        self.refine = nn.Sequential(*(ResBlock(width, width) for _ in range(config.decoder_refine_blocks)))
        for block in self.refine:
            nn.init.zeros_(block.body[-1].weight)
            nn.init.zeros_(block.body[-1].bias)
        self.conv_out = nn.Conv2d(width, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if len(self.refine):
            return self.conv_out(self.layers[-2:](self.refine(self.layers[:-2](z))))
        return self.conv_out(self.layers(z))


# -- the model ------------------------------------------------------------------------------
class VQGAN(PretrainedMixin, nn.Module):
    """Encoder E, optional word fusion (Eq. 9), EMA vector quantiser, decoder G.

    Saved with :meth:`save_pretrained` (the codebook's EMA buffers included) and loaded with
    :meth:`from_pretrained`, which raises :class:`CheckpointError`.
    """

    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.word_proj = nn.Linear(config.fusion_dim, config.code_dim) if config.fusion else None
        groups = config.pq_groups if config.quantizer == "pq" else 1
        # Decided here, not by the library's cached probe (which, if first asked before the
        # process group exists, answers "not distributed" for the rest of the process).
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        kmeans_init = config.kmeans_init
        if kmeans_init and distributed and groups > 1:
            # vector-quantize-pytorch cannot k-means-initialise several codebooks across ranks
            warnings.warn(
                "k-means init of a product-quantised codebook is not supported under data "
                "parallelism; using random init with dead-code restarts instead",
                stacklevel=2,
            )
            kmeans_init = False
        self.quantizer = VectorQuantize(
            dim=config.code_dim,
            codebook_size=config.codebook_size,
            codebook_dim=config.code_dim // groups,
            heads=groups,
            separate_codebook_per_head=groups > 1,
            decay=config.ema_decay,
            kmeans_init=kmeans_init,
            threshold_ema_dead_code=config.dead_code_threshold,
            sync_codebook=distributed,  # EMA statistics all-reduced across ranks
            commitment_weight=config.commitment_weight,
            rotation_trick=False,  # plain straight-through estimator, as in VQGAN
            channel_last=True,  # (B, N, D)
        )

    # -- sizes --------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def num_tokens(self) -> int:
        return self.config.grid_size**2

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def num_groups(self) -> int:
        """Sub-codebooks per token: 1 for plain VQ, ``pq_groups`` for product quantisation."""
        return self.config.pq_groups if self.config.quantizer == "pq" else 1

    @property
    def codebook(self) -> torch.Tensor:
        """(K, code_dim) for VQ; (G, K, code_dim // G) for product quantisation."""
        return self.quantizer.codebook

    @property
    def last_layer_weight(self) -> nn.Parameter:
        """The decoder's last conv weight, where VQGAN's adaptive GAN weight is measured."""
        return self.decoder.conv_out.weight

    # -- the pieces ---------------------------------------------------------------------
    def encode_features(self, image: torch.Tensor) -> torch.Tensor:
        """E(image) as a token sequence: (B, C, H, W) -> (B, N, code_dim), raster order."""
        if image.shape[1] != self.config.in_channels or image.shape[-1] != self.config.image_size:
            raise ValueError(
                f"expected images (B, {self.config.in_channels}, {self.config.image_size}, "
                f"{self.config.image_size}), got {tuple(image.shape)}"
            )
        return rearrange(self.encoder(image), "b d h w -> b (h w) d")

    def fuse(
        self,
        z_hat: torch.Tensor,
        fusion_words: torch.Tensor | None = None,
        word_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 9: average each cell's visual feature with its projected best word.

        z_hat (B, N, code_dim); fusion_words (B, N, fusion_dim); word_index (B, N) int64 with -1
        for cells without a word (those keep ``z_hat``; ``None`` = every cell has a word).
        Without fusion, or without words, returns ``z_hat`` unchanged.
        """
        if self.word_proj is None or fusion_words is None:
            return z_hat
        if fusion_words.shape[:2] != z_hat.shape[:2] or fusion_words.shape[-1] != self.config.fusion_dim:
            raise ValueError(
                f"fusion_words must be (B, N, fusion_dim) = {(*z_hat.shape[:2], self.config.fusion_dim)}, "
                f"got {tuple(fusion_words.shape)}"
            )
        fused = (z_hat + self.word_proj(fusion_words.to(z_hat.dtype))) / 2  # (B, N, D)
        if word_index is None:
            return fused
        valid = (word_index >= 0).unsqueeze(-1)  # (B, N, 1)
        return torch.where(valid, fused, z_hat)

    def quantize(self, z_tilde: torch.Tensor, update_codebook: bool = True):
        """(B, N, D) -> (z_q (B, N, D), ids (B, N[, G]), commit_loss).

        In training mode the library updates the codebook by EMA (and restarts dead codes);
        ``update_codebook=False`` leaves it untouched. One exception, the library's: with
        ``kmeans_init`` a codebook that was never initialised is k-means-initialised by the
        first call of any kind (a trained or loaded model is always initialised).
        """
        z_q, ids, commit = self.quantizer(z_tilde, freeze_codebook=not update_codebook)
        return z_q, ids, commit

    def decode_logits(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, N, code_dim) -> the decoder's raw output (B, out_channels, H, W)."""
        g = self.grid_size
        return self.decoder(rearrange(z_q, "b (h w) d -> b d h w", h=g, w=g))

    def output_image(self, logits: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output -> image: unchanged, or ``2 * sigmoid - 1`` for edge logits."""
        if self.config.recon_loss == "edges":
            return torch.sigmoid(logits) * 2 - 1
        return logits

    def decode_features(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, N, code_dim) -> image (B, out_channels, H, W)."""
        return self.output_image(self.decode_logits(z_q))

    # -- public API -----------------------------------------------------------------------
    def forward(
        self,
        image: torch.Tensor,
        fusion_words: torch.Tensor | None = None,
        word_index: torch.Tensor | None = None,
    ) -> VQGANOutput:
        """Reconstruct ``image`` (B, in_channels, H, W); see :meth:`fuse` for the word inputs."""
        z_hat = self.encode_features(image)  # (B, N, D)
        z_tilde = self.fuse(z_hat, fusion_words, word_index)  # (B, N, D)
        z_q, ids, commit = self.quantize(z_tilde)
        logits = self.decode_logits(z_q)  # (B, C, H, W)
        return VQGANOutput(self.output_image(logits), ids, commit, z_hat, z_tilde, z_q, logits)

    @torch.no_grad()
    def encode(
        self,
        image: torch.Tensor,
        fusion_words: torch.Tensor | None = None,
        word_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image -> token ids (B, N) int64 ((B, N, G) for PQ). Never changes the codebook."""
        z_tilde = self.fuse(self.encode_features(image), fusion_words, word_index)
        _, ids, _ = self.quantize(z_tilde, update_codebook=False)
        return ids.long()

    def ids_to_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N) or (B, N, G) -> code vectors (B, N, code_dim)."""
        expected = 2 if self.num_groups == 1 else 3
        if ids.ndim != expected or ids.shape[1] != self.num_tokens or (expected == 3 and ids.shape[2] != self.num_groups):
            shape = "(B, N)" if expected == 2 else f"(B, N, {self.num_groups})"
            raise ValueError(f"ids must be {shape} with N = {self.num_tokens}, got {tuple(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.codebook_size:
            raise ValueError(f"ids must lie in [0, {self.codebook_size}), got [{int(ids.min())}, {int(ids.max())}]")
        return self.quantizer.get_output_from_indices(ids.long())

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N) ((B, N, G) for PQ) -> image (B, out_channels, H, W)."""
        return self.decode_features(self.ids_to_features(ids))

    def decode_soft(self, probs: torch.Tensor) -> torch.Tensor:
        """Differentiable decoding of distributions over codes (stage 2's semantic loss).

        probs (B, N, K) (PQ: (B, N, G, K)) -> image; each cell decodes the expected code
        vector ``probs @ codebook``, so one-hot probs give exactly :meth:`decode`.
        """
        codebook = self.codebook.to(probs.dtype)
        if self.num_groups == 1:
            if probs.ndim != 3 or probs.shape[-1] != self.codebook_size:
                raise ValueError(f"probs must be (B, N, {self.codebook_size}), got {tuple(probs.shape)}")
            z = probs @ codebook  # (B, N, D)
        else:
            if probs.ndim != 4 or probs.shape[-2:] != (self.num_groups, self.codebook_size):
                raise ValueError(
                    f"probs must be (B, N, {self.num_groups}, {self.codebook_size}), got {tuple(probs.shape)}"
                )
            z = torch.einsum("bngk,gkd->bngd", probs, codebook)  # (B, N, G, D/G)
            z = rearrange(z, "b n g d -> b n (g d)")  # (B, N, D)
        return self.decode_features(self.quantizer.project_out(z))


__all__ = ["CheckpointError", "VQGAN", "VQGANConfig", "VQGANOutput"]

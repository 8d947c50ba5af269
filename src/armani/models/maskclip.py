"""MaskCLIP (paper Sec. 3.2, Eq. 3-8): token-wise contrast between garment parts and words.

A *mask encoder* (a ViT) reads the RGB image concatenated with the soft part mask
``(B, 3 + 15, H, W)`` and returns one token per patch; a CLIP *text encoder* returns one
token per BPE piece. Both are projected to ``embed_dim`` and L2-normalised. The two
similarities of the paper, for a batch of pairs (mask p, text q)::

    sim_M[p, q] = mean_i max_j  z_i^p . x_j^q      (Eq. 3-4, mask -> text)
    sim_T[p, q] = mean_j max_i  z_i^p . x_j^q      (Eq. 5,   text -> mask)

and the loss is the mean of an image->text cross entropy over the rows of ``sim_M`` and a
text->image cross entropy over the rows of ``sim_T^T`` (Eq. 6-8), both scaled by a
learnable CLIP temperature.

Choices the paper leaves open, fixed here:

- **Which tokens take part.** Padding, SOT and EOT are not words, and a patch whose part
  mask is (almost) all background carries no part: both are excluded from the max *and*
  the mean. A patch is valid when the mean non-background probability inside it is
  greater than ``background_threshold`` (default 0.02, i.e. about one pixel in a 4x4
  patch). Background-only patches are also hidden as attention keys inside the mask
  encoder, so the part tokens never depend on background pixels. Word validity compares ids with ``pad_id``/``sot_id``/``eot_id`` in the config
  (fill them from the tokenizer with :meth:`MaskCLIPConfig.from_tokenizer`); UNK pieces
  are kept, they are still words.
- **Empty samples.** A sample with no valid patch or no valid word gets similarity 0 with
  every partner (no NaN, no gradient through that entry); the cross entropy then sees a
  flat row, which is the honest "no evidence".
- **Mean, not sum, over the batch** in Eq. 8, so the loss scale does not depend on the
  batch size.
- **Text encoder** is open_clip's causal ``TextTransformer`` (the paper: "the same as
  CLIP"), so CLIP text weights load into it; its per-token outputs (after ``ln_final``)
  go through its own ``text_projection``. Texts shorter than ``context_length`` are padded
  with PAD internally (the causal mask has a fixed size).
- **Mask encoder** is timm's ``VisionTransformer`` without class token or pooling; its
  patch grid equals the stage-1 code grid, so token i of MaskCLIP is code i of stage 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from armani.models.checkpoint import CONFIG_NAME as CONFIG_NAME  # re-exported: older imports
from armani.models.checkpoint import WEIGHTS_NAME as WEIGHTS_NAME
from armani.models.checkpoint import PretrainedMixin
from armani.models.checkpoint import load_checkpoint as load_checkpoint  # used by the diffusion baseline
from armani.models.checkpoint import save_checkpoint as save_checkpoint  # and the attribute classifier
from armani.parts import BACKGROUND, NUM_PARTS

if TYPE_CHECKING:  # pragma: no cover
    from armani.text import GarmentTokenizer

# open_clip's BPE specials, used when copying pretrained rows into a compact vocabulary.
_BPE_SOT, _BPE_EOT, _BPE_SIZE = 49406, 49407, 49408


# -- config --------------------------------------------------------------------------
@dataclass
class MaskCLIPConfig:
    """Sizes of MaskCLIP. Defaults: a 64 px model with the paper's text encoder size."""

    image_size: int = 64
    grid: int = 16  # patch grid == stage-1 token grid; patch_size = image_size // grid
    in_channels: int = 3 + NUM_PARTS  # RGB + one channel per part
    vision_width: int = 256
    vision_layers: int = 6
    vision_heads: int = 8
    text_width: int = 512  # paper: 12 layers, 8 heads, 512 wide (CLIP's text encoder)
    text_layers: int = 12
    text_heads: int = 8
    vocab_size: int = _BPE_SIZE
    context_length: int = 32
    embed_dim: int = 512
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    pretrained_text: str | None = None  # informational: where the text weights came from
    background_threshold: float = 0.02
    # How far a part token looks. None: every patch attends to every part patch (a plain
    # ViT). r >= 0: a patch attends only to part patches within r cells (Chebyshev distance)
    # and itself, so its token describes its own neighbourhood; 0: a patch sees only itself
    # (its pixels, its part channels and its position), so a part word can only match the
    # patches that hold that part. Measured on the default config (pointing game, 1,000 val
    # images): global attention let one "hub" patch per image match every word (19%
    # pointing at 14% chance after 1,500 steps, retrieval fine); radius 1 reached 28% at
    # step 150 with buttons and pockets near 0 (four layers of radius 1 still see 9x9
    # cells); radius 0 with context-free words: see below.
    attention_radius: int | None = None
    # The same for words: None is CLIP's causal text transformer; r >= 0 lets a word attend
    # only to itself and the r tokens before it. A causal encoder makes every later word a
    # summary of the caption so far, and the loss then lets such a word match whichever
    # patch tells garments apart best (the body's colour) rather than its part. Default
    # config, pointing game on 1,000 val images, patch-only image tokens: causal text 0.33
    # after 150 steps (buttons 0.2%); radius 2: 0.75 at step 150 falling to 0.58 at step 1,200
    # (misses on body patches: "long-sleeved" sees "long -"); radius 0 (a word is its
    # embedding and position only): 0.96 at step 400. Context-free words cost retrieval
    # (R@1 0.54 -> 0.34 at step 400), which counts ("five buttons") and layout need.
    text_attention_radius: int | None = None
    pad_id: int = 0
    sot_id: int = _BPE_SOT
    eot_id: int = _BPE_EOT

    def __post_init__(self):
        for name in ("attention_radius", "text_attention_radius"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be None (unrestricted) or >= 0, got {value}")
        if self.image_size % self.grid:
            raise ValueError(f"grid {self.grid} must divide image_size {self.image_size}")
        if self.in_channels != 3 + NUM_PARTS:
            raise ValueError(f"in_channels must be 3 + {NUM_PARTS} (RGB + part mask), got {self.in_channels}")

    @property
    def patch_size(self) -> int:
        return self.image_size // self.grid

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @classmethod
    def from_tokenizer(cls, tokenizer: "GarmentTokenizer", **overrides) -> "MaskCLIPConfig":
        """A config whose vocabulary, context length and special ids match ``tokenizer``."""
        ids = dict(
            vocab_size=tokenizer.vocab_size,
            context_length=tokenizer.context_length,
            pad_id=tokenizer.pad_id,
            sot_id=tokenizer.sot_id,
            eot_id=tokenizer.eot_id,
        )
        return cls(**{**ids, **overrides})


@dataclass
class MaskCLIPOutput:
    """Named parts of the MaskCLIP loss (Eq. 6-8) and the similarities behind it."""

    loss: torch.Tensor  # 1/2 (loss_m + loss_t)
    loss_m: torch.Tensor  # mask -> text cross entropy over rows of sim_m
    loss_t: torch.Tensor  # text -> mask cross entropy over rows of sim_t^T
    sim_m: torch.Tensor  # (B, B) [p, q] = sim_M(mask p, text q)
    sim_t: torch.Tensor  # (B, B) [p, q] = sim_T(mask p, text q)
    logit_scale: torch.Tensor  # exp(learned log scale), clamped


def reduce_token_scores(
    scores: torch.Tensor, part_valid: torch.Tensor, word_valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4-5 on a block of token scores.

    scores (..., N, L) dot products of part tokens and word tokens; part_valid (..., N) and
    word_valid (..., L) broadcast against it. Returns (sim_m, sim_t) of shape (...).
    Invalid tokens are -inf before each max and weight 0 in each mean; a pair without any
    valid part or word gets 0.
    """
    pv = part_valid.unsqueeze(-1)  # (..., N, 1)
    wv = word_valid.unsqueeze(-2)  # (..., 1, L)
    neg_inf = float("-inf")
    # mask -> text: for each part, its best valid word; mean over valid parts.
    best_word = scores.masked_fill(~wv, neg_inf).amax(dim=-1)  # (..., N)
    pv_ = part_valid & word_valid.any(dim=-1, keepdim=True)  # (..., N)
    best_word = torch.where(pv_, best_word, torch.zeros_like(best_word))
    sim_m = best_word.sum(-1) / pv_.sum(-1).clamp(min=1)
    # text -> mask: for each word, its best valid part; mean over valid words.
    best_part = scores.masked_fill(~pv, neg_inf).amax(dim=-2)  # (..., L)
    wv_ = word_valid & part_valid.any(dim=-1, keepdim=True)  # (..., L)
    best_part = torch.where(wv_, best_part, torch.zeros_like(best_part))
    sim_t = best_part.sum(-1) / wv_.sum(-1).clamp(min=1)
    return sim_m, sim_t


class MaskCLIP(PretrainedMixin, nn.Module):
    """Mask encoder + CLIP text encoder with FILIP-style token-wise contrast (Eq. 3-8)."""

    config_class = MaskCLIPConfig

    def __init__(self, config: MaskCLIPConfig):
        super().__init__()
        self.config = config
        c = config
        self.mask_encoder = VisionTransformer(
            img_size=c.image_size,
            patch_size=c.patch_size,
            in_chans=c.in_channels,
            num_classes=0,
            global_pool="",
            class_token=False,
            embed_dim=c.vision_width,
            depth=c.vision_layers,
            num_heads=c.vision_heads,
        )
        self.mask_proj = nn.Linear(c.vision_width, c.embed_dim, bias=False)
        self.text_encoder = TextTransformer(
            context_length=c.context_length,
            vocab_size=c.vocab_size,
            width=c.text_width,
            heads=c.text_heads,
            layers=c.text_layers,
            output_dim=c.embed_dim,
            pad_id=c.pad_id,
            eos_id=c.eot_id,
            output_tokens=True,
        )
        if c.text_attention_radius is not None:
            # open_clip adds its ``attn_mask`` buffer (additive, -inf = blocked) to the padding
            # mask on every call; a banded causal mask keeps each word's context local. Not
            # persistent: it is rebuilt from the config, the weights are unchanged.
            i = torch.arange(c.context_length)
            lag = i[:, None] - i[None, :]  # query - key
            band = torch.full((c.context_length, c.context_length), float("-inf"))
            band[(lag >= 0) & (lag <= c.text_attention_radius)] = 0.0
            self.text_encoder.register_buffer("attn_mask", band, persistent=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))

    # -- encoders --------------------------------------------------------------------
    def _local_mask(self, device) -> torch.Tensor:
        """(N, N) bool: key patch within ``attention_radius`` grid cells of the query patch."""
        g = self.config.grid
        yx = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij"), -1).reshape(-1, 2)
        dist = (yx[:, None, :] - yx[None, :, :]).abs().amax(-1)  # (N, N) Chebyshev
        return (dist <= self.config.attention_radius).to(device)

    def _self_mask(self, device) -> torch.Tensor:
        return torch.eye(self.config.grid**2, dtype=torch.bool, device=device)

    def patch_valid(self, part_probs: torch.Tensor) -> torch.Tensor:
        """(B, 15, H, W) soft mask -> (B, N) bool: patch holds more than background."""
        foreground = 1.0 - part_probs[:, BACKGROUND]  # (B, H, W)
        per_patch = F.avg_pool2d(foreground.unsqueeze(1), self.config.patch_size)  # (B, 1, g, g)
        return per_patch.flatten(1) > self.config.background_threshold  # (B, N)

    def encode_parts(self, image: torch.Tensor, part_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (B, 3, H, W) in [-1, 1] + soft mask (B, 15, H, W) -> (tokens (B, N, D), valid (B, N))."""
        if image.shape[-2:] != part_probs.shape[-2:] or image.shape[-1] != self.config.image_size:
            raise ValueError(
                f"image {tuple(image.shape)} and part_probs {tuple(part_probs.shape)} must both be "
                f"{self.config.image_size}x{self.config.image_size}"
            )
        valid = self.patch_valid(part_probs)  # (B, N)
        # Background-only patches are hidden as attention keys, so part tokens do not depend
        # on background pixels; a sample without any part patch attends everywhere (no NaN).
        keys = valid | ~valid.any(dim=1, keepdim=True)  # (B, N)
        attn_mask = keys[:, None, None, :].expand(-1, 1, keys.shape[1], -1)  # (B, 1, N, N)
        if self.config.attention_radius is not None:
            # Local attention; every query keeps itself as a key, so no row is empty.
            attn_mask = (attn_mask & self._local_mask(image.device)) | self._self_mask(image.device)
        x = torch.cat([image, part_probs.to(image.dtype)], dim=1)  # (B, 18, H, W)
        tokens = self.mask_encoder.forward_features(x, attn_mask=attn_mask)  # (B, N, width)
        tokens = F.normalize(self.mask_proj(tokens), dim=-1)  # (B, N, D)
        return tokens, valid

    def word_valid(self, text_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L) bool, False for PAD, SOT and EOT."""
        c = self.config
        return (text_ids != c.pad_id) & (text_ids != c.sot_id) & (text_ids != c.eot_id)

    def encode_text(self, text_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) -> (tokens (B, L, D) L2-normalised, valid (B, L) bool)."""
        B, L = text_ids.shape
        ctx = self.config.context_length
        if L > ctx:
            raise ValueError(f"text has {L} tokens but MaskCLIP's context_length is {ctx}")
        if int(text_ids.max()) >= self.config.vocab_size or int(text_ids.min()) < 0:
            raise ValueError(
                f"token id out of range [0, {self.config.vocab_size}): was the text tokenized "
                "with a different vocabulary than the one this MaskCLIP was built for?"
            )
        padded = F.pad(text_ids, (0, ctx - L), value=self.config.pad_id)  # (B, ctx)
        _, tokens = self.text_encoder(padded)  # (B, ctx, width), after ln_final
        tokens = tokens[:, :L] @ self.text_encoder.text_projection  # (B, L, D)
        return F.normalize(tokens, dim=-1), self.word_valid(text_ids)

    # -- similarities ----------------------------------------------------------------
    @staticmethod
    def similarity(
        part_tok: torch.Tensor, part_valid: torch.Tensor, word_tok: torch.Tensor, word_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All-pairs (sim_m, sim_t), each (P, Q) with [p, q] = sim(mask p, text q)."""
        scores = torch.einsum("pnd,qld->pqnl", part_tok, word_tok)  # (P, Q, N, L)
        return reduce_token_scores(scores, part_valid[:, None], word_valid[None])

    def logit_scale_value(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def forward(self, image: torch.Tensor, part_probs: torch.Tensor, text_ids: torch.Tensor) -> MaskCLIPOutput:
        """Batch of b aligned pairs -> MaskCLIP loss (Eq. 8), matched pairs on the diagonal."""
        part_tok, part_valid = self.encode_parts(image, part_probs)
        word_tok, word_valid = self.encode_text(text_ids)
        sim_m, sim_t = self.similarity(part_tok, part_valid, word_tok, word_valid)  # (B, B)
        scale = self.logit_scale_value()
        target = torch.arange(sim_m.shape[0], device=sim_m.device)
        loss_m = F.cross_entropy(scale * sim_m, target)  # rows: masks p, columns: texts q
        loss_t = F.cross_entropy(scale * sim_t.T, target)  # rows: texts q, columns: masks p
        return MaskCLIPOutput(
            loss=0.5 * (loss_m + loss_t), loss_m=loss_m, loss_t=loss_t, sim_m=sim_m, sim_t=sim_t, logit_scale=scale
        )

    def pair_similarity(self, image: torch.Tensor, part_probs: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """D of Eq. 10 for matched pairs: 1/2 (sim_M[b, b] + sim_T[b, b]) -> (B,), in [-1, 1].

        Differentiable w.r.t. ``image`` and ``part_probs`` (the validity of a patch is a
        hard threshold and passes no gradient; the mask channels of the ViT input do).
        """
        part_tok, part_valid = self.encode_parts(image, part_probs)
        word_tok, word_valid = self.encode_text(text_ids)
        scores = torch.einsum("bnd,bld->bnl", part_tok, word_tok)  # (B, N, L)
        sim_m, sim_t = reduce_token_scores(scores, part_valid, word_valid)
        return 0.5 * (sim_m + sim_t)

    def word_part_similarity(self, image: torch.Tensor, part_probs: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """(B, L, grid, grid): similarity of every token with every patch (raw, unmasked).

        Use :meth:`patch_valid` and :meth:`word_valid` to know which entries are meaningful.
        """
        part_tok, _ = self.encode_parts(image, part_probs)
        word_tok, _ = self.encode_text(text_ids)
        scores = torch.einsum("bnd,bld->bln", part_tok, word_tok)  # (B, L, N)
        g = self.config.grid
        return scores.reshape(*scores.shape[:2], g, g)

    def best_words(
        self, image: torch.Tensor, part_probs: torch.Tensor, text_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 9: for each grid cell, the valid word most similar to that cell's part token.

        Returns ``word_tokens`` (B, N, D) (zeros where the patch is invalid or the text has
        no word) and ``word_index`` (B, N) int64 token position in ``text_ids`` (-1 there).
        """
        part_tok, part_valid = self.encode_parts(image, part_probs)
        word_tok, word_valid = self.encode_text(text_ids)
        scores = torch.einsum("bnd,bld->bnl", part_tok, word_tok)  # (B, N, L)
        scores = scores.masked_fill(~word_valid[:, None, :], float("-inf"))
        index = scores.argmax(dim=-1)  # (B, N)
        ok = part_valid & word_valid.any(dim=-1, keepdim=True)  # (B, N)
        tokens = torch.gather(word_tok, 1, index.unsqueeze(-1).expand(-1, -1, word_tok.shape[-1]))  # (B, N, D)
        tokens = tokens * ok.unsqueeze(-1).to(tokens.dtype)
        return tokens, torch.where(ok, index, torch.full_like(index, -1))

    # -- pretrained text weights -----------------------------------------------------
    def load_pretrained_text(self, tag_or_path: str, tokenizer: "GarmentTokenizer | None" = None) -> None:
        """Copy open_clip CLIP text weights into the text encoder.

        ``tag_or_path`` is a local ``.safetensors`` file holding an open_clip model's (or its
        text tower's) state dict, or an open_clip ``"ARCH/TAG"`` such as ``"ViT-B-32/openai"``
        (needs the weights in the local cache or a network; offline it raises one clear
        error). Width, layers, heads and ``embed_dim`` must equal the pretrained ones.

        With a compact-vocabulary ``tokenizer`` only its rows are copied: PAD <- BPE row 0
        (CLIP itself pads with id 0), SOT <- 49406, EOT <- 49407, UNK <- the mean of all BPE
        rows, then row 4 + k <- BPE id ``tokenizer.vocab[k]``. Positional embeddings are cut
        to ``context_length``.
        """
        state = self._read_text_state(tag_or_path)
        emb = state["token_embedding.weight"]
        if emb.shape[0] != _BPE_SIZE:
            raise ValueError(f"{tag_or_path}: expected a {_BPE_SIZE}-row CLIP token embedding, got {tuple(emb.shape)}")
        vocab = None if tokenizer is None else tokenizer.vocab
        if vocab is not None:
            rows = torch.tensor([0, _BPE_SOT, _BPE_EOT] + list(vocab), dtype=torch.long)
            picked = emb[rows]
            state["token_embedding.weight"] = torch.cat([picked[:3], emb.mean(0, keepdim=True), picked[3:]])
        if state["token_embedding.weight"].shape[0] != self.config.vocab_size:
            raise ValueError(
                f"vocab_size {self.config.vocab_size} does not match the tokenizer's "
                f"({state['token_embedding.weight'].shape[0]}); build the config with MaskCLIPConfig.from_tokenizer"
            )
        pos = state["positional_embedding"]
        if pos.shape[0] < self.config.context_length:
            raise ValueError(f"pretrained context length {pos.shape[0]} < context_length {self.config.context_length}")
        state["positional_embedding"] = pos[: self.config.context_length]
        own = self.text_encoder.state_dict()
        mismatched = [f"{k}: {tuple(state[k].shape)} vs ours {tuple(v.shape)}" for k, v in own.items()
                      if k in state and state[k].shape != v.shape]
        missing = [k for k in own if k not in state]
        if mismatched or missing:
            raise ValueError(
                f"pretrained text weights {tag_or_path} do not fit this text encoder (set text_width/"
                f"text_layers/text_heads/embed_dim to the pretrained sizes). "
                f"Mismatched: {mismatched[:3]}; missing: {missing[:3]}"
            )
        self.text_encoder.load_state_dict({k: state[k] for k in own}, strict=True)
        self.config.pretrained_text = str(tag_or_path)

    @staticmethod
    def _read_text_state(tag_or_path: str) -> dict[str, torch.Tensor]:
        """Text-tower tensors under TextTransformer's key names, from a file or an open_clip tag."""
        path = Path(tag_or_path)
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise FileNotFoundError(f"no pretrained text weights at {path}")
            try:
                full = load_file(str(path))
            except Exception as err:
                raise ValueError(f"{path} could not be read as safetensors: {err}") from err
        else:
            import open_clip

            arch, _, tag = str(tag_or_path).partition("/")
            try:
                full = open_clip.create_model(arch, pretrained=tag or None).state_dict()
            except Exception as err:
                raise RuntimeError(
                    f"could not load open_clip weights {tag_or_path!r} ({type(err).__name__}: {err}). "
                    "Offline, pass a local .safetensors file of open_clip text weights instead."
                ) from err
        # open_clip's CLIP keeps text keys at top level; CustomTextCLIP under "text.".
        if any(k.startswith("text.") for k in full):
            full = {k[len("text."):]: v for k, v in full.items() if k.startswith("text.")}
        state = {k: v for k, v in full.items() if not k.startswith("visual.") and k not in ("logit_scale", "attn_mask")}
        if "token_embedding.weight" not in state:
            raise ValueError(f"{tag_or_path} holds no CLIP text weights (no token_embedding.weight)")
        return state

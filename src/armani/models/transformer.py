"""Stage 2: the cross-modal Transformer (ARMANI Sec. 3.4, Eq. 12-14).

One Transformer reads every control signal as tokens and predicts the image's VQ tokens:

    [text (Lt)] [SEP] [sketch (Ls)] [SEP] [partial (Lp)] [SEP] [image (N)]

Choices the paper leaves open, fixed here:

* Each modality has its own embedding table; a token also gets a learned position
  embedding (absolute, over the whole sequence) and a token-type embedding (text, sketch,
  partial, image, SEP). The three SEPs are distinct learned vectors.
* A condition that is absent, or dropped for classifier-free guidance, is replaced by its
  modality's learned NULL id at *every* position of its segment. The sequence length never
  changes, so any subset of {text, sketch, partial} (none included) is a valid input, and
  the unconditional branch of guidance is the same network with NULL segments.
* Text PAD tokens are ordinary tokens (no key masking): the length is fixed, the PAD
  embedding is learned, and attention stays a plain causal (or full) mask that SDPA runs
  with its fastest kernels.
* ``causal=True`` is ARMANI's GPT: the output at the last SEP predicts image token 0 and
  the output at image token t-1 predicts token t (Eq. 13). ``causal=False`` is the
  M6-Fashion-style bidirectional masked-token model: image positions may hold the [MASK]
  id (``image_codebook_size``) and the output at each image position predicts its token.
* Product quantisation (``pq_groups = G > 1``, M6-Fashion): each image position holds G
  sub-codes; its input embedding is the sum of G sub-code embeddings and G output heads
  (one Linear of width G*K) give logits ``(B, N, G, K)``. ``image_codebook_size`` is then
  the size of *each* sub-codebook.
* Condition dropout in training is an independent Bernoulli draw per condition and per
  sample, from a caller-seeded generator, with the probabilities in ``cond_drop_prob``.
  Default 0.1 for text and 0.5 for sketch/partial: sketches and partial images are derived
  from every training image, so they must be absent often for text-only to be learned.
* The semantic loss of Eq. 14 needs the VQGAN decoder, the segmenter and MaskCLIP, which a
  model must not import; :meth:`CrossModalTransformer.loss` takes a ``semantic_fn`` hook
  that receives ``soft_image_codes(logits)`` (softmax, or straight-through Gumbel) of the
  rows whose caption was kept, with those rows' batch indices, and returns the scalar
  semantic loss.
* GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual output projections
  scaled by 1/sqrt(2 * layers). Output head not tied to the input table (the input table
  has the extra [MASK]/NULL rows and may be a sum over PQ groups).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from armani.models.checkpoint import CONFIG_NAME as CONFIG_NAME  # re-exported: older imports
from armani.models.checkpoint import WEIGHTS_NAME as WEIGHTS_NAME
from armani.models.checkpoint import PretrainedMixin

CONDITIONS: tuple[str, ...] = ("text", "sketch", "partial")
# token types
TYPE_TEXT, TYPE_SKETCH, TYPE_PARTIAL, TYPE_IMAGE, TYPE_SEP = range(5)
MODEL_TYPE = "armani-cross-modal-transformer"


def _default_drop() -> dict[str, float]:
    return {"text": 0.1, "sketch": 0.5, "partial": 0.5}


@dataclass
class TransformerConfig:
    """Sizes of the cross-modal Transformer. The default is the small shipped model;
    :meth:`paper` gives the paper's GPT2-medium-like size (16 heads, 1024 wide, 16 blocks)."""

    text_vocab_size: int = 512
    text_len: int = 32
    sketch_codebook_size: int = 256
    sketch_len: int = 64  # 8 x 8
    partial_codebook_size: int = 256
    partial_len: int = 64
    image_codebook_size: int = 1024  # per sub-codebook when pq_groups > 1
    image_len: int = 256  # 16 x 16
    pq_groups: int = 1
    width: int = 256
    layers: int = 4
    heads: int = 8
    dropout: float = 0.0
    causal: bool = True
    cond_drop_prob: dict[str, float] = field(default_factory=_default_drop)
    text_pad_id: int = 0
    text_sot_id: int = 1
    text_eot_id: int = 2
    semantic_loss: bool = False
    lambda_semantic: float = 2.0
    # Training steps of plain cross entropy before the semantic loss (Eq. 14) is switched on,
    # like the VQGAN's GAN warm-up: decoding the near-uniform code distributions of an
    # untrained model gives grey averages whose gradients fight the cross entropy, and each
    # semantic step costs ~2x a plain one on a CPU.
    semantic_start_step: int = 0
    # One 2D position code shared by the three grids (issue 14, lead 3): learned row and
    # column embeddings of the image grid, added to every image token, and to every sketch
    # and partial token as the mean over the image rows/columns its cell covers. So a sketch
    # cell and the image cells under it carry the same code, instead of the model having to
    # learn from data which of 64 unrelated sketch positions lies over which image position.
    # Zero-initialised: switching it on in a trained model leaves its outputs unchanged.
    grid_positions: bool = False
    # Cross-entropy weight of image tokens that cover no garment pixel (issue 14, lead 6): ~60%
    # of the tokens are studio background and take ~47% of the loss. Below 1 the loss is a
    # weighted mean that spends more of the gradient on the garment. Needs ``garment_tokens``
    # in :meth:`CrossModalTransformer.loss`; 1.0 is the plain mean.
    background_weight: float = 1.0
    # Stage 2's training data, which is tokenized once before the loop: with 1 view every
    # training row keeps one sketch and one partial-image crop for all its epochs (a
    # continuation runs about 3 epochs, the shipped lineage about 15). With V views the
    # sketch and partial tokens are computed for the dataset's epochs 0..V-1 (other crops,
    # other drawn/Canny draws) and training epoch e reads view e mod V. Text and image tokens
    # are the same in every view. Validation keeps one view.
    condition_views: int = 1
    # Chance that a training row's sketch is drawn in a person's style (thick, wobbly, unclosed
    # strokes of its part mask, as the sketch codebook's ``drawn_sketch_prob``) instead of its
    # Canny edge map, so stage 2 also learns to follow sketches drawn on the app's canvas.
    # Training rows only (rows without a mask keep their Canny map); validation keeps Canny.
    drawn_sketch_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.condition_views < 1:
            raise ValueError(f"condition_views must be >= 1, got {self.condition_views}")
        if not 0.0 <= self.drawn_sketch_prob <= 1.0:
            raise ValueError(f"drawn_sketch_prob must be in [0, 1], got {self.drawn_sketch_prob}")
        if not self.background_weight > 0:
            raise ValueError(f"background_weight must be > 0, got {self.background_weight}")
        if self.grid_positions:
            side = math.isqrt(self.image_len)
            for name, n in (("image", self.image_len), ("sketch", self.sketch_len), ("partial", self.partial_len)):
                if math.isqrt(n) ** 2 != n or side % math.isqrt(n):
                    raise ValueError(f"grid_positions needs square grids that divide the image grid; "
                                     f"{name} has {n} tokens for an image grid of {side}x{side}")
        if self.pq_groups < 1:
            raise ValueError(f"pq_groups must be >= 1, got {self.pq_groups}")
        unknown = set(self.cond_drop_prob) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"cond_drop_prob has unknown conditions {sorted(unknown)}; use {CONDITIONS}")
        self.cond_drop_prob = {c: float(self.cond_drop_prob.get(c, 0.0)) for c in CONDITIONS}

    @classmethod
    def paper(cls, **overrides) -> "TransformerConfig":
        return cls(**{"width": 1024, "layers": 16, "heads": 16, "text_vocab_size": 49408,
                      "text_sot_id": 49406, "text_eot_id": 49407, **overrides})

    # -- derived sizes ----------------------------------------------------------------
    @property
    def prefix_len(self) -> int:
        """Condition tokens incl. the three SEPs: the last SEP predicts image token 0."""
        return self.text_len + self.sketch_len + self.partial_len + 3

    @property
    def max_len(self) -> int:
        return self.prefix_len + self.image_len

    @property
    def mask_id(self) -> int:
        """The [MASK] image id (bidirectional model); never produced by the output head."""
        return self.image_codebook_size

    def null_id(self, condition: str) -> int:
        """The NULL id of a condition: one past its vocabulary."""
        return {"text": self.text_vocab_size, "sketch": self.sketch_codebook_size,
                "partial": self.partial_codebook_size}[condition]

    def seq_len(self, condition: str) -> int:
        return {"text": self.text_len, "sketch": self.sketch_len, "partial": self.partial_len}[condition]

    def segment_start(self, segment: str) -> int:
        """First sequence position of a segment of ``[text][SEP][sketch][SEP][partial][SEP][image]``."""
        return {"text": 0, "sketch": self.text_len + 1, "partial": self.text_len + self.sketch_len + 2,
                "image": self.prefix_len}[segment]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "TransformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class TransformerLoss:
    """Named parts of the stage-2 loss (Eq. 14): total = ce + lambda3 * semantic."""

    total: torch.Tensor
    ce: torch.Tensor
    semantic: torch.Tensor
    accuracy: torch.Tensor  # top-1 accuracy on the scored image tokens (no gradient)
    # (M,) cross entropy of each scored token, mean over the product-quantiser groups, in the
    # order of the scored mask (causal models score every token: it views as (B, N))
    token_ce: torch.Tensor | None = None


class KVCache:
    """A preallocated key/value cache: one tensor ``(layers, 2, B, heads, T_max, head_dim)``.

    Keys and values are written in place; attention reads the filled prefix ``[:end]``.
    """

    def __init__(self, config: TransformerConfig, batch: int, max_len: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        head_dim = config.width // config.heads
        self.max_len = max_len or config.max_len
        self.data = torch.empty(config.layers, 2, batch, config.heads, self.max_len, head_dim,
                                dtype=dtype, device=device)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[i, 0], self.data[i, 1]


def grid_position_weights(config: TransformerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Which image-grid rows and columns each sequence position sits on: two (T_max, side) maps.

    An image token at (r, c) has weight 1 on row r and column c. A sketch or partial token
    whose cell covers image rows ``r*f .. r*f+f-1`` (``f`` = image side / its grid side) has
    weight ``1/f`` on each of them, and the same for columns, so its code is the mean of the
    codes of the image cells under it. Text and SEP positions have no weight.
    """
    side = math.isqrt(config.image_len)
    rows = torch.zeros(config.max_len, side)
    cols = torch.zeros(config.max_len, side)
    for name, n in (("sketch", config.sketch_len), ("partial", config.partial_len), ("image", config.image_len)):
        g = math.isqrt(n)
        f = side // g
        start = config.segment_start(name)
        for k in range(n):
            r, c = divmod(k, g)
            rows[start + k, r * f : (r + 1) * f] = 1.0 / f
            cols[start + k, c * f : (c + 1) * f] = 1.0 / f
    return rows, cols


def soft_image_codes(logits: torch.Tensor, tau: float = 1.0, hard: bool = False) -> torch.Tensor:
    """Differentiable code assignments for the semantic loss: ``(B, N[, G], K)`` probabilities.

    ``hard=False``: softmax(logits / tau). ``hard=True``: straight-through Gumbel-softmax
    (one-hot forward, soft gradient). The trainer feeds them to ``vqgan.decode_soft``.
    """
    if hard:
        return F.gumbel_softmax(logits.float(), tau=tau, hard=True, dim=-1)
    return torch.softmax(logits.float() / tau, dim=-1)


class SelfAttention(nn.Module):
    """Multi-head attention with fused QKV and F.scaled_dot_product_attention."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.width // config.heads
        self.causal = config.causal
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        # Set by samplers running bf16 weights on CPU: there bf16 SDPA is several times
        # slower than float32 (measured), so attention (and the KV cache) stay float32.
        self.attention_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                start: int = 0) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        if cache is not None:
            if start and T > 1 and self.causal:
                raise ValueError("cached attention takes a whole prefix (start 0) or one token at a time")
            k_cache, v_cache = cache  # (B, H, T_max, hd)
            k_cache[:, :, start : start + T] = k  # casts to the cache dtype in the copy
            v_cache[:, :, start : start + T] = v
            k, v = k_cache[:, :, : start + T], v_cache[:, :, : start + T]
        if self.attention_dtype is not None and q.dtype != self.attention_dtype:
            q, k, v = (t.to(self.attention_dtype) for t in (q, k, v))  # no-op for a cache of that dtype
        # With a cache and one query, the query sees the whole filled prefix: no mask.
        is_causal = self.causal and T > 1
        y = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, D).to(x.dtype))


class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.width)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, 4 * config.width),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * config.width, config.width),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, start: int = 0):
        x = x + self.drop(self.attn(self.ln1(x), cache, start))
        return x + self.drop(self.mlp(self.ln2(x)))


class CrossModalTransformer(PretrainedMixin, nn.Module):
    """GPT (``causal=True``) or bidirectional masked-token model over conditions + image tokens.

    ``config.json`` starts with ``"model_type": "armani-cross-modal-transformer"``; loading a
    folder with another tag raises :class:`~armani.models.checkpoint.CheckpointError`.
    """

    config_class = TransformerConfig
    model_type = MODEL_TYPE

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        D, G, K = c.width, c.pq_groups, c.image_codebook_size
        # +1 row: NULL for conditions, [MASK] for the image
        self.text_emb = nn.Embedding(c.text_vocab_size + 1, D)
        self.sketch_emb = nn.Embedding(c.sketch_codebook_size + 1, D)
        self.partial_emb = nn.Embedding(c.partial_codebook_size + 1, D)
        self.image_emb = nn.Embedding(G * (K + 1), D)  # G stacked sub-code tables
        self.sep_emb = nn.Embedding(3, D)
        self.type_emb = nn.Embedding(5, D)
        self.pos_emb = nn.Embedding(c.max_len, D)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, G * K, bias=False)

        types = torch.cat([
            torch.full((c.text_len,), TYPE_TEXT), torch.tensor([TYPE_SEP]),
            torch.full((c.sketch_len,), TYPE_SKETCH), torch.tensor([TYPE_SEP]),
            torch.full((c.partial_len,), TYPE_PARTIAL), torch.tensor([TYPE_SEP]),
            torch.full((c.image_len,), TYPE_IMAGE),
        ])
        self.register_buffer("type_ids", types, persistent=False)  # (T_max,)
        self.register_buffer("group_offsets", torch.arange(G) * (K + 1), persistent=False)  # (G,)
        if c.grid_positions:
            side = math.isqrt(c.image_len)
            self.grid_row_emb = nn.Embedding(side, D)
            self.grid_col_emb = nn.Embedding(side, D)
            rows, cols = grid_position_weights(c)
            self.register_buffer("grid_rows", rows, persistent=False)  # (T_max, side)
            self.register_buffer("grid_cols", cols, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.layers))
        if c.grid_positions:
            nn.init.zeros_(self.grid_row_emb.weight)
            nn.init.zeros_(self.grid_col_emb.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    soft_image_codes = staticmethod(soft_image_codes)

    # -- inputs -------------------------------------------------------------------------
    def _position_terms(self, start: int, length: int) -> torch.Tensor:
        """Position + token-type embedding for sequence positions [start, start+length): (T, D)."""
        pos = torch.arange(start, start + length, device=self.type_ids.device)
        terms = self.pos_emb(pos) + self.type_emb(self.type_ids[start : start + length])
        if self.config.grid_positions:
            span = slice(start, start + length)
            terms = terms + self.grid_rows[span] @ self.grid_row_emb.weight + self.grid_cols[span] @ self.grid_col_emb.weight
        return terms

    def condition_ids(self, name: str, ids: torch.Tensor | None, batch: int,
                       drop: torch.Tensor | bool | None) -> torch.Tensor:
        """(B, L) ids of one condition segment; absent or dropped rows become NULL.

        ``ids`` is (L,), (1, L) (broadcast) or (B, L); short text is right-padded with PAD.
        """
        c, L, null = self.config, self.config.seq_len(name), self.config.null_id(name)
        device = self.type_ids.device
        if ids is None:
            return torch.full((batch, L), null, dtype=torch.long, device=device)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.shape[0] == 1 and batch > 1:
            ids = ids.expand(batch, -1)
        if ids.dim() != 2 or ids.shape[0] != batch:
            raise ValueError(f"{name}_ids must be (B, {L}) with B = {batch}, got {tuple(ids.shape)}")
        if name == "text" and ids.shape[1] < L:  # right-pad short text
            ids = F.pad(ids, (0, L - ids.shape[1]), value=c.text_pad_id)
        if ids.shape[1] != L:
            raise ValueError(f"{name}_ids must have length {L}, got {ids.shape[1]}")
        ids = ids.to(device=device, dtype=torch.long)
        if drop is not None:
            drop = torch.as_tensor(drop, device=device, dtype=torch.bool).reshape(-1, 1)  # (B|1, 1)
            ids = torch.where(drop, torch.full_like(ids, null), ids)
        return ids

    def embed_prefix(self, text_ids=None, sketch_ids=None, partial_ids=None, batch: int | None = None,
                     drop: Mapping[str, torch.Tensor | bool] | None = None) -> torch.Tensor:
        """Embed ``[text][SEP][sketch][SEP][partial][SEP]``: (B, P, D)."""
        drop = dict(drop or {})
        unknown = set(drop) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"drop has unknown conditions {sorted(unknown)}; use {CONDITIONS}")
        if batch is None:
            given = [x for x in (text_ids, sketch_ids, partial_ids) if x is not None and x.dim() == 2]
            batch = given[0].shape[0] if given else 1
        text = self.condition_ids("text", text_ids, batch, drop.get("text"))
        sketch = self.condition_ids("sketch", sketch_ids, batch, drop.get("sketch"))
        partial = self.condition_ids("partial", partial_ids, batch, drop.get("partial"))
        sep = self.sep_emb.weight.unsqueeze(0).expand(batch, -1, -1)  # (B, 3, D)
        h = torch.cat([
            self.text_emb(text), sep[:, 0:1], self.sketch_emb(sketch), sep[:, 1:2],
            self.partial_emb(partial), sep[:, 2:3],
        ], dim=1)  # (B, P, D)
        return h + self._position_terms(0, h.shape[1])

    def embed_image(self, image_ids: torch.Tensor, start: int = 0,
                    terms: torch.Tensor | None = None) -> torch.Tensor:
        """Embed image tokens ``(B, n[, G])`` placed at image positions [start, start+n): (B, n, D).

        ``terms``: their position + type embedding ``(n, D)`` when the caller has it already
        (the samplers compute the table once instead of once per token).
        """
        c = self.config
        if c.pq_groups > 1:
            if image_ids.dim() != 3 or image_ids.shape[-1] != c.pq_groups:
                raise ValueError(f"PQ image ids must be (B, n, {c.pq_groups}), got {tuple(image_ids.shape)}")
            h = self.image_emb(image_ids + self.group_offsets).sum(-2)  # (B, n, D)
        else:
            if image_ids.dim() != 2:
                raise ValueError(f"image ids must be (B, n), got {tuple(image_ids.shape)}")
            h = self.image_emb(image_ids)  # (B, n, D)
        if terms is None:
            terms = self._position_terms(c.prefix_len + start, image_ids.shape[1])
        return h + terms

    # -- trunk --------------------------------------------------------------------------
    def run(self, h: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        """Blocks + final norm + head on embeddings ``h (B, T, D)`` at sequence offset ``start``.

        Returns logits ``(B, T, [G,] K)``. With a cache, keys/values are written at
        [start, start+T) and attention covers the whole filled prefix.
        """
        h = self.drop(h)
        for i, block in enumerate(self.blocks):
            h = block(h, None if cache is None else cache.layer(i), start)
        logits = self.head(self.ln_f(h))  # (B, T, G*K)
        if self.config.pq_groups > 1:
            logits = logits.unflatten(-1, (self.config.pq_groups, self.config.image_codebook_size))
        return logits

    def forward(self, text_ids: torch.Tensor | None = None, sketch_ids: torch.Tensor | None = None,
                partial_ids: torch.Tensor | None = None, image_ids: torch.Tensor | None = None,
                drop: Mapping[str, torch.Tensor | bool] | None = None) -> torch.Tensor:
        """Logits over image codes.

        causal: ``image_ids (B, n[, G])`` with 0 <= n <= N; returns ``(B, min(n+1, N), [G,] K)``
        where ``[:, t]`` predicts image token t from the conditions and tokens < t (so
        n = N gives the usual (B, N, K) training logits, n < N also predicts token n).
        bidirectional: ``image_ids (B, N[, G])`` possibly holding ``mask_id``; returns
        ``(B, N, [G,] K)``, the prediction at every image position.
        """
        c = self.config
        if image_ids is None:
            raise ValueError("image_ids is required (use an empty (B, 0) tensor to predict token 0)")
        B, n = image_ids.shape[:2]
        if n > c.image_len:
            raise ValueError(f"at most {c.image_len} image tokens, got {n}")
        prefix = self.embed_prefix(text_ids, sketch_ids, partial_ids, batch=B, drop=drop)  # (B, P, D)
        if c.causal:
            fed = image_ids[:, : min(n, c.image_len - 1)]
            h = torch.cat([prefix, self.embed_image(fed)], dim=1)  # (B, P + n', D)
            return self.run(h)[:, c.prefix_len - 1 :]
        if n != c.image_len:
            raise ValueError(f"the bidirectional model takes all {c.image_len} image positions, got {n}")
        h = torch.cat([prefix, self.embed_image(image_ids)], dim=1)  # (B, P + N, D)
        return self.run(h)[:, c.prefix_len :]

    # -- training -----------------------------------------------------------------------
    def sample_condition_drop(self, batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Independent Bernoulli(cond_drop_prob[c]) per condition and sample: {c: (B,) bool}."""
        drop = {}
        for name in CONDITIONS:
            u = torch.rand(batch, generator=generator)
            drop[name] = (u < self.config.cond_drop_prob[name]).to(self.type_ids.device)
        return drop

    def sample_training_mask(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Which image positions the bidirectional model must predict: (B, N) bool.

        M6-Fashion's four strategies with probabilities 0.7 / 0.1 / 0.1 / 0.1: a random
        subset (ratio ~ U(0, 1], at least one token), everything, a random box on the token
        grid, everything outside a random box. Non-square N uses strategies 1-2 only.
        """
        N = self.config.image_len
        side = math.isqrt(N)
        mask = torch.zeros(batch, N, dtype=torch.bool)
        kind = torch.rand(batch, generator=generator)
        for b in range(batch):
            k = float(kind[b])
            if side * side != N and k >= 0.8:
                k = 0.0
            if k < 0.7:
                ratio = 1.0 - float(torch.rand(1, generator=generator))  # (0, 1]
                count = max(1, round(ratio * N))
                mask[b, torch.randperm(N, generator=generator)[:count]] = True
            elif k < 0.8:
                mask[b] = True
            else:
                h, w = (int(torch.randint(1, side + 1, (1,), generator=generator)) for _ in range(2))
                y = int(torch.randint(0, side - h + 1, (1,), generator=generator))
                x = int(torch.randint(0, side - w + 1, (1,), generator=generator))
                box = torch.zeros(side, side, dtype=torch.bool)
                box[y : y + h, x : x + w] = True
                box = box.flatten()
                mask[b] = box if k < 0.9 else ~box
                if not mask[b].any():
                    mask[b] = True
        return mask.to(self.type_ids.device)

    def loss(self, text_ids: torch.Tensor | None = None, sketch_ids: torch.Tensor | None = None,
             partial_ids: torch.Tensor | None = None, image_ids: torch.Tensor | None = None,
             generator: torch.Generator | None = None,
             drop: Mapping[str, torch.Tensor | bool] | None = None,
             semantic_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
             tau: float = 1.0, hard: bool = False, garment_tokens: torch.Tensor | None = None) -> TransformerLoss:
        """Stage-2 loss (Eq. 12-14) on a batch of image tokens ``(B, N[, G])``.

        In training mode conditions are dropped at random (``generator`` seeds the draw,
        pass one seeded per batch); ``drop`` overrides that. Cross entropy is on image
        tokens only (causal: every token; bidirectional: the masked ones). When
        ``config.semantic_loss`` and a ``semantic_fn`` are given, ``semantic_fn(probs)``
        with ``probs = soft_image_codes(logits, tau, hard)`` adds ``lambda_semantic *`` it;
        the hook is called as ``semantic_fn(probs[rows], rows)`` with ``rows`` the captioned
        rows (a dropped caption leaves nothing to score the image against).
        ``garment_tokens`` (B, N) bool marks the tokens that cover a garment pixel; with
        ``config.background_weight != 1`` the cross entropy weighs the others by it.
        """
        c = self.config
        if image_ids is None:
            raise ValueError("image_ids is required")
        B = image_ids.shape[0]
        if drop is None and self.training:
            drop = self.sample_condition_drop(B, generator)
        if c.causal:
            logits = self(text_ids, sketch_ids, partial_ids, image_ids, drop=drop)  # (B, N, [G,] K)
            scored = torch.ones(B, c.image_len, dtype=torch.bool, device=logits.device)
        else:
            scored = self.sample_training_mask(B, generator)  # (B, N)
            fill = scored.unsqueeze(-1) if c.pq_groups > 1 else scored
            masked = torch.where(fill, torch.full_like(image_ids, c.mask_id), image_ids)
            logits = self(text_ids, sketch_ids, partial_ids, masked, drop=drop)
        picked_logits, picked_targets = logits[scored], image_ids[scored]  # (M, [G,] K), (M[, G])
        flat_logits, flat_targets = picked_logits.reshape(-1, c.image_codebook_size).float(), picked_targets.reshape(-1)
        token_ce = F.cross_entropy(flat_logits, flat_targets, reduction="none").view(-1, c.pq_groups).mean(-1)  # (M,)
        if c.background_weight == 1.0:
            ce = token_ce.mean()
        else:
            if garment_tokens is None:
                raise ValueError("background_weight != 1 needs garment_tokens (B, N): "
                                 "which image tokens cover the garment")
            weight = torch.where(garment_tokens.to(logits.device).bool()[scored], 1.0, c.background_weight)  # (M,)
            ce = (token_ce * weight).sum() / weight.sum()
        with torch.no_grad():
            accuracy = (picked_logits.argmax(-1) == picked_targets).float().mean()
        semantic = torch.zeros((), device=ce.device)
        if c.semantic_loss and semantic_fn is not None:
            # Eq. 14 scores the image against its caption, so a row whose caption was dropped
            # has nothing to be scored against: it would pull the image towards the tokens of
            # a text the model never saw. Only the captioned rows reach the hook.
            text_dropped = torch.as_tensor((drop or {}).get("text", False), device=logits.device)
            rows = (~text_dropped.bool()).expand(B).nonzero().squeeze(1)  # (R,) batch indices
            if len(rows):
                semantic = semantic_fn(soft_image_codes(logits[rows], tau=tau, hard=hard), rows)
        return TransformerLoss(total=ce + c.lambda_semantic * semantic, ce=ce, semantic=semantic, accuracy=accuracy,
                               token_ce=token_ce)

    def token_losses(self, text_ids: torch.Tensor | None, sketch_ids: torch.Tensor | None,
                     partial_ids: torch.Tensor | None, image_ids: torch.Tensor,
                     drop: Mapping[str, torch.Tensor | bool] | None = None) -> torch.Tensor:
        """Cross entropy of every image token given all before it, ``(B, N)`` (mean over the
        product-quantiser groups); autoregressive models only. What :meth:`loss` averages
        (its ``token_ce``), kept per token, e.g. to split it into garment and background tokens."""
        if not self.config.causal:
            raise ValueError("token_losses needs an autoregressive (causal) transformer")
        every = torch.ones(image_ids.shape[:2], dtype=torch.bool)  # unweighted, whatever background_weight is
        out = self.loss(text_ids, sketch_ids, partial_ids, image_ids, drop=drop or {}, garment_tokens=every)
        return out.token_ce.view(image_ids.shape[:2])

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay Linear weights only; no decay for biases, norms and embeddings."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

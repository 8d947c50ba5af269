"""Diffusion baseline: a text-conditioned pixel-space UNet (``diffusers``) that reads the
same text encoder as ARMANI, for the comparison tab and the tables.

    from armani.baselines.diffusion import DiffusionBaselinePipeline
    pipe = DiffusionBaselinePipeline.from_run("runs/default")   # after --stage diffusion
    out = pipe(text="red t-shirt with a chest pocket", num_images=4, seed=0)

Choices the project's brief leaves open, fixed here:

- **Pixel space, no VAE.** The garments are 64 px (32 px in the tiny config), small enough
  for a UNet to denoise pixels directly; a VAE would be one more model to train.
- **Text features.** The UNet cross-attends to the *pre-projection* per-token features of
  the trained MaskCLIP text tower (the output of its final LayerNorm, ``text_width`` wide),
  as Stable Diffusion does with CLIP's last hidden state. MaskCLIP's projected tokens are
  L2-normalised for a dot product with part tokens; the norm and the directions the
  projection drops are information the UNet may use. Padding is hidden from the
  cross-attention (``encoder_attention_mask``), so a caption's features do not depend on
  how much padding follows it. The text tower is frozen.
- **Classifier-free guidance.** In training a caption is replaced by the encoding of the
  empty caption (SOT, EOT) with probability ``text_drop`` (0.1); sampling mixes
  ``uncond + s * (cond - uncond)``. Scale 1 skips the unconditional pass.
- **Noise schedule.** 1000-step DDPM with the cosine schedule (``squaredcos_cap_v2``,
  better than the linear one at small resolutions), epsilon prediction by default
  (``v_prediction`` selectable). Sampling uses DPM-Solver++ (2nd order, 20 steps) or DDIM
  (eta 0), both built from the training schedule's config with ``trailing`` timestep
  spacing, so the first step starts from pure noise. Predicted clean images are clipped to
  [-1, 1] (DDIM ``clip_sample``; DPM-Solver++ dynamic thresholding with a maximum of 1).
- **Attention.** Cross-attention (with self-attention) only at the lowest resolution
  by default (16x16 at 64 px, ARMANI's token grid; ``attention_levels``): at 32x32 it
  nearly doubled the CPU training step, at 64x64 it would cost more than the convolutions.
  ``attention_head_dim`` here is the width of one head: diffusers' argument of that name
  is, for historical reasons, the *number* of heads (diffusers issue #2011), so the UNet is
  built with ``channels // attention_head_dim`` heads per level.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from open_clip.transformer import TextTransformer
from torch import nn

from armani.data.images import tensor_to_pil
from armani.models.checkpoint import PretrainedMixin
from armani.models.maskclip import MaskCLIP, MaskCLIPConfig
from armani.pipeline_protocol import (
    DIFFUSION_FORMAT,
    Capabilities,
    PipelineInputError,
    PipelineOutput,
    check_num_images,
    check_storage_dtype,
    read_pipeline_json,
    read_text,
    resolve_seed,
    settings_with,
    store_weights_in_bf16,
)
from armani.text import GarmentTokenizer

if TYPE_CHECKING:  # pragma: no cover
    from armani.config import ArmaniConfig, OptimConfig

FORMAT = DIFFUSION_FORMAT
CONFIG_NAME = "diffusion_config.json"
SAMPLERS = ("dpm++", "ddim")


# -- config ----------------------------------------------------------------------------
@dataclass
class DiffusionBaselineConfig:
    """The UNet's sizes and the training schedule. Defaults: the 64 px ``default`` run."""

    image_size: int = 64
    block_out_channels: tuple[int, ...] = (64, 128, 128)  # one entry per resolution level
    # Cross/self-attention per level: 16x16 only at 64 px. Attention at 32x32 too measured
    # 9.5 s instead of 5.3 s per batch-16 bf16 step on the 2-core CPU.
    attention_levels: tuple[bool, ...] = (False, False, True)
    layers_per_block: int = 1
    attention_head_dim: int = 32  # width of one attention head (see the module docstring)
    norm_num_groups: int = 32
    cross_attention_dim: int = 128  # = the text tower's width; the stage sets it from MaskCLIP
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    text_drop: float = 0.1  # probability of training on the empty caption (classifier-free guidance)

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels needs one entry per block_out_channels entry")
        if not self.attention_levels[-1]:
            raise ValueError("the lowest resolution level must have attention (the mid block cross-attends)")
        for c in self.block_out_channels:
            if c % self.attention_head_dim or c % self.norm_num_groups:
                raise ValueError(f"channels {c} must be divisible by attention_head_dim {self.attention_head_dim} "
                                 f"and norm_num_groups {self.norm_num_groups}")
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels - 1)")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if not 0.0 <= self.text_drop < 1.0:
            raise ValueError(f"text_drop must be in [0, 1), got {self.text_drop}")


def tiny_diffusion_config(image_size: int = 32) -> DiffusionBaselineConfig:
    """Seconds-per-run sizes for tests: two levels of 16/32 channels."""
    return DiffusionBaselineConfig(image_size=image_size, block_out_channels=(16, 32), attention_levels=(False, True),
                                   attention_head_dim=8, norm_num_groups=8, cross_attention_dim=32)


def diffusion_config_for(cfg: "ArmaniConfig") -> DiffusionBaselineConfig:
    """The run's diffusion config: ``cfg.diffusion`` when the config tree has one, else the
    preset's sizes (a ``tiny*`` run gets :func:`tiny_diffusion_config`); the image size always
    follows ``cfg.data.image_size``."""
    own = getattr(cfg, "diffusion", None)
    size = cfg.data.image_size
    if own is None:
        own = tiny_diffusion_config(size) if _is_tiny(cfg) else DiffusionBaselineConfig(image_size=size)
    return dataclasses.replace(own, image_size=size)


def diffusion_optim_for(cfg: "ArmaniConfig") -> "OptimConfig":
    """``cfg.train.diffusion`` when the config tree has one, else this stage's budget for the
    preset: batch 16 and 1,600 steps by default, about 40 minutes of a quiet 2-core CPU (bf16,
    1.5 s per step measured), the wall time ARMANI's own phase 2 spends on its codebook and
    transformer together; six steps for a tiny run."""
    from armani.config import OptimConfig

    own = getattr(cfg.train, "diffusion", None)
    if own is not None:
        return own
    if _is_tiny(cfg):
        return OptimConfig(batch_size=8, lr=1e-3, warmup_steps=2, max_steps=6, log_every=2, eval_every=0,
                           checkpoint_every=3)
    return OptimConfig(batch_size=16, lr=5e-4, warmup_steps=80, max_steps=1600, log_every=10, eval_every=400,
                       checkpoint_every=200)


def _is_tiny(cfg) -> bool:
    return str(getattr(cfg, "name", "")).split("-")[0] == "tiny"


# -- the frozen text encoder -------------------------------------------------------------
class TextTower(PretrainedMixin, nn.Module):
    """MaskCLIP's text encoder alone: token ids -> per-token features before the projection.

    Built from a :class:`MaskCLIPConfig` (only its text fields matter) so the weights copied
    from a trained MaskCLIP fit exactly; saved as ``config.json + model.safetensors``.
    """

    config_class = MaskCLIPConfig

    def __init__(self, config: MaskCLIPConfig):
        super().__init__()
        self.config = config
        c = config
        self.text_encoder = TextTransformer(
            context_length=c.context_length, vocab_size=c.vocab_size, width=c.text_width, heads=c.text_heads,
            layers=c.text_layers, output_dim=c.embed_dim, pad_id=c.pad_id, eos_id=c.eot_id, output_tokens=True,
        )

    @property
    def width(self) -> int:
        return self.config.text_width

    @classmethod
    def from_maskclip(cls, maskclip: MaskCLIP) -> "TextTower":
        tower = cls(dataclasses.replace(maskclip.config))
        tower.text_encoder.load_state_dict(maskclip.text_encoder.state_dict(), strict=True)
        return tower.eval().requires_grad_(False)

    def forward(self, text_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> (features (B, L, width), attend (B, L) bool: False on padding)."""
        L, ctx = text_ids.shape[1], self.config.context_length
        if L > ctx:
            raise ValueError(f"text has {L} tokens but the text encoder's context_length is {ctx}")
        # Same padding as MaskCLIP.encode_text: the causal mask has a fixed size.
        padded = F.pad(text_ids, (0, ctx - L), value=self.config.pad_id)  # (B, ctx)
        _, tokens = self.text_encoder(padded)  # (B, ctx, width), after ln_final
        return tokens[:, :L], text_ids != self.config.pad_id

    def after_load(self) -> None:
        self.eval().requires_grad_(False)  # frozen: the baseline never trains its text tower


# -- the model -----------------------------------------------------------------------------
@dataclass
class DiffusionLoss:
    """The denoising loss of one batch."""

    loss: torch.Tensor  # mean squared error of the prediction (epsilon or v), all samples
    per_sample: torch.Tensor  # (B,) mean squared error of each sample
    timesteps: torch.Tensor  # (B,) the timesteps drawn


def build_unet(config: DiffusionBaselineConfig) -> UNet2DConditionModel:
    """A randomly initialised diffusers UNet for ``config`` (RGB in, RGB out)."""
    c = config
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in c.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c.attention_levels))
    heads = tuple(ch // c.attention_head_dim for ch in c.block_out_channels)
    return UNet2DConditionModel(
        sample_size=c.image_size, in_channels=3, out_channels=3, down_block_types=down, up_block_types=up,
        block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
        norm_num_groups=c.norm_num_groups, cross_attention_dim=c.cross_attention_dim,
        attention_head_dim=heads,  # diffusers reads this as the number of heads
    )


def build_noise_scheduler(config: DiffusionBaselineConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=True, clip_sample_range=1.0)


class DiffusionBaseline(nn.Module):
    """The UNet and its DDPM training schedule. ``forward`` is the training loss, so the
    engine's DDP wrapper sees every gradient."""

    def __init__(self, config: DiffusionBaselineConfig, unet: UNet2DConditionModel | None = None,
                 noise_scheduler: DDPMScheduler | None = None):
        super().__init__()
        self.config = config
        self.unet = unet if unet is not None else build_unet(config)
        self.noise_scheduler = noise_scheduler if noise_scheduler is not None else build_noise_scheduler(config)

    def predict(self, sample: torch.Tensor, timesteps: torch.Tensor, text_states: torch.Tensor,
                text_attend: torch.Tensor) -> torch.Tensor:
        """Noisy images (B, 3, S, S), timesteps (B,) -> the prediction (B, 3, S, S)."""
        return self.unet(sample, timesteps, encoder_hidden_states=text_states,
                         encoder_attention_mask=text_attend.to(sample.dtype)).sample

    def target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.config.prediction_type == "epsilon":
            return noise
        return self.noise_scheduler.get_velocity(images, noise, timesteps)

    def forward(self, images: torch.Tensor, text_states: torch.Tensor, text_attend: torch.Tensor,
                noise: torch.Tensor, timesteps: torch.Tensor) -> DiffusionLoss:
        """Images (B, 3, S, S) in [-1, 1], text features (B, L, W) and their attend mask (B, L),
        the noise (B, 3, S, S) and timesteps (B,) to train on (drawn by the caller, so runs are
        reproducible) -> the DDPM loss."""
        noisy = self.noise_scheduler.add_noise(images, noise, timesteps)  # (B, 3, S, S)
        pred = self.predict(noisy, timesteps, text_states, text_attend)
        err = (pred.float() - self.target(images, noise, timesteps).float()) ** 2
        per_sample = err.flatten(1).mean(1)  # (B,)
        return DiffusionLoss(loss=per_sample.mean(), per_sample=per_sample, timesteps=timesteps)

    def sampling_scheduler(self, sampler: str):
        """A fresh DPM-Solver++ or DDIM scheduler over the training schedule."""
        base = self.noise_scheduler.config
        if sampler == "dpm++":
            return DPMSolverMultistepScheduler.from_config(
                base, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
                variance_type=None, thresholding=True, sample_max_value=1.0)
        if sampler == "ddim":
            return DDIMScheduler.from_config(base, timestep_spacing="trailing", clip_sample=True,
                                             set_alpha_to_one=False)
        raise PipelineInputError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")

    def save_pretrained(self, path: str | Path) -> None:
        """``unet/`` (diffusers, safetensors), ``scheduler/`` and ``diffusion_config.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        self.noise_scheduler.save_pretrained(path / "scheduler")
        (path / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "DiffusionBaseline":
        path = Path(path)
        file = path / CONFIG_NAME
        if not file.is_file():
            raise FileNotFoundError(f"{path} has no {CONFIG_NAME}")
        try:
            config = DiffusionBaselineConfig(**json.loads(file.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{file} is not a valid DiffusionBaselineConfig: {err}") from err
        # float32 parameters whatever the stored dtype (a shipped UNet is stored in bf16);
        # sampling casts under autocast as the settings say.
        unet = UNet2DConditionModel.from_pretrained(path / "unet", use_safetensors=True, torch_dtype=torch.float32)
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
        return cls(config, unet=unet, noise_scheduler=scheduler)


# -- the pipeline ----------------------------------------------------------------------------
@dataclass
class DiffusionSettings:
    """Sampling defaults stored in ``pipeline.json``; every call may override the last three."""

    name: str = "diffusion"
    description: str = "Diffusion baseline: text -> garment (pixel-space UNet on ARMANI's text encoder)"
    complete_sleeve_length: bool = True  # as ArmaniPipeline's setting of that name
    sampler: Literal["dpm++", "ddim"] = "dpm++"
    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    dtype: Literal["float32", "bfloat16"] = "bfloat16"  # UNet under bf16 autocast (as ArmaniPipeline)


class DiffusionBaselinePipeline:
    """Text -> garments with the diffusion baseline; same call and output as ArmaniPipeline.

    Folder layout (``save_pretrained``): ``pipeline.json`` (``"format": "armani-diffusion"``),
    ``tokenizer/``, ``text_encoder/`` (MaskCLIP's text tower), ``unet/`` and ``scheduler/``
    (diffusers folders) and ``diffusion_config.json``.
    """

    def __init__(self, tokenizer: GarmentTokenizer, text_encoder: TextTower, model: DiffusionBaseline,
                 settings: DiffusionSettings | None = None):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.model = model.eval().requires_grad_(False)
        self.settings = settings or DiffusionSettings()
        self.image_size = model.config.image_size
        problems = []
        if text_encoder.config.vocab_size != tokenizer.vocab_size:
            problems.append(f"text encoder vocab {text_encoder.config.vocab_size} != tokenizer {tokenizer.vocab_size}")
        if text_encoder.config.context_length < tokenizer.context_length:
            problems.append("the tokenizer's context is longer than the text encoder's")
        if model.unet.config.cross_attention_dim != text_encoder.width:
            problems.append(f"UNet cross_attention_dim {model.unet.config.cross_attention_dim} != text width "
                            f"{text_encoder.width}")
        if problems:
            raise ValueError("mismatched diffusion pipeline components: " + "; ".join(problems))

    @property
    def capabilities(self) -> Capabilities:
        """Text only; its samplers are the diffusers schedulers it was built with."""
        return Capabilities(controls=frozenset({"text"}), samplers=SAMPLERS)

    # -- persistence ------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, storage_dtype: str = "float32") -> None:
        """``storage_dtype='bfloat16'`` stores the UNet's and the text tower's weights in bf16
        (half the bytes, as the shipped baselines are); they load back as float32."""
        check_storage_dtype(storage_dtype)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.text_encoder.save_pretrained(path / "text_encoder", storage_dtype=storage_dtype)
        self.model.save_pretrained(path)
        if storage_dtype == "bfloat16":  # the UNet is a diffusers folder: its file is rewritten in bf16
            for weights in (path / "unet").glob("*.safetensors"):
                store_weights_in_bf16(weights)
        meta = {"format": FORMAT, "version": 1, "settings": asdict(self.settings)}
        (path / "pipeline.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, **settings: Any) -> "DiffusionBaselinePipeline":
        folder = Path(path)
        meta = read_pipeline_json(folder, FORMAT)
        stored = settings_with(DiffusionSettings(**meta.get("settings", {})), settings)
        return cls(GarmentTokenizer.from_pretrained(folder / "tokenizer"),
                   TextTower.from_pretrained(folder / "text_encoder"),
                   DiffusionBaseline.from_pretrained(folder), stored)

    @classmethod
    def from_run(cls, run_dir: str | Path, **settings: Any) -> "DiffusionBaselinePipeline":
        """The pipeline exported by a run's ``diffusion`` stage (``RUN/diffusion/final``)."""
        final = Path(run_dir) / "diffusion" / "final"
        if not (final / "DONE").is_file():
            raise FileNotFoundError(
                f"{run_dir} has no finished diffusion stage; train it with `accelerate launch "
                f"src/armani/train.py --stage diffusion --output {run_dir}` (needs its maskclip stage)")
        return cls.from_pretrained(final, **settings)

    # -- generation ---------------------------------------------------------------------------
    def prepare_text(self, text: str | None, notes: list[str]) -> tuple[torch.Tensor | None, str | None]:
        """The same text checks and notes as ArmaniPipeline's."""
        return read_text(self.tokenizer, text, notes, self.settings.complete_sleeve_length)

    def encode_text(self, text_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder(text_ids)

    @torch.inference_mode()
    def __call__(self, text: str | None = None, sketch=None, partial=None, partial_keep_mask=None,
                 num_images: int = 4, seed: int | None = 0, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, sampler: str | None = None,
                 allow_unconditional: bool = False, **ignored: Any) -> PipelineOutput:
        """Generate ``num_images`` garments from ``text`` (seeded: same seed, same images).

        ``sketch``/``partial`` raise :class:`PipelineInputError`: this baseline reads text only.
        Keyword arguments meant for ArmaniPipeline (``top_k``, ``temperature``, ...) are
        accepted and ignored, so one call site serves both. ``output.ids`` is an empty
        ``(num_images, 0)`` tensor: a pixel-space model samples no tokens.
        """
        start = time.perf_counter()
        s = self.settings
        notes: list[str] = []
        if sketch is not None or partial is not None or partial_keep_mask is not None:
            raise PipelineInputError("the diffusion baseline takes text only")
        num_images = check_num_images(num_images)
        seed = resolve_seed(seed)
        text_ids, read = self.prepare_text(text, notes)
        if text_ids is None and not allow_unconditional:
            raise PipelineInputError("describe the garment: the diffusion baseline needs a text")
        scale = s.guidance_scale if guidance_scale is None else float(guidance_scale)
        steps = s.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        sampler = sampler or s.sampler
        if scale < 0:
            raise PipelineInputError("the guidance scale must be >= 0")
        if not 1 <= steps <= self.model.config.num_train_timesteps:
            raise PipelineInputError(f"num_inference_steps must be in [1, {self.model.config.num_train_timesteps}]")
        scheduler = self.model.sampling_scheduler(sampler)
        images = self.sample(text_ids, num_images, seed, scale, steps, scheduler)
        out = tensor_to_pil(images)
        return PipelineOutput(images=out if isinstance(out, list) else [out],
                              ids=torch.empty(num_images, 0, dtype=torch.long), text=read, notes=notes,
                              seconds=time.perf_counter() - start)

    def sample(self, text_ids: torch.Tensor | None, num_images: int, seed: int, guidance_scale: float,
               steps: int, scheduler) -> torch.Tensor:
        """The reverse process -> images (num_images, 3, S, S) in [-1, 1].

        ``text_ids`` (1, L) or None (unconditional: the empty caption). The initial noise comes
        from a CPU generator seeded with ``seed``; both samplers are deterministic after it.
        """
        S = self.image_size
        device = next(self.model.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(num_images, 3, S, S, generator=gen).to(device)  # (n, 3, S, S)
        empty = self.tokenizer([""]).ids.to(device)  # (1, L): SOT EOT PAD...
        text_ids = None if text_ids is None else text_ids.to(device)
        ids = (text_ids if text_ids is not None else empty).expand(num_images, -1)
        cond, cond_attend = self.encode_text(ids)  # (n, L, W), (n, L)
        guided = text_ids is not None and guidance_scale != 1.0
        if guided:
            uncond, uncond_attend = self.encode_text(empty.expand(num_images, -1))
            cond = torch.cat([uncond, cond])  # (2n, L, W)
            cond_attend = torch.cat([uncond_attend, cond_attend])
        scheduler.set_timesteps(steps)
        x = x * scheduler.init_noise_sigma
        use_bf16 = self.settings.dtype == "bfloat16"
        for t in scheduler.timesteps:
            inp = torch.cat([x, x]) if guided else x
            inp = scheduler.scale_model_input(inp, t)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                pred = self.model.predict(inp, t.expand(inp.shape[0]), cond, cond_attend).float()
            if guided:
                u, c = pred.chunk(2)
                pred = u + guidance_scale * (c - u)
            x = scheduler.step(pred, t, x, generator=gen).prev_sample
        return x.clamp(-1, 1).cpu()


__all__ = [
    "DiffusionBaseline", "DiffusionBaselineConfig", "DiffusionBaselinePipeline", "DiffusionLoss",
    "DiffusionSettings", "TextTower", "build_unet", "diffusion_config_for", "diffusion_optim_for",
    "tiny_diffusion_config",
]

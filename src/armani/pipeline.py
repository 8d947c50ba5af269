"""``ArmaniPipeline``: text / sketch / partial image -> garments, in three lines.

    from armani.pipeline import ArmaniPipeline
    pipe = ArmaniPipeline.from_pretrained()            # the checkpoint shipped in the repo
    out = pipe(text="navy shirt with five buttons", num_images=4, seed=0)
    out.images[0].save("shirt.png")

The pipeline holds every trained part (tokenizer, segmenter, MaskCLIP, the image codebook,
the sketch and partial-image codebooks, the stage-2 transformer), each saved as
``<part>/config.json + model.safetensors`` beside a ``pipeline.json``. It turns whatever a
user hands in into the model's inputs (any image mode and size; photos become Canny
sketches; a missing keep-region becomes a random 25% crop), samples tokens (autoregressive
with a KV cache and classifier-free guidance, or mask-predict for a bidirectional
checkpoint) and decodes them. Bad input raises :class:`PipelineInputError` (a ValueError)
with a message meant for a person; fixes applied silently are listed in ``output.notes``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from armani.data.images import ImageInputError, fit_image, load_image_with_notes, pil_to_tensor, tensor_to_pil
from armani.data.transforms import (
    canny_sketch,
    drawing_edges,
    image_tensor,
    partial_tensors,
    partial_tokenizer_input,
    random_keep_mask,
    sketch_tensor,
)
from armani.models.cross_modal_encoding import encode_cross_modal
from armani.models.maskclip import MaskCLIP
from armani.models.refiner import DetailRefiner
from armani.models.segmenter import Segmenter
from armani.models.transformer import CrossModalTransformer
from armani.models.vqgan import VQGAN, CheckpointError
from armani.parts import PART_ID, PART_NAMES
from armani.pipeline_protocol import (
    ARMANI_FORMAT,
    Capabilities,
    PipelineInputError,
    PipelineOutput,
    as_pil,
    check_num_images,
    check_storage_dtype,
    read_pipeline_json,
    read_text,
    resolve_seed,
    settings_with,
    shipped_checkpoint,
)
from armani.sampling import (
    AutoregressiveSampler,
    MaskPredictSampler,
    Sampler,
    kept_token_mask,
    sampler_from_dict,
    token_mask_from_part_mask,
)
from armani.text import GarmentTokenizer

COMPONENTS = ("segmenter", "maskclip", "vqgan", "sketch_tokenizer", "partial_tokenizer", "transformer", "refiner")
_LOADERS = {"segmenter": Segmenter, "maskclip": MaskCLIP, "vqgan": VQGAN, "sketch_tokenizer": VQGAN,
            "partial_tokenizer": VQGAN, "transformer": CrossModalTransformer, "refiner": DetailRefiner}


# The sampler a pipeline gets when none is stored: ARMANI's shipped settings.
DEFAULT_SAMPLER = AutoregressiveSampler(guidance_scale=3.0, temperature=1.0, top_k=100)
# pipeline.json files written before samplers were objects kept these keys in "settings".
_LEGACY_SAMPLER_KEYS = ("sampler", "guidance_scale", "temperature", "top_k", "top_p", "nar_steps", "dtype")


@dataclass
class PipelineSettings:
    """Input handling and naming, stored in ``pipeline.json`` (the sampler is stored beside it)."""

    name: str = "armani"
    description: str = "ARMANI: text / sketch / partial image -> garment"
    sketch_low: int = 100
    sketch_high: int = 200
    keep_fraction: float = 0.25
    # Paste the partial image's kept region back into every output, feathered over this many
    # pixels outside it (0: keep the model's own decoding of that region).
    keep_feather: int = 3
    composite_partial: bool = True
    # With a partial image, shift the generated studio background (pixels the segmenter calls
    # background, outside the kept region) by the difference between the kept region's own
    # background colour and the generated one around it, so the kept region does not show as a
    # rectangle of another tint. The kept pixels and the garment are not touched.
    harmonise_background: bool = True
    # The same for the garment: shift the generated garment outside the kept region by the
    # difference between the kept garment's colour and the generated one next to it, so the
    # kept part does not show as a patch of another shade. One offset: pattern and shading stay.
    harmonise_garment: bool = True
    # Autoregressive sampling with a partial image: take the image tokens that lie wholly inside
    # the kept region (one cell in from its edge) from the image codebook's encoding of it, so
    # the garment is drawn around the kept part instead of beside it (False: the model sees the
    # kept region only through the partial-image tokens).
    keep_tokens: bool = True
    # A prompt naming a top but no sleeve length gets the length most such garments are trained
    # with ("a pink coat" -> "a pink long-sleeved coat"): captions always name it, and without
    # it the model draws no sleeves. The note and the read text say what was added.
    complete_sleeve_length: bool = True
    # Redraw the one-pixel detail the image codebook cannot hold with the detail refiner
    # (armani.models.refiner), when the checkpoint has one; ``refine_steps`` / ``refine_strength``
    # 0 keep the refiner's own number of sampling steps / share of the noise schedule.
    refine: bool = True
    refine_steps: int = 0
    refine_strength: float = 0.0


@dataclass
class EditOutput:
    image: Image.Image  # the edited garment
    original: Image.Image  # the input as the model saw it (resized, reconstructed)
    region: Image.Image  # the pixels allowed to change (white)
    changed_tokens: int
    ids: torch.Tensor  # (1, N[, G]) tokens after the edit
    original_ids: torch.Tensor  # (1, N[, G]) tokens of the input
    token_region: torch.Tensor  # (N,) bool, the tokens that were resampled
    notes: list[str] = field(default_factory=list)


class ArmaniPipeline:
    def __init__(self, tokenizer: GarmentTokenizer, vqgan: VQGAN, transformer: CrossModalTransformer,
                 sketch_tokenizer: VQGAN | None = None, partial_tokenizer: VQGAN | None = None,
                 segmenter: Segmenter | None = None, maskclip: MaskCLIP | None = None,
                 settings: PipelineSettings | None = None, sampler: Sampler | None = None,
                 refiner: DetailRefiner | None = None):
        self.tokenizer = tokenizer
        self.vqgan = vqgan.eval()
        self.transformer = transformer.eval()
        self.sketch_tokenizer = None if sketch_tokenizer is None else sketch_tokenizer.eval()
        self.partial_tokenizer = None if partial_tokenizer is None else partial_tokenizer.eval()
        self.segmenter = None if segmenter is None else segmenter.eval()
        self.maskclip = None if maskclip is None else maskclip.eval()
        self.refiner = None if refiner is None else refiner.eval()
        self.settings = settings or PipelineSettings()
        # The default sampler, swappable like a diffusers scheduler (``pipe.sampler = ...``).
        self.sampler = sampler if sampler is not None else _default_sampler(transformer)
        self.image_size = vqgan.config.image_size
        if vqgan.config.fusion and (maskclip is None or segmenter is None):
            raise ValueError("a cross-modal codebook needs MaskCLIP and the segmenter to encode images")
        for module in self.modules().values():
            module.requires_grad_(False)

    @property
    def capabilities(self) -> Capabilities:
        """Text always; a sketch / partial image when the checkpoint has its tokenizer. A causal
        transformer samples autoregressively and can edit parts; a bidirectional one (M6-style)
        samples by mask-predict."""
        controls = {"text"}
        if self.sketch_tokenizer is not None:
            controls.add("sketch")
        if self.partial_tokenizer is not None:
            controls.add("partial")
        causal = bool(self.transformer.config.causal)
        samplers = (AutoregressiveSampler.type,) if causal else (MaskPredictSampler.type,)
        return Capabilities(controls=frozenset(controls), samplers=samplers, top_k=True, previews=True,
                            edit=causal and self.segmenter is not None)

    # -- persistence -------------------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        return {name: m for name in COMPONENTS if (m := getattr(self, name)) is not None}

    def save_pretrained(self, path: str | Path, share_with: str | Path | None = None,
                        storage_dtype: str = "float32") -> None:
        """Save every component (safetensors + JSON config) and ``pipeline.json``.

        ``share_with``: another saved pipeline (e.g. ``checkpoints/armani``); a component whose
        config and weights are identical to its copy there is not written again but referenced
        (``pipeline.json`` ``"shared"``, a path relative to this folder). The baselines share
        ARMANI's segmenter, MaskCLIP and control-signal tokenizers this way.
        ``storage_dtype='bfloat16'`` stores floating-point weights in bf16 (half the bytes;
        they are cast back to float32 on loading; the sampler computes in bf16 anyway).
        """
        check_storage_dtype(storage_dtype)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path / "tokenizer")
        shared: dict[str, str] = {}
        for name, module in self.modules().items():
            target = path / name
            module.save_pretrained(target)
            if share_with is not None:
                other = Path(share_with) / name
                if _same_component(target, other):
                    shutil.rmtree(target)
                    shared[name] = os.path.relpath(other.resolve(), path.resolve())
                    continue
            if storage_dtype == "bfloat16":  # after the comparison: shared components stay float32
                module.save_pretrained(target, storage_dtype=storage_dtype)
        meta = {"format": ARMANI_FORMAT, "version": 2, "components": list(self.modules()),
                "settings": asdict(self.settings), "sampler": self.sampler.to_dict()}
        if shared:
            meta["shared"] = shared
        (path / "pipeline.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **settings: Any) -> "ArmaniPipeline":
        """Load a saved pipeline: a local folder, a Hugging Face Hub repo id (needs the network
        or the local hub cache), or nothing for the checkpoint shipped in this repo."""
        folder = Path(path) if path is not None else shipped_checkpoint()
        if not folder.is_dir():
            if path is None:
                raise FileNotFoundError(
                    f"the shipped checkpoint is missing at {folder} (set $ARMANI_CHECKPOINT to another folder); "
                    "train one with `accelerate launch src/armani/train.py --config default --stage all` and "
                    "assemble it with `python -m armani.assemble --run runs/default --out checkpoints/armani`"
                )
            folder = hub_snapshot(str(path))
        meta = read_pipeline_json(folder, ARMANI_FORMAT)
        parts = {name: _LOADERS[name].from_pretrained(component_folder(folder, name, meta))
                 for name in meta["components"]}
        stored, sampler = _stored_settings(meta)
        stored, sampler = _with_overrides(stored, sampler, settings)
        pipe = cls(GarmentTokenizer.from_pretrained(folder / "tokenizer"), settings=stored, sampler=sampler, **parts)
        pipe._check_consistency()
        return pipe

    @classmethod
    def from_run(cls, run_dir: str | Path, **settings: Any) -> "ArmaniPipeline":
        """Assemble a pipeline from a training run's exported stages (``RUN/<stage>/final``)."""
        run_dir = Path(run_dir)
        parts = {}
        for name, loader in _LOADERS.items():
            final = run_dir / name / "final"
            if (final / "DONE").is_file():
                parts[name] = loader.from_pretrained(final)
        missing = {"vqgan", "transformer"} - set(parts)
        if missing:
            raise FileNotFoundError(f"{run_dir} lacks the finished stage(s) {sorted(missing)}")
        stored, sampler = _with_overrides(PipelineSettings(), _default_sampler(parts["transformer"]), settings)
        pipe = cls(GarmentTokenizer.from_pretrained(run_dir / "tokenizer"), settings=stored, sampler=sampler, **parts)
        pipe._check_consistency()
        return pipe

    def _check_consistency(self) -> None:
        t = self.transformer.config
        problems = []
        if t.text_vocab_size != self.tokenizer.vocab_size:
            problems.append(f"transformer text vocab {t.text_vocab_size} != tokenizer {self.tokenizer.vocab_size}")
        if t.image_len != self.vqgan.num_tokens:
            problems.append(f"transformer image_len {t.image_len} != codebook grid {self.vqgan.num_tokens}")
        if t.image_codebook_size != self.vqgan.codebook_size:
            problems.append(f"transformer codebook {t.image_codebook_size} != VQGAN {self.vqgan.codebook_size}")
        if self.sketch_tokenizer is not None and t.sketch_len != self.sketch_tokenizer.num_tokens:
            problems.append("sketch tokenizer grid does not match the transformer")
        if self.partial_tokenizer is not None and t.partial_len != self.partial_tokenizer.num_tokens:
            problems.append("partial tokenizer grid does not match the transformer")
        if self.refiner is not None and self.refiner.config.image_size != self.image_size:
            problems.append(f"refiner draws {self.refiner.config.image_size} px images, "
                            f"the codebook {self.image_size} px")
        if problems:
            raise ValueError("mismatched pipeline components: " + "; ".join(problems))

    # -- input preparation --------------------------------------------------------------------
    def prepare_text(self, text: str | None, notes: list[str]) -> tuple[torch.Tensor | None, str | None]:
        return read_text(self.tokenizer, text, notes, self.settings.complete_sleeve_length)

    def _image(self, x, what: str, notes: list[str]) -> Image.Image:
        try:
            loaded = load_image_with_notes(x)
        except ImageInputError as err:
            raise PipelineInputError(f"{what}: {err}") from err
        notes.extend(f"{what}: {n}" for n in loaded.notes)
        img = loaded.image
        if img.size != (self.image_size, self.image_size):
            notes.append(f"{what}: resized from {img.size[0]}x{img.size[1]} to {self.image_size}x{self.image_size}")
            img = fit_image(img, self.image_size)
        return img

    def prepare_sketch(self, sketch, notes: list[str], mode: str = "auto",
                       thresholds: tuple[int, int] | None = None) -> tuple[torch.Tensor, Image.Image]:
        """Any image -> the (1, S, S) edge map the sketch tokenizer reads.

        ``mode``: "edges" (a drawing: dark strokes on light paper, or light on dark),
        "photo" (run Canny, as in training), or "auto" (a drawing when nearly every pixel is
        close to black or white, else a photo).
        """
        low, high = thresholds or (self.settings.sketch_low, self.settings.sketch_high)
        try:
            loaded = load_image_with_notes(sketch)
        except ImageInputError as err:
            raise PipelineInputError(f"sketch: {err}") from err
        notes.extend(f"sketch: {n}" for n in loaded.notes)
        grey = np.asarray(loaded.image.convert("L"), dtype=np.float32) / 255.0
        if mode == "auto":
            extreme = float(((grey < 0.2) | (grey > 0.8)).mean())
            mode = "edges" if extreme > 0.9 else "photo"
            notes.append(f"sketch read as {'a drawing' if mode == 'edges' else 'a photo (Canny edges taken)'}")
        S = self.image_size
        if mode == "photo":
            rgb = np.asarray(fit_image(loaded.image, S))
            edges = canny_sketch(rgb, low=low, high=high)
        elif mode == "edges":
            strokes = grey if grey.mean() < 0.5 else 1.0 - grey  # strokes bright, paper dark
            img = Image.fromarray((strokes * 255).astype(np.uint8))
            edges = drawing_edges(np.asarray(fit_image(img.convert("RGB"), S, fill=(0, 0, 0)).convert("L")))
        else:
            raise PipelineInputError(f"sketch mode must be 'auto', 'edges' or 'photo', got {mode!r}")
        if not edges.any():
            raise PipelineInputError("the sketch has no strokes/edges at this size; draw bolder lines or lower the "
                                     "Canny thresholds")
        return sketch_tensor(edges).unsqueeze(0), Image.fromarray(edges)

    def prepare_partial(self, partial, keep_mask, notes: list[str], seed: int):
        """An image and the region to keep (None: a random ``keep_fraction`` crop, seeded)."""
        img = self._image(partial, "partial image", notes)
        rgb = np.asarray(img)
        S = self.image_size
        if keep_mask is None:
            keep = random_keep_mask(S, S, np.random.default_rng(seed), self.settings.keep_fraction)
            notes.append(f"no region marked: kept a random {int(self.settings.keep_fraction * 100)}% crop")
        else:
            m = keep_mask if isinstance(keep_mask, np.ndarray) else np.asarray(as_pil(keep_mask).convert("L"))
            m = np.asarray(m)
            if m.ndim == 3:
                m = m.max(axis=-1)
            if m.dtype != bool:
                m = m > (0.5 if m.dtype.kind == "f" and m.max() <= 1 else 127)
            mask_img = Image.fromarray(m.astype(np.uint8) * 255)
            keep = np.asarray(fit_image(mask_img.convert("RGB"), S, fill=(0, 0, 0)).convert("L")) > 127
            if not keep.any():
                raise PipelineInputError("the marked region to keep is empty; mark part of the image")
        partial_t, keep_t = partial_tensors(rgb, keep)
        shown = np.where(keep[..., None], rgb, 127).astype(np.uint8)
        return partial_t.unsqueeze(0), keep_t.unsqueeze(0), Image.fromarray(shown), Image.fromarray(keep.astype(np.uint8) * 255)

    # -- generation -----------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, text: str | None = None, sketch=None, partial=None, partial_keep_mask=None,
                 num_images: int = 4, seed: int | None = 0, guidance_scale: float | None = None,
                 sampler: str | Sampler | None = None, top_k: int | None = -1, top_p: float | None = -1.0,
                 temperature: float | None = None, sketch_mode: str = "auto",
                 sketch_thresholds: tuple[int, int] | None = None, allow_unconditional: bool = False,
                 composite_partial: bool | None = None, refine: bool | None = None,
                 callback: Callable[[int, int, list[Image.Image]], None] | None = None,
                 callback_every: int = 32, callback_images: bool = True) -> PipelineOutput:
        """Generate ``num_images`` garments from any mix of text, sketch and partial image.

        ``sampler`` is the pipeline's own (None), another :class:`~armani.sampling.Sampler`, or
        a type name (``"ar"`` / ``"nar"``) that keeps the stored guidance, temperature and top-k.
        ``guidance_scale`` / ``temperature`` (None) and ``top_k`` / ``top_p`` (-1) default to
        that sampler's settings; pass ``top_k=None`` to disable it.
        ``callback(step, total, preview_images)`` receives progressive previews every
        ``callback_every`` tokens (AR) or every step (mask-predict). With
        ``callback_images=False`` it gets an empty list instead: progress and a chance to stop
        (raise) without the cost of decoding previews.

        With a partial image and the autoregressive sampler, the image tokens wholly inside the
        kept region are taken from its encoding (``settings.keep_tokens``), so the garment is
        drawn around it. The kept region is then pasted back into every output and blended
        into the generated pixels around it (``composite_partial``, default from the
        settings); ``PipelineOutput.uncomposited`` holds the model's own decoding.

        ``refine`` (default from the settings) draws the decoded images' fine detail with the
        checkpoint's detail refiner, when it has one; previews are never refined.
        """
        start = time.perf_counter()
        s = self.settings
        notes: list[str] = []
        num_images = check_num_images(num_images)
        seed = resolve_seed(seed)
        text_ids, read = self.prepare_text(text, notes)
        sketch_ids = partial_ids = None
        sketch_img = partial_img = keep_img = None
        kept = None  # (rgb, keep) of a partial image, for compositing
        if sketch is not None:
            if self.sketch_tokenizer is None:
                raise PipelineInputError("this checkpoint has no sketch tokenizer")
            sk, sketch_img = self.prepare_sketch(sketch, notes, sketch_mode, sketch_thresholds)
            sketch_ids = self.sketch_tokenizer.encode(sk)
        if partial is not None:
            if self.partial_tokenizer is None:
                raise PipelineInputError("this checkpoint has no partial-image tokenizer")
            pt, kt, partial_img, keep_img = self.prepare_partial(partial, partial_keep_mask, notes, seed)
            partial_ids = self.partial_tokenizer.encode(partial_tokenizer_input(pt, kt))
            kept = (pt[0], kt[0])
        elif partial_keep_mask is not None:
            raise PipelineInputError("a region to keep was given without the partial image it belongs to")
        if text_ids is None and sketch_ids is None and partial_ids is None and not allow_unconditional:
            raise PipelineInputError("give a text, a sketch or a partial image (or allow unconditional samples)")

        smp = self.sampler_for_call(sampler, guidance_scale, temperature, top_k, top_p, callback_every)
        preview = None
        if callback is not None:
            total = smp.num_steps(self.transformer.config.image_len)
            preview = lambda step, ids: callback(  # noqa: E731
                step, total, self._preview(ids) if callback_images else [])
        fixed = {}
        if kept is not None and s.keep_tokens and isinstance(smp, AutoregressiveSampler):
            cells = kept_token_mask(kept[1], self.vqgan.grid_size)  # (N,)
            if bool(cells.any()):
                fixed = {"fixed_ids": self.encode_image(kept[0].unsqueeze(0), text_ids), "fixed_mask": cells}
        ids = smp(self.transformer, text_ids, sketch_ids, partial_ids, num_images=num_images, generator=seed,
                  callback=preview, **fixed)
        images = self.decode(ids, refine=s.refine if refine is None else refine, seed=seed)
        uncomposited = None
        if kept is not None and (s.composite_partial if composite_partial is None else composite_partial):
            uncomposited = images
            if s.harmonise_background:
                images = harmonise_background(images, *kept, self.segmenter)
            if s.harmonise_garment:
                images = harmonise_garment(images, *kept, self.segmenter)
            images = composite_kept_region(images, *kept, feather=s.keep_feather)
        return PipelineOutput(images=images, ids=ids, sketch=sketch_img, partial=partial_img, keep_mask=keep_img,
                              text=read, notes=notes, seconds=time.perf_counter() - start,
                              uncomposited=uncomposited)

    def sampler_for_call(self, sampler: str | Sampler | None = None, guidance_scale: float | None = None,
                         temperature: float | None = None, top_k: int | None = -1, top_p: float | None = -1.0,
                         callback_every: int | None = None) -> Sampler:
        """The sampler one call uses: the stored one or ``sampler``, with the call's overrides."""
        try:
            smp = sampler if isinstance(sampler, Sampler) else (
                self.sampler if sampler is None else self.sampler.converted(sampler))
        except ValueError as err:
            raise PipelineInputError(str(err)) from err
        own = _fields(smp)
        options: dict[str, Any] = {}
        if guidance_scale is not None:
            options["guidance_scale"] = float(guidance_scale)
        if temperature is not None:
            options["temperature"] = float(temperature)
        if top_k != -1:
            options["top_k"] = top_k
        if top_p != -1.0 and "top_p" in own:
            options["top_p"] = top_p
        if callback_every is not None and "callback_every" in own:
            options["callback_every"] = callback_every
        if options.get("temperature", smp.temperature) < 0 or options.get("guidance_scale", smp.guidance_scale) < 0:
            raise PipelineInputError("temperature and guidance scale must be >= 0")
        if smp.causal != bool(self.transformer.config.causal):
            kind = "autoregressive: use sampler='ar'" if self.transformer.config.causal else \
                "bidirectional: use sampler='nar'"
            raise PipelineInputError(f"this checkpoint's transformer is {kind} "
                                     "(mask-predict needs the bidirectional M6-style checkpoint)")
        return smp.with_options(**options)

    @torch.inference_mode()
    def decode_tensor(self, ids: torch.Tensor, refine: bool = False, seed: int = 0) -> torch.Tensor:
        """Token ids -> images (B, 3, S, S) in [-1, 1]; with ``refine`` and a refiner in the
        checkpoint, its detail drawn (one seeded sample per image)."""
        images = self.vqgan.decode(ids).clamp(-1, 1)
        if refine and self.refiner is not None:
            images = self.refiner.refine(images, generator=torch.Generator().manual_seed(int(seed)),
                                         steps=self.settings.refine_steps or None,
                                         strength=self.settings.refine_strength or None)
        return images

    def decode(self, ids: torch.Tensor, refine: bool = False, seed: int = 0) -> list[Image.Image]:
        out = tensor_to_pil(self.decode_tensor(ids, refine, seed))
        return out if isinstance(out, list) else [out]

    def _preview(self, ids_so_far: torch.Tensor) -> list[Image.Image]:
        """Decode a partly sampled grid: unsampled cells repeat each image's most common code so far
        (in raster order that is nearly always background), so the garment appears row by row."""
        N = self.vqgan.num_tokens
        ids = ids_so_far
        if ids.shape[1] < N:
            flat = ids.reshape(ids.shape[0], ids.shape[1], -1)[..., 0] if ids.ndim == 3 else ids
            fill = torch.mode(flat, dim=1).values if flat.shape[1] else torch.zeros(ids.shape[0], dtype=torch.long)
            pad_shape = (ids.shape[0], N - ids.shape[1]) + tuple(ids.shape[2:])
            pad = fill.view(-1, *([1] * (len(pad_shape) - 1))).expand(pad_shape)
            ids = torch.cat([ids, pad], dim=1)
        ids = torch.where(ids >= self.vqgan.codebook_size, torch.zeros_like(ids), ids)  # mask ids of NAR
        return self.decode(ids)

    # -- analysis and editing ----------------------------------------------------------------------
    def image_tensor(self, image, notes: list[str] | None = None) -> torch.Tensor:
        return pil_to_tensor(self._image(image, "image", notes if notes is not None else [])).unsqueeze(0)

    @torch.inference_mode()
    def segment(self, image) -> np.ndarray:
        """The segmenter's part mask (S, S) uint8 for any image."""
        if self.segmenter is None:
            raise PipelineInputError("this checkpoint has no segmenter")
        return self.segmenter.predict(self.image_tensor(image))[0].numpy().astype(np.uint8)

    @torch.inference_mode()
    def encode_image(self, image: torch.Tensor, text_ids: torch.Tensor | None) -> torch.Tensor:
        """Image tensor (B, 3, S, S) -> token ids, fused with ``text_ids``' words for a cross-modal codebook."""
        return encode_cross_modal(self.vqgan, image, text_ids, segmenter=self.segmenter, maskclip=self.maskclip)[0]

    @torch.inference_mode()
    def edit_part(self, image, part: str, text: str, seed: int = 0, guidance_scale: float | None = None,
                  temperature: float | None = None, top_k: int | None = -1) -> EditOutput:
        """Regenerate only the tokens covering ``part`` (found by the segmenter) from ``text``,
        keeping every other token exactly (autoregressive sampling with teacher-forced tokens).

        Pixels outside the part's tokens are then taken from the reconstruction of the input,
        so the rest of the garment is unchanged up to the decoder's reach at the boundary."""
        if part not in PART_ID or part in ("background", "body"):
            raise PipelineInputError(f"pick a garment part to edit, one of {list(PART_NAMES[2:])}")
        if not self.transformer.config.causal:
            raise PipelineInputError("part editing uses the autoregressive transformer")
        notes: list[str] = []
        img = self.image_tensor(image, notes)
        mask = self.segmenter.predict(img)[0]  # (S, S)
        if not bool((mask == PART_ID[part]).any()):
            raise PipelineInputError(f"the segmenter finds no {part} on this garment; pick another part")
        text_ids, _ = self.prepare_text(text, notes)
        if text_ids is None:
            raise PipelineInputError("describe the new part in the text")
        orig = self.encode_image(img, text_ids)  # (1, N[, G])
        grid = self.vqgan.grid_size
        region = token_mask_from_part_mask(mask, PART_ID[part], grid)  # (N,)
        smp = self.sampler_for_call(None, guidance_scale, temperature, top_k, top_p=None)
        ids = smp(self.transformer, text_ids, num_images=1, generator=seed, fixed_ids=orig, fixed_mask=~region)
        recon = self.vqgan.decode(orig).clamp(-1, 1)
        edited = self.vqgan.decode(ids).clamp(-1, 1)
        cell = self.image_size // grid
        pixel_region = region.view(grid, grid).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        out = torch.where(pixel_region, edited, recon)
        return EditOutput(image=tensor_to_pil(out[0]), original=tensor_to_pil(recon[0]),
                          region=Image.fromarray(pixel_region.numpy().astype(np.uint8) * 255),
                          changed_tokens=int((ids != orig).reshape(ids.shape[0], ids.shape[1], -1).any(-1).sum()),
                          ids=ids, original_ids=orig, token_region=region, notes=notes)


def _fields(obj) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


def _default_sampler(transformer: CrossModalTransformer) -> Sampler:
    """ARMANI's shipped sampling settings, autoregressive or mask-predict by the transformer's kind."""
    return DEFAULT_SAMPLER if transformer.config.causal else DEFAULT_SAMPLER.converted(MaskPredictSampler.type)


def _stored_settings(meta: dict) -> tuple[PipelineSettings, Sampler]:
    """(settings, sampler) of a pipeline.json; reads the flat sampling keys of version-1 files."""
    raw = dict(meta.get("settings", {}))
    legacy = {k: raw.pop(k) for k in _LEGACY_SAMPLER_KEYS if k in raw}
    try:
        settings = PipelineSettings(**raw)
        if "sampler" in meta:
            return settings, sampler_from_dict(meta["sampler"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"pipeline.json: invalid settings ({err}); save the pipeline again") from err
    kind = legacy.pop("sampler", AutoregressiveSampler.type)
    if "nar_steps" in legacy:
        legacy["steps"] = legacy.pop("nar_steps")
    sampler = DEFAULT_SAMPLER.converted(kind)
    return settings, sampler.with_options(**{k: v for k, v in legacy.items() if k in _fields(sampler)})


def _with_overrides(settings: PipelineSettings, sampler: Sampler,
                    overrides: dict[str, Any]) -> tuple[PipelineSettings, Sampler]:
    """Apply load-time overrides: ``sampler=`` ("ar" / "nar" / a Sampler), any sampler setting
    (``guidance_scale=2.0``, ``steps=8``) and any :class:`PipelineSettings` field."""
    overrides = dict(overrides)
    kind = overrides.pop("sampler", None)
    if isinstance(kind, Sampler):
        sampler = kind
    elif kind is not None:
        sampler = sampler.converted(kind)
    own = {k: overrides.pop(k) for k in list(overrides) if k in _fields(sampler)}
    return settings_with(settings, overrides), sampler.with_options(**own)


def _partial_rgb(partial: torch.Tensor) -> np.ndarray:
    """The pipeline's (3, S, S) partial image in [-1, 1] -> float (S, S, 3) pixel values 0-255."""
    return ((partial.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255)


@torch.no_grad()
def harmonise_background(images: list[Image.Image], partial: torch.Tensor, keep: torch.Tensor, segmenter,
                         ring: int = 8, min_pixels: int = 16, max_shift: float = 64.0) -> list[Image.Image]:
    """Give generated garments the studio tint of a partial image's kept region.

    The kept region is pasted back exactly (:func:`composite_kept_region`), its own background
    with it; the model draws the rest of the background in a tint of its choosing, so the region
    showed as a rectangle. This adds to every generated background pixel outside the region
    (weighted by the segmenter's background probability, so garment pixels stay as they are)
    the difference between two mean colours taken in a band of ``ring`` pixels on either side of
    the region's edge, where the step shows (so the studio's gradient across the frame does not
    enter it): the kept region's background inside, the generated background outside. Studio
    backgrounds here are a tint, a gentle gradient and a shadow, so one colour shift removes the
    step without repainting them.

    A kept pixel counts as background only where the segmenter says so both in the partial image
    and in the generated one (the model draws the kept part where it was), so a dark stripe of
    the garment that one reading takes for background does not set the tint. An image is left
    as it is when either band has under ``min_pixels`` background pixels (a region that is all
    garment, a garment that fills the frame) or the shift would exceed ``max_shift`` levels in a
    channel (studio tints differ by less; more means a misreading).
    """
    return _match_kept_colour(images, partial, keep, segmenter, garment=False, ring=ring, min_pixels=min_pixels,
                              max_shift=max_shift)


@torch.no_grad()
def harmonise_garment(images: list[Image.Image], partial: torch.Tensor, keep: torch.Tensor, segmenter,
                      ring: int = 8, min_pixels: int = 16, max_shift: float = 40.0) -> list[Image.Image]:
    """Give the generated rest of the garment the shade of its kept part.

    The same measure as :func:`harmonise_background`, on the garment instead of the studio: the
    model draws the garment outside the kept region in a shade of its own (an orange-gold tank
    around a beige kept crop, a brownish black skirt around a navy one), so the pasted region
    showed as a patch of another colour. Every generated garment pixel outside the region
    (weighted by the segmenter's garment probability) moves by the difference between the kept
    garment's colour just inside the region's edge and the generated garment's just outside it,
    each a 20%-trimmed mean, so a logo or buttons in a band do not set it. One offset keeps the
    model's pattern, shading and seams; only the overall shade moves. A larger shift than
    ``max_shift`` levels in a channel is taken for a misreading (a band that holds another part,
    or a pattern's other colour) and not applied. The kept pixels and the background are not
    touched.
    """
    return _match_kept_colour(images, partial, keep, segmenter, garment=True, ring=ring, min_pixels=min_pixels,
                              max_shift=max_shift)


def _match_kept_colour(images: list[Image.Image], partial: torch.Tensor, keep: torch.Tensor, segmenter,
                       garment: bool, ring: int, min_pixels: int, max_shift: float) -> list[Image.Image]:
    """Shift one class of generated pixels (background, or garment with ``garment=True``) outside
    the kept region by the colour step between the kept and generated pixels of that class, each
    mean taken in a band of ``ring`` pixels on its side of the region's edge."""
    from scipy import ndimage
    from scipy.stats import trim_mean

    region = keep[0].numpy() > 0.5
    if not region.any() or region.all():
        return images
    inside = region & (ndimage.distance_transform_edt(region) <= ring)
    near = ~region & (ndimage.distance_transform_edt(~region) <= ring)
    pixels = [np.asarray(im.convert("RGB")) for im in images]  # (S, S, 3) uint8 each, read once
    generated = torch.stack([image_tensor(p) for p in pixels])  # (B, 3, S, S)
    probs = segmenter.probs(torch.cat([partial.unsqueeze(0), generated]))  # one pass: the partial image, then the outputs
    partial_background = probs[0].argmax(0).numpy() == 0
    kept_class = inside & (~partial_background if garment else partial_background)
    if kept_class.sum() < min_pixels:
        return images
    rgb = _partial_rgb(partial)
    weights = probs[1:, 0].numpy()  # (B, S, S): background probability
    if garment:
        weights = 1.0 - weights
    out = []
    for image, pix, w in zip(images, pixels, weights):
        a = pix.astype(np.float64)
        source, around = kept_class & (w > 0.5), near & (w > 0.5)
        if source.sum() < min_pixels or around.sum() < min_pixels:
            out.append(image)
            continue
        if garment:
            # A 20%-trimmed mean: a logo, buttons or a seam in a band (a few dark pixels on a light
            # garment) would otherwise set the shade; a two-colour pattern still averages out.
            shift = trim_mean(rgb[source], 0.2, axis=0) - trim_mean(a[around], 0.2, axis=0)
        else:
            shift = rgb[source].mean(0) - a[around].mean(0)  # (3,)
        if np.abs(shift).max() > max_shift:
            out.append(image)
            continue
        a = a + w[..., None] * (~region)[..., None] * shift
        out.append(Image.fromarray(a.round().clip(0, 255).astype(np.uint8)))
    return out


def composite_kept_region(images: list[Image.Image], partial: torch.Tensor, keep: torch.Tensor,
                          feather: int = 3) -> list[Image.Image]:
    """Paste the kept region of a partial image back into generated garments.

    ``partial`` (3, S, S) in [-1, 1] and ``keep`` (1, S, S) in {0, 1} as the pipeline
    prepared them. Inside the region the output is the given pixels exactly; outside, the
    given pixels fade into the generated ones over ``feather`` pixels (a linear ramp of the
    distance to the region; each pixel of the ramp fades from the colour of the nearest kept
    pixel, since the partial image has none of its own there), so no seam shows where the
    token grid drew something slightly different. A Poisson blend (``cv2.seamlessClone``) was
    not used: it shifts the kept pixels themselves towards the generated colours, and the
    designer asked for them kept.
    """
    from scipy import ndimage

    region = keep[0].numpy() > 0.5
    rgb = _partial_rgb(partial)
    if feather > 0 and region.any():
        # distance of every pixel to the region, and the region pixel it is nearest to
        distance, (near_y, near_x) = ndimage.distance_transform_edt(~region, return_indices=True)
        rgb = rgb[near_y, near_x]  # outside the region: the nearest kept colour, not the blank fill
        alpha = np.clip(1.0 - distance / (feather + 1.0), 0.0, 1.0)
    else:
        alpha = region.astype(np.float64)
    alpha[region] = 1.0
    alpha = alpha[..., None]
    out = []
    for image in images:
        generated = np.asarray(image.convert("RGB"), dtype=np.float64)
        if generated.shape[:2] != region.shape:
            raise ValueError(f"generated image {generated.shape[:2]} and kept region {region.shape} differ in size")
        blended = alpha * rgb + (1.0 - alpha) * generated
        out.append(Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)))
    return out


def _same_component(a: Path, b: Path) -> bool:
    """Two saved components with the same config and bit-identical weights."""
    from safetensors.torch import load_file

    try:
        if json.loads((a / "config.json").read_text()) != json.loads((b / "config.json").read_text()):
            return False
        wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    except (OSError, ValueError):
        return False
    return wa.keys() == wb.keys() and all(wa[k].dtype == wb[k].dtype and torch.equal(wa[k], wb[k]) for k in wa)


def component_folder(folder: Path, name: str, meta: dict) -> Path:
    """Where a pipeline's component lives: its own sub-folder, or a shared one (a relative path
    to a sibling pipeline, e.g. ``../armani/maskclip``) that must exist beside it."""
    ref = meta.get("shared", {}).get(name)
    if ref is None:
        return folder / name
    if Path(ref).is_absolute():
        raise ValueError(f"{folder}/pipeline.json: shared component {name!r} must be a relative path, got {ref!r}")
    target = folder / ref
    if not (target / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} shares its {name} with {target.resolve()}, which is missing: keep the pipelines it "
            "refers to beside it (e.g. checkpoints/armani next to checkpoints/dalle)")
    return target


def hub_snapshot(repo_id: str) -> Path:
    """A Hub repo id -> its local snapshot (offline: only what the hub cache already holds)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as err:  # noqa: BLE001 - any hub/network failure becomes one clear message
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local folder nor a reachable Hugging Face Hub repo ({type(err).__name__}: "
            f"{str(err)[:200]})"
        ) from err

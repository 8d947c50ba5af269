"""What every garment-generation pipeline shares: the call, the output, the errors.

ARMANI (:class:`armani.pipeline.ArmaniPipeline`), the token baselines built from the same
parts and the diffusion baseline (:class:`armani.baselines.diffusion.DiffusionBaselinePipeline`)
all satisfy :class:`GarmentPipeline`:

    pipe.capabilities   which controls it reads (text, sketch, partial image), its samplers
    pipe.settings       the defaults stored in its ``pipeline.json`` (a dataclass)
    pipe(text=..., sketch=..., partial=..., partial_keep_mask=..., num_images=4, seed=0)
                        -> PipelineOutput

so the app, the evaluator and the research scripts never need to know which one they hold.
Open any of them with :func:`armani.load_pipeline`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from armani.data.captions import complete_sleeve_length
from armani.locations import CHECKPOINT_ENV, checkpoints_dir, shipped_checkpoint
from armani.models.vqgan import CheckpointError
from armani.text import GarmentTokenizer

MAX_IMAGES = 16
# The "format" of a saved pipeline's pipeline.json, one per pipeline class.
ARMANI_FORMAT = "armani-pipeline"
DIFFUSION_FORMAT = "armani-diffusion"
PIPELINE_FORMATS: tuple[str, ...] = (ARMANI_FORMAT, DIFFUSION_FORMAT)
CONTROLS: tuple[str, ...] = ("text", "sketch", "partial")


class PipelineInputError(ValueError):
    """Input the pipeline cannot use, with a message that says what to change."""


@dataclass
class PipelineOutput:
    images: list[Image.Image]
    ids: torch.Tensor  # (num_images, N[, G]) the sampled tokens; (num_images, 0) for a pixel-space model
    sketch: Image.Image | None = None  # the edge map the model saw (white edges on black)
    partial: Image.Image | None = None  # the partial image the model saw (grey = not given)
    keep_mask: Image.Image | None = None  # white = kept region
    text: str | None = None  # the text as the model read it (after cleaning/truncation)
    notes: list[str] = field(default_factory=list)  # fixes applied to the input
    seconds: float = 0.0
    # With a partial image and ``composite_partial``: the model's own decoding, before its kept
    # region was pasted back (``images`` are the composited garments).
    uncomposited: list[Image.Image] | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a pipeline can be asked for. Callers check this instead of guessing from signatures."""

    controls: frozenset[str] = frozenset({"text"})  # subset of CONTROLS
    samplers: tuple[str, ...] = ()  # names accepted by ``sampler=`` (the first is the default)
    top_k: bool = False  # takes ``top_k`` / ``top_p`` / ``temperature``
    previews: bool = False  # calls ``callback(step, total, images)`` while sampling
    edit: bool = False  # has ``edit_part(image, part, text)``

    def reads(self, control: str) -> bool:
        if control not in CONTROLS:
            raise ValueError(f"unknown control {control!r}; one of {CONTROLS}")
        return control in self.controls


@runtime_checkable
class GarmentPipeline(Protocol):
    """The interface of every pipeline :func:`armani.load_pipeline` returns."""

    capabilities: Capabilities
    settings: Any  # a dataclass, stored in pipeline.json
    image_size: int

    def __call__(self, text: str | None = None, sketch=None, partial=None, partial_keep_mask=None,
                 num_images: int = 4, seed: int | None = 0, **options: Any) -> PipelineOutput: ...


# -- shared by the pipeline classes --------------------------------------------------------------
def read_text(tokenizer: GarmentTokenizer, text: str | None, notes: list[str],
              complete_sleeve: bool = True) -> tuple[torch.Tensor | None, str | None]:
    """Text -> (token ids (1, L), the text as the model read it); (None, None) for no text.

    A text with no words raises :class:`PipelineInputError`; truncation and unknown word
    pieces are reported in ``notes``. ``complete_sleeve``: a top named without its sleeve
    length gets its usual one (:func:`armani.data.captions.complete_sleeve_length`; training
    captions always name it), also reported in ``notes``.
    """
    if text is None:
        return None, None
    if not isinstance(text, str):
        raise PipelineInputError(f"text must be a string, got {type(text).__name__}")
    if not any(ch.isalnum() for ch in tokenizer.clean(text)):
        if text.strip():
            raise PipelineInputError("the text has no words after cleaning (only symbols); describe the garment")
        return None, None
    if complete_sleeve:
        text, added = complete_sleeve_length(text)
        if added:
            notes.append(f"no sleeve length named: read as '{added}', the length this garment is usually "
                         "trained with (name one to choose)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokens = tokenizer([text])
    read = " ".join(tokens.words[0])
    if tokens.truncated[0]:
        notes.append(f"the text was longer than {tokenizer.context_length - 2} tokens and was cut "
                     f"after: '...{read[-40:]}'")
    unknown = int((tokens.ids[0] == tokenizer.unk_id).sum()) if tokenizer.unk_id is not None else 0
    if unknown:
        notes.append(f"{unknown} word piece(s) are not in this model's vocabulary and were read as unknown")
    return tokens.ids, read


def check_num_images(num_images: int) -> int:
    if not 1 <= int(num_images) <= MAX_IMAGES:
        raise PipelineInputError(f"num_images must be between 1 and {MAX_IMAGES}, got {num_images}")
    return int(num_images)


def resolve_seed(seed: int | None) -> int:
    """A fixed seed, or a fresh one for None."""
    return int(seed) if seed is not None else int(torch.seed() % (2**31))


def read_pipeline_json(folder: Path, expected_format: str | None = None) -> dict:
    """``folder/pipeline.json`` as a dict; a missing, corrupt or foreign file is a CheckpointError."""
    meta_file = folder / "pipeline.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder}: no pipeline.json; is this a saved pipeline?")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_file}: corrupt JSON ({err}); save the pipeline again") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_file}: expected a JSON object; save the pipeline again")
    if expected_format is not None and meta.get("format") != expected_format:
        raise CheckpointError(f"{meta_file}: format {meta.get('format')!r}, not {expected_format!r}; "
                              "open it with armani.load_pipeline")
    return meta


def settings_with(stored: Any, overrides: dict[str, Any]) -> Any:
    """The stored settings dataclass with ``overrides`` applied; an unknown name is a TypeError."""
    known = {f.name for f in dataclasses.fields(stored)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown pipeline setting(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(stored, **overrides)


def check_storage_dtype(storage_dtype: str) -> None:
    if storage_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"storage_dtype must be 'float32' or 'bfloat16', got {storage_dtype!r}")


def store_weights_in_bf16(weights: Path) -> None:
    """Rewrite a safetensors file with its floating-point tensors in bf16 (half the bytes).
    Loaders cast them back to float32: ``load_state_dict`` copies into float32 parameters."""
    from safetensors.torch import load_file, save_file

    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
               for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights))


def as_pil(x) -> Image.Image:
    """A PIL image, a path to one, or an array -> PIL image (mode unchanged)."""
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, (str, Path)):
        return Image.open(x)
    return Image.fromarray(np.asarray(x))


__all__ = [
    "ARMANI_FORMAT", "CHECKPOINT_ENV", "CONTROLS", "checkpoints_dir", "shipped_checkpoint", "Capabilities", "DIFFUSION_FORMAT", "GarmentPipeline", "MAX_IMAGES",
    "PIPELINE_FORMATS", "PipelineInputError", "PipelineOutput", "as_pil", "check_num_images",
    "check_storage_dtype", "read_pipeline_json", "read_text", "resolve_seed", "settings_with",
    "store_weights_in_bf16",
]

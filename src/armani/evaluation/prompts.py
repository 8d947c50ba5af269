"""Evaluation prompts: JSON lines ``{"text": ..., "attributes": <attribute record>}``, and
the procedural control signals (sketch, partial image) the sketch / partial tasks need.

- :func:`default_prompts` draws the records of a procedural split (``val`` = the training
  distribution, ``heldout`` = the attribute combinations kept out of training). Prompt
  ``i`` has exactly the attributes of row ``i`` of that split (same seed); its caption is
  written from those attributes with the same caption writer as the data, but from the
  row's generator *without* drawing the image first, so the wording may differ from the
  stored row's caption.
- :func:`render_reference` draws a real render of a record (``render_garment``); the
  evaluator uses such renders as the real set for FID and as the source of controls:
  the sketch is its Canny edge map (the training transform), the partial image a random
  crop keeping ``keep_fraction`` of it (the training transform too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from armani.data.garments import CATEGORIES, COLORS, PATTERNS, SLEEVES, render_garment
from armani.parts import PART_NAMES

TASKS: tuple[str, ...] = ("text", "text+sketch", "text+partial", "sketch", "partial")
SKETCH_STYLES: tuple[str, ...] = ("canny", "drawn")
_RECORD_KEYS = ("category", "color", "pattern", "sleeve", "parts", "pocket_side")


class PromptFileError(ValueError):
    """A prompt file line that is not a valid prompt; the message names the file and line."""


def default_prompts(n: int, split: str = "val", seed: int = 0) -> list[dict]:
    """``n`` prompts ``{"text", "attributes"}`` from the procedural generator's ``split``."""
    from armani.data.captions import write_caption
    from armani.data.synthetic import row_rng, sample_attributes

    if split not in ("val", "heldout", "train"):
        raise ValueError(f"split must be 'val' or 'heldout' (or 'train'), got {split!r}")
    if n < 1:
        raise ValueError(f"need at least one prompt, got n={n}")
    prompts = []
    for i in range(n):
        rng = row_rng(seed, split, i)
        attributes = sample_attributes(rng, split)
        prompts.append({"text": write_caption(attributes, rng), "attributes": attributes})
    return prompts


def check_attributes(record) -> dict:
    """Validate an attribute record against the dataset vocabularies; returns it or raises ValueError."""
    if not isinstance(record, dict):
        raise ValueError(f"'attributes' must be an object, got {type(record).__name__}")
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"'attributes' lacks {missing} (a record has {list(_RECORD_KEYS)})")
    for key, vocab in (("category", CATEGORIES), ("color", tuple(COLORS)), ("pattern", PATTERNS),
                       ("sleeve", (None, *SLEEVES)), ("pocket_side", (None, "left", "right", "both"))):
        if record[key] not in vocab:
            raise ValueError(f"attributes.{key} = {record[key]!r} is not one of {list(vocab)}")
    parts = record["parts"]
    if not isinstance(parts, dict):
        raise ValueError(f"attributes.parts must be an object {{part: count}}, got {type(parts).__name__}")
    for name, count in parts.items():
        if name not in PART_NAMES[1:]:
            raise ValueError(f"attributes.parts has unknown part {name!r}; parts are {list(PART_NAMES[1:])}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"attributes.parts.{name} must be a positive integer count, got {count!r}")
    return record


def load_prompts(path: str | Path) -> list[dict]:
    """Read a JSON-lines prompt file; blank lines and lines starting with ``#`` are skipped.

    Raises :class:`PromptFileError` naming ``path:line`` for a line that is not JSON, not
    an object, has no non-empty ``text``, or has an invalid ``attributes`` record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(item, dict):
            raise PromptFileError(f"{where}: expected an object {{\"text\": ..., \"attributes\": ...}}, "
                                  f"got {type(item).__name__}")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{where}: 'text' must be a non-empty string")
        if "attributes" not in item:
            raise PromptFileError(f"{where}: no 'attributes' record (needed to check the generated parts)")
        try:
            check_attributes(item["attributes"])
        except ValueError as err:
            raise PromptFileError(f"{where}: {err}") from None
        prompts.append({"text": text, "attributes": item["attributes"]})
    if not prompts:
        raise PromptFileError(f"{path}: no prompts (the file is empty or only comments)")
    return prompts


def save_prompts(prompts: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": p["text"], "attributes": p["attributes"]}) + "\n" for p in prompts))
    return path


def render_reference(attributes: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """A real render of ``attributes``: uint8 (size, size, 3) RGB (``size`` >= 32)."""
    return render_reference_with_mask(attributes, size, rng)[0]


def render_reference_with_mask(attributes: dict, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_reference` and its exact part mask, uint8 (size, size) part ids."""
    image, mask = render_garment(attributes, max(32, int(size)), rng)
    if image.shape[0] != size:
        import cv2

        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask


def random_garment(size: int, rng: np.random.Generator, split: str = "val") -> np.ndarray:
    """A real render of a random garment of ``split`` that ignores any prompt: the floor
    every prompt-following figure is read against."""
    from armani.data.synthetic import sample_attributes

    return render_reference(sample_attributes(rng, split), size, rng)


@dataclass
class Controls:
    """The control signals of one prompt: what the pipeline is called with (beside the text)."""

    sketch: np.ndarray | None = None  # uint8 (S, S) Canny edges, 255 = edge
    partial: np.ndarray | None = None  # uint8 (S, S, 3) the render (the pipeline blanks outside keep)
    keep_mask: np.ndarray | None = None  # bool (S, S), True = kept
    reference: np.ndarray | None = None  # uint8 (S, S, 3) the render the controls came from
    reference_mask: np.ndarray | None = None  # uint8 (S, S) its exact part ids (0 = background)

    def pipeline_kwargs(self) -> dict:
        from PIL import Image

        out: dict = {}
        if self.sketch is not None:
            out["sketch"] = Image.fromarray(self.sketch)  # white edges on black: read as a drawing
        if self.partial is not None:
            out["partial"] = Image.fromarray(self.partial)
            out["partial_keep_mask"] = self.keep_mask
        return out


def task_uses_text(task: str) -> bool:
    """Whether the pipeline gets the prompt's text in ``task`` ("sketch" / "partial" alone do not)."""
    return task.startswith("text")


def make_controls(attributes: dict, task: str, size: int, rng: np.random.Generator,
                  keep_fraction: float = 0.25, sketch_thresholds: tuple[int, int] = (100, 200),
                  sketch_style: str = "canny") -> Controls:
    """Render ``attributes`` once and derive the ``task``'s controls from it.

    The sketch is the render's Canny edge map (the training transform) or, with
    ``sketch_style="drawn"``, a hand-drawn-style sketch of its part mask
    (:func:`armani.data.drawn_sketch.drawn_sketch`: thicker, wobbly, unclosed strokes). The
    partial image keeps a random ``keep_fraction`` crop (the training transform too).
    """
    from armani.data.transforms import canny_sketch, random_keep_mask

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if sketch_style not in SKETCH_STYLES:
        raise ValueError(f"sketch_style must be one of {SKETCH_STYLES}, got {sketch_style!r}")
    if task == "text":
        return Controls()
    reference, mask = render_reference_with_mask(attributes, size, rng)
    if task.endswith("sketch"):
        if sketch_style == "drawn":
            from armani.data.drawn_sketch import drawn_sketch

            sketch = drawn_sketch(mask, rng)
        else:
            sketch = canny_sketch(reference, *sketch_thresholds)
        return Controls(sketch=sketch, reference=reference, reference_mask=mask)
    keep = random_keep_mask(size, size, rng, keep_fraction)
    return Controls(partial=reference, keep_mask=keep, reference=reference, reference_mask=mask)

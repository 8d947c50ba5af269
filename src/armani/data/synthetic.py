"""The procedural garment dataset: the project's offline default data.

Each row is a garment drawn with OpenCV (``armani.data.garments``), its exact part mask,
a product caption (``armani.data.captions``) and the attribute record both were made from:

    {"category": str, "color": str, "pattern": str,
     "sleeve": "sleeveless" | "short" | "long" | None,     # None for skirt, trousers, shorts
     "parts": {"<part name>": count, ...},                  # only parts present, body included
     "pocket_side": "left" | "right" | "both" | None}       # the IMAGE's left / right

Counts: ``button``, ``pocket`` and ``strap`` (armani.parts.COUNTABLE_PARTS) count connected
components of their label in the mask; every other part is recorded as 1 (present), even
when it is drawn in two pieces (two sleeves, two cuffs, a hem on two trouser legs).

Randomness: row ``i`` of split ``s`` with seed ``k`` uses its own
``numpy.random.Generator(SeedSequence([k, split id, i]))`` for the attributes, the drawing
and the caption, in that order, and nothing else. So a row is the same whichever worker
draws it, and the splits ``train`` / ``val`` / ``heldout`` are different streams.

Held-out combinations (:data:`DEFAULT_HELDOUT`) never appear in ``train`` or ``val``
(rejection sampling); ``heldout`` draws only them, to test generalisation to unseen
attribute combinations.

CLI::

    python -m armani.data.synthetic --num 20000 --size 64 --seed 0 --out data/synthetic-train
    python -m armani.data.synthetic --num 1000 --split val --out data/synthetic-val
    python -m armani.data.synthetic --num 500 --split heldout --out data/synthetic-heldout
    python -m armani.data.synthetic --preview docs/dataset_preview.png --size 128
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from armani.data.captions import write_caption
from armani.data.garments import BOTTOMS, CATEGORIES, COLORS, PATTERNS, SLEEVES, render_garment
from armani.parts import PART_NAMES

__all__ = [
    "CATEGORIES", "COLORS", "PATTERNS", "SLEEVES", "SPLITS", "HeldoutCombo", "DEFAULT_HELDOUT",
    "sample_attributes", "render_garment", "write_caption", "generate_row", "generate_dataset",
    "parse_heldout", "main",
]

SPLITS: tuple[str, ...] = ("train", "val", "heldout")
_CHUNK = 256  # rows per worker task; fixed so the written files do not depend on --workers


@dataclass(frozen=True)
class HeldoutCombo:
    """A combination kept out of train/val: a category plus a part, a pattern and/or a colour."""

    category: str
    part: str | None = None
    pattern: str | None = None
    color: str | None = None

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; expected one of {CATEGORIES}")
        if self.part is not None and self.part not in PART_NAMES[2:]:
            raise ValueError(f"unknown part {self.part!r}; expected one of {PART_NAMES[2:]}")
        if self.pattern is not None and self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected one of {PATTERNS}")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; expected one of {tuple(COLORS)}")
        if self.part is None and self.pattern is None and self.color is None:
            raise ValueError(f"held-out combo for {self.category!r} needs a part, a pattern or a colour")

    def matches(self, attributes: dict) -> bool:
        return (
            attributes["category"] == self.category
            and (self.part is None or self.part in attributes["parts"])
            and (self.pattern is None or attributes["pattern"] == self.pattern)
            and (self.color is None or attributes["color"] == self.color)
        )

    def __str__(self) -> str:
        return "+".join(x for x in (self.category, self.part, self.pattern, self.color) if x)


DEFAULT_HELDOUT: tuple[HeldoutCombo, ...] = (
    HeldoutCombo("t-shirt", part="zipper"),
    HeldoutCombo("dress", part="hood"),
    HeldoutCombo("trousers", pattern="checked"),
    HeldoutCombo("coat", color="pink"),
)


def parse_heldout(text: str) -> tuple[HeldoutCombo, ...]:
    """``"default"``, ``"none"`` or a comma list like ``"t-shirt+zipper,coat+pink"``.

    The word after ``+`` may be a part name, a pattern or a colour (the three vocabularies
    share no word).
    """
    text = text.strip().lower()
    if text == "default":
        return DEFAULT_HELDOUT
    if text in ("none", ""):
        return ()
    combos = []
    for item in text.split(","):
        category, _, rest = item.strip().partition("+")
        kwargs: dict[str, str] = {}
        for word in filter(None, rest.split("+")):
            key = "part" if word in PART_NAMES else "pattern" if word in PATTERNS else "color" if word in COLORS else None
            if key is None:
                raise ValueError(f"{word!r} in --heldout {item!r} is not a part, pattern or colour")
            kwargs[key] = word
        combos.append(HeldoutCombo(category, **kwargs))
    return tuple(combos)


# -- attributes -----------------------------------------------------------------------------
def _pockets(rng: np.random.Generator, p_any: float, max_count: int = 2) -> tuple[int, str | None]:
    if rng.random() >= p_any:
        return 0, None
    n = 1 if max_count == 1 else int(rng.integers(1, 3))
    return n, ("both" if n == 2 else ("left" if rng.random() < 0.5 else "right"))


def _sample_garment(category: str, rng: np.random.Generator) -> dict:
    """One category's parts, with plausible frequencies. Every part drawn here is drawable."""
    parts: dict[str, int] = {"body": 1}

    def maybe(part: str, p: float) -> None:
        if rng.random() < p:
            parts[part] = 1

    def choose(options: Sequence[str], probs: Sequence[float]) -> str:
        return str(options[int(rng.choice(len(options), p=probs))])

    pockets, side = 0, None
    sleeve: str | None = None
    if category == "t-shirt":
        sleeve = choose(("short", "long"), (0.75, 0.25))
        maybe("collar", 0.6), maybe("logo", 0.4), maybe("hem", 0.3), maybe("zipper", 0.15)
        pockets, side = _pockets(rng, 0.3, max_count=1)
        if sleeve == "long":
            maybe("cuff", 0.4)
    elif category == "shirt":
        sleeve = choose(("short", "long"), (0.35, 0.65))
        parts.update(collar=1, placket=1, button=int(rng.integers(3, 7)))
        pockets, side = _pockets(rng, 0.5)
        if sleeve == "long":
            parts["cuff"] = 1
    elif category == "polo":
        sleeve = choose(("short", "long"), (0.85, 0.15))
        parts.update(collar=1, placket=1, button=int(rng.integers(1, 4)))
        maybe("logo", 0.5), maybe("hem", 0.3)
        if sleeve == "long":
            maybe("cuff", 0.8)
    elif category == "dress":
        sleeve = choose(SLEEVES, (0.45, 0.3, 0.25))
        if sleeve == "sleeveless":
            parts["strap"] = 2
            maybe("collar", 0.2)
        else:
            maybe("collar", 0.3)
        maybe("belt", 0.35), maybe("hem", 0.4), maybe("hood", 0.12)
        if rng.random() < 0.25:
            parts["button"] = int(rng.integers(2, 7))
        pockets, side = _pockets(rng, 0.3)
        if sleeve == "long":
            maybe("cuff", 0.4)
    elif category in BOTTOMS:
        parts["waistband"] = 1
        maybe("belt", 0.3 if category == "skirt" else 0.4)
        maybe("hem", 0.4 if category == "skirt" else 0.25)
        if category == "skirt" and rng.random() < 0.25:
            parts["button"] = int(rng.integers(2, 6))
        pockets, side = _pockets(rng, 0.4 if category == "skirt" else 0.6)
    elif category in ("jacket", "coat"):
        sleeve = "long" if category == "coat" else choose(("short", "long"), (0.1, 0.9))
        maybe("collar", 0.8 if category == "jacket" else 0.9)
        if rng.random() < (0.45 if category == "jacket" else 0.25):
            parts["zipper"] = 1
        else:
            parts["button"] = int(rng.integers(1, 5)) if category == "jacket" else int(rng.integers(2, 7))
        pockets, side = _pockets(rng, 0.6 if category == "jacket" else 0.7)
        if category == "coat":
            maybe("belt", 0.35)
        if sleeve == "long":
            maybe("cuff", 0.5 if category == "jacket" else 0.3)
        if category == "jacket":
            maybe("hem", 0.5)
    elif category == "hoodie":
        sleeve = choose(("short", "long"), (0.15, 0.85))
        parts["hood"] = 1
        maybe("zipper", 0.4), maybe("hem", 0.7), maybe("logo", 0.4)
        pockets, side = _pockets(rng, 1.0)
        if sleeve == "long":
            maybe("cuff", 0.7)
    elif category == "tank top":
        sleeve = "sleeveless"
        parts["strap"] = 2
        maybe("logo", 0.3), maybe("hem", 0.4), maybe("collar", 0.3)
    elif category == "sweater":
        sleeve = choose(("short", "long"), (0.15, 0.85))
        maybe("collar", 0.7), maybe("hem", 0.8), maybe("logo", 0.3)
        if sleeve == "long":
            maybe("cuff", 0.8)
    else:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    if sleeve in ("short", "long"):
        parts["sleeve"] = 1
    if pockets:
        parts["pocket"] = pockets
    order = {name: i for i, name in enumerate(PART_NAMES)}
    return {
        "category": category,
        "color": str(rng.choice(list(COLORS))),
        "pattern": str(rng.choice(PATTERNS)),
        "sleeve": sleeve,
        "parts": dict(sorted(parts.items(), key=lambda kv: order[kv[0]])),
        "pocket_side": side,
    }


def _force(attributes: dict, combo: HeldoutCombo) -> dict:
    """Make ``attributes`` show ``combo`` (adds the part, sets the pattern / colour)."""
    if combo.part is not None:
        parts = dict(attributes["parts"])
        parts[combo.part] = parts.get(combo.part, 1)
        order = {name: i for i, name in enumerate(PART_NAMES)}
        attributes["parts"] = dict(sorted(parts.items(), key=lambda kv: order[kv[0]]))
    if combo.pattern is not None:
        attributes["pattern"] = combo.pattern
    if combo.color is not None:
        attributes["color"] = combo.color
    return attributes


def sample_attributes(rng: np.random.Generator, split: str = "train",
                      heldout: Sequence[HeldoutCombo] = DEFAULT_HELDOUT) -> dict:
    """Draw one garment's attribute record.

    ``train`` / ``val``: uniform category, then plausible parts; records matching a
    held-out combo are redrawn. ``heldout``: a uniformly chosen combo from ``heldout``,
    forced onto an otherwise ordinary garment of that category.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "heldout":
        if not heldout:
            raise ValueError("split='heldout' needs at least one held-out combination (got none)")
        combo = heldout[int(rng.integers(len(heldout)))]
        return _force(_sample_garment(combo.category, rng), combo)
    for _ in range(1000):
        attributes = _sample_garment(str(rng.choice(CATEGORIES)), rng)
        if not any(c.matches(attributes) for c in heldout):
            return attributes
    raise RuntimeError("the held-out combinations exclude (nearly) every garment; check --heldout")


# -- rows and datasets ----------------------------------------------------------------------
def row_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one row: its own stream per (seed, split, row index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))


def generate_row(index: int, size: int = 64, seed: int = 0, split: str = "train",
                 heldout: Sequence[HeldoutCombo] = DEFAULT_HELDOUT) -> dict:
    """One row as arrays: ``image`` uint8 (S, S, 3), ``mask`` uint8 (S, S), ``caption``, ``attributes`` dict."""
    rng = row_rng(seed, split, index)
    attributes = sample_attributes(rng, split, heldout)
    image, mask = render_garment(attributes, size, rng)
    return {"image": image, "mask": mask, "caption": write_caption(attributes, rng), "attributes": attributes}


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # (H, W, 3) -> RGB, (H, W) -> L
    return buffer.getvalue()


def _render_chunk(task: tuple[int, int, int, int, str, tuple[HeldoutCombo, ...]]) -> dict[str, list]:
    start, stop, size, seed, split, heldout = task
    columns: dict[str, list] = {"image": [], "mask": [], "caption": [], "attributes": []}
    for i in range(start, stop):
        row = generate_row(i, size, seed, split, heldout)
        columns["image"].append({"bytes": _png(row["image"]), "path": None})
        columns["mask"].append({"bytes": _png(row["mask"]), "path": None})
        columns["caption"].append(row["caption"])
        columns["attributes"].append(json.dumps(row["attributes"]))
    return columns


def dataset_features():
    """The ``datasets.Features`` of the procedural dataset."""
    import datasets

    return datasets.Features({
        "image": datasets.Image(),
        "mask": datasets.Image(),
        "caption": datasets.Value("string"),
        "attributes": datasets.Value("string"),
    })


def generate_dataset(num: int, size: int = 64, seed: int = 0, split: str = "train",
                     heldout: Sequence[HeldoutCombo] = DEFAULT_HELDOUT, workers: int | None = None,
                     progress: bool = True, start: int = 0):
    """Draw rows ``start`` .. ``num - 1`` into an in-memory ``datasets.Dataset`` (columns image,
    mask, caption, attributes). Row ``i`` is the same garment whatever ``start`` and ``num`` are.

    Rows are drawn in chunks of 256 by a multiprocessing pool of ``workers`` processes
    (default ``os.cpu_count()``; 1 draws in this process). The result, its fingerprint
    included, depends only on (num, size, seed, split, heldout), not on ``workers``.
    """
    import datasets
    from tqdm.auto import tqdm

    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if not 0 <= start < num:
        raise ValueError(f"start must be in 0 .. num - 1 = {num - 1}, got {start}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    heldout = tuple(heldout)
    workers = max(1, int(workers or os.cpu_count() or 1))
    tasks = [(s, min(s + _CHUNK, num), int(size), int(seed), split, heldout) for s in range(start, num, _CHUNK)]
    features = dataset_features()
    parts = []
    with tqdm(total=num - start, desc=f"drawing {split} garments", unit="img", disable=not progress) as bar:
        if workers == 1 or len(tasks) == 1:
            results = map(_render_chunk, tasks)
            pool = None
        else:
            from multiprocessing import get_context

            pool = get_context("fork" if sys.platform.startswith("linux") else "spawn").Pool(min(workers, len(tasks)))
            results = pool.imap(_render_chunk, tasks)
        try:
            for columns in results:
                parts.append(datasets.Dataset.from_dict(columns, features=features))
                bar.update(len(columns["caption"]))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    recipe = {"num": num, "size": size, "seed": seed, "split": split, "heldout": [asdict(c) for c in heldout],
              "version": 1}
    if start:  # rows from 0 keep the fingerprint they always had
        recipe["start"] = start
    recipe = json.dumps(recipe, sort_keys=True)
    return dataset.select_columns(list(features), new_fingerprint=hashlib.sha256(recipe.encode()).hexdigest()[:16])


# -- CLI ------------------------------------------------------------------------------------
def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise SystemExit(f"error: --out {out} exists and is not a directory")
    entries = list(out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise SystemExit(f"error: --out {out} already holds data ({len(entries)} entries); "
                         "pass --overwrite to replace it, or choose another directory. Nothing was changed.")
    if not ((out / "dataset_info.json").exists() or (out / "state.json").exists()):
        raise SystemExit(f"error: --out {out} holds files that are not a saved dataset; refusing to replace "
                         "it even with --overwrite. Nothing was changed.")


def save_dataset(dataset, out: str | Path, overwrite: bool = False) -> Path:
    """``save_to_disk`` into ``out``, refusing a non-empty directory unless ``overwrite``.

    With ``overwrite`` the new copy is written beside ``out`` first and swapped in only
    once complete, so a failure never leaves a half-written dataset.
    """
    out = Path(out)
    _check_out(out, overwrite)
    if out.exists() and any(out.iterdir()):
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        dataset.save_to_disk(str(tmp))
        shutil.rmtree(out)
        tmp.rename(out)
    else:
        dataset.save_to_disk(str(out))
    return out


def save_preview(path: str | Path, size: int = 128, seed: int = 0, num: int = 8) -> Path:
    """A grid of ``num`` garments: image, part-mask overlay, Canny sketch, partial image, caption."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from armani.data.transforms import canny_sketch, random_partial
    from armani.parts import PART_COLORS, colorize_mask

    rows, seen, index = [], set(), 0
    while len(rows) < num - 1 and index < 500:  # distinct categories first, then one held-out
        row = generate_row(index, size, seed, "train")
        if row["attributes"]["category"] not in seen:
            seen.add(row["attributes"]["category"])
            rows.append(("", row))
        index += 1
    rows.append(("[held-out combo] ", generate_row(0, size, seed, "heldout")))
    fig, axes = plt.subplots(len(rows), 5, figsize=(13, 2.3 * len(rows)),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.8]})
    used: set[int] = set()
    for r, (tag, row) in enumerate(rows):
        image, mask = row["image"], row["mask"]
        used |= set(np.unique(mask).tolist())
        overlay = (0.45 * image + 0.55 * colorize_mask(mask)).astype(np.uint8)
        partial, _ = random_partial(image, np.random.default_rng([seed, r]))
        panels = [(image, "image"), (overlay, "parts"), (canny_sketch(image), "sketch"), (partial, "partial")]
        for c, (panel, title) in enumerate(panels):
            axes[r, c].imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            axes[r, c].set_title(title, fontsize=8)
            axes[r, c].axis("off")
        text = tag + row["caption"] + "\n\n" + json.dumps(row["attributes"]["parts"])
        axes[r, 4].text(0.0, 0.5, textwrap.fill(text, 52), fontsize=8, va="center", family="sans-serif")
        axes[r, 4].axis("off")
    handles = [Patch(color=np.asarray(PART_COLORS[i]) / 255, label=PART_NAMES[i]) for i in sorted(used)]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8, frameon=False)
    fig.suptitle(f"Procedural garments ({size}x{size}, seed {seed}) with exact part masks", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m armani.data.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=1000, help="number of garments (default 1000)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 64; preview 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--out", type=Path, help="directory for datasets.save_to_disk")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already saved in --out")
    p.add_argument("--workers", type=int, default=None, help="processes (default: os.cpu_count())")
    p.add_argument("--heldout", default="default",
                   help="held-out combos: 'default', 'none' or e.g. 't-shirt+zipper,coat+pink'")
    p.add_argument("--preview", type=Path, help="save a preview figure here instead of a dataset")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.preview is not None:
        path = save_preview(args.preview, size=args.size or 128, seed=args.seed)
        print(f"saved preview to {path}")
        return 0
    if args.out is None:
        raise SystemExit("error: --out is required (or use --preview PATH)")
    try:
        heldout = parse_heldout(args.heldout)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    _check_out(args.out, args.overwrite)  # fail before drawing anything
    start = time.perf_counter()
    dataset = generate_dataset(args.num, size=args.size or 64, seed=args.seed, split=args.split,
                               heldout=heldout, workers=args.workers)
    save_dataset(dataset, args.out, overwrite=args.overwrite)
    print(f"wrote {len(dataset)} {args.split} garments ({args.size or 64}px) to {args.out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

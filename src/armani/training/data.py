"""Data and tokenizer for a training run: built once, cached, shared by every stage.

- The procedural dataset is generated on first use under ``data.cache_dir`` (one folder per
  size/count/seed/split) and reused by every later stage and run; under multi-process
  launch the main process generates while the others wait.
- Real data comes through :func:`armani.data.prepare.prepare_split` (which reads the source
  with :func:`armani.data.loader.load_garment_dataset`), prepared once and cached.
- The tokenizer is fixed per run (``RUN/tokenizer/tokenizer.json``): the first stage
  builds it from the training captions, the rest load it, so every model of a run agrees
  on the ids. ``data.tokenizer`` names a saved one instead (fine-tuning a checkpoint).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import datasets

from armani.text import GarmentTokenizer

# Words that user prompts will use even if the training captions happened not to: they
# keep the compact vocabulary (armani.text) from mapping them to UNK.
_EXTRA_WORDS = (
    "one two three four five six seven eight zero no with without and a an the on of in left right both "
    "chest side front back pocket pockets button buttons zipper zip hood belt waistband logo strap straps "
    "collar cuff cuffs sleeve sleeves sleeveless short long hem placket plain striped stripes checked "
    "check dotted dots polka"
)


def _procedural_dir(cfg, split: str, num: int, first: int = 0) -> Path:
    held = "heldout" if cfg.heldout else "noheldout"
    rows = f"{split}-{num}" if not first else f"{split}-rows{first}-{num}"
    return Path(cfg.cache_dir) / f"procedural-{cfg.image_size}px-{held}-seed{cfg.seed}" / rows


def procedural_split(cfg, split: str, accelerator=None, first: int = 0) -> datasets.Dataset:
    """The procedural ``split`` ("train", "val", "heldout"), generated once and cached; with
    ``first``, only its rows ``first`` .. N-1."""
    from armani.data.synthetic import DEFAULT_HELDOUT, generate_dataset

    num = {"train": cfg.num_train, "val": cfg.num_val, "heldout": cfg.num_heldout}[split]
    path = _procedural_dir(cfg, split, num, first)
    ctx = accelerator.main_process_first() if accelerator is not None else nullcontext()
    with ctx:
        if not (path / "dataset_info.json").is_file():
            ds = generate_dataset(num, size=cfg.image_size, seed=cfg.seed, split=split,
                                  heldout=DEFAULT_HELDOUT if cfg.heldout else (), start=first)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            ds.save_to_disk(str(tmp))
            tmp.rename(path)  # atomic: a killed generation never leaves a half dataset behind
        return datasets.load_from_disk(str(path))


def load_split(cfg, split: str, accelerator=None) -> datasets.Dataset | None:
    """``split`` is "train", "val" or "heldout" (procedural only). None when absent.

    Real data is read through :func:`armani.data.prepare.prepare_split`: letterboxed photos,
    masks mapped or predicted, unusable rows skipped; prepared once and cached."""
    if cfg.source == "procedural":
        return procedural_split(cfg, split, accelerator)
    if split not in ("train", "val"):
        return None
    from armani.data.prepare import prepare_split

    return prepare_split(cfg, split, accelerator)


def run_tokenizer(cfg, run_dir: Path, train: datasets.Dataset | None = None, accelerator=None) -> GarmentTokenizer:
    """The run's tokenizer: loaded from ``RUN/tokenizer``, or built from ``train`` and saved."""
    path = Path(run_dir) / "tokenizer"
    ctx = accelerator.main_process_first() if accelerator is not None else nullcontext()
    with ctx:
        if (path / "tokenizer.json").is_file():
            tok = GarmentTokenizer.from_pretrained(path)
            if tok.context_length != cfg.context_length:
                raise ValueError(
                    f"{path} was built with context_length={tok.context_length} but the config says "
                    f"{cfg.context_length}; use a new --output directory or the same config"
                )
            return tok
        if getattr(cfg, "tokenizer", None):
            tok = _saved_tokenizer(cfg.tokenizer)
            if tok.context_length != cfg.context_length:
                raise ValueError(f"data.tokenizer={cfg.tokenizer} has context_length={tok.context_length} but the "
                                 f"config says {cfg.context_length}; set data.context_length={tok.context_length}")
        elif cfg.vocab == "full":
            tok = GarmentTokenizer(cfg.context_length)
        else:
            if train is None:
                train = load_split(cfg, "train", accelerator)
            tok = GarmentTokenizer.from_corpus(list(train["caption"]) + [_EXTRA_WORDS], cfg.context_length)
        tok.save_pretrained(path)
        return tok


def _saved_tokenizer(spec: str) -> GarmentTokenizer:
    """A tokenizer folder, or a run / saved pipeline holding ``tokenizer/``."""
    path = Path(spec).expanduser()
    for folder in (path, path / "tokenizer"):
        if (folder / "tokenizer.json").is_file():
            return GarmentTokenizer.from_pretrained(folder)
    raise FileNotFoundError(f"data.tokenizer={spec}: no tokenizer.json there or in its tokenizer/ folder")


def torch_dataset(cfg, hf: datasets.Dataset, tokenizer: GarmentTokenizer, seed: int):
    from armani.data.transforms import GarmentTorchDataset

    return GarmentTorchDataset(
        hf, image_size=cfg.image_size, tokenizer=tokenizer, seed=seed,
        sketch_thresholds=(cfg.sketch_low, cfg.sketch_high), keep_fraction=cfg.keep_fraction,
    )

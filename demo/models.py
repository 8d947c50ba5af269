"""What the app loads once at start: the main ARMANI pipeline, the baselines for the Compare
tab, and the search gallery (built lazily in a background thread).

Choices the issue leaves to us:

- ``--checkpoint DIR`` takes anything :func:`armani.load_pipeline` opens that is an ARMANI
  pipeline: a saved one (``pipeline.json``) or a training run (``RUN/<stage>/final``).
- Baselines are every folder under the checkpoints folder holding a ``pipeline.json``, other
  than the main checkpoint, plus each ``--compare NAME=DIR``, each opened with
  :func:`armani.load_pipeline`; one that fails to load is skipped with a note (shown in the
  Compare tab), never a crash at start.
- The search gallery is the procedural validation split (fixed seed) or ``--search-data``
  (anything ``armani.data.loader.load_garment_dataset`` reads). Rows with a ground-truth
  part mask are indexed with it; a source without masks uses the segmenter's prediction.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from armani.loading import load_pipeline
from armani.pipeline import ArmaniPipeline
from armani.pipeline_protocol import GarmentPipeline, checkpoints_dir, shipped_checkpoint
from armani.sampling.fast_path import native_precision

log = logging.getLogger("armani.demo")

CHECKPOINTS_DIR = checkpoints_dir()


@dataclass
class Method:
    """One model of the Compare tab: ARMANI itself or a baseline."""

    name: str
    pipeline: GarmentPipeline  # ARMANI or a baseline: see pipe.capabilities
    source: str
    load_seconds: float = 0.0


def load_main(checkpoint: str | Path | None) -> ArmaniPipeline:
    """The app's ARMANI pipeline: the shipped checkpoint (None), a saved pipeline or a training run."""
    pipe = load_pipeline(checkpoint)
    if not isinstance(pipe, ArmaniPipeline):
        raise ValueError(f"{checkpoint} is a {type(pipe).__name__}; the app's main checkpoint must be an ARMANI "
                         "pipeline (give the baseline with --compare NAME=DIR instead)")
    return sample_at_native_precision(pipe)


def sample_at_native_precision(pipe):
    """Sample in float32 where this CPU has no native bf16 matmuls: there the stored bf16
    sampler is emulated and slower (armani.sampling.fast_path.native_bf16). A float32 sampler
    also packs its linear layers (``pack_float32``: the sampler's 4 images 1.40 -> 1.16 s on a
    2-core AVX2 CPU). The samples differ from the stored sampler's only by rounding; the checkpoint's
    stored sampler is not changed."""
    sampler = getattr(pipe, "sampler", None)
    if getattr(sampler, "dtype", None) == "bfloat16" and native_precision() == "float32":
        sampler = sampler.with_options(dtype="float32")
        log.info("this CPU has no native bf16 matmuls: %s samples in float32, faster here",
                 type(pipe).__name__)
    if getattr(sampler, "dtype", None) == "float32" and hasattr(sampler, "pack_float32"):
        sampler = sampler.with_options(pack_float32=True)
    if sampler is not None:
        pipe.sampler = sampler
    return pipe


def load_method(name: str, folder: Path) -> Method:
    """One Compare-tab method, opened with :func:`armani.load_pipeline`."""
    start = time.perf_counter()
    pipe = sample_at_native_precision(load_pipeline(folder))
    return Method(name=name, pipeline=pipe, source=str(folder), load_seconds=time.perf_counter() - start)


def discover_baselines(checkpoints_dir: Path | None, main_dir: Path | None,
                       extra: dict[str, Path]) -> tuple[list[Method], list[str]]:
    """Load every baseline; returns (methods, notes on the ones skipped)."""
    folders: dict[str, Path] = {}
    if checkpoints_dir is not None and checkpoints_dir.is_dir():
        main = main_dir.resolve() if main_dir is not None else shipped_checkpoint().resolve()
        for sub in sorted(checkpoints_dir.iterdir()):
            if (sub / "pipeline.json").is_file() and sub.resolve() != main:
                folders[sub.name] = sub
    folders.update(extra)
    methods, skipped = [], []
    for name, folder in folders.items():
        try:
            methods.append(load_method(name, folder))
        except Exception as err:  # noqa: BLE001 - a broken baseline must not stop the app
            skipped.append(f"{name} ({folder}): skipped, {type(err).__name__}: {str(err)[:200]}")
            log.warning("baseline %s skipped: %s", name, err)
    return methods, skipped


@dataclass
class SearchGallery:
    """Text -> garment search over a gallery, with ``armani.retrieval.MaskCLIPIndex``.

    ``start()`` builds the index in a daemon thread so that the app starts at once; a
    search waits for it (up to ``timeout``).
    """

    pipeline: ArmaniPipeline
    source: str | None = None  # None: the procedural validation split
    size: int = 500
    seed: int = 0
    images: list[Image.Image] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    index: Any = None
    error: str | None = None
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ready: threading.Event = field(default_factory=threading.Event)
    _job: Any = None

    def start(self) -> None:
        """Build the index in the background, on the app's model thread (see torch_thread)."""
        from . import torch_thread

        with self._lock:
            if self._job is None:
                self._job = torch_thread.submit(self._build)

    def _rows(self):
        if self.source is None:
            from armani.data.synthetic import generate_dataset

            return generate_dataset(self.size, size=self.pipeline.image_size, seed=self.seed, split="val",
                                    workers=1, progress=False)
        from armani.data.loader import load_garment_dataset

        ds = load_garment_dataset(self.source, split=None)
        return ds.select(range(min(self.size, len(ds))))

    def _build(self) -> None:
        try:
            from armani.data.transforms import GarmentTorchDataset
            from armani.retrieval import MaskCLIPIndex

            start = time.perf_counter()
            pipe = self.pipeline
            if pipe.maskclip is None:
                raise ValueError("this checkpoint has no MaskCLIP")
            rows = GarmentTorchDataset(self._rows(), pipe.image_size, pipe.tokenizer)
            items = [rows[i] for i in range(len(rows))]
            with_masks = all(bool(item["has_mask"]) for item in items)
            self.index = MaskCLIPIndex.build(
                pipe.maskclip, [{"image": it["image"], "mask": it["mask"]} for it in items],
                part_probs_fn=None if with_masks else pipe.segmenter.probs, tokenizer=pipe.tokenizer)
            from armani.data.images import tensor_to_pil

            self.images = [tensor_to_pil(it["image"]) for it in items]
            self.captions = [it["caption"] for it in items]
            self.seconds = time.perf_counter() - start
            log.info("search index: %d garments in %.1f s", len(items), self.seconds)
        except Exception as err:  # noqa: BLE001 - reported to the user on search
            self.error = f"{type(err).__name__}: {err}"
            log.warning("search index failed: %s", self.error)
        finally:
            self._ready.set()

    def wait(self, timeout: float) -> bool:
        self.start()
        return self._ready.wait(timeout)

    def search(self, text: str, k: int) -> list[tuple[int, float]]:
        if self.error is not None:
            raise RuntimeError(f"the search gallery could not be built ({self.error})")
        return self.index.search(text, k)


@dataclass
class DemoModels:
    """Everything the handlers need, loaded once."""

    main: ArmaniPipeline
    baselines: list[Method] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    search: SearchGallery | None = None
    checkpoint_dir: Path | None = None
    time_limit: float = 60.0
    load_seconds: float = 0.0

    @property
    def methods(self) -> list[Method]:
        main = Method(self.main.settings.name.upper() if self.main.settings.name == "armani" else self.main.settings.name,
                      self.main, str(self.checkpoint_dir or shipped_checkpoint()), self.load_seconds)
        return [main, *self.baselines]

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, compare: dict[str, Path] | None = None,
             checkpoints_dir: Path | None = CHECKPOINTS_DIR, search_data: str | None = None,
             search_size: int = 500, time_limit: float = 60.0, warmup: bool = True) -> "DemoModels":
        start = time.perf_counter()
        main = load_main(checkpoint)
        load_seconds = time.perf_counter() - start
        if warmup:  # builds the sampler's bf16 weight copy now, not in the first user's request
            main(text="a garment", num_images=1, seed=0)
        main_dir = Path(checkpoint) if checkpoint is not None else shipped_checkpoint()
        baselines, skipped = discover_baselines(checkpoints_dir, main_dir, dict(compare or {}))
        search = SearchGallery(main, source=search_data, size=search_size)
        return cls(main=main, baselines=baselines, skipped=skipped, search=search, checkpoint_dir=main_dir,
                   time_limit=time_limit, load_seconds=load_seconds)

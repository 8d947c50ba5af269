"""The app's handlers: each turns the UI's values into library inputs, calls ARMANI's public
API (``ArmaniPipeline``, ``armani.alignment``, ``armani.retrieval``) and turns the results
into things Gradio shows. No model code lives here.

Choices the issue leaves open:

- **Raw inputs.** Events run with ``preprocess=False``: images arrive as Gradio's file
  records and are read by ``armani.data.images`` (any mode, bit depth or size, EXIF
  rotation, clear errors for non-images) rather than by Gradio's own conversion, which
  saturates 16-bit images and fails on non-images with a message only the log shows.
  Every handler therefore also accepts plain paths / PIL images (tests call them directly).
- **One model thread.** All model work runs on one thread (``demo/torch_thread.py`` says
  why: a second thread calling torch made every request ~1.6x slower on 2 cores).
- **Time limit.** Each request runs on that thread. The pipeline's progress callback
  raises once the limit has passed (or the client has gone), so sampling stops at its next
  preview step instead of running on; calls without a callback (part editing) are
  abandoned at the limit and finish in the background.
- **Display vs. API.** Galleries show the model's outputs enlarged with NEAREST (64 px
  garments become 256 px, codes stay visible as blocks); a second gallery, "model-size
  outputs", returns the images exactly as the pipeline made them (PNG).
- **Errors.** ``PipelineInputError`` / ``ImageInputError`` (ValueErrors with a message
  for people) become ``gr.Error`` with that message; anything else becomes a one-line
  ``gr.Error`` naming the exception type, with the traceback in the server log only.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from armani.alignment import plot_heatmaps, word_part_heatmaps
from armani.data.images import ImageInputError, fit_image, load_image_with_notes
from armani.evaluation.metrics import maskclip_scores
from armani.parts import PART_COLORS, PART_ID, PART_NAMES, PART_WORDS

from . import torch_thread
from .models import DemoModels, Method

log = logging.getLogger("armani.demo")

MAX_TEXT_CHARS = 1000  # longer texts are refused (the model reads ~30-75 tokens anyway)
DISPLAY_SIZE = 256  # garments are shown about this large (integer NEAREST factor)
GRACE_SECONDS = 5.0  # how long past the limit we wait for a worker that cannot be interrupted
MAX_SEARCH_K = 48


class RequestCancelled(Exception):
    """Raised inside the pipeline's callback to stop a request past its time limit."""


class RequestSuperseded(Exception):
    """Raised inside the pipeline's callback when a newer page run of the same tab, from the same
    browser session, has started with other inputs: those are the person's latest (see ``_generate``)."""


def same_inputs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two generations were asked for the same thing (images compared by their pixels)."""
    def same(x: Any, y: Any) -> bool:
        if isinstance(x, Image.Image):
            return isinstance(y, Image.Image) and (x.mode, x.size) == (y.mode, y.size) and x.tobytes() == y.tobytes()
        if isinstance(x, np.ndarray):
            return isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y)
        return not isinstance(y, (Image.Image, np.ndarray)) and x == y
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


# -- small conversions ------------------------------------------------------------------------
def enlarge(img: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """Upscale by the integer factor that brings the width nearest to ``size`` (NEAREST)."""
    factor = max(1, round(size / max(1, img.width)))
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def _file(value: Any) -> Any:
    """A Gradio file record (dict with "path") -> its path; anything else unchanged."""
    if isinstance(value, dict):
        return value.get("path") or value.get("url")
    return value


def read_image(value: Any, what: str, required: bool = True):
    """A raw image value -> ``LoadedImage`` (RGB + notes), or None when absent and optional."""
    value = _file(value)
    if value is None or (isinstance(value, str) and not value):
        if required:
            raise gr.Error(f"Please upload {what}.")
        return None
    try:
        return load_image_with_notes(value)
    except ImageInputError as err:
        raise gr.Error(f"{what}: {err}") from None


def read_text(text: Any, required: bool = True) -> str | None:
    if text is not None and not isinstance(text, str):
        raise gr.Error(f"The text must be a string, not {type(text).__name__}.")
    text = (text or "").strip()
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(f"The text is {len(text)} characters long; keep it under {MAX_TEXT_CHARS} "
                       "(the model reads only the first few dozen words).")
    if required and not text:
        raise gr.Error("Please describe the garment in the text box.")
    return text or None


def _int(value: Any, name: str, low: int, high: int) -> int:
    try:
        out = int(round(float(value)))
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number, got {value!r}.") from None
    if not low <= out <= high:
        raise gr.Error(f"{name} must be between {low} and {high}, got {out}.")
    return out


def _float(value: Any, name: str, low: float, high: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number, got {value!r}.") from None
    if not low <= out <= high:
        raise gr.Error(f"{name} must be between {low} and {high}, got {out}.")
    return out


def _editor(value: Any) -> tuple[Any, list[Any], Any]:
    """A raw ImageEditor / Sketchpad value -> (background, layers, composite) file paths."""
    if value is None:
        return None, [], None
    if not isinstance(value, dict):  # a plain image: treat it as the background
        return value, [], value
    layers = [_file(x) for x in value.get("layers") or [] if x is not None]
    return _file(value.get("background")), layers, _file(value.get("composite"))


def brush_mask(layers: list[Any], size: tuple[int, int]) -> np.ndarray | None:
    """Union of the painted (non-transparent) pixels of the editor's layers, at ``size`` (W, H)."""
    mask = None
    for layer in layers:
        try:
            alpha = Image.open(layer).convert("RGBA").getchannel("A")
        except Exception as err:  # noqa: BLE001 - an unreadable layer is the user's upload
            raise gr.Error(f"Could not read a brush layer ({type(err).__name__}).") from None
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        painted = np.asarray(alpha) > 0
        mask = painted if mask is None else mask | painted
    return mask if mask is not None and mask.any() else None


def box_mask(size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """A rectangle given in percent of the image, (left, top, right, bottom) -> bool (H, W)."""
    W, H = size
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise gr.Error("The box is empty: 'right' must exceed 'left' and 'bottom' must exceed 'top'.")
    mask = np.zeros((H, W), dtype=bool)
    mask[int(round(y0 / 100 * H)) : max(int(round(y1 / 100 * H)), int(round(y0 / 100 * H)) + 1),
         int(round(x0 / 100 * W)) : max(int(round(x1 / 100 * W)), int(round(x0 / 100 * W)) + 1)] = True
    return mask


def _figure_to_image(fig) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _notify(notes: list[str]) -> None:
    for note in notes:
        gr.Info(note)


def _status(seconds: float, count: int, seed: int | None, read: str | None, notes: list[str]) -> str:
    head = f"**{count} image{'s' * (count != 1)} in {seconds:.2f} s**" + (f" · seed {seed}" if seed is not None else "")
    body = head + (f"\n\nThe model read: *{read}*" if read else "")
    return body + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")


# -- running a request under a time limit ---------------------------------------------------------
def stream(call: Callable[[Callable], Any], limit: float,
           superseded: threading.Event | None = None) -> Iterator[tuple[int, int, list[Image.Image]]]:
    """Run ``call(callback)`` in a worker thread; yield its previews ``(step, total, images)``;
    return (as the generator's value) what ``call`` returned, re-raising what it raised. Once
    ``superseded`` is set, the worker stops at its next callback (``RequestSuperseded``)."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    deadline = time.monotonic() + limit

    def callback(step: int, total: int, images: list[Image.Image]) -> None:
        if superseded is not None and superseded.is_set():
            raise RequestSuperseded
        if stop.is_set() or time.monotonic() > deadline:
            raise RequestCancelled
        events.put(("preview", (step, total, images)))

    def work() -> None:
        try:
            events.put(("done", call(callback)))
        except BaseException as err:  # noqa: BLE001 - handed to the request's thread
            events.put(("error", err))

    torch_thread.submit(work)
    try:
        while True:
            try:
                kind, payload = events.get(timeout=max(0.0, deadline - time.monotonic()) + GRACE_SECONDS)
            except queue.Empty:
                raise RequestCancelled from None
            if kind == "preview":
                yield payload
            elif kind == "done":
                return payload
            else:
                raise payload
    finally:
        stop.set()  # finished, failed or the client went away: the worker stops at its next callback


def run(call: Callable[[Callable], Any], limit: float) -> Any:
    """:func:`stream` without previews."""
    gen = stream(call, limit)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


@contextmanager
def user_errors(limit: float):
    """Turn library exceptions into readable ``gr.Error`` messages."""
    try:
        yield
    except (gr.Error, RequestSuperseded):
        raise
    except RequestCancelled:
        raise gr.Error(f"Stopped at the {limit:.0f} s time limit per request; ask for fewer images, "
                       "or try again when the app is less busy.") from None
    except (ValueError, FileNotFoundError) as err:  # PipelineInputError and ImageInputError are ValueErrors
        raise gr.Error(str(err)) from None
    except Exception as err:  # noqa: BLE001 - never show a traceback to the user
        log.exception("request failed")
        raise gr.Error(f"Something went wrong ({type(err).__name__}); the details are in the server log.") from None


# -- the handlers -------------------------------------------------------------------------------------
class Handlers:
    """One method per API endpoint, bound to the models loaded at start."""

    def __init__(self, models: DemoModels):
        self.models = models
        self.pipe = models.main
        self.limit = models.time_limit
        # page run key -> (the newest run's stop flag, its inputs)
        self._latest: dict[Any, tuple[threading.Event, dict[str, Any]]] = {}
        self._latest_lock = threading.Lock()

    def _supersede(self, key: Any, inputs: dict[str, Any]) -> tuple[threading.Event | None, bool]:
        """Register a new page run under ``key`` (session, tab): returns its stop flag, and
        whether a run with the same inputs is already going (then this one has nothing to add).
        A running one with other inputs is flagged to stop."""
        if key is None:
            return None, False
        with self._latest_lock:
            older = self._latest.get(key)
            if older is not None and not older[0].is_set() and same_inputs(older[1], inputs):
                return None, True
            if older is not None:
                older[0].set()
            flag = threading.Event()
            self._latest[key] = (flag, inputs)
        return flag, False

    # Text / sketch / partial -> garment share one streaming generator.
    def _generate(self, progress, extra_outputs: Callable[[Any], tuple], notes: list[str] | None = None,
                  previews: bool = False, run_key: Any = None, **kwargs):
        """Yield previews (``previews=True``: the UI's buttons), then (display gallery, model-size
        gallery, *extra_outputs(out), status). Without previews the pipeline still reports its
        progress (and is stopped at the time limit) but decodes nothing until the end: API
        clients would download every preview they never look at (measured: +0.5 s per call).

        ``run_key`` (the page's runs: browser session and tab) relates a run to the one of the same
        key still going. With the same inputs the new run changes nothing (the older one's outputs
        are its outputs); with other inputs it stops the older one, which ends quietly. The case
        it is for: Generate pressed while a picked example's own run is still going, on the same
        inputs. The press's run used to wait for it on the one model thread and then draw the same
        garments again (7.0-9.3 s after the press, the first time at 3.1-4.0, on the partial tab), and both
        runs' notes stacked over the gallery."""
        pipe = self.pipe
        every = max(1, pipe.vqgan.num_tokens // 4)
        start = time.perf_counter()
        superseded, duplicate = self._supersede(run_key, kwargs)
        if duplicate:
            yield (gr.skip(), gr.skip(), *(gr.skip() for _ in extra_outputs(None)), gr.skip())
            return
        try:
            with user_errors(self.limit):
                gen = stream(lambda cb: pipe(callback=cb, callback_every=every, callback_images=previews, **kwargs),
                             self.limit, superseded)
                while True:
                    try:
                        step, total, shown = next(gen)
                    except StopIteration as done:
                        out = done.value
                        break
                    except RequestSuperseded:
                        return
                    progress(step / max(1, total), desc=f"sampling {step}/{total}")
                    if previews:
                        yield ([(enlarge(im), "preview") for im in shown], gr.skip(), *extra_outputs(None),
                               f"sampling... {step}/{total}")
            if superseded is not None and superseded.is_set():
                return  # finished just as a newer run started: that one shows its own
        finally:
            with self._latest_lock:  # forget a finished run's key (sessions come and go)
                if superseded is not None and self._latest.get(run_key, (None,))[0] is superseded:
                    del self._latest[run_key]
        notes = list(notes or []) + out.notes
        _notify(notes)
        status = _status(time.perf_counter() - start, len(out.images), kwargs.get("seed"), out.text, notes)
        yield ([(enlarge(im), f"#{i + 1}") for i, im in enumerate(out.images)],
               [(im, f"#{i + 1}") for i, im in enumerate(out.images)], *extra_outputs(out), status)

    def text_to_image(self, text, num_images=4, seed=0, temperature=1.0, top_k=100, guidance_scale=3.0,
                      sampler="AR", progress=gr.Progress(), previews=False, run_key=None):
        """Text -> garments (``previews=True``: progressive previews while sampling)."""
        sampler = str(sampler or "AR").lower()
        if sampler not in ("ar", "nar"):
            raise gr.Error(f"The sampler must be AR or NAR, got {sampler!r}.")
        top_k = _int(top_k, "top-k", 0, 1_000_000)
        yield from self._generate(
            progress, lambda out: (), previews=previews, run_key=run_key, text=read_text(text),
            num_images=_int(num_images, "Number of images", 1, 16),
            seed=_int(seed, "Seed", 0, 2**31 - 1), temperature=_float(temperature, "Temperature", 0.0, 10.0),
            top_k=top_k or None, guidance_scale=_float(guidance_scale, "Guidance scale", 0.0, 50.0), sampler=sampler)

    def canny_preview(self, photo, low=100, high=200):
        """A photo -> the Canny sketch the model would see (enlarged)."""
        loaded = read_image(photo, "a photo", required=False)
        if loaded is None:
            return None
        low, high = _int(low, "Low threshold", 0, 1000), _int(high, "High threshold", 0, 1000)
        with user_errors(self.limit):
            _, edges = torch_thread.call(self.pipe.prepare_sketch, loaded.image, [], mode="photo",
                                         thresholds=(low, high))
        return enlarge(edges)

    def sketch_to_image(self, text, source="draw", drawing=None, photo=None, low=100, high=200, num_images=4, seed=0,
                        progress=gr.Progress(), previews=False, run_key=None):
        """Text + a drawn sketch (or a photo's Canny edges) -> garments."""
        if source == "photo":
            loaded, mode = read_image(photo, "a photo to take the sketch from"), "photo"
        else:
            _, _, composite = _editor(drawing)
            loaded, mode = read_image(composite, "a sketch (draw on the sketch pad)"), "edges"
        yield from self._generate(
            progress, lambda out: (None if out is None else enlarge(out.sketch),), notes=loaded.notes,
            previews=previews, run_key=run_key,
            text=read_text(text, required=False), sketch=loaded.image, sketch_mode=mode,
            sketch_thresholds=(_int(low, "Low threshold", 0, 1000), _int(high, "High threshold", 0, 1000)),
            num_images=_int(num_images, "Number of images", 1, 16), seed=_int(seed, "Seed", 0, 2**31 - 1))

    def partial_to_image(self, text, editor=None, region="random 25% crop", left=0, top=0, right=50, bottom=50,
                         num_images=4, seed=0, progress=gr.Progress(), previews=False, run_key=None):
        """Text + a partial garment (the region to keep: brushed, a box, or a random 25% crop) -> garments."""
        background, layers, _ = _editor(editor)
        loaded = read_image(background, "an image of a garment (upload it in the editor)")
        if region == "brush":
            keep = brush_mask(layers, loaded.image.size)
            if keep is None:
                raise gr.Error("Paint over the region to keep with the brush, or pick another way to mark it.")
        elif region == "box":
            keep = box_mask(loaded.image.size, tuple(_float(v, "Box edge", 0, 100) for v in (left, top, right, bottom)))
        else:
            keep = None
        yield from self._generate(
            progress, lambda out: (None if out is None else enlarge(out.partial),), notes=loaded.notes,
            previews=previews, run_key=run_key,
            text=read_text(text, required=False), partial=loaded.image, partial_keep_mask=keep,
            num_images=_int(num_images, "Number of images", 1, 16), seed=_int(seed, "Seed", 0, 2**31 - 1))

    def heatmaps(self, image, text):
        """Image + text -> one heatmap per word, the part mask and a word -> part -> score table."""
        pipe = self.pipe
        if pipe.maskclip is None or pipe.segmenter is None:
            raise gr.Error("This checkpoint has no MaskCLIP / segmenter, so it cannot draw heatmaps.")
        loaded = read_image(image, "a garment image")
        text = read_text(text)
        with user_errors(self.limit):
            result = run(lambda cb: word_part_heatmaps(pipe.maskclip, pipe.tokenizer, loaded.image, text,
                                                       segmenter=pipe.segmenter), self.limit)
            figure = _figure_to_image(plot_heatmaps(result, fit_image(loaded.image, pipe.maskclip.config.image_size)))
        if not result.words:
            raise gr.Error("The text has no words the model can read.")
        _notify(loaded.notes)
        shown = fit_image(loaded.image, DISPLAY_SIZE)
        overlays = [(_overlay(shown, result, w), f"{word} → {result.pointed_part[w]} ({float(result.best_score[w]):.2f})")
                    for w, word in enumerate(result.words)]
        mask = np.asarray(Image.fromarray(result.part_mask.numpy().astype(np.uint8)).resize(shown.size, Image.NEAREST))
        parts = [(mask == k).astype(np.float32) for k in range(1, len(PART_NAMES))]
        annotations = [(m, PART_NAMES[k + 1]) for k, m in enumerate(parts) if m.any()]
        table = []
        for w, word in enumerate(result.words):
            expected = PART_WORDS.get(word.lower(), "")
            hit = "" if not expected else ("✓" if result.pointed_part[w] == expected else "✗")
            table.append([word, result.pointed_part[w], round(float(result.best_score[w]), 3), expected, hit])
        return overlays, (shown, annotations), table, figure

    def compare(self, text, sketch=None, partial=None, seed=0, methods=None):
        """One prompt (+ optional sketch / partial) through ARMANI and the chosen baselines
        (``methods``: their names; None = all), side by side."""
        text = read_text(text)
        seed = _int(seed, "Seed", 0, 2**31 - 1)
        chosen = self._chosen_methods(methods)
        sketch_img = read_image(sketch, "the sketch", required=False)
        partial_img = read_image(partial, "the partial image", required=False)
        gallery, table = [], []
        deadline = time.monotonic() + self.limit
        for method in chosen:
            image, row = self._compare_one(method, text, sketch_img, partial_img, seed, deadline)
            gallery.append((enlarge(image), f"{row[0]} · {row[1]:.2f} s · MaskCLIP {row[2]:.3f}"))
            table.append(row)
        status = f"{len(table)} method(s)" + "".join(f"\n- {s}" for s in self.models.skipped)
        return gallery, table, status

    def _chosen_methods(self, methods) -> list[Method]:
        known = [m.name for m in self.models.methods]
        if methods is None:
            return list(self.models.methods)
        if isinstance(methods, str):
            methods = [methods]
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise gr.Error(f"unknown method(s) {', '.join(map(str, unknown))}; this app has {', '.join(known)}")
        if not methods:
            raise gr.Error("Tick at least one method to compare.")
        return [m for m in self.models.methods if m.name in methods]

    def _compare_one(self, method: Method, text, sketch, partial, seed, deadline) -> tuple[Image.Image, list]:
        can = method.pipeline.capabilities
        kwargs: dict[str, Any] = {"text": text, "num_images": 1, "seed": seed}
        notes = []
        for name, value in (("sketch", sketch), ("partial", partial)):
            if value is not None:
                if can.reads(name):
                    kwargs[name] = value.image
                else:
                    notes.append(f"takes no {name}: text only")
        start = time.perf_counter()
        try:
            with user_errors(self.limit):
                # progress and a chance to stop, without the cost of decoding previews
                quiet = {"callback_images": False} if can.previews else {}
                out = run(lambda cb: method.pipeline(**kwargs, **({"callback": cb} if can.previews else {}), **quiet),
                          max(0.0, deadline - time.monotonic()))
        except gr.Error as err:
            blank = Image.new("RGB", (self.pipe.image_size,) * 2, (200, 200, 200))
            return blank, [method.name, time.perf_counter() - start, float("nan"), "failed", str(err)]
        seconds = time.perf_counter() - start
        image = out.images[0]
        score = torch_thread.call(self.maskclip_score, image, text)
        verdict = torch_thread.call(part_verdict, image, text)
        return image, [method.name, round(seconds, 3), round(score, 4), verdict,
                       "; ".join(notes + list(out.notes))]

    @torch.inference_mode()
    def maskclip_score(self, image: Image.Image, text: str) -> float:
        """MaskCLIP's D (Eq. 10) of an image with a text, judged by the main checkpoint's
        MaskCLIP and segmenter for every method alike (images are resized to its size)."""
        pipe = self.pipe
        if pipe.maskclip is None or pipe.segmenter is None:
            return float("nan")
        return float(maskclip_scores(pipe.image_tensor(image), [text], pipe.tokenizer, pipe.segmenter, pipe.maskclip)[0])

    def parts_in(self, image):
        """The parts the segmenter finds in an image -> the part dropdown's choices."""
        loaded = read_image(image, "a garment image", required=False)
        if loaded is None:
            return gr.Dropdown(choices=[], value=None)
        with user_errors(self.limit):
            mask = torch_thread.call(self.pipe.segment, loaded.image)
        found = [PART_NAMES[k] for k in np.unique(mask) if k >= PART_ID["sleeve"]]
        if not found:
            gr.Warning("The segmenter finds no garment parts (only body or background) in this image.")
        return gr.Dropdown(choices=found, value=found[0] if found else None)

    def edit_part(self, image, part, text, seed=0):
        """Regenerate one part of a garment from new text; returns before, after, the edited region."""
        loaded = read_image(image, "a garment image")
        text = read_text(text)
        if not part:
            raise gr.Error("Pick the part to change.")
        seed = _int(seed, "Seed", 0, 2**31 - 1)
        start = time.perf_counter()
        with user_errors(self.limit):
            out = run(lambda cb: self.pipe.edit_part(loaded.image, str(part), text, seed=seed), self.limit)
        notes = loaded.notes + out.notes
        _notify(notes)
        status = (f"**{part} regenerated in {time.perf_counter() - start:.2f} s** · {out.changed_tokens} of "
                  f"{int(out.token_region.sum())} tokens in the region changed" + "".join(f"\n- {n}" for n in notes))
        return enlarge(out.original), enlarge(out.image), enlarge(out.region), status

    def search(self, text, k=8):
        """Text -> the k most similar garments of the search gallery, with MaskCLIP scores."""
        text = read_text(text)
        k = _int(k, "Number of results", 1, MAX_SEARCH_K)
        gallery = self.models.search
        if gallery is None:
            raise gr.Error("Search is off in this app.")
        if not gallery.wait(timeout=self.limit):
            raise gr.Error("The search gallery is still being built; try again in a few seconds.")
        with user_errors(self.limit):
            hits = torch_thread.call(gallery.search, text, k)
        shown = [(enlarge(gallery.images[i]), f"{score:.3f} · {gallery.captions[i]}") for i, score in hits]
        table = [[rank + 1, i, round(score, 4), gallery.captions[i]] for rank, (i, score) in enumerate(hits)]
        return shown, table

    @staticmethod
    def first_image(gallery):
        """The first image of a gallery value (to send a generated garment to another tab)."""
        if not gallery:
            raise gr.Error("Generate a garment in the 'Text → garment' tab first.")
        item = gallery[0]
        if isinstance(item, dict):
            item = item.get("image")
        elif isinstance(item, (tuple, list)):
            item = item[0]
        return _file(item)


def _overlay(shown: Image.Image, result, w: int) -> Image.Image:
    """Word ``w``'s heatmap over the displayed garment, with its best patch outlined.

    Hand-written rather than ``plot_heatmaps`` (which draws one figure for all words) so the
    gallery holds one picture per word; the colour scale is shared across words as there."""
    import matplotlib

    heat = result.heatmaps.numpy()  # (W, g, g)
    valid = result.patch_valid.numpy()  # (g, g)
    finite = heat[:, valid]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    norm = np.clip((heat[w] - lo) / max(hi - lo, 1e-6), 0, 1)
    rgba = matplotlib.colormaps["inferno"](norm)  # (g, g, 4)
    rgba[..., 3] = np.where(valid, 0.6, 0.0)
    layer = Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").resize(shown.size, Image.Resampling.NEAREST)
    out = Image.alpha_composite(shown.convert("RGBA"), layer).convert("RGB")
    if valid.any():
        g = valid.shape[0]
        r, c = divmod(int(result.best_patch[w]), g)
        cell = shown.width / g
        ImageDraw.Draw(out).rectangle([c * cell, r * cell, (c + 1) * cell - 1, (r + 1) * cell - 1], outline=(0, 255, 255),
                                      width=2)
    return out


_VERDICT: Callable | None | bool = None


def part_verdict(image: Image.Image, text: str) -> str:
    """The attribute classifier's verdict on whether ``image`` has the parts ``text`` asks for,
    from ``armani.evaluation.part_verdict(image, text) -> str`` when that module provides it
    (imported lazily, once); "n/a" otherwise."""
    global _VERDICT
    if _VERDICT is None:
        try:
            from armani.evaluation import part_verdict as fn  # type: ignore[attr-defined]

            _VERDICT = fn
        except Exception:  # noqa: BLE001 - the classifier is optional
            _VERDICT = False
    if not _VERDICT:
        return "n/a"
    try:
        return str(_VERDICT(image, text))
    except Exception as err:  # noqa: BLE001 - a verdict must not break the comparison
        return f"n/a ({type(err).__name__})"


def colour_map() -> dict[str, str]:
    """Part name -> hex colour for the annotated part mask (the project's palette)."""
    return {name: _hex(PART_COLORS[k]) for k, name in enumerate(PART_NAMES)}

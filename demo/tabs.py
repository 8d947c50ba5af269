"""The app's tabs: one builder per tab, each called inside ``gr.Tabs()`` by ``demo.app.build_app``.

The three generation tabs (text, text + sketch, text + partial) share their layout: inputs on
the left ending in images-and-seed and a Generate button, outputs on the right (garments, the
condition the model saw, notes, the model-size images). ``count_and_seed``, ``output_column``
and ``generation_events`` build those shared parts; each tab adds only its own inputs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo.examples import EDIT_PROMPTS, EXAMPLE_PROMPTS
from demo.handlers import MAX_SEARCH_K, MAX_TEXT_CHARS, Handlers, colour_map
from demo.models import DemoModels


@dataclass(frozen=True)
class Page:
    """What the tab builders share."""

    models: DemoModels
    handlers: Handlers
    garments: list[list[str]]  # example garments: [image path, caption] rows
    opts: dict[str, Any]  # options of every model event (raw inputs, one shared concurrency queue)


@dataclass(frozen=True)
class GenerationOutputs:
    """The right-hand column of a generation tab."""

    gallery: gr.Gallery
    raw: gr.Gallery  # the images as the model made them
    seen: gr.Image | None  # the sketch or partial image the model was given (not on the text tab)
    status: gr.Markdown

    def components(self) -> list[gr.components.Component]:
        """In the order the generation handlers return them."""
        return [self.gallery, *self.api_components()]

    def api_components(self) -> list[gr.components.Component]:
        """What ``/<name>`` answers API clients: the page's outputs less the enlarged gallery."""
        return [self.raw, *([self.seen] if self.seen is not None else []), self.status]


def streamed(handler):
    """The UI's generate buttons: the same handler with progressive previews.

    ``/text_to_image``, ``/sketch_to_image`` and ``/partial_to_image`` answer API clients
    with the final images only (a client downloads every streamed preview, which made each
    call ~0.5 s slower on 2 cores); ``/<name>_stream`` is what the page uses, previews
    included, for clients that want them too.
    """
    @functools.wraps(handler)
    def with_previews(*args, **kwargs):
        *args, request = args  # appended by Gradio (the signature below ends with it)
        # Keyed by browser session and tab: a run on the same inputs as one still going adds nothing,
        # a run on other inputs stops it (Handlers._generate).
        session = getattr(request, "session_hash", None)
        yield from handler(*args, **kwargs, previews=True, run_key=(session, handler.__name__) if session else None)

    # Gradio reads the signature (to pass ``progress``, the request, and defaults for missing
    # inputs): show it the handler's, less ``previews`` and ``run_key``, which are set here,
    # with a last parameter typed ``gr.Request``, which Gradio fills with the event's request.
    sig = inspect.signature(handler)
    params = [p for p in sig.parameters.values() if p.name not in ("previews", "run_key")]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request))
    with_previews.__signature__ = sig.replace(parameters=params)
    with_previews.__annotations__ = {"request": gr.Request}
    return with_previews


def for_api(handler):
    """The handler without the page's enlarged gallery: API clients get the images as the model
    made them, the condition the model saw and the notes. Each image an API client is sent is a
    file it downloads (gradio_client fetches them one by one over new connections), so sending
    the enlarged copies too made every call ~0.3 s slower on 2 cores (research/README, "App
    latency"); a client that wants them larger enlarges them itself."""
    @functools.wraps(handler)
    def without_display(*args, **kwargs):
        for _display, *rest in handler(*args, **kwargs):
            yield tuple(rest)

    return without_display


def api_only(handler, inputs, outputs, name: str, opts: dict) -> None:
    """An API endpoint with no button on the page (an invisible one carries the event)."""
    button = gr.Button(visible=False, elem_classes="api-only")
    button.click(handler, inputs, outputs, api_name=name, **opts)


# -- the parts the generation tabs share ---------------------------------------------------------
def count_and_seed(seed_info: str | None = None) -> tuple[gr.Slider, gr.Number]:
    """The "Number of images" slider and the seed, side by side."""
    with gr.Row():
        num = gr.Slider(1, 16, value=4, step=1, label="Number of images")
        seed = gr.Number(0, precision=0, minimum=0, label="Seed", info=seed_info)
    return num, seed


def output_column(seen_label: str | None = None, elem_prefix: str | None = None,
                  object_fit: str | None = None) -> GenerationOutputs:
    """The outputs of a generation tab; ``seen_label`` adds the condition the model saw,
    ``elem_prefix`` names the gallery and notes for the browser test (``<prefix>-gallery``)."""
    def elem_id(name: str) -> str | None:
        return f"{elem_prefix}-{name}" if elem_prefix else None

    with gr.Column(scale=3):
        gallery = gr.Gallery(label="Garments", columns=4, object_fit=object_fit, height="auto", format="png",
                             elem_id=elem_id("gallery"), elem_classes="garments")
        seen = None if seen_label is None else gr.Image(label=seen_label, interactive=False, height=200,
                                                        format="png", elem_classes="shown")
        status = gr.Markdown(elem_id=elem_id("status"))
        with gr.Accordion("Model-size outputs", open=False):
            raw = gr.Gallery(label="As generated", columns=8, format="png", height="auto")
    return GenerationOutputs(gallery, raw, seen, status)


def generation_events(triggers: Sequence[Any], handler: Callable, inputs: list, outputs: GenerationOutputs,
                      name: str, opts: dict[str, Any], examples: gr.Examples | None = None) -> None:
    """``/<name>_stream`` (previews, what the page runs) on ``triggers``, and ``/<name>`` for API
    clients (final model-size images only, :func:`for_api`); a loaded example of ``examples``
    also generates (see ``run_once_loaded``)."""
    # A lone trigger (``go.click``) wires the event itself: gr.on would run the same event but
    # record it in the page config slightly differently (``event_specific_args`` [] for null).
    listen = triggers[0] if len(triggers) == 1 else functools.partial(gr.on, list(triggers))
    with_previews = streamed(handler)
    event = listen(with_previews, inputs, outputs.components(), api_name=f"{name}_stream", **opts)
    api_only(for_api(handler), inputs, outputs.api_components(), name, opts)
    if examples is not None:
        run_once_loaded(examples, event, with_previews, inputs, outputs.components(), opts)


def run_once_loaded(examples: gr.Examples, action: Any, fn: Callable, inputs: list, outputs: list,
                    opts: dict[str, Any]) -> None:
    """A clicked example runs its tab's action as soon as its values have arrived.

    Gradio loads an example with a server round trip, and a button reads its inputs when it is
    pressed: a Generate pressed before the example arrived ran on the old inputs (the previous
    text with the new garment, say). Chained after the load, the action sees the example's
    values; it cancels a run of ``action`` started meanwhile, whose outputs would otherwise land
    last and describe the old inputs.
    """
    examples.load_input_event.then(fn, inputs, outputs, api_name=False, cancels=[action], **opts)


def sampling_options(page: Page) -> list[gr.components.Component]:
    """The accordion of sampler settings, defaulting to the checkpoint's own."""
    defaults = page.models.main.sampler  # the checkpoint's stored sampler and its settings
    codebook = page.models.main.vqgan.codebook_size
    causal = page.models.main.transformer.config.causal
    with gr.Accordion("Sampling options", open=False):
        temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
        top_k = gr.Slider(0, codebook, value=min(defaults.top_k or 0, codebook), step=1, label="Top-k (0 = off)")
        guidance = gr.Slider(0.0, 10.0, value=defaults.guidance_scale, step=0.25, label="Guidance scale (1 = off)")
        sampler = gr.Radio(["AR", "NAR"], value="AR" if causal else "NAR", label="Sampler",
                           info="This checkpoint is " + ("autoregressive: NAR needs a bidirectional (M6-style) "
                                                         "checkpoint." if causal else
                                                         "bidirectional: use NAR (mask-predict)."))
    return [temperature, top_k, guidance, sampler]


# -- the tabs, in page order -----------------------------------------------------------------------
def text_tab(page: Page) -> gr.Gallery:
    """Text → garment; returns its model-size gallery (the Part editing tab takes its first image)."""
    with gr.Tab("Text → garment", id="text"):
        with gr.Row():
            with gr.Column(scale=2):
                text = gr.Textbox(label="Describe the garment", value=EXAMPLE_PROMPTS[0], lines=3, max_lines=8,
                                  max_length=MAX_TEXT_CHARS, elem_id="t2i-prompt")
                num, seed = count_and_seed()
                sampling = sampling_options(page)
                go = gr.Button("Generate", variant="primary", elem_id="t2i-generate")
                examples = gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[text], label="Example prompts")
            outputs = output_column(elem_prefix="t2i", object_fit="contain")
        generation_events([go.click, text.submit], page.handlers.text_to_image, [text, num, seed, *sampling],
                          outputs, "text_to_image", page.opts, examples)
    return outputs.raw


def sketch_tab(page: Page) -> None:
    """Text + sketch → garment: the sketch is drawn, or traced from a photo with Canny edges."""
    h, settings = page.handlers, page.models.main.settings
    with gr.Tab("Text + sketch → garment", id="sketch"):
        with gr.Row():
            with gr.Column(scale=2):
                text = gr.Textbox(label="Describe the garment (optional)", value=EXAMPLE_PROMPTS[1], lines=2,
                                  max_length=MAX_TEXT_CHARS)
                source = gr.Radio(["draw", "photo"], value="draw", label="Sketch from")
                with gr.Tabs():
                    with gr.Tab("Draw") as draw_tab:
                        pad = gr.Sketchpad(label="Draw the garment's outline", canvas_size=(320, 320),
                                           brush=gr.Brush(colors=["#000000"], default_size=3, color_mode="fixed"))
                    with gr.Tab("Photo → Canny sketch") as photo_tab:
                        with gr.Row():
                            photo = gr.Image(label="Any photo", type="filepath", image_mode=None,
                                             sources=["upload", "clipboard"])
                            preview = gr.Image(label="Canny sketch the model sees", interactive=False, format="png",
                                               elem_classes="shown")
                        with gr.Row():
                            low = gr.Slider(0, 500, value=settings.sketch_low, step=5, label="Low threshold")
                            high = gr.Slider(0, 500, value=settings.sketch_high, step=5, label="High threshold")
                        # an example brings its own caption, so text and sketch describe one garment
                        examples = gr.Examples([list(g) for g in page.garments[:4]], inputs=[photo, text],
                                               label="Example photos (with their captions)", visible_columns=[0])
                num, seed = count_and_seed()
                go = gr.Button("Generate", variant="primary")
            outputs = output_column(seen_label="The sketch the model saw")
        # The sketch comes from whichever input the user touched last.
        draw_tab.select(lambda: "draw", None, source, api_name=False)
        photo_tab.select(lambda: "photo", None, source, api_name=False)
        photo.upload(lambda: "photo", None, source, api_name=False)
        gr.on([photo.change, low.release, high.release], h.canny_preview, [photo, low, high], preview,
              api_name="canny_preview", trigger_mode="always_last", **page.opts)
        generation_events([go.click], h.sketch_to_image, [text, source, pad, photo, low, high, num, seed], outputs,
                          "sketch_to_image", page.opts, examples)


def partial_tab(page: Page) -> None:
    """Text + partial → garment: keep a random crop, a brushed region or a box of an uploaded garment."""
    with gr.Tab("Text + partial → garment", id="partial", elem_id="partial-tab"):
        with gr.Row():
            with gr.Column(scale=2):
                # Empty by default: a fixed prompt would describe another garment than the one uploaded.
                text = gr.Textbox(label="Describe the garment (optional)", value="", lines=2,
                                  placeholder="e.g. " + EXAMPLE_PROMPTS[2], max_length=MAX_TEXT_CHARS)
                # A short label: the editor's toolbar covers the end of a longer one.
                editor = gr.ImageEditor(label="Garment (brush what to keep)",
                                        sources=["upload", "clipboard"], transforms=(),
                                        brush=gr.Brush(colors=["#22c55e"], default_size=12, color_mode="fixed"),
                                        canvas_size=(320, 320), layers=False)
                region = gr.Radio(["random 25% crop", "brush", "box"], value="random 25% crop",
                                  label="Region to keep")
                with gr.Accordion("Box (percent of the image)", open=False):
                    with gr.Row():
                        left = gr.Slider(0, 100, value=0, step=1, label="Left")
                        top = gr.Slider(0, 100, value=0, step=1, label="Top")
                    with gr.Row():
                        right = gr.Slider(0, 100, value=50, step=1, label="Right")
                        bottom = gr.Slider(0, 100, value=50, step=1, label="Bottom")
                num, seed = count_and_seed(seed_info="Also picks the random crop.")
                go = gr.Button("Generate", variant="primary")
                # only the picture is shown (a caption column would be cut off at this width)
                examples = gr.Examples([list(g) for g in page.garments[:4]], inputs=[editor, text],
                                       label="Example garments (with their captions)", visible_columns=[0])
            outputs = output_column(seen_label="The partial image the model saw (grey = not given)",
                                    elem_prefix="partial")
        box = (left, top, right, bottom)
        gr.on([s.release for s in box], lambda: "box", None, region, api_name=False)  # moving the box selects it
        generation_events([go.click], page.handlers.partial_to_image, [text, editor, region, *box, num, seed],
                          outputs, "partial_to_image", page.opts, examples)


def heatmaps_tab(page: Page) -> None:
    """MaskCLIP heatmaps: which garment part each word of a text points at."""
    with gr.Tab("MaskCLIP heatmaps", id="heatmaps", elem_id="heatmaps-tab"):
        gr.Markdown("Which garment part does each word point at? One heatmap per word (MaskCLIP's "
                    "similarity of the word with every part token; the best patch is outlined).")
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(label="Garment", type="filepath", image_mode=None, elem_id="heatmaps-image",
                                 sources=["upload", "clipboard"], height=280, elem_classes="shown")
                text = gr.Textbox(label="Text", lines=2, max_length=MAX_TEXT_CHARS,
                                  value="a shirt with a collar, long sleeves and a pocket")
                go = gr.Button("Show heatmaps", variant="primary")
                examples = gr.Examples(page.garments, inputs=[image, text], label="Garments from the procedural dataset")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Heatmap per word", columns=4, height="auto", format="png",
                                     elem_id="heatmaps-gallery")
                with gr.Row():
                    parts = gr.AnnotatedImage(label="Predicted part mask", color_map=colour_map(), height=280)
                    table = gr.Dataframe(headers=["word", "points at", "score", "part word", "hit"],
                                         label="Word → part → score", interactive=False, scale=2)
                with gr.Accordion("As one figure (the paper's Fig. 6)", open=False):
                    figure = gr.Image(label="Heatmaps", interactive=False, format="png")
        shown = [gallery, parts, table, figure]
        action = go.click(page.handlers.heatmaps, [image, text], shown, api_name="heatmaps", **page.opts)
        run_once_loaded(examples, action, page.handlers.heatmaps, [image, text], shown, page.opts)


def compare_tab(page: Page) -> None:
    """Compare: one prompt and seed through ARMANI and every baseline, scored alike."""
    methods = [m.name for m in page.models.methods]
    with gr.Tab("Compare", id="compare"):
        gr.Markdown(f"One prompt and seed through every method: **{', '.join(methods)}**. Scores: MaskCLIP "
                    "similarity of each image with the prompt (judged by ARMANI's MaskCLIP for all), and the "
                    "attribute classifier's part verdict where available."
                    + "".join(f"\n- {s}" for s in page.models.skipped))
        with gr.Row():
            with gr.Column(scale=2):
                text = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPTS[0], lines=2, max_length=MAX_TEXT_CHARS)
                with gr.Row():
                    sketch = gr.Image(label="Sketch (optional)", type="filepath", image_mode=None,
                                      sources=["upload", "clipboard"], height=180)
                    partial = gr.Image(label="Partial image (optional, random 25% kept)", type="filepath",
                                       image_mode=None, sources=["upload", "clipboard"], height=180)
                seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                chosen = gr.CheckboxGroup(methods, value=methods, label="Methods",
                                          info="each one adds its sampling time")
                go = gr.Button("Compare", variant="primary")
                examples = gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[text], label="Example prompts")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="One garment per method", columns=max(1, min(4, len(methods))),
                                     height="auto", format="png", elem_classes="garments")
                table = gr.Dataframe(headers=["method", "seconds", "MaskCLIP", "part verdict", "notes"],
                                     label="Scores", interactive=False)
                status = gr.Markdown()
        compared = [text, sketch, partial, seed, chosen]
        action = go.click(page.handlers.compare, compared, [gallery, table, status], api_name="compare", **page.opts)
        run_once_loaded(examples, action, page.handlers.compare, compared, [gallery, table, status], page.opts)


def edit_tab(page: Page, first_garments: gr.Gallery) -> None:
    """Part editing: resample only the codes of one part; ``first_garments`` feeds the "use" button."""
    h = page.handlers
    with gr.Tab("Part editing", id="edit"):
        gr.Markdown("Pick a part the segmenter finds, describe it anew: only the codes covering that "
                    "part are resampled, the rest of the garment is kept.")
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(label="Garment", type="filepath", image_mode=None,
                                 sources=["upload", "clipboard"], height=280, elem_classes="shown")
                take = gr.Button("Use the first garment from 'Text → garment'", size="sm")
                part = gr.Dropdown([], label="Part to change", allow_custom_value=True,
                                   info="Filled with the parts found in the image.")
                text = gr.Textbox(label="New description", value=EDIT_PROMPTS[0], lines=2, max_length=MAX_TEXT_CHARS)
                seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                go = gr.Button("Edit part", variant="primary")
                gr.Examples([[g[0]] for g in page.garments], inputs=[image], label="Garments")
            with gr.Column(scale=3):
                with gr.Row():
                    before = gr.Image(label="Before (as the model encodes it)", interactive=False, format="png",
                                      elem_classes="shown")
                    after = gr.Image(label="After", interactive=False, format="png", elem_classes="shown")
                    region = gr.Image(label="Edited region", interactive=False, format="png", elem_classes="shown")
                status = gr.Markdown()
        take.click(h.first_image, [first_garments], image, api_name=False, preprocess=False)
        image.change(h.parts_in, [image], part, api_name="parts_in", **page.opts)
        go.click(h.edit_part, [image, part, text, seed], [before, after, region, status], api_name="edit_part",
                 **page.opts)


def search_tab(page: Page) -> None:
    """Search: text → garment retrieval over the search gallery."""
    search = page.models.search
    source = search.source if search and search.source else (
        f"{search.size if search else 0} procedural garments (validation split, seed 0)")
    with gr.Tab("Search", id="search"):
        gr.Markdown(f"Text → garment retrieval with MaskCLIP's token-wise similarity over {source}.")
        with gr.Row():
            text = gr.Textbox(label="Query", value="red dress with a belt", scale=4, max_length=MAX_TEXT_CHARS)
            k = gr.Slider(1, MAX_SEARCH_K, value=8, step=1, label="Results", scale=1)
            go = gr.Button("Search", variant="primary", scale=1)
        gallery = gr.Gallery(label="Best matches (score · caption)", columns=8, height="auto", format="png",
                             elem_classes="garments")
        table = gr.Dataframe(headers=["rank", "row", "score", "caption"], label="Scores", interactive=False)
        go.click(page.handlers.search, [text, k], [gallery, table], api_name="search", **page.opts)
        text.submit(page.handlers.search, [text, k], [gallery, table], api_name=False, **page.opts)


def about_tab(markdown: str) -> None:
    """About: the model card, the compared methods, the reproduced tables and how to train."""
    with gr.Tab("About", id="about"):
        gr.Markdown(markdown)

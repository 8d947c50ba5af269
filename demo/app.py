"""ARMANI's Gradio app: a thin UI over ``ArmaniPipeline``, the word-part heatmaps and MaskCLIP search.

    python demo/app.py                                  # the shipped checkpoint, http://127.0.0.1:7860
    python demo/app.py --checkpoint runs/tiny           # a saved pipeline or a training run directory
    python demo/app.py --compare dalle=checkpoints/dalle --port 7861

Tabs, in order: Text → garment, Text + sketch → garment, Text + partial → garment, MaskCLIP
heatmaps, Compare, Part editing, Search, About. Every function is a named API endpoint
(``/text_to_image``, ``/sketch_to_image``, ``/canny_preview``, ``/partial_to_image``,
``/heatmaps``, ``/compare``, ``/parts_in``, ``/edit_part``, ``/search``), callable with
``gradio_client.Client(url).predict(..., api_name="/text_to_image")``.

The handlers live in demo/handlers.py, model loading in demo/models.py; this file only lays
out the page and parses the command line.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python demo/app.py`: make the `demo` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr

from demo.examples import EDIT_PROMPTS, EXAMPLE_PROMPTS, example_garments
from demo.handlers import MAX_SEARCH_K, MAX_TEXT_CHARS, Handlers, colour_map
from demo.models import CHECKPOINTS_DIR, DemoModels

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("armani.demo")

CSS = """
.garments img, .shown img { image-rendering: pixelated; }
#title { text-align: center; margin-bottom: 0; }
#intro { text-align: center; }
"""


def _header(models: DemoModels) -> str:
    pipe = models.main
    t = pipe.transformer.config
    grid = pipe.vqgan.grid_size
    sampler = "autoregressive (AR)" if t.causal else "bidirectional mask-predict (NAR)"
    return (
        "*An open-source reproduction of ARMANI: Part-level Garment-Text Alignment for Unified Cross-Modal "
        "Fashion Design (Zhang et al., ACM MM 2022).* Design garments from a description, a sketch or part of "
        "an image; see which garment part each word points at; compare ARMANI with its baselines.\n\n"
        f"Checkpoint `{models.checkpoint_dir}` · {pipe.image_size} px garments from {grid}×{grid} codes · "
        f"{sampler} sampler · {len(models.baselines)} baseline(s) · runs on the CPU."
    )


def _research_tables() -> str:
    """Headings and tables of research/README.md (the reproduced paper tables), if present."""
    path = ROOT / "research" / "README.md"
    if not path.is_file():
        return "*No results yet: `research/README.md` appears once the paper's tables are reproduced.*"
    kept, heading = [], None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            heading = line
        elif line.lstrip().startswith("|"):
            if heading is not None:
                kept += ["", heading, ""]
                heading = None
            kept.append(line)
    return "\n".join(kept) if kept else "*research/README.md holds no tables yet.*"


def _about(models: DemoModels) -> str:
    card = models.checkpoint_dir / "README.md" if models.checkpoint_dir else None
    card_text = card.read_text() if card is not None and card.is_file() else (
        f"*No model card (README.md) in `{models.checkpoint_dir}`.*")
    baselines = "\n".join(f"- **{m.name}**: `{m.source}`" for m in models.baselines) or "- (no baselines found)"
    skipped = "".join(f"\n- {s}" for s in models.skipped)
    return f"""## Model card

{card_text}

## Methods in the Compare tab

- **ARMANI**: `{models.checkpoint_dir}`
{baselines}{skipped}

## Results

{_research_tables()}

## Train your own

```bash
bash run.sh test                                   # set up .venv and check everything works
.venv/bin/python -m armani.data.synthetic --num 20000 --size 64 --out data/train
.venv/bin/accelerate launch src/armani/train.py --config default --stage all --output runs/mine
.venv/bin/python -m armani.pipeline --run runs/mine --out checkpoints/mine --prompt "navy shirt with five buttons"
.venv/bin/python demo/app.py --checkpoint checkpoints/mine
```

`--config tiny` trains every stage in seconds (for a first try); real data works through
`data.source=<folder or hub id>` (see the project README).
"""


def streamed(handler):
    """The UI's generate buttons: the same handler with progressive previews.

    ``/text_to_image``, ``/sketch_to_image`` and ``/partial_to_image`` answer API clients
    with the final images only (a client downloads every streamed preview, which made each
    call ~0.5 s slower on 2 cores); ``/<name>_stream`` is what the page uses, previews
    included, for clients that want them too.
    """
    @functools.wraps(handler)
    def with_previews(*args, **kwargs):
        yield from handler(*args, **kwargs, previews=True)

    # Gradio reads the signature (to pass ``progress``, and defaults for missing inputs):
    # show it the handler's, less ``previews``, which is fixed here.
    sig = inspect.signature(handler)
    with_previews.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "previews"])
    return with_previews


def api_only(handler, inputs, outputs, name: str, opts: dict) -> None:
    """An API endpoint with no button on the page (an invisible one carries the event)."""
    button = gr.Button(visible=False, elem_classes="api-only")
    button.click(handler, inputs, outputs, api_name=name, **opts)


def build_app(models: DemoModels) -> gr.Blocks:
    """The page. Every event runs with ``preprocess=False`` (see demo/handlers.py)."""
    h = Handlers(models)
    pipe = models.main
    settings = pipe.settings
    causal = pipe.transformer.config.causal
    codebook = pipe.vqgan.codebook_size
    garments = [list(g) for g in example_garments()]
    raw_opts = dict(preprocess=False, concurrency_id="model")

    with gr.Blocks(title="ARMANI: cross-modal fashion design") as app:
        gr.Markdown("# ARMANI · part-level garment-text alignment", elem_id="title")
        gr.Markdown(_header(models), elem_id="intro")
        with gr.Tabs():
            # -- Text -> garment -------------------------------------------------------------------
            with gr.Tab("Text → garment", id="text"):
                with gr.Row():
                    with gr.Column(scale=2):
                        t_text = gr.Textbox(label="Describe the garment", value=EXAMPLE_PROMPTS[0], lines=3,
                                            max_lines=8, max_length=MAX_TEXT_CHARS, elem_id="t2i-prompt")
                        with gr.Row():
                            t_num = gr.Slider(1, 16, value=4, step=1, label="Number of images")
                            t_seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                        with gr.Accordion("Sampling options", open=False):
                            t_temp = gr.Slider(0.0, 2.0, value=settings.temperature, step=0.05, label="Temperature")
                            t_topk = gr.Slider(0, codebook, value=min(settings.top_k or 0, codebook), step=1,
                                               label="Top-k (0 = off)")
                            t_guid = gr.Slider(0.0, 10.0, value=settings.guidance_scale, step=0.25,
                                               label="Guidance scale (1 = off)")
                            t_sampler = gr.Radio(["AR", "NAR"], value="AR" if causal else "NAR", label="Sampler",
                                                 info="This checkpoint is " + ("autoregressive: NAR needs a "
                                                 "bidirectional (M6-style) checkpoint." if causal else
                                                 "bidirectional: use NAR (mask-predict)."))
                        t_go = gr.Button("Generate", variant="primary", elem_id="t2i-generate")
                        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[t_text], label="Example prompts")
                    with gr.Column(scale=3):
                        t_gallery = gr.Gallery(label="Garments", columns=4, object_fit="contain", height="auto",
                                               format="png", elem_id="t2i-gallery", elem_classes="garments")
                        t_status = gr.Markdown(elem_id="t2i-status")
                        with gr.Accordion("Model-size outputs", open=False):
                            t_raw = gr.Gallery(label="As generated", columns=8, format="png", height="auto")
                t_inputs = [t_text, t_num, t_seed, t_temp, t_topk, t_guid, t_sampler]
                t_outputs = [t_gallery, t_raw, t_status]
                gr.on([t_go.click, t_text.submit], streamed(h.text_to_image), t_inputs, t_outputs,
                      api_name="text_to_image_stream", **raw_opts)
                api_only(h.text_to_image, t_inputs, t_outputs, "text_to_image", raw_opts)

            # -- Text + sketch -> garment --------------------------------------------------------
            with gr.Tab("Text + sketch → garment", id="sketch"):
                with gr.Row():
                    with gr.Column(scale=2):
                        s_text = gr.Textbox(label="Describe the garment (optional)", value=EXAMPLE_PROMPTS[1],
                                            lines=2, max_length=MAX_TEXT_CHARS)
                        s_source = gr.Radio(["draw", "photo"], value="draw", label="Sketch from")
                        with gr.Tabs():
                            with gr.Tab("Draw") as s_draw_tab:
                                s_pad = gr.Sketchpad(label="Draw the garment's outline", canvas_size=(320, 320),
                                                     brush=gr.Brush(colors=["#000000"], default_size=3,
                                                                    color_mode="fixed"))
                            with gr.Tab("Photo → Canny sketch") as s_photo_tab:
                                with gr.Row():
                                    s_photo = gr.Image(label="Any photo", type="filepath", image_mode=None,
                                                       sources=["upload", "clipboard"])
                                    s_preview = gr.Image(label="Canny sketch the model sees", interactive=False, format="png",
                                                         elem_classes="shown")
                                with gr.Row():
                                    s_low = gr.Slider(0, 500, value=settings.sketch_low, step=5, label="Low threshold")
                                    s_high = gr.Slider(0, 500, value=settings.sketch_high, step=5,
                                                       label="High threshold")
                                gr.Examples([[g[0]] for g in garments[:4]], inputs=[s_photo], label="Example photos")
                        with gr.Row():
                            s_num = gr.Slider(1, 16, value=4, step=1, label="Number of images")
                            s_seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                        s_go = gr.Button("Generate", variant="primary")
                    with gr.Column(scale=3):
                        s_gallery = gr.Gallery(label="Garments", columns=4, height="auto", format="png",
                                               elem_classes="garments")
                        s_seen = gr.Image(label="The sketch the model saw", interactive=False, height=200, format="png",
                                          elem_classes="shown")
                        s_status = gr.Markdown()
                        with gr.Accordion("Model-size outputs", open=False):
                            s_raw = gr.Gallery(label="As generated", columns=8, format="png", height="auto")
                s_draw_tab.select(lambda: "draw", None, s_source, api_name=False)
                s_photo_tab.select(lambda: "photo", None, s_source, api_name=False)
                s_photo.upload(lambda: "photo", None, s_source, api_name=False)
                gr.on([s_photo.change, s_low.release, s_high.release], h.canny_preview, [s_photo, s_low, s_high],
                      s_preview, api_name="canny_preview", trigger_mode="always_last", **raw_opts)
                s_inputs = [s_text, s_source, s_pad, s_photo, s_low, s_high, s_num, s_seed]
                s_outputs = [s_gallery, s_raw, s_seen, s_status]
                s_go.click(streamed(h.sketch_to_image), s_inputs, s_outputs, api_name="sketch_to_image_stream",
                           **raw_opts)
                api_only(h.sketch_to_image, s_inputs, s_outputs, "sketch_to_image", raw_opts)

            # -- Text + partial -> garment ---------------------------------------------------------
            with gr.Tab("Text + partial → garment", id="partial"):
                with gr.Row():
                    with gr.Column(scale=2):
                        p_text = gr.Textbox(label="Describe the garment (optional)", value=EXAMPLE_PROMPTS[2],
                                            lines=2, max_length=MAX_TEXT_CHARS)
                        p_editor = gr.ImageEditor(label="Upload a garment, then paint the region to keep",
                                                  sources=["upload", "clipboard"], transforms=(),
                                                  brush=gr.Brush(colors=["#22c55e"], default_size=12,
                                                                 color_mode="fixed"),
                                                  canvas_size=(320, 320), layers=False)
                        p_region = gr.Radio(["random 25% crop", "brush", "box"], value="random 25% crop",
                                            label="Region to keep")
                        with gr.Accordion("Box (percent of the image)", open=False):
                            with gr.Row():
                                p_left = gr.Slider(0, 100, value=0, step=1, label="Left")
                                p_top = gr.Slider(0, 100, value=0, step=1, label="Top")
                            with gr.Row():
                                p_right = gr.Slider(0, 100, value=50, step=1, label="Right")
                                p_bottom = gr.Slider(0, 100, value=50, step=1, label="Bottom")
                        with gr.Row():
                            p_num = gr.Slider(1, 16, value=4, step=1, label="Number of images")
                            p_seed = gr.Number(0, precision=0, minimum=0, label="Seed",
                                               info="Also picks the random crop.")
                        p_go = gr.Button("Generate", variant="primary")
                        gr.Examples([[g[0]] for g in garments[:4]], inputs=[p_editor], label="Example garments")
                    with gr.Column(scale=3):
                        p_gallery = gr.Gallery(label="Garments", columns=4, height="auto", format="png",
                                               elem_classes="garments")
                        p_seen = gr.Image(label="The partial image the model saw (grey = not given)",
                                          interactive=False, height=200, format="png", elem_classes="shown")
                        p_status = gr.Markdown()
                        with gr.Accordion("Model-size outputs", open=False):
                            p_raw = gr.Gallery(label="As generated", columns=8, format="png", height="auto")
                gr.on([s.release for s in (p_left, p_top, p_right, p_bottom)], lambda: "box", None, p_region,
                      api_name=False)
                p_inputs = [p_text, p_editor, p_region, p_left, p_top, p_right, p_bottom, p_num, p_seed]
                p_outputs = [p_gallery, p_raw, p_seen, p_status]
                p_go.click(streamed(h.partial_to_image), p_inputs, p_outputs, api_name="partial_to_image_stream",
                           **raw_opts)
                api_only(h.partial_to_image, p_inputs, p_outputs, "partial_to_image", raw_opts)

            # -- MaskCLIP heatmaps ---------------------------------------------------------------------
            with gr.Tab("MaskCLIP heatmaps", id="heatmaps", elem_id="heatmaps-tab"):
                gr.Markdown("Which garment part does each word point at? One heatmap per word (MaskCLIP's "
                            "similarity of the word with every part token; the best patch is outlined).")
                with gr.Row():
                    with gr.Column(scale=2):
                        m_image = gr.Image(label="Garment", type="filepath", image_mode=None, elem_id="heatmaps-image",
                                           sources=["upload", "clipboard"], height=280, elem_classes="shown")
                        m_text = gr.Textbox(label="Text", lines=2, max_length=MAX_TEXT_CHARS,
                                            value="a shirt with a collar, long sleeves and a pocket")
                        m_go = gr.Button("Show heatmaps", variant="primary")
                        gr.Examples(garments, inputs=[m_image, m_text], label="Garments from the procedural dataset")
                    with gr.Column(scale=3):
                        m_gallery = gr.Gallery(label="Heatmap per word", columns=4, height="auto", format="png",
                                               elem_id="heatmaps-gallery")
                        with gr.Row():
                            m_parts = gr.AnnotatedImage(label="Predicted part mask", color_map=colour_map(),
                                                        height=280)
                            m_table = gr.Dataframe(headers=["word", "points at", "score", "part word", "hit"],
                                                   label="Word → part → score", interactive=False, scale=2)
                        with gr.Accordion("As one figure (the paper's Fig. 6)", open=False):
                            m_figure = gr.Image(label="Heatmaps", interactive=False, format="png")
                m_go.click(h.heatmaps, [m_image, m_text], [m_gallery, m_parts, m_table, m_figure],
                           api_name="heatmaps", **raw_opts)

            # -- Compare ------------------------------------------------------------------------------------
            with gr.Tab("Compare", id="compare"):
                names = ", ".join(m.name for m in models.methods)
                gr.Markdown(f"One prompt and seed through every method: **{names}**. Scores: MaskCLIP similarity "
                            "of each image with the prompt (judged by ARMANI's MaskCLIP for all), and the attribute "
                            "classifier's part verdict where available."
                            + "".join(f"\n- {s}" for s in models.skipped))
                with gr.Row():
                    with gr.Column(scale=2):
                        c_text = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPTS[0], lines=2,
                                            max_length=MAX_TEXT_CHARS)
                        with gr.Row():
                            c_sketch = gr.Image(label="Sketch (optional)", type="filepath", image_mode=None,
                                                sources=["upload", "clipboard"], height=180)
                            c_partial = gr.Image(label="Partial image (optional, random 25% kept)", type="filepath",
                                                 image_mode=None, sources=["upload", "clipboard"], height=180)
                        c_seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                        all_names = [m.name for m in models.methods]
                        c_methods = gr.CheckboxGroup(all_names, value=all_names, label="Methods",
                                                     info="each one adds its sampling time")
                        c_go = gr.Button("Compare", variant="primary")
                        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[c_text], label="Example prompts")
                    with gr.Column(scale=3):
                        c_gallery = gr.Gallery(label="One garment per method", columns=max(1, min(4, len(models.methods))),
                                               height="auto", format="png", elem_classes="garments")
                        c_table = gr.Dataframe(headers=["method", "seconds", "MaskCLIP", "part verdict", "notes"],
                                               label="Scores", interactive=False)
                        c_status = gr.Markdown()
                c_go.click(h.compare, [c_text, c_sketch, c_partial, c_seed, c_methods], [c_gallery, c_table, c_status],
                           api_name="compare", **raw_opts)

            # -- Part editing ----------------------------------------------------------------------------------
            with gr.Tab("Part editing", id="edit"):
                gr.Markdown("Pick a part the segmenter finds, describe it anew: only the codes covering that "
                            "part are resampled, the rest of the garment is kept.")
                with gr.Row():
                    with gr.Column(scale=2):
                        e_image = gr.Image(label="Garment", type="filepath", image_mode=None,
                                           sources=["upload", "clipboard"], height=280, elem_classes="shown")
                        e_take = gr.Button("Use the first garment from 'Text → garment'", size="sm")
                        e_part = gr.Dropdown([], label="Part to change", allow_custom_value=True,
                                             info="Filled with the parts found in the image.")
                        e_text = gr.Textbox(label="New description", value=EDIT_PROMPTS[0], lines=2,
                                            max_length=MAX_TEXT_CHARS)
                        e_seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                        e_go = gr.Button("Edit part", variant="primary")
                        gr.Examples([[g[0]] for g in garments], inputs=[e_image], label="Garments")
                    with gr.Column(scale=3):
                        with gr.Row():
                            e_before = gr.Image(label="Before (as the model encodes it)", interactive=False, format="png",
                                                elem_classes="shown")
                            e_after = gr.Image(label="After", interactive=False, format="png", elem_classes="shown")
                            e_region = gr.Image(label="Edited region", interactive=False, format="png", elem_classes="shown")
                        e_status = gr.Markdown()
                e_take.click(h.first_image, [t_raw], e_image, api_name=False, preprocess=False)
                e_image.change(h.parts_in, [e_image], e_part, api_name="parts_in", **raw_opts)
                e_go.click(h.edit_part, [e_image, e_part, e_text, e_seed], [e_before, e_after, e_region, e_status],
                           api_name="edit_part", **raw_opts)

            # -- Search --------------------------------------------------------------------------------------
            with gr.Tab("Search", id="search"):
                source = models.search.source if models.search and models.search.source else (
                    f"{models.search.size if models.search else 0} procedural garments (validation split, seed 0)")
                gr.Markdown(f"Text → garment retrieval with MaskCLIP's token-wise similarity over {source}.")
                with gr.Row():
                    q_text = gr.Textbox(label="Query", value="red dress with a belt", scale=4,
                                        max_length=MAX_TEXT_CHARS)
                    q_k = gr.Slider(1, MAX_SEARCH_K, value=8, step=1, label="Results", scale=1)
                    q_go = gr.Button("Search", variant="primary", scale=1)
                q_gallery = gr.Gallery(label="Best matches (score · caption)", columns=8, height="auto", format="png",
                                       elem_classes="garments")
                q_table = gr.Dataframe(headers=["rank", "row", "score", "caption"], label="Scores", interactive=False)
                q_go.click(h.search, [q_text, q_k], [q_gallery, q_table], api_name="search", **raw_opts)
                q_text.submit(h.search, [q_text, q_k], [q_gallery, q_table], api_name=False, **raw_opts)

            # -- About ---------------------------------------------------------------------------------------
            with gr.Tab("About", id="about"):
                gr.Markdown(_about(models))
    return app


def _named_dir(value: str) -> tuple[str, Path]:
    name, sep, folder = value.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {value!r}")
    return name, Path(folder)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="ARMANI's Gradio app (offline, CPU).")
    ap.add_argument("--checkpoint", default=None,
                    help="a saved pipeline folder or a training run directory (default: checkpoints/armani)")
    ap.add_argument("--compare", action="append", type=_named_dir, default=[], metavar="NAME=DIR",
                    help="another pipeline for the Compare tab (repeatable)")
    ap.add_argument("--baselines-dir", default=str(CHECKPOINTS_DIR),
                    help="folder whose sub-folders with a pipeline.json are baselines ('none' to skip)")
    ap.add_argument("--search-data", default=None, help="dataset to search (default: procedural garments)")
    ap.add_argument("--search-size", type=int, default=500, help="garments in the search gallery")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per request before it is stopped")
    ap.add_argument("--concurrency", type=int, default=2, help="requests run at once (the rest queue)")
    ap.add_argument("--max-queue", type=int, default=64, help="requests waiting at most; more are refused")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from demo import torch_thread

    if args.threads:  # on the thread that computes (see demo/torch_thread.py)
        import torch

        torch_thread.call(torch.set_num_threads, args.threads)
    # Models load on the thread that will run them (see demo/torch_thread.py).
    models = torch_thread.call(
        DemoModels.load, args.checkpoint, compare=dict(args.compare),
        checkpoints_dir=None if args.baselines_dir == "none" else Path(args.baselines_dir),
        search_data=args.search_data, search_size=args.search_size, time_limit=args.time_limit)
    app = build_app(models)
    app.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    app.launch(server_name=args.host, server_port=args.port, share=False, max_file_size="50mb",
               allowed_paths=[str(Path(example_garments()[0][0]).parent)], theme=gr.themes.Soft(), css=CSS,
               prevent_thread_lock=True, quiet=True)
    # The search index is built on the first search, not now: on the one model thread it
    # would hold up the first generation by ~5 s (and in a thread of its own, slow everything).
    print(f"ARMANI app ready on http://{args.host}:{args.port} (started in {time.perf_counter() - start:.1f} s)",
          flush=True)
    app.block_thread()


if __name__ == "__main__":
    main()

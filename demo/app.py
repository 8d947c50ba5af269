"""ARMANI's Gradio app: a thin UI over ``ArmaniPipeline``, the word-part heatmaps and MaskCLIP search.

    python demo/app.py                                  # the shipped checkpoint, http://127.0.0.1:7860
    python demo/app.py --checkpoint runs/tiny           # a saved pipeline or a training run directory
    python demo/app.py --compare dalle=checkpoints/dalle --port 7861

Tabs, in order: Text → garment, Text + sketch → garment, Text + partial → garment, MaskCLIP
heatmaps, Compare, Part editing, Search, About. Every function is a named API endpoint
(``/text_to_image``, ``/sketch_to_image``, ``/canny_preview``, ``/partial_to_image``,
``/heatmaps``, ``/compare``, ``/parts_in``, ``/edit_part``, ``/search``), callable with
``gradio_client.Client(url).predict(..., api_name="/text_to_image")``.

The handlers live in demo/handlers.py, model loading in demo/models.py and each tab's layout
in demo/tabs.py; this file only puts the tabs on one page and parses the command line.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python demo/app.py`: make the `demo` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The files this app serves go to a folder of its own, removed when it exits. Gradio's default
# (/tmp/gradio) is shared by every app on the machine and keyed by the file's content, so a
# garment drawn again with the same prompt and seed by a later app process (a restart, a second
# test run) lands on an entry an earlier process left behind, and the browser showed it as a
# broken image (seen: the first gallery image stayed at naturalWidth 0; with a fresh folder all
# four loaded). Gradio reads the variable at import time, hence before the import below.
# A stop request (SIGTERM: a Space restarting, the test launcher) exits like Ctrl-C does, so the
# exit handlers run and the folder is removed; installed here, with the folder, so that a stop
# while the models are still loading removes it too (the load in progress finishes first).
if not os.environ.get("GRADIO_TEMP_DIR"):
    _served_files = tempfile.mkdtemp(prefix="armani-gradio-")
    os.environ["GRADIO_TEMP_DIR"] = _served_files
    atexit.register(shutil.rmtree, _served_files, True)
if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

import gradio as gr

from demo import tabs
from demo.examples import example_garments
from demo.handlers import Handlers
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
.venv/bin/python -m armani.assemble --run runs/mine --out checkpoints/mine --prompt "navy shirt with five buttons"
.venv/bin/python demo/app.py --checkpoint checkpoints/mine
```

`--config tiny` trains every stage in seconds (for a first try); real data works through
`data.source=<folder or hub id>` (see the project README).
"""


def build_app(models: DemoModels) -> gr.Blocks:
    """The page: a title, then one tab per builder of demo/tabs.py. Every model event runs with
    ``preprocess=False`` (see demo/handlers.py) on the one "model" concurrency queue."""
    page = tabs.Page(models=models, handlers=Handlers(models), garments=[list(g) for g in example_garments()],
                     opts=dict(preprocess=False, concurrency_id="model"))
    with gr.Blocks(title="ARMANI: cross-modal fashion design") as app:
        gr.Markdown("# ARMANI · part-level garment-text alignment", elem_id="title")
        gr.Markdown(_header(models), elem_id="intro")
        with gr.Tabs():
            first_garments = tabs.text_tab(page)
            tabs.sketch_tab(page)
            tabs.partial_tab(page)
            tabs.heatmaps_tab(page)
            tabs.compare_tab(page)
            tabs.edit_tab(page, first_garments)
            tabs.search_tab(page)
            tabs.about_tab(_about(models))
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

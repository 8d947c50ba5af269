"""The Gradio app through its API, as a user's script would call it: the app runs as
``python demo/app.py --checkpoint <tiny run>`` in a subprocess and every endpoint is called
with ``gradio_client``; the outputs are checked against the library called directly."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from demo.launcher import running_app  # noqa: E402

PROMPT = "Red shirt with long sleeves, a collar and two pockets."
SEARCH_SIZE = 48
HTTP = {"timeout": 300}  # generous: on a busy 2-core machine the server can be slow to answer


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Input files: a procedural garment, a drawing, odd modes, a huge image, a non-image."""
    from armani.data.synthetic import generate_row

    d = tmp_path_factory.mktemp("inputs")
    row = generate_row(3, size=64, seed=0, split="val")  # a shirt with sleeves, collar, buttons, pockets
    garment = Image.fromarray(row["image"])
    out = {"garment": d / "garment.png"}
    garment.save(out["garment"])
    drawing = Image.new("RGB", (200, 200), "white")
    from PIL import ImageDraw

    ImageDraw.Draw(drawing).rectangle([50, 30, 150, 180], outline="black", width=6)
    out["drawing"] = d / "drawing.png"
    drawing.save(out["drawing"])
    rgba = garment.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(64)[None, :].repeat(64, 0) * 4).astype(np.uint8)))
    out["rgba"] = d / "rgba.png"
    rgba.save(out["rgba"])
    out["grey"] = d / "grey.png"
    garment.convert("L").save(out["grey"])
    out["cmyk"] = d / "cmyk.jpg"
    garment.convert("CMYK").save(out["cmyk"])
    out["16bit"] = d / "deep.png"
    Image.fromarray((np.asarray(garment.convert("L")).astype(np.uint16) * 257)).save(out["16bit"])
    out["huge"] = d / "huge.png"
    garment.resize((5000, 5000), Image.Resampling.NEAREST).save(out["huge"])  # 25 Mpx > the 16.7 Mpx cap
    out["text"] = d / "notes.txt"
    out["text"].write_text("not an image")
    layer = np.zeros((64, 64, 4), dtype=np.uint8)
    layer[:32, :32] = (34, 197, 94, 255)  # the brush painted the top-left quarter
    out["brush"] = d / "brush.png"
    Image.fromarray(layer, "RGBA").save(out["brush"])
    return out


@pytest.fixture(scope="module")
def baselines(tiny_pipeline, tmp_path_factory) -> Path:
    """A checkpoints folder with a copy of the tiny model ("twin"), an (untrained) text-only
    diffusion baseline on its text tower, and one of unknown format."""
    from armani.baselines.diffusion import (
        DiffusionBaseline,
        DiffusionBaselinePipeline,
        DiffusionSettings,
        TextTower,
        tiny_diffusion_config,
    )

    d = tmp_path_factory.mktemp("checkpoints")
    tiny_pipeline.save_pretrained(d / "twin")
    tower = TextTower.from_maskclip(tiny_pipeline.maskclip)
    config = tiny_diffusion_config(tiny_pipeline.image_size)
    config.cross_attention_dim = tower.width
    DiffusionBaselinePipeline(tiny_pipeline.tokenizer, tower, DiffusionBaseline(config),
                              DiffusionSettings(num_inference_steps=2)).save_pretrained(d / "diffusion")
    (d / "mystery").mkdir()
    (d / "mystery" / "pipeline.json").write_text(json.dumps({"format": "some-other-model"}))
    (d / "not-a-model").mkdir()  # no pipeline.json: ignored
    return d


@pytest.fixture(scope="module")
def app(tiny_run, baselines):
    args = ["--checkpoint", str(tiny_run), "--baselines-dir", str(baselines), "--search-size", str(SEARCH_SIZE),
            "--time-limit", "120", "--concurrency", "2"]
    with running_app(args) as running:
        yield running


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app.url, verbose=False, httpx_kwargs=HTTP)


@pytest.fixture(autouse=True)
def _one_thread():
    """The app runs with one torch thread; match it so that in-process references are bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ref_pipeline(tiny_pipeline):
    """The in-process reference for the app's outputs: the tiny pipeline sampling at the precision
    the app picks on this CPU (float32 where bf16 is not native; see demo.models)."""
    import copy

    from demo.models import sample_at_native_precision

    return sample_at_native_precision(copy.copy(tiny_pipeline))


def _images(gallery) -> list[np.ndarray]:
    return [np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery]


def _array(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _editor(background, layers=()):
    return {"background": handle_file(str(background)), "layers": [handle_file(str(x)) for x in layers],
            "composite": None}


# -- every endpoint --------------------------------------------------------------------------------
def test_api_lists_every_named_endpoint(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/text_to_image", "/sketch_to_image", "/canny_preview", "/partial_to_image", "/heatmaps", "/compare",
            "/parts_in", "/edit_part", "/search", "/text_to_image_stream", "/sketch_to_image_stream",
            "/partial_to_image_stream"} <= names


def test_text_to_image_returns_the_pipelines_images(client, ref_pipeline):
    # API clients get the model-size images and the notes, not the page's enlarged copies.
    raw, status = client.predict(PROMPT, 4, 7, 1.0, 100, 3.0, "AR", api_name="/text_to_image")
    S = ref_pipeline.image_size
    got = _images(raw)
    assert len(raw) == 4
    assert all(im.shape == (S, S, 3) for im in got)
    # The same call made in-process gives the same pixels.
    want = ref_pipeline(text=PROMPT, num_images=4, seed=7, temperature=1.0, top_k=100, guidance_scale=3.0)
    assert all(np.array_equal(g, np.asarray(w)) for g, w in zip(got, want.images))
    assert "4 images in" in status and "seed 7" in status
    # Another seed, other garments.
    raw2, _ = client.predict(PROMPT, 4, 8, 1.0, 100, 3.0, "AR", api_name="/text_to_image")
    assert not all(np.array_equal(a, b) for a, b in zip(got, _images(raw2)))


def test_the_pages_stream_endpoint_streams_previews_then_the_same_images(client):
    job = client.submit(PROMPT, 4, 7, 1.0, 100, 3.0, "AR", api_name="/text_to_image_stream")
    updates = list(job)
    previews = [u for u in updates if str(u[-1]).startswith("sampling")]
    assert len(previews) >= 2 and all(len(u[0]) == 4 for u in previews)
    assert [int(str(u[-1]).split()[-1].split("/")[0]) for u in previews] == sorted(
        int(str(u[-1]).split()[-1].split("/")[0]) for u in previews)  # steps only go forward
    shown, raw, status = updates[-1]
    want, _ = client.predict(PROMPT, 4, 7, 1.0, 100, 3.0, "AR", api_name="/text_to_image")
    assert "4 images in" in status
    assert all(np.array_equal(a, b) for a, b in zip(_images(raw), _images(want)))
    # The page shows each model-size image enlarged, every pixel repeated (NEAREST).
    S = _images(want)[0].shape[0]
    factor = round(256 / S)
    assert len(shown) == 4 and all(im.shape == (S * factor, S * factor, 3) for im in _images(shown))
    assert all(np.array_equal(big[::factor, ::factor], small) for big, small in zip(_images(shown), _images(raw)))


def test_sketch_from_photo_and_from_drawing(client, files, ref_pipeline):
    S = ref_pipeline.image_size
    preview = _array(client.predict(handle_file(str(files["garment"])), 100, 200, api_name="/canny_preview"))
    raw, seen, status = client.predict(PROMPT, "photo", None, handle_file(str(files["garment"])), 100, 200, 2,
                                       0, api_name="/sketch_to_image")
    assert len(raw) == 2 and all(im.shape == (S, S, 3) for im in _images(raw))
    seen = _array(seen)
    factor = seen.shape[0] // S
    edges = seen[::factor, ::factor, 0]
    # What the model saw is the Canny sketch of the photo at its size, shown in the preview too.
    _, want = ref_pipeline.prepare_sketch(str(files["garment"]), [], mode="photo", thresholds=(100, 200))
    assert np.array_equal(edges, np.asarray(want))
    assert np.array_equal(preview, seen)
    assert set(np.unique(edges)) <= {0, 255} and edges.any()
    # Higher thresholds keep fewer edges.
    strict = _array(client.predict(handle_file(str(files["garment"])), 400, 500, api_name="/canny_preview"))
    assert (strict > 0).sum() < (preview > 0).sum()
    # A drawing from the sketch pad (dark strokes on white) is read as edges, not through Canny.
    pad = {"background": None, "layers": [], "composite": handle_file(str(files["drawing"]))}
    raw, seen, status = client.predict("", "draw", pad, None, 100, 200, 1, 0, api_name="/sketch_to_image")
    drawn = _array(seen)[::factor, ::factor, 0]
    assert len(raw) == 1 and drawn.any()
    assert drawn[S // 2, S // 2] == 0  # the rectangle's inside is not a stroke


def test_partial_region_box_brush_and_random(client, files, ref_pipeline):
    S = ref_pipeline.image_size
    garment = np.asarray(Image.open(files["garment"]).convert("RGB").resize((S, S), Image.Resampling.LANCZOS))

    def seen(region, layers=(), box=(0, 0, 50, 50), seed=0):
        raw, partial, status = client.predict(PROMPT, _editor(files["garment"], layers), region, *box, 1,
                                              seed, api_name="/partial_to_image")
        assert len(raw) == 1 and _images(raw)[0].shape == (S, S, 3)
        img = _array(partial)
        return img[:: img.shape[0] // S, :: img.shape[0] // S], status

    def kept(img):
        return ~np.all(img == 127, axis=-1)

    box, _ = seen("box", box=(0, 0, 50, 100))  # the left half
    assert kept(box)[:, : S // 2 - 1].mean() > 0.9 and not kept(box)[:, S // 2 + 1 :].any()
    assert np.abs(box[:, : S // 2 - 1].astype(int) - garment[:, : S // 2 - 1]).max() <= 2
    brush, _ = seen("brush", layers=[files["brush"]])  # the top-left quarter
    assert kept(brush)[: S // 2 - 1, : S // 2 - 1].mean() > 0.9 and not kept(brush)[S // 2 + 1 :].any()
    crop, status = seen("random 25% crop", seed=3)
    assert 0.15 < kept(crop).mean() < 0.35
    assert "random 25% crop" in status


def test_example_garments_bring_their_own_captions(client):
    """On the sketch and partial tabs an example garment fills the text box with its caption,
    so the text never describes another garment than the picture; the partial tab starts
    with no text (a fixed prompt would not match an uploaded garment). The examples show only
    their pictures, so the check reads the load-example events and calls them."""
    from demo.examples import example_garments

    components = {c["id"]: c for c in client.config["components"]}
    captions = [caption for _, caption in example_garments()[:4]]
    loaders = {}
    for dep in client.config["dependencies"]:
        sources = [components[i] for i in dep["inputs"]]
        if len(sources) == 1 and sources[0]["type"] == "dataset":
            loaders[sources[0]["props"].get("label")] = dep
    for label, picture in (("Example photos (with their captions)", "image"),
                           ("Example garments (with their captions)", "imageeditor")):
        dep = loaders[label]
        assert [components[o]["type"] for o in dep["outputs"]] == [picture, "textbox"]
        _, text = client.predict(2, api_name="/" + dep["api_name"])  # the third example
        assert (text["value"] if isinstance(text, dict) else text) == captions[2]
    partial_text = components[loaders["Example garments (with their captions)"]["outputs"][1]]["props"]
    assert partial_text["value"] == "" and partial_text["placeholder"].startswith("e.g. ")


def test_heatmaps_one_per_word(client, files, ref_pipeline):
    text = "a shirt with a collar, long sleeves and pockets"
    words = ref_pipeline.tokenizer.words(text)
    overlays, parts, table, figure = client.predict(handle_file(str(files["garment"])), text, api_name="/heatmaps")
    assert len(overlays) == len(words) == len(table["data"])
    assert [row[0] for row in table["data"]] == words
    assert [item["caption"].split(" → ")[0] for item in overlays] == words
    from armani.alignment import word_part_heatmaps

    want = word_part_heatmaps(ref_pipeline.maskclip, ref_pipeline.tokenizer, str(files["garment"]), text,
                              segmenter=ref_pipeline.segmenter)
    assert [row[1] for row in table["data"]] == want.pointed_part
    assert np.allclose([row[2] for row in table["data"]], want.best_score.numpy(), atol=1e-3)
    assert [row[3] for row in table["data"]][words.index("collar")] == "collar"
    from armani.parts import PART_NAMES

    labels = {a["label"] for a in parts["annotations"]}
    assert labels == {PART_NAMES[k] for k in np.unique(want.part_mask.numpy()) if k > 0}
    assert Image.open(figure).size[0] > 200


def test_compare_one_image_per_method(client, files):
    gallery, table, status = client.predict(PROMPT, None, None, 5, api_name="/compare")
    rows = table["data"]
    # the unknown format is skipped, the folder without a file ignored
    assert [r[0] for r in rows] == ["ARMANI", "diffusion", "twin"]
    assert len(gallery) == 3
    a, _, b = _images(gallery)
    assert np.array_equal(a, b)  # the twin is the same model: same seed, same garment, same score
    assert rows[0][2] == rows[2][2] and -1 <= rows[0][2] <= 1
    assert all(r[1] > 0 for r in rows)
    assert "mystery" in status and "unknown pipeline format" in status
    # With a sketch the methods that take one use it; the text-only one says it used the text alone.
    gallery, table, _ = client.predict(PROMPT, handle_file(str(files["garment"])), None, 5, api_name="/compare")
    assert len(gallery) == 3 and all(r[3] != "failed" for r in table["data"])
    assert "takes no sketch: text only" in table["data"][1][4]
    # The methods box picks a subset; ticking none is a clear error.
    gallery, table, _ = client.predict(PROMPT, None, None, 5, ["twin"], api_name="/compare")
    assert [r[0] for r in table["data"]] == ["twin"] and len(gallery) == 1
    with pytest.raises(AppError, match="at least one method"):
        client.predict(PROMPT, None, None, 5, [], api_name="/compare")


def test_parts_and_edit_part(client, files, ref_pipeline):
    update = client.predict(handle_file(str(files["garment"])), api_name="/parts_in")
    from armani.parts import PART_NAMES

    choices = [c[0] for c in update["choices"]]
    mask = ref_pipeline.segment(str(files["garment"]))
    assert choices and choices == [PART_NAMES[k] for k in np.unique(mask) if k >= 2]
    part = choices[0]
    before, after, region, status = client.predict(handle_file(str(files["garment"])), part, "a red pocket", 0,
                                                   api_name="/edit_part")
    before, after, region = _array(before), _array(after), _array(region)[..., 0] > 127
    assert before.shape == after.shape and region.shape == before.shape[:2] and region.any()
    assert np.array_equal(before[~region], after[~region])  # nothing outside the part's codes changed
    assert f"{part} regenerated" in status


def test_search_returns_k_scored_rows(client, ref_pipeline):
    from armani.data.images import pil_to_tensor
    from armani.data.synthetic import generate_row
    from armani.retrieval import MaskCLIPIndex

    gallery, table = client.predict("red dress with a belt", 5, api_name="/search")
    rows = table["data"]
    assert len(gallery) == len(rows) == 5
    scores = [r[2] for r in rows]
    assert scores == sorted(scores, reverse=True) and len({r[1] for r in rows}) == 5
    for rank, row_id, score, caption in rows[:2]:
        row = generate_row(row_id, size=ref_pipeline.image_size, seed=0, split="val")
        assert caption == row["caption"]
        one = MaskCLIPIndex.build(ref_pipeline.maskclip, [(pil_to_tensor(Image.fromarray(row["image"])),
                                                            torch.from_numpy(row["mask"]).long())],
                                  tokenizer=ref_pipeline.tokenizer)
        assert one.search("red dress with a belt", 1)[0][1] == pytest.approx(score, abs=2e-3)


# -- bad input: a readable message, never a trace -----------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (("", 4, 0, 1.0, 100, 3.0, "AR", "/text_to_image"), "describe the garment"),
    (("x" * 5000, 4, 0, 1.0, 100, 3.0, "AR", "/text_to_image"), "5000 characters"),
    ((PROMPT, 4, 0, 1.0, 100, 3.0, "NAR", "/text_to_image"), "autoregressive"),
    ((PROMPT, 0, 0, 1.0, 100, 3.0, "AR", "/text_to_image"), "between 1 and 16"),
    ((PROMPT, 4, 0, -1.0, 100, 3.0, "AR", "/text_to_image"), "Temperature"),
    (("#### !!!", 4, 0, 1.0, 100, 3.0, "AR", "/text_to_image"), "no words"),
    ((None, "red", "/heatmaps"), "upload a garment image"),
    (("text", "red", "/heatmaps"), "not an image"),
    (("garment", "", "/heatmaps"), "describe the garment"),
    ((PROMPT, "photo", None, None, 100, 200, 1, 0, "/sketch_to_image"), "upload a photo"),
    ((PROMPT, "draw", None, None, 100, 200, 1, 0, "/sketch_to_image"), "draw on the sketch pad"),
    ((PROMPT, "brush", 0, 0, 50, 50, 1, 0, "/partial_to_image"), "Paint over the region"),
    ((PROMPT, "box", 50, 0, 10, 50, 1, 0, "/partial_to_image"), "The box is empty"),
    (("garment", "belt-buckle", "a red belt", 0, "/edit_part"), "pick a garment part"),
    (("", 5, "/search"), "describe the garment"),
])
def test_bad_input_gives_a_readable_error(client, files, call, message):
    *args, api = call
    args = [handle_file(str(files[a])) if isinstance(a, str) and a in ("text", "garment") else a for a in args]
    if api == "/partial_to_image":
        args.insert(1, _editor(files["garment"]))
    with pytest.raises(AppError, match=message) as err:
        client.predict(*args, api_name=api)
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize("name", ["rgba", "grey", "cmyk", "16bit", "huge"])
def test_any_image_mode_and_size_is_accepted(client, files, name, ref_pipeline):
    raw, partial, status = client.predict(PROMPT, _editor(files[name]), "box", 0, 0, 100, 100, 1, 0,
                                        api_name="/partial_to_image")
    kept = _array(partial)
    assert len(raw) == 1 and kept.std() > 5  # the whole image kept: real content, not a flat fill
    if name == "huge":
        assert "downscaled" in status
    if name == "16bit":  # stretched to 8 bits, not saturated to white
        assert kept.mean() < 250


def test_twenty_concurrent_clients(app):
    """20 API clients at once, 1-2 requests each (30 in all): every one answered, none failed."""
    results, errors = [], []

    def user(i: int) -> None:
        try:
            c = Client(app.url, verbose=False, httpx_kwargs=HTTP)
            for n in (1, 2)[: 1 + i % 2]:
                raw, _ = c.predict(f"{PROMPT} #{i}", n, i, 1.0, 100, 3.0, "AR", api_name="/text_to_image")
                results.append(len(raw) == n)
        except Exception as err:  # noqa: BLE001 - collected and reported below
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=user, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]
    assert len(results) == 30 and all(results)


# -- the time limit, in-process (a server started with a tiny limit would cost another start) -------
def test_time_limit_stops_sampling(ref_pipeline):
    import gradio as gr

    from demo.handlers import Handlers
    from demo.models import DemoModels

    handlers = Handlers(DemoModels(main=ref_pipeline, time_limit=0.0))
    with pytest.raises(gr.Error, match="time limit"):
        list(handlers.text_to_image(PROMPT, 4, 0, progress=lambda *a, **k: None))


def test_a_newer_page_run_of_the_same_tab_and_session_supersedes_the_older(ref_pipeline):
    """A page run started while an older one of the same browser session and tab is still going:
    with other inputs the older one ends quietly, without garments or notes, and the newer one
    shows its own; with the same inputs (Generate pressed during a picked example's own run) the
    newer one changes nothing and the older one finishes. Another session's run, and API calls
    (no key), are never stopped."""
    import gradio as gr

    from demo.handlers import Handlers
    from demo.models import DemoModels

    handlers = Handlers(DemoModels(main=ref_pipeline, time_limit=60.0))
    quiet = dict(progress=lambda *a, **k: None, previews=True)

    def finals(outputs):
        return [o for o in outputs if "images in" in str(o[-1])]

    older = handlers.text_to_image(PROMPT, 2, 0, **quiet, run_key=("session-a", "text_to_image"))
    assert "sampling" in next(older)[-1]  # the older run is under way
    other = handlers.text_to_image(PROMPT, 2, 1, **quiet, run_key=("session-b", "text_to_image"))
    assert "sampling" in next(other)[-1]
    newer = list(handlers.text_to_image(PROMPT, 2, 2, **quiet, run_key=("session-a", "text_to_image")))
    api = list(handlers.text_to_image(PROMPT, 2, 3, progress=lambda *a, **k: None))
    assert finals(list(older)) == []  # superseded: no garments, no status of its own
    assert len(finals(newer)) == 1 and "seed 2" in newer[-1][-1]
    assert len(finals(list(other))) == 1 and len(finals(api)) == 1
    assert handlers._latest == {}  # finished runs leave no keys behind
    # the same inputs again while the first run is going: nothing new, the first run finishes
    first = handlers.text_to_image(PROMPT, 2, 5, **quiet, run_key=("session-a", "text_to_image"))
    assert "sampling" in next(first)[-1]
    again = list(handlers.text_to_image(PROMPT, 2, 5, **quiet, run_key=("session-a", "text_to_image")))
    assert len(again) == 1 and all(o == gr.skip() for o in again[0])
    assert len(finals(list(first))) == 1
    assert handlers._latest == {}


def test_the_pages_runs_are_keyed_by_browser_session_and_tab():
    """The page's generate events pass the handler a key (browser session, tab) for the rule
    above; Gradio fills the request in as it fills ``progress`` (``special_args``, the call
    path of every event), and the handler gets its inputs unchanged."""
    import gradio as gr
    from gradio.helpers import special_args

    from demo.tabs import streamed

    seen = {}

    def text_to_image(text, num_images=4, seed=0, progress=gr.Progress(), previews=False, run_key=None):
        seen.update(inputs=(text, num_images, seed), progress=progress, previews=previews, run_key=run_key)
        yield "done"

    class Request:
        session_hash = "session-a"

    page_event = streamed(text_to_image)
    args, progress_index, _, _ = special_args(page_event, [PROMPT, 2, 7], Request())
    assert list(page_event(*args)) == ["done"]
    assert seen["inputs"] == (PROMPT, 2, 7) and isinstance(seen["progress"], gr.Progress) and progress_index == 3
    assert seen["previews"] and seen["run_key"] == ("session-a", "text_to_image")
    args, _, _, _ = special_args(page_event, [PROMPT, 2, 7], None)  # no request (a direct call): no key
    list(page_event(*args))
    assert seen["run_key"] is None and seen["inputs"] == (PROMPT, 2, 7)


def test_stream_stops_the_worker_when_the_limit_passes():
    import time

    from demo.handlers import RequestCancelled, stream

    calls = []

    def slow(callback):
        for step in range(1000):
            time.sleep(0.01)
            calls.append(step)
            callback(step, 1000, [])
        return "finished"

    with pytest.raises(RequestCancelled):
        for _ in stream(slow, limit=0.2):
            pass
    seen = len(calls)
    time.sleep(0.2)
    assert 1 <= seen < 100 and len(calls) <= seen + 1  # the worker stopped at its next callback
    assert list(stream(lambda cb: "done", limit=5)) == []


def test_a_stopped_app_removes_its_folder_of_served_files(tiny_run, tmp_path, monkeypatch):
    """SIGTERM (a Space restarting, a test ending) while the app is still loading, and once it
    serves: both times the app exits cleanly and its folder of served files is gone."""
    import os
    import signal
    import subprocess
    import time

    from demo.launcher import APP, OFFLINE_ENV, free_port

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the app makes its folder here
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(APP), "--port", str(free_port()), "--checkpoint", str(tiny_run),
                                 "--baselines-dir", "none"], stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **OFFLINE_ENV))
    start = time.perf_counter()
    while not list(tmp_path.glob("armani-gradio-*")):
        assert proc.poll() is None and time.perf_counter() - start < 120, log.read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # still importing gradio / loading the models
    assert proc.wait(timeout=300) == 0, log.read_text()
    assert "app ready" not in log.read_text()
    assert not list(tmp_path.glob("armani-gradio-*"))

    with running_app(["--checkpoint", str(tiny_run), "--baselines-dir", "none", "--search-size", "8"]) as running:
        assert len(list(tmp_path.glob("armani-gradio-*"))) == 1
    assert running.process.returncode == 0, running.log()
    assert not list(tmp_path.glob("armani-gradio-*"))


@pytest.mark.parametrize("native", [True, False])
def test_the_app_samples_at_the_cpus_native_precision(tiny_pipeline, monkeypatch, native):
    import copy

    import demo.models as models

    monkeypatch.setattr(models, "native_precision", lambda: "bfloat16" if native else "float32")
    pipe = copy.copy(tiny_pipeline)
    pipe.sampler = tiny_pipeline.sampler.with_options(dtype="bfloat16")
    models.sample_at_native_precision(pipe)
    assert pipe.sampler.dtype == ("bfloat16" if native else "float32")
    assert pipe.sampler.pack_float32 == (not native)  # a float32 sampler packs its linears too
    assert tiny_pipeline.sampler.dtype == "bfloat16"  # the loaded pipeline's stored sampler is not touched
    assert not tiny_pipeline.sampler.pack_float32
    # every other setting is the stored sampler's
    stored = dict(dtype="bfloat16", pack_float32=False)
    assert pipe.sampler.with_options(**stored) == tiny_pipeline.sampler.with_options(**stored)

"""ArmaniPipeline on the tiny run: every condition subset, user inputs of any kind, clear
errors, save/load, and part editing that leaves the rest of the garment untouched."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from armani.parts import PART_ID
from armani.pipeline import ArmaniPipeline, PipelineInputError


def _photo(h=300, w=200, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 235, np.uint8)
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = rng.integers(0, 255, 3)
    return img


def test_text_to_images_is_seeded(tiny_pipeline):
    a = tiny_pipeline(text="navy shirt with long sleeves and five buttons", num_images=3, seed=7)
    b = tiny_pipeline(text="navy shirt with long sleeves and five buttons", num_images=3, seed=7)
    c = tiny_pipeline(text="navy shirt with long sleeves and five buttons", num_images=3, seed=8)
    S = tiny_pipeline.image_size
    assert len(a.images) == 3 and all(im.size == (S, S) and im.mode == "RGB" for im in a.images)
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    assert a.text == "navy shirt with long sleeves and five buttons" and a.notes == []


@pytest.mark.parametrize("conds", ["text", "text+sketch", "text+partial", "text+sketch+partial", "sketch",
                                   "partial"])
def test_every_condition_subset(tiny_pipeline, conds):
    kw = {}
    if "text" in conds:
        kw["text"] = "red dress with a belt"
    if "sketch" in conds:
        kw["sketch"] = _photo()
    if "partial" in conds:
        kw["partial"] = _photo(seed=1)
    out = tiny_pipeline(num_images=2, seed=0, **kw)
    assert len(out.images) == 2
    assert (out.sketch is not None) == ("sketch" in conds)
    assert (out.partial is not None) == ("partial" in conds)
    if "partial" in conds:  # default region: a random ~25% crop, shown in the keep mask
        kept = np.asarray(out.keep_mask) > 0
        assert 0.1 < kept.mean() < 0.45


def test_unconditional_only_when_allowed(tiny_pipeline):
    with pytest.raises(PipelineInputError, match="give a text"):
        tiny_pipeline(num_images=1)
    assert len(tiny_pipeline(num_images=1, allow_unconditional=True).images) == 1


def test_guidance_one_equals_no_guidance_path(tiny_pipeline):
    a = tiny_pipeline(text="green hoodie", num_images=2, seed=3, guidance_scale=1.0)
    b = tiny_pipeline(text="green hoodie", num_images=2, seed=3, guidance_scale=4.0)
    assert not torch.equal(a.ids, b.ids)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "CMYK", "I;16", "P", "1"])
def test_any_image_mode_is_accepted(tiny_pipeline, mode):
    img = Image.fromarray(_photo())
    img = img.convert("L").convert("I;16") if mode == "I;16" else img.convert(mode)
    out = tiny_pipeline(text="coat", partial=img, sketch=img, num_images=1)
    assert out.partial.size == (tiny_pipeline.image_size,) * 2


def test_drawn_sketch_on_white_paper_is_read_as_edges(tiny_pipeline):
    paper = np.full((512, 512), 255, np.uint8)
    paper[100:400, 100:106] = 0  # a bold dark stroke
    paper[100:106, 100:400] = 0
    out = tiny_pipeline(text="shirt", sketch=paper, num_images=1)
    edges = np.asarray(out.sketch) > 0
    S = tiny_pipeline.image_size
    assert any("drawing" in n for n in out.notes)
    assert edges[:, : S // 4 + 2].any() and edges.mean() < 0.2  # strokes survive, paper stays dark


def test_user_keep_region(tiny_pipeline):
    keep = np.zeros((300, 200), bool)
    keep[:150] = True  # top half
    out = tiny_pipeline(text="jacket", partial=_photo(), partial_keep_mask=keep, num_images=1)
    kept = np.asarray(out.keep_mask) > 0
    assert kept[: kept.shape[0] // 3].mean() > 0.5 and kept[-kept.shape[0] // 4 :].mean() == 0


def test_kept_region_is_pasted_back_and_blended(tiny_pipeline):
    photo = _photo()
    # away from the seam: the model's own pixels (neither the background nor the garment shifted)
    tiny_pipeline.settings.harmonise_background = tiny_pipeline.settings.harmonise_garment = False
    try:
        out = tiny_pipeline(text="jacket", partial=photo, num_images=2, seed=3)
    finally:
        tiny_pipeline.settings.harmonise_background = tiny_pipeline.settings.harmonise_garment = True
    kept = np.asarray(out.keep_mask) > 0
    given = np.asarray(out.partial)  # the partial image as the model saw it (grey outside)
    for image, raw in zip(out.images, out.uncomposited):
        image, raw = np.asarray(image), np.asarray(raw)
        assert np.array_equal(image[kept], given[kept])  # the kept pixels, exactly
        assert not np.array_equal(raw[kept], given[kept])  # the model alone does not copy them
        far = cv2.dilate(kept.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        assert np.array_equal(image[far], raw[far])  # away from the seam, the generated pixels
        ring = ~kept & ~far  # the seam: between the two
        assert ring.any() and not np.array_equal(image[ring], raw[ring])
    plain = tiny_pipeline(text="jacket", partial=photo, num_images=2, seed=3, composite_partial=False)
    assert plain.uncomposited is None
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain.images, out.uncomposited))


def test_the_seam_fades_from_the_kept_colours_not_from_the_blank_fill():
    """Outside the kept region the partial image is blank (0, mid-grey); the feathered ring must
    blend the kept colours into the generated ones, not draw a grey frame around the region."""
    from armani.pipeline import composite_kept_region

    S = 32
    keep = torch.zeros(1, S, S)
    keep[:, 8:20, 8:20] = 1
    partial = torch.zeros(3, S, S)
    partial[0] = keep[0]  # red inside the region, blank (0) outside
    partial[1:] = -keep  # green, blue -1 inside
    blue = Image.new("RGB", (S, S), (0, 0, 255))
    out = np.asarray(composite_kept_region([blue], partial, keep, feather=3)[0]).astype(int)
    assert (out[8:20, 8:20] == [255, 0, 0]).all()  # the kept pixels exactly
    ring = out[5:8, 8:20]  # just above the region: the fade
    assert (ring[..., 1] == 0).all()  # only red and blue mix: no grey (green would be 127)
    assert (np.diff(ring[..., 0], axis=0) > 0).all()  # red grows towards the region
    assert (out[:3] == [0, 0, 255]).all()  # beyond the feather: the generated pixels


def test_the_generated_background_takes_the_tint_of_the_kept_region():
    """A garment drawn on a bluer studio background than its kept region's: harmonising moves the
    generated background to the kept region's tint (no rectangle of another colour once the
    region is pasted back) and leaves the garment's own pixels and the kept region alone."""
    from scipy import ndimage

    from armani.data.synthetic import generate_row
    from armani.data.transforms import image_tensor
    from armani.models.segmenter import Segmenter
    from armani.pipeline import composite_kept_region, harmonise_background

    segmenter = Segmenter.from_pretrained(Path(__file__).resolve().parents[1] / "checkpoints" / "armani" / "segmenter")
    keep = np.zeros((64, 64), bool)
    keep[:, :24] = True  # the left third: background and a part of the garment
    keep_t = torch.from_numpy(keep[None].astype(np.float32))
    errors = []
    for index in (5, 6, 7):
        row = generate_row(index, 64, seed=0)
        render, garment = row["image"], row["mask"] > 0
        assert (keep & ~garment).sum() > 200 and (keep & garment).sum() > 50
        drawn = render.astype(int)
        drawn[~garment] += np.array([-30, -10, -25])  # the model chose another tint
        drawn = Image.fromarray(drawn.clip(0, 255).astype(np.uint8))
        partial = image_tensor(render)
        out = np.asarray(harmonise_background([drawn], partial, keep_t, segmenter)[0]).astype(int)
        background = ~keep & ~ndimage.binary_dilation(garment, iterations=2)  # away from the garment's edge
        inner = ~keep & ndimage.binary_erosion(garment, iterations=2)
        error = lambda img, where: np.abs(img[where] - render[where].astype(int)).mean()  # noqa: E731
        assert error(np.asarray(drawn).astype(int), background) > 15
        errors.append(error(out, background))
        assert error(out, inner) < 3  # the garment is not repainted
        pasted = np.asarray(composite_kept_region([Image.fromarray(out.astype(np.uint8))], partial, keep_t)[0])
        assert np.array_equal(pasted[keep], render[keep])  # the kept region exactly, as before
    # the shift is measured next to the region's edge: a shadow there can leave a few levels
    assert max(errors) < 6 and np.mean(errors) < 3, errors
    every = torch.ones_like(keep_t)  # a region that is the whole frame leaves nothing to harmonise
    assert harmonise_background([drawn], partial, every, segmenter)[0] is drawn


def test_the_generated_garment_takes_the_shade_of_its_kept_part():
    """A garment drawn in another shade than its kept part (its pattern, seams and shading as in
    the render): harmonising moves the generated garment to the kept part's shade, and leaves the
    background, the pattern and the kept pixels as they were."""
    from scipy import ndimage

    from armani.data.synthetic import generate_row
    from armani.data.transforms import image_tensor
    from armani.models.segmenter import Segmenter
    from armani.pipeline import composite_kept_region, harmonise_garment

    segmenter = Segmenter.from_pretrained(Path(__file__).resolve().parents[1] / "checkpoints" / "armani" / "segmenter")
    keep = np.zeros((64, 64), bool)
    # the top half: a part of the garment and its background. (The renderer lights garments from
    # one side, so across a vertical edge the two halves differ in shade by themselves.)
    keep[:32] = True
    keep_t = torch.from_numpy(keep[None].astype(np.float32))
    errors = []
    for index in (5, 6, 7):
        row = generate_row(index, 64, seed=0)
        render, garment = row["image"], row["mask"] > 0
        assert (keep & garment).sum() > 100 and (~keep & garment).sum() > 100
        drawn = render.astype(int)
        # the model chose another shade (each channel moved away from its nearer bound: no clipping)
        drawn[garment & ~keep] += np.where(render[garment].mean(0) > 127, -1, 1) * np.array([25, 12, 20])
        drawn = Image.fromarray(drawn.clip(0, 255).astype(np.uint8))
        partial = image_tensor(render)
        out = np.asarray(harmonise_garment([drawn], partial, keep_t, segmenter)[0]).astype(int)
        inner = ~keep & ndimage.binary_erosion(garment, iterations=2)  # away from the garment's outline
        background = ~keep & ~ndimage.binary_dilation(garment, iterations=2)
        error = lambda img, where: np.abs(img[where] - render[where].astype(int)).mean()  # noqa: E731
        assert error(np.asarray(drawn).astype(int), inner) > 15
        errors.append(error(out, inner))
        assert error(out, background) < 3  # the studio is not repainted
        # one offset: the garment's own pattern and shading stay (the step is removed, not the detail)
        assert np.corrcoef(out[inner].ravel(), render[inner].astype(int).ravel())[0, 1] > 0.9
        pasted = np.asarray(composite_kept_region([Image.fromarray(out.astype(np.uint8))], partial, keep_t)[0])
        assert np.array_equal(pasted[keep], render[keep])  # the kept region exactly
    assert max(errors) < 8 and np.mean(errors) < 5, errors
    every = torch.ones_like(keep_t)  # a region that is the whole frame leaves nothing to harmonise
    assert harmonise_garment([drawn], partial, every, segmenter)[0] is drawn


def test_kept_token_mask_takes_whole_cells_one_in_from_the_edge():
    from armani.sampling import kept_token_mask

    keep = torch.zeros(64, 64, dtype=torch.bool)
    keep[:32, 8:40] = True  # cells: rows 0-7, columns 2-9 wholly inside
    cells = kept_token_mask(keep, 16).view(16, 16)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[0:7, 3:9] = True  # one cell in from the region's edge; the image's top edge is not an edge
    assert torch.equal(cells, expected)
    assert torch.equal(kept_token_mask(keep, 16, margin=0).view(16, 16)[:8, 2:10], torch.ones(8, 8, dtype=torch.bool))
    assert not kept_token_mask(torch.zeros(64, 64), 16).any()


def test_tokens_inside_the_kept_region_come_from_its_encoding(tiny_pipeline):
    """Autoregressive sampling with a partial image draws around the kept part: the image
    tokens wholly inside it are the codebook's encoding of the partial image."""
    from armani.data.images import pil_to_tensor
    from armani.sampling import kept_token_mask

    photo = _photo()
    out = tiny_pipeline(text="jacket", partial=photo, num_images=2, seed=3)
    keep = torch.from_numpy(np.asarray(out.keep_mask) > 0)
    cells = kept_token_mask(keep, tiny_pipeline.vqgan.grid_size)
    assert cells.any() and not cells.all()
    given = pil_to_tensor(out.partial) * keep  # the blanked pixels exactly 0, as the pipeline encodes them
    text_ids, _ = tiny_pipeline.prepare_text("jacket", [])
    encoded = tiny_pipeline.encode_image(given.unsqueeze(0), text_ids)[0]
    for ids in out.ids:
        assert torch.equal(ids[cells], encoded[cells])
    tiny_pipeline.settings.keep_tokens = False
    try:
        free = tiny_pipeline(text="jacket", partial=photo, num_images=2, seed=3)
    finally:
        tiny_pipeline.settings.keep_tokens = True
    assert not all(torch.equal(ids[cells], encoded[cells]) for ids in free.ids)


def test_a_top_named_without_its_sleeve_length_is_read_with_its_usual_one(tiny_pipeline):
    """Training captions always name the sleeve length (without it the model draws no sleeves):
    the pipeline reads "a pink coat" as "a pink long-sleeved coat", says so, and can be told not to."""
    out = tiny_pipeline(text="a pink coat with a belt", num_images=1, seed=0)
    assert any("no sleeve length named" in n and "'long-sleeved'" in n for n in out.notes), out.notes
    completed, read = tiny_pipeline.prepare_text("a pink coat with a belt", [])
    named, _ = tiny_pipeline.prepare_text("a pink long-sleeved coat with a belt", [])
    assert torch.equal(completed, named) and out.text == read
    tiny_pipeline.settings.complete_sleeve_length = False
    try:
        raw = tiny_pipeline(text="a pink coat with a belt", num_images=1, seed=0)
        plain, _ = tiny_pipeline.prepare_text("a pink coat with a belt", [])
    finally:
        tiny_pipeline.settings.complete_sleeve_length = True
    assert not torch.equal(plain, named) and not any("sleeve" in n for n in raw.notes)
    assert "sleeved" not in raw.text


@pytest.mark.parametrize("kwargs, message", [
    (dict(text="!!! ???"), "no words"),
    (dict(text="shirt", num_images=0), "between 1 and"),
    (dict(text="shirt", num_images=1000), "between 1 and"),
    (dict(text="shirt", sampler="nar"), "autoregressive"),
    (dict(text="shirt", sketch=np.zeros((1, 1, 3), np.uint8)), "at least 8 pixels"),
    (dict(text="shirt", sketch=b"not an image"), "sketch"),
    (dict(text="shirt", partial_keep_mask=np.ones((8, 8), bool)), "without the partial image"),
    (dict(text="shirt", partial=_photo(), partial_keep_mask=np.zeros((8, 8), bool)), "empty"),
    (dict(text="shirt", temperature=-1), ">= 0"),
    (dict(text="shirt", sketch=np.zeros((64, 64), np.uint8)), "no strokes"),
])
def test_bad_input_gets_a_clear_error(tiny_pipeline, kwargs, message):
    with pytest.raises(PipelineInputError, match=message):
        tiny_pipeline(**kwargs)


def test_long_text_is_truncated_with_a_note(tiny_pipeline):
    out = tiny_pipeline(text="a navy shirt with buttons " * 40, num_images=1)
    assert any("longer than" in n for n in out.notes)


def test_huge_image_is_downscaled_with_a_note(tiny_pipeline):
    big = Image.new("RGB", (6000, 5000), (200, 30, 30))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    out = tiny_pipeline(text="red coat", partial=buf.getvalue(), num_images=1)
    assert any("resized" in n or "downscaled" in n for n in out.notes)


def test_save_and_load_roundtrip(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = ArmaniPipeline.from_pretrained(tmp_path / "pipe")
    a = tiny_pipeline(text="white polo", num_images=2, seed=1)
    b = loaded(text="white polo", num_images=2, seed=1)
    assert torch.equal(a.ids, b.ids)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))


def test_baselines_share_identical_components_and_store_bf16(tiny_pipeline, tmp_path):
    import copy
    import json
    import shutil

    from safetensors.torch import load_file

    base = tmp_path / "ckpts" / "armani"
    tiny_pipeline.save_pretrained(base)
    variant = copy.copy(tiny_pipeline)
    variant.transformer = copy.deepcopy(tiny_pipeline.transformer)
    with torch.no_grad():
        variant.transformer.head.weight.mul_(1.5)  # a baseline differs in its transformer only
    out = tmp_path / "ckpts" / "dalle"
    variant.save_pretrained(out, share_with=base, storage_dtype="bfloat16")
    meta = json.loads((out / "pipeline.json").read_text())
    assert set(meta["shared"]) == set(meta["components"]) - {"transformer"}
    assert meta["shared"]["vqgan"] == "../armani/vqgan"
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.json", "tokenizer", "transformer"]
    stored = load_file(str(out / "transformer" / "model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in stored.values() if v.is_floating_point())
    loaded = ArmaniPipeline.from_pretrained(out)
    assert loaded.transformer.head.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.transformer.head.weight,
                               variant.transformer.head.weight.to(torch.bfloat16).float(), rtol=0, atol=0)
    for a, b in zip(loaded.vqgan.state_dict().values(), tiny_pipeline.vqgan.state_dict().values()):
        assert torch.equal(a, b)  # shared, float32: bit-identical
    loaded(text="white polo", num_images=1, seed=0)
    # The pipelines it refers to must stay beside it.
    shutil.rmtree(base)
    with pytest.raises(FileNotFoundError, match="shares its"):
        ArmaniPipeline.from_pretrained(out)


def test_missing_or_mismatched_checkpoints_fail_clearly(tiny_pipeline, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local folder"):
        ArmaniPipeline.from_pretrained(tmp_path / "nowhere")
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe" / "vqgan" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError):
        ArmaniPipeline.from_pretrained(tmp_path / "pipe")
    bad = ArmaniPipeline(tiny_pipeline.tokenizer, tiny_pipeline.sketch_tokenizer, tiny_pipeline.transformer,
                         segmenter=tiny_pipeline.segmenter, maskclip=tiny_pipeline.maskclip)
    with pytest.raises(ValueError, match="mismatched"):
        bad._check_consistency()


def test_progressive_previews(tiny_pipeline):
    seen = []
    tiny_pipeline(text="skirt", num_images=2, callback=lambda step, total, imgs: seen.append((step, total, len(imgs))),
                  callback_every=16)
    N = tiny_pipeline.vqgan.num_tokens
    assert [s for s, _, _ in seen] == list(range(16, N + 1, 16))
    assert all(total == N and n == 2 for _, total, n in seen)


def test_edit_part_changes_only_that_part(tiny_pipeline, tiny_run, monkeypatch):
    from armani.data.synthetic import generate_row

    row = None
    for i in range(50):  # a procedural garment that has sleeves
        cand = generate_row(i, size=tiny_pipeline.image_size, seed=5)
        if (np.asarray(cand["mask"]) == PART_ID["sleeve"]).any():
            row = cand
            break
    assert row is not None
    gt = torch.from_numpy(np.asarray(row["mask"]).astype(np.int64))[None]
    # The tiny segmenter is untrained: give it the ground truth so the region is known.
    monkeypatch.setattr(tiny_pipeline.segmenter, "predict", lambda image: gt)
    out = tiny_pipeline.edit_part(row["image"], "sleeve", "long blue sleeves", seed=0)
    region = out.token_region
    assert 0 < int(region.sum()) < region.numel()
    assert torch.equal(out.ids[0][~region], out.original_ids[0][~region])  # tokens outside: exactly kept
    img, orig, pix = (np.asarray(x) for x in (out.image, out.original, out.region))
    assert np.array_equal(img[pix == 0], orig[pix == 0])  # pixels outside: exactly the reconstruction
    with pytest.raises(PipelineInputError, match="pick a garment part"):
        tiny_pipeline.edit_part(row["image"], "body", "x")

"""The procedural garment dataset: determinism, mask/caption/attribute agreement, held-out
combinations, the CLI and the written dataset."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from armani.data import synthetic
from armani.data.captions import (
    CATEGORY_WORDS,
    NOISE_PHRASES,
    NUMBER_WORDS,
    PATTERN_WORDS,
    TYPICAL_SLEEVE,
    complete_sleeve_length,
)
from armani.data.synthetic import (
    CATEGORIES,
    COLORS,
    DEFAULT_HELDOUT,
    PATTERNS,
    SLEEVES,
    HeldoutCombo,
    generate_dataset,
    generate_row,
    parse_heldout,
    render_garment,
    sample_attributes,
    write_caption,
)
from armani.parts import COUNTABLE_PARTS, PART_ID, PART_NAMES, PART_WORDS


def _components(mask: np.ndarray, part: str) -> tuple[int, np.ndarray]:
    """Number of 8-connected components of ``part`` and their centroids (x, y)."""
    n, _, _, centroids = cv2.connectedComponentsWithStats((mask == PART_ID[part]).astype(np.uint8), connectivity=8)
    return n - 1, centroids[1:]


def _has_phrase(caption: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z-]){re.escape(phrase)}(?![a-z])", caption.lower()) is not None


@pytest.fixture(scope="module")
def rows():
    return [generate_row(i, 64, seed=3) for i in range(200)]


def test_vocabulary_covers_the_brief():
    assert {"t-shirt", "shirt", "polo", "dress", "skirt", "trousers", "shorts", "jacket", "hoodie", "coat",
            "tank top", "sweater"} <= set(CATEGORIES)
    assert {"black", "white", "grey", "red", "orange", "yellow", "green", "blue", "navy", "purple", "pink",
            "brown", "beige"} <= set(COLORS)
    assert set(PATTERNS) == {"plain", "striped", "checked", "dotted"}
    assert set(SLEEVES) == {"sleeveless", "short", "long"}
    assert all(len(rgb) == 3 and all(0 <= c <= 255 for c in rgb) for rgb in COLORS.values())


def test_same_seed_same_bytes_different_seed_differs():
    a = [generate_row(i, 64, seed=7) for i in range(5)]
    b = [generate_row(i, 64, seed=7) for i in range(5)]
    c = [generate_row(i, 64, seed=8) for i in range(5)]
    for x, y in zip(a, b):
        assert x["image"].tobytes() == y["image"].tobytes()
        assert x["mask"].tobytes() == y["mask"].tobytes()
        assert x["caption"] == y["caption"] and x["attributes"] == y["attributes"]
    assert all(x["image"].tobytes() != z["image"].tobytes() for x, z in zip(a, c))
    # Splits are different streams: row 0 of train and of val are different garments.
    val = generate_row(0, 64, seed=7, split="val")
    assert val["image"].tobytes() != a[0]["image"].tobytes()
    # Global numpy state plays no part.
    np.random.seed(0)
    d = generate_row(3, 64, seed=7)
    np.random.seed(1)
    assert generate_row(3, 64, seed=7)["image"].tobytes() == d["image"].tobytes() == a[3]["image"].tobytes()


def test_no_two_images_alike(rows):
    digests = {hashlib.sha1(r["image"].tobytes()).hexdigest() for r in rows}
    assert len(digests) == len(rows)
    assert len({r["caption"] for r in rows}) > 150  # templates and synonyms vary


def test_mask_parts_agree_with_attributes(rows):
    categories = set()
    for r in rows:
        a, mask, image = r["attributes"], r["mask"], r["image"]
        categories.add(a["category"])
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8 and mask.max() < len(PART_NAMES)
        present = {PART_NAMES[k] for k in np.unique(mask) if k != 0}
        assert present == set(a["parts"]), (a, present)
        assert all(count >= 1 for count in a["parts"].values())
        for part in COUNTABLE_PARTS:
            assert _components(mask, part)[0] == a["parts"].get(part, 0), (part, a)
        for part, count in a["parts"].items():
            if part not in COUNTABLE_PARTS:
                assert count == 1, (part, a)  # non-countable parts are recorded as present
        if "button" in a["parts"]:
            assert 1 <= a["parts"]["button"] <= 6
        assert (a["sleeve"] is None) == (a["category"] in ("skirt", "trousers", "shorts"))
        assert ("sleeve" in a["parts"]) == (a["sleeve"] in ("short", "long"))
    assert categories == set(CATEGORIES)


def test_pocket_sides_match_the_mask(rows):
    seen = set()
    for r in rows:
        a, mask = r["attributes"], r["mask"]
        n, centroids = _components(mask, "pocket")
        if n == 0:
            assert a["pocket_side"] is None
            continue
        ys, xs = np.nonzero(mask)
        centre = (xs.min() + xs.max()) / 2  # the garment's bounding-box centre
        sides = {"left" if x < centre else "right" for x, _ in centroids}
        expected = {"left": {"left"}, "right": {"right"}, "both": {"left", "right"}}[a["pocket_side"]]
        assert sides == expected and n == (2 if a["pocket_side"] == "both" else 1), a
        seen.add(a["pocket_side"])
    assert seen == {"left", "right", "both"}


def test_captions_state_every_attribute(rows):
    colour_words = set(COLORS)
    for r in rows:
        a, caption = r["attributes"], r["caption"]
        low = caption.lower()
        assert any(_has_phrase(caption, w) for w in CATEGORY_WORDS[a["category"]]), caption
        assert {c for c in colour_words if _has_phrase(caption, c)} == {a["color"]}, caption
        patterns = {p for p, words in PATTERN_WORDS.items() if any(_has_phrase(caption, w) for w in words)}
        assert patterns == ({a["pattern"]} if a["pattern"] != "plain" else patterns & {"plain"}), caption
        if a["sleeve"] is not None:
            assert a["sleeve"] in low, caption
        mentioned = {PART_WORDS[w] for w in re.findall(r"[a-z]+", low) if w in PART_WORDS}
        assert mentioned == set(a["parts"]) - {"body"}, (caption, a["parts"])
        if "button" in a["parts"]:
            assert re.search(rf"\b{NUMBER_WORDS[a['parts']['button']]}[ -]buttons?\b", low), caption
        if "pocket" in a["parts"]:
            if a["pocket_side"] == "both":
                assert re.search(r"\btwo (\w+ )?pockets\b", low) and re.search(r"each side|both sides|left and right", low)
            else:
                assert re.search(rf"\ba (single )?(\w+ )?pocket on the {a['pocket_side']}\b", low), caption


def test_caption_content_example():
    attributes = {"category": "shirt", "color": "navy", "pattern": "plain", "sleeve": "long",
                  "parts": {"body": 1, "sleeve": 1, "cuff": 1, "collar": 1, "pocket": 1, "button": 5, "placket": 1},
                  "pocket_side": "left"}
    captions = {write_caption(attributes, np.random.default_rng(i)) for i in range(40)}
    assert len(captions) > 20
    for c in captions:
        assert "navy" in c.lower() and re.search(r"\bfive[ -]button", c.lower()) and "on the left" in c.lower()
    assert any("long-sleeved" in c for c in captions) and any("long sleeves" in c for c in captions)
    assert any(any(n in c for n in NOISE_PHRASES) for c in captions)


def test_a_prompt_without_a_sleeve_length_gets_the_one_its_garment_has_most_often():
    """Captions always name the sleeve length, so the model reads a prompt that does not as
    sleeveless; ``complete_sleeve_length`` adds the length the generator draws most often for
    that category, and leaves every caption the generator writes (the evaluation's prompts) as
    it is."""
    drawn: dict[str, Counter] = {}
    rng = np.random.default_rng(0)
    for _ in range(3000):
        a = sample_attributes(rng)
        drawn.setdefault(a["category"], Counter())[a["sleeve"]] += 1
    typical = {cat: c.most_common(1)[0][0] for cat, c in drawn.items() if None not in c}
    assert TYPICAL_SLEEVE == typical
    for seed in range(3):  # the evaluation's prompts: seeds 0-2, rows 0-49 of val and heldout
        for split in ("train", "val", "heldout"):
            for i in range(200):
                rng = synthetic.row_rng(seed, split, i)
                caption = write_caption(sample_attributes(rng, split), rng)
                assert complete_sleeve_length(caption) == (caption, None), caption
    assert complete_sleeve_length("a pink coat with a belt, two buttons and a hood") == (
        "a pink long-sleeved coat with a belt, two buttons and a hood", "long-sleeved")
    assert complete_sleeve_length("Red T-shirt") == ("Red short-sleeved T-shirt", "short-sleeved")
    assert complete_sleeve_length("navy polo shirt") == ("navy short-sleeved polo shirt", "short-sleeved")
    assert complete_sleeve_length("a tank top")[1] == "sleeveless"
    for unchanged in ("a coat with short sleeves", "a long-sleeved tee", "a sleeveless dress", "green trousers",
                      "something warm", "a short sleeve shirt"):
        assert complete_sleeve_length(unchanged) == (unchanged, None)


def test_noise_phrases_say_nothing_about_the_garment():
    vocab = set(PART_WORDS) | set(COLORS) | set(NUMBER_WORDS) | {w for ws in PATTERN_WORDS.values() for w in ws}
    vocab |= {w for ws in CATEGORY_WORDS.values() for w in ws}
    for phrase in NOISE_PHRASES:
        assert not set(re.findall(r"[a-z-]+", phrase.lower())) & vocab, phrase


def test_heldout_combos_only_where_they_belong():
    for split in ("train", "val"):
        for i in range(600):
            a = sample_attributes(synthetic.row_rng(0, split, i), split)
            assert not any(c.matches(a) for c in DEFAULT_HELDOUT), a
    found = set()
    for i in range(120):
        a = sample_attributes(synthetic.row_rng(0, "heldout", i), "heldout")
        hits = [str(c) for c in DEFAULT_HELDOUT if c.matches(a)]
        assert hits, a
        found.update(hits)
    assert found == {"t-shirt+zipper", "dress+hood", "trousers+checked", "coat+pink"}
    # Without held-out combos the base distribution does produce them in train.
    seen = {str(c) for i in range(3000) for c in DEFAULT_HELDOUT
            if c.matches(sample_attributes(synthetic.row_rng(0, "train", i), "train", heldout=()))}
    assert seen == found


def test_heldout_garments_are_drawn_with_their_parts():
    for i in range(40):
        r = generate_row(i, 64, seed=0, split="heldout")
        a, mask = r["attributes"], r["mask"]
        if a["category"] == "t-shirt":
            assert (mask == PART_ID["zipper"]).sum() > 3 and "zip" in r["caption"].lower()
        if a["category"] == "dress":
            assert (mask == PART_ID["hood"]).sum() > 10 and "hood" in r["caption"].lower()


def test_parse_heldout():
    assert parse_heldout("none") == () and parse_heldout("default") == DEFAULT_HELDOUT
    assert parse_heldout("t-shirt+zipper, coat+pink") == (HeldoutCombo("t-shirt", part="zipper"),
                                                          HeldoutCombo("coat", color="pink"))
    with pytest.raises(ValueError):
        parse_heldout("coat+sparkly")
    with pytest.raises(ValueError):
        HeldoutCombo("cape", part="hood")


@pytest.mark.parametrize("size", [64, 128, 256])
def test_renders_at_several_sizes(size):
    for i in range(12):
        rng = synthetic.row_rng(11, "train", i)
        a = sample_attributes(rng)
        image, mask = render_garment(a, size, rng)
        assert image.shape == (size, size, 3) and mask.shape == (size, size)
        assert {PART_NAMES[k] for k in np.unique(mask) if k} == set(a["parts"])
        for part in COUNTABLE_PARTS:
            assert _components(mask, part)[0] == a["parts"].get(part, 0)
        garment = mask > 0
        assert 0.15 < garment.mean() < 0.8  # fills a good part of the frame, background around it
        assert not garment[0].all() and not garment[:, 0].all()


def test_image_and_mask_line_up():
    """Part colours in the image change exactly where the mask says: buttons contrast with
    the body and the background is light."""
    for i in range(30):
        r = generate_row(i, 128, seed=5)
        image, mask = r["image"].astype(float), r["mask"]
        background = image[mask == 0].mean()
        assert background > 150
        if "button" in r["attributes"]["parts"]:
            buttons = image[mask == PART_ID["button"]].mean(axis=0)
            body = np.median(image[mask == PART_ID["body"]], axis=0)
            assert np.abs(buttons - body).sum() > 60, r["attributes"]


def test_generate_dataset_independent_of_workers():
    one = generate_dataset(300, size=32, seed=1, workers=1, progress=False)
    two = generate_dataset(300, size=32, seed=1, workers=2, progress=False)
    assert one._fingerprint == two._fingerprint
    assert one.data.table.equals(two.data.table)
    assert one[299]["caption"] == generate_row(299, 32, seed=1)["caption"]


def test_generate_dataset_from_a_later_row_draws_the_same_garments():
    whole = generate_dataset(300, size=32, seed=1, workers=1, progress=False)
    tail = generate_dataset(300, size=32, seed=1, workers=2, progress=False, start=260)
    assert len(tail) == 40 and tail.data.table.equals(whole.select(range(260, 300)).data.table)
    assert tail._fingerprint != whole._fingerprint
    with pytest.raises(ValueError, match="start"):
        generate_dataset(300, size=32, start=300, progress=False)


def test_cli_writes_a_readable_dataset_and_refuses_to_clobber(tmp_path: Path, capsys):
    import datasets

    out = tmp_path / "ds"
    assert synthetic.main(["--num", "12", "--size", "64", "--seed", "2", "--out", str(out), "--workers", "2"]) == 0
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 12 and set(ds.column_names) == {"image", "mask", "caption", "attributes"}
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["mask"], datasets.Image)
    row = ds[4]
    assert row["image"].mode == "RGB" and row["mask"].mode == "L" and row["image"].size == (64, 64)
    expected = generate_row(4, 64, seed=2)
    assert np.array_equal(np.asarray(row["image"]), expected["image"])
    assert np.array_equal(np.asarray(row["mask"]), expected["mask"])
    assert json.loads(row["attributes"]) == expected["attributes"] and row["caption"] == expected["caption"]

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit, match="--overwrite"):
        synthetic.main(["--num", "5", "--out", str(out)])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        synthetic.main(["--num", "5", "--out", str(other), "--overwrite"])
    assert (other / "keep.txt").read_text() == "mine"

    # Same seed, same bytes on disk (workers do not matter); --overwrite replaces.
    again = tmp_path / "again"
    synthetic.main(["--num", "12", "--size", "64", "--seed", "2", "--out", str(again), "--workers", "1"])
    assert {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()} == \
        {p.relative_to(out): b for p, b in before.items()}
    synthetic.main(["--num", "7", "--size", "32", "--seed", "3", "--out", str(out), "--overwrite"])
    assert len(datasets.load_from_disk(str(out))) == 7
    heldout = tmp_path / "held"
    synthetic.main(["--num", "8", "--split", "heldout", "--out", str(heldout)])
    for a in datasets.load_from_disk(str(heldout))["attributes"]:
        assert any(c.matches(json.loads(a)) for c in DEFAULT_HELDOUT)


@pytest.mark.parametrize("category,count", [("polo", 3), ("jacket", 4), ("coat", 6), ("dress", 6), ("shirt", 6),
                                            ("skirt", 5)])
def test_most_buttons_stay_apart_at_64px(category, count):
    """The tightest case: the most buttons a category gets, on the smallest image."""
    drawn = 0
    for i in range(200):
        rng = np.random.default_rng([category == "coat", count, i])
        a = synthetic._sample_garment(category, rng)
        if "button" not in a["parts"]:
            continue
        a["parts"]["button"] = count
        image, mask = render_garment(a, 64, rng)
        assert _components(mask, "button")[0] == count, a
        drawn += 1
        if drawn == 25:
            break
    assert drawn == 25


@pytest.mark.parametrize("size", [64, 128, 256])
def test_button_row_keeps_its_minimum_spacing(size):
    """Even when asked to fit six buttons in no room, they come out as six separate discs."""
    from armani.data import garments

    for angle in (-0.06, 0.0, 0.06):
        pose = garments.Pose(size=size, scale=0.8, angle=angle, cx=0.5, cy=0.5)
        canvas = garments._Canvas(pose)
        style = garments._Style(np.zeros((size, size, 3), np.float32), *(np.full(3, 9.0, np.float32),) * 4)
        garments._button_row(canvas, (0.5, 0.3), (0.5, 0.31), 6, style)
        n, centroids = _components(canvas.mask, "button")
        assert n == 6
        assert np.all(np.diff(centroids[:, 1]) >= 2 * garments._button_radius(pose) + 2 - 1e-6)

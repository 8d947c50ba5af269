"""The Compare tab's part-accuracy verdict: prompt parsing (round trip on the dataset's own
captions), the verdict on a real render with a briefly trained classifier, the "no
classifier" answer and the demo handler that shows it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from armani.data.captions import write_caption
from armani.data.synthetic import generate_row, row_rng, sample_attributes
from armani.evaluation import attributes, part_verdict, requested_attributes
from armani.evaluation import verdict as verdict_module
from armani.evaluation.attributes import (
    ATTRIBUTE_KEYS,
    AttributeClassifier,
    AttributeClassifierConfig,
    encode_attributes,
)
from armani.evaluation.verdict import NO_CLASSIFIER_MESSAGE, NOTHING_REQUESTED_MESSAGE

ROOT = Path(__file__).resolve().parents[1]
HEADER = re.compile(r"^(\d+)/(\d+) requested: ")
_ORDER = ("category", "color", "pattern", "sleeve", "parts", "pocket_side")


# -- parsing ----------------------------------------------------------------------------------
def _stated(record: dict, parsed: dict) -> dict:
    """What a caption written from ``record`` states, in requested_attributes' form."""
    out = {"category": record["category"], "color": record["color"]}
    if record["pattern"] != "plain" or parsed.get("pattern") == "plain":  # "plain" is said only sometimes
        out["pattern"] = record["pattern"]
    if record["sleeve"] is not None:
        out["sleeve"] = record["sleeve"]
    parts = {name: n for name, n in record["parts"].items() if name != "body"}
    if record["sleeve"] == "sleeveless":
        parts = {"sleeve": 0, **parts}  # stated absent ("sleeveless"); the records list only present parts
    if parts:
        out["parts"] = parts
    if record["pocket_side"] is not None:
        out["pocket_side"] = record["pocket_side"]
    return {key: out[key] for key in _ORDER if key in out}


def test_parser_round_trips_the_dataset_captions():
    checked = 0
    for split in ("train", "val", "heldout"):
        for i in range(150):
            rng = row_rng(11, split, i)
            record = sample_attributes(rng, split)
            caption = write_caption(record, rng)  # noisy sentences included, plain pattern often unsaid
            parsed = requested_attributes(caption)
            assert parsed == _stated(record, parsed), caption
            assert list(parsed.get("parts", {})) == list(_stated(record, parsed).get("parts", {}))  # part order
            checked += 1
    assert checked == 450


def test_parser_reads_hand_written_prompts():
    assert requested_attributes("navy long-sleeved shirt with five buttons and a pocket on the left") == {
        "category": "shirt", "color": "navy", "sleeve": "long", "parts": {"sleeve": 1, "pocket": 1, "button": 5},
        "pocket_side": "left"}
    # A colour said of a part is not the garment's; negations ask for absence (count 0).
    assert requested_attributes("Red polo shirt with white buttons, no hood and without a belt") == {
        "category": "polo", "color": "red", "parts": {"hood": 0, "button": None, "belt": 0}}
    assert requested_attributes("white buttons on a gray jumper") == {
        "category": "sweater", "color": "grey", "parts": {"button": None}}
    # Digits, hyphenated counts, sides, adjectives of parts, synonyms.
    assert requested_attributes("plaid coat in navy blue with a 4-button front and two pockets, left and right") == {
        "category": "coat", "color": "navy", "pattern": "checked", "parts": {"pocket": 2, "button": 4},
        "pocket_side": "both"}
    assert requested_attributes("sleeveless collarless dress with hooded top and a left chest pocket") == {
        "category": "dress", "sleeve": "sleeveless", "parts": {"sleeve": 0, "collar": 0, "hood": 1, "pocket": 1},
        "pocket_side": "left"}
    assert requested_attributes("short sleeve hoodie with 3 buttons") == {
        "category": "hoodie", "sleeve": "short", "parts": {"sleeve": 1, "hood": 1, "button": 3}}
    # A side said of another part is not the pocket's.
    assert requested_attributes("jacket with a logo on the left and two pockets") == {
        "category": "jacket", "parts": {"pocket": 2, "logo": 1}}
    # Unknown words are ignored; nothing known gives nothing.
    assert requested_attributes("a lovely banana-shaped spaceship, very fast") == {}
    assert requested_attributes("") == {}


# -- the verdict --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classifier fitted (a few seconds) to 12 procedural 64 px renders, saved with a
    validation.json that trusts every attribute except the pattern."""
    torch.manual_seed(0)
    from armani.data.transforms import image_tensor

    rows = [generate_row(i, 64, seed=5) for i in range(12)]
    x = torch.stack([image_tensor(r["image"]) for r in rows])
    encoded = [encode_attributes(r["attributes"]) for r in rows]
    targets = {k: torch.stack([e[k] for e in encoded]) for k in encoded[0]}
    model = AttributeClassifier(AttributeClassifierConfig(image_size=32, base_channels=8, channel_mults=(1, 2),
                                                          groups=4, pool=2, feature_dim=32, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model.loss(x, targets)
        opt.zero_grad()
        loss.loss.backward()
        opt.step()
    accuracy = {key: (0.5 if key == "pattern" else 1.0) for key in ATTRIBUTE_KEYS}
    folder = model.save_pretrained(tmp_path_factory.mktemp("verdict") / "attribute_classifier",
                                   validation={"split": "val", "num_images": 12, "accuracy": accuracy})
    return Path(folder), rows


def _expected_checks(requested: dict) -> int:
    """How many checks the verdict makes for ``requested`` (see the verdict module doc)."""
    parts = requested.get("parts", {})
    n = sum(key in requested for key in ("category", "color", "pattern", "sleeve", "pocket_side"))
    return n + sum(not (name == "sleeve" and "sleeve" in requested) for name in parts)


def test_verdict_on_a_render_names_the_requested_attributes(trained):
    folder, rows = trained
    verdict_module.clear_cache()
    row = next(r for r in rows if r["attributes"]["pattern"] != "plain" and len(r["attributes"]["parts"]) > 2)
    image, caption = Image.fromarray(row["image"]), row["caption"]
    requested = requested_attributes(caption)
    out = part_verdict(image, caption, classifier=folder)
    match = HEADER.match(out)
    assert match, out
    right, counted = int(match[1]), int(match[2])
    assert counted == _expected_checks(requested) - 1 and 0 <= right <= counted  # the pattern is untrusted
    assert "pattern (untrusted)" in out
    assert re.search(r"\bcategory (✓|\S+≠\S+ ✗)", out) and re.search(r"\bcolour (✓|\S+≠\S+ ✗)", out)
    for name in requested.get("parts", {}):
        if not (name == "sleeve" and "sleeve" in requested):
            assert re.search(rf"\b{name}s? ", out), (name, out)
    assert out.count("✓") == right and out.count("✗") == counted - right
    # The same image as an array gives the same verdict; the classifier was loaded once.
    assert part_verdict(row["image"], caption, classifier=folder) == out
    assert len(verdict_module._CACHE) == 1


def test_verdict_marks_wrong_attributes_with_what_the_classifier_read(trained):
    folder, rows = trained
    model = AttributeClassifier.from_pretrained(folder)
    image = Image.fromarray(rows[0]["image"])
    record = model.predict(verdict_module._image_tensor(image))[0]  # what the verdict's classifier reads
    other = "skirt" if record["category"] != "skirt" else "coat"
    buttons = (record["parts"].get("button", 0) + 1) % 7
    words = ["zero", "one", "two", "three", "four", "five", "six"]
    text = f"{record['color']} {other} with {words[buttons]} buttons and no logo"
    out = part_verdict(image, text, classifier=folder)
    logo_ok = "logo" not in record["parts"]
    assert out.startswith(f"{1 + logo_ok}/4 requested: category {record['category']}≠{other} ✗ colour ✓ "), out
    shown = record["parts"].get("button", 0)
    assert f"buttons {shown}≠{buttons} ✗" in out
    assert ("logo ✓" if logo_ok else "logo present≠absent ✗") in out
    # An AttributeClassifier object without validation: nothing is trusted, nothing counted.
    untrusted = part_verdict(image, text, classifier=model)
    assert untrusted.startswith("0/0 requested: category (untrusted) colour (untrusted)"), untrusted
    assert part_verdict(image, "a lovely spaceship", classifier=folder) == NOTHING_REQUESTED_MESSAGE


def test_without_a_classifier_the_verdict_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.setattr(attributes, "default_classifier_dir", lambda: tmp_path / "attribute_classifier")
    verdict_module.clear_cache()
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    assert part_verdict(image, "red dress with a belt") == NO_CLASSIFIER_MESSAGE
    assert NO_CLASSIFIER_MESSAGE.startswith("n/a (no attribute classifier: train it with `accelerate launch "
                                            "src/armani/train.py --config default --stage attribute_classifier`")
    assert part_verdict(image, "red dress", classifier=tmp_path / "empty") == NO_CLASSIFIER_MESSAGE


def test_demo_compare_handler_shows_the_verdict(trained, monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT))
    from demo import handlers

    folder, rows = trained
    image, caption = Image.fromarray(rows[1]["image"]), rows[1]["caption"]
    monkeypatch.setattr(handlers, "_VERDICT", None)  # the shim imports armani.evaluation.part_verdict again
    monkeypatch.setattr(attributes, "default_classifier_dir", lambda: folder)
    verdict_module.clear_cache()
    shown = handlers.part_verdict(image, caption)
    assert HEADER.match(shown), shown
    assert shown == part_verdict(image, caption, classifier=folder)
    monkeypatch.setattr(attributes, "default_classifier_dir", lambda: tmp_path / "none")
    verdict_module.clear_cache()
    assert handlers.part_verdict(image, caption) == NO_CLASSIFIER_MESSAGE
    verdict_module.clear_cache()

"""Product-style captions written from a garment's attribute record.

Every attribute in the record is stated, so a caption can be checked against its image:
the category (by one of :data:`CATEGORY_WORDS`), the colour name (exactly as in
``COLORS``; no other colour word ever appears), the pattern (a word from
:data:`PATTERN_WORDS`; for "plain" the word is said in about half of the captions and
otherwise left implicit: no pattern word means plain), the sleeve length ("long-sleeved",
"with long sleeves", "sleeveless", ...), and each part through a word that
``armani.parts.PART_WORDS`` maps to it. Counts of buttons, pockets and straps are number
words right before the noun ("five buttons", "a five-button front", "two pockets"), a
single pocket is "a ... pocket", and pocket sides are "on the left" / "on the right" /
"on both sides" / "one on each side" (the image's left). Some captions carry a short
"noisy" sentence that says nothing about the garment ("New season."), as shop text does;
those sentences contain no category, colour, pattern, part or number word.
"""

from __future__ import annotations

import re

import numpy as np

from armani.data.garments import BOTTOMS

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("t-shirt", "tee"),
    "shirt": ("shirt",),
    "polo": ("polo shirt", "polo"),
    "dress": ("dress",),
    "skirt": ("skirt",),
    "trousers": ("trousers", "pants"),
    "shorts": ("shorts",),
    "jacket": ("jacket",),
    "hoodie": ("hoodie",),
    "coat": ("coat",),
    "tank top": ("tank top", "tank"),
    "sweater": ("sweater", "jumper"),
}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "striped": ("striped", "stripes"),
    "checked": ("checked", "check"),
    "dotted": ("dotted", "polka-dot", "dots"),
}
NOISE_PHRASES: tuple[str, ...] = (
    "Perfect for weekends.", "New season.", "A wardrobe essential.", "Easy to wear.",
    "Limited edition.", "Regular fit.", "Relaxed fit.", "Machine washable.",
    "Made from soft cotton.", "Online exclusive.", "Ideal for everyday wear.",
    "Great for layering.", "Back in stock.", "Designed in our studio.",
)
_TEMPLATES: tuple[str, ...] = (
    "{head} with {details}.",
    "{head}, featuring {details}.",
    "{head}. Features {details}.",
    "{head} that comes with {details}.",
    "This {head} has {details}.",
    "{head}: {details}.",
    "{head} finished with {details}.",
)
_POCKET_KINDS: dict[str, tuple[str, ...]] = {
    "shirt": ("chest",), "t-shirt": ("chest",), "jacket": ("patch",),
    "coat": ("patch",), "hoodie": ("pouch", "kangaroo"), "dress": ("side", "slanted"),
    "skirt": ("side", "slanted"), "trousers": ("side", "slanted", "hip"), "shorts": ("side", "slanted", "hip"),
}


# The sleeve length each top is drawn with most often by ``armani.data.synthetic`` (bottoms have
# none). A caption always names it, so a model trained on these captions reads a prompt that does
# not as "no sleeves" (a coat with a belt is drawn sleeveless); ``complete_sleeve_length`` adds it.
TYPICAL_SLEEVE: dict[str, str] = {
    "t-shirt": "short", "shirt": "long", "polo": "short", "dress": "sleeveless", "jacket": "long",
    "coat": "long", "hoodie": "long", "tank top": "sleeveless", "sweater": "long",
}
_SLEEVE_LENGTH = re.compile(r"\bsleeveless\b|\b(?:long|short)[- ]sleeve[sd]?\b", re.IGNORECASE)
_CATEGORY_NOUN = re.compile(
    r"\b(" + "|".join(sorted((re.escape(w) for ws in CATEGORY_WORDS.values() for w in ws), key=len, reverse=True))
    + r")\b", re.IGNORECASE)
_NOUN_CATEGORY = {w: cat for cat, ws in CATEGORY_WORDS.items() for w in ws}


def complete_sleeve_length(text: str) -> tuple[str, str | None]:
    """``text`` with the sleeve length of its garment added when it names a top but no length.

    Returns (text, the words added or None). The length is the category's most common one in
    training (:data:`TYPICAL_SLEEVE`), put before the first category noun as captions put it:
    "a pink coat with a belt" -> "a pink long-sleeved coat with a belt". A text that names a
    length, names no category, or names a bottom comes back unchanged.
    """
    if _SLEEVE_LENGTH.search(text):
        return text, None
    noun = _CATEGORY_NOUN.search(text)
    if noun is None:
        return text, None
    sleeve = TYPICAL_SLEEVE.get(_NOUN_CATEGORY[noun.group(1).lower()])
    if sleeve is None:
        return text, None
    words = "sleeveless" if sleeve == "sleeveless" else f"{sleeve}-sleeved"
    return text[: noun.start()] + words + " " + text[noun.start():], words


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(rng: np.random.Generator, n: int, singular: str, plural: str, adjective_forms: tuple[str, ...]) -> str:
    word = NUMBER_WORDS[n]
    forms = [f"{word} {singular if n == 1 else plural}"] + [f.format(w=word) for f in adjective_forms]
    return _pick(rng, forms)


def _part_phrases(attributes: dict, rng: np.random.Generator, in_head: set[str]) -> list[str]:
    cat, parts = attributes["category"], attributes["parts"]
    out: list[str] = []
    if "hood" in parts and "hood" not in in_head and (cat != "hoodie" or rng.random() < 0.5):
        out.append(_pick(rng, ("a hood", "a drawstring hood", "a roomy hood")))
    if "collar" in parts:
        if cat in ("shirt",):
            out.append(_pick(rng, ("a pointed collar", "a classic collar", "a spread collar")))
        elif cat == "polo":
            out.append(_pick(rng, ("a ribbed collar", "a polo collar", "a soft collar")))
        elif cat in ("jacket", "coat") and "zipper" not in parts:
            out.append(_pick(rng, ("a notched collar", "a lapel collar", "a wide collar")))
        elif cat in ("jacket", "coat"):
            out.append(_pick(rng, ("a stand collar", "a high collar")))
        else:
            out.append(_pick(rng, ("a ribbed neckline", "a round neckline", "a crew neckline")))
    if "placket" in parts:
        out.append(_pick(rng, ("a short placket", "a neat placket") if cat == "polo" else ("a front placket", "a full placket")))
    if "button" in parts:
        out.append(_count_phrase(rng, parts["button"], "button", "buttons",
                                 ("a {w}-button front", "{w}-button fastening", "button fastening with {w} buttons"
                                  if parts["button"] > 1 else "{w}-button fastening")))
    if "zipper" in parts and "zipper" not in in_head:
        if cat == "t-shirt":
            out.append(_pick(rng, ("a quarter zip", "a short zip at the neck", "a half zip")))
        else:
            out.append(_pick(rng, ("a full-length zip", "a front zipper", "zip fastening", "a zipper down the front")))
    if "strap" in parts:
        out.append(_count_phrase(rng, parts["strap"], "strap", "straps", ("{w} thin straps", "{w} shoulder straps")))
    if "waistband" in parts:
        out.append(_pick(rng, ("an elastic waistband", "a wide waistband", "a waistband")))
    if "belt" in parts and "belt" not in in_head:
        out.append(_pick(rng, ("a belt", "a matching belt", "a buckled belt")))
    if "pocket" in parts:
        n, side = parts["pocket"], attributes["pocket_side"]
        kind = _pick(rng, _POCKET_KINDS.get(cat, ("side",)))
        if n == 1:
            out.append(_pick(rng, (f"a {kind} pocket on the {side}", f"a {kind} pocket on the {side} side",
                                   f"a single {kind} pocket on the {side}")))
        else:
            out.append(_pick(rng, (f"two {kind} pockets, one on each side", f"two {kind} pockets on both sides",
                                   f"two {kind} pockets, left and right")))
    if "logo" in parts:
        out.append(_pick(rng, ("a small logo", "an embroidered logo", "a small emblem", "a logo badge", "a printed logo")))
    if "cuff" in parts:
        out.append(_pick(rng, ("cuffs", "ribbed cuffs", "neat cuffs", "cuffed sleeves")))
    if "hem" in parts:
        if cat in ("trousers", "shorts"):
            out.append(_pick(rng, ("a turned-up hem", "a turn-up hem")))
        else:
            out.append(_pick(rng, ("a ribbed hem", "a banded hem", "a wide hem band", "a neat hemline")))
    return out


def write_caption(attributes: dict, rng: np.random.Generator) -> str:
    """A product caption stating every attribute in ``attributes`` (see the module docstring)."""
    cat, color, pattern, sleeve = attributes["category"], attributes["color"], attributes["pattern"], attributes["sleeve"]
    parts = attributes["parts"]
    adjectives: list[str] = []  # before the category word, after the colour
    details: list[str] = []
    in_head: set[str] = set()
    if pattern != "plain":
        if rng.random() < 0.65:
            adjectives.append(_pick(rng, {"striped": ("striped",), "checked": ("checked", "check"),
                                          "dotted": ("dotted", "polka-dot")}[pattern]))
        else:
            details.append(_pick(rng, {"striped": ("a striped pattern", "stripes"), "checked": ("a check pattern",),
                                       "dotted": ("polka dots", "a dotted print")}[pattern]))
    elif rng.random() < 0.5:
        adjectives.append(_pick(rng, PATTERN_WORDS["plain"]))
    if sleeve == "sleeveless":
        adjectives.append("sleeveless")
    elif sleeve is not None:
        if rng.random() < 0.5:
            adjectives.append(f"{sleeve}-sleeved")
        else:
            details.append(f"{sleeve} sleeves")
    for part, adjective in (("hood", "hooded"), ("belt", "belted"), ("zipper", "zip-up")):
        if part in parts and cat not in ("hoodie",) and rng.random() < 0.35 and not (part == "zipper" and cat == "t-shirt"):
            adjectives.append(adjective)
            in_head.add(part)
    noun = _pick(rng, CATEGORY_WORDS[cat])
    if rng.random() < 0.7:
        head = " ".join([color] + adjectives + [noun])
    else:
        head = " ".join(adjectives + [noun]) + f" in {color}"
    if cat in BOTTOMS and cat != "skirt" and rng.random() < 0.15:
        head = "pair of " + head
    details += _part_phrases(attributes, rng, in_head)
    if details:
        template = _pick(rng, _TEMPLATES)
        text = template.format(head=head, details=_join(details))
    else:
        text = head + "."
    text = text[0].upper() + text[1:]
    if rng.random() < 0.35:
        noise = _pick(rng, NOISE_PHRASES)
        text = f"{noise} {text}" if rng.random() < 0.3 else f"{text} {noise}"
    return text

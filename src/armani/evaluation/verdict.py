"""The Compare tab's part-accuracy verdict: what a prompt asks for, and whether an image has it.

:func:`requested_attributes` reads a free-text prompt into the attributes it asks for, in
the attribute-record vocabulary of the procedural dataset (:mod:`armani.data.synthetic`):

    {"category": "shirt", "color": "navy", "pattern": "striped", "sleeve": "long",
     "parts": {"sleeve": 1, "pocket": 1, "button": 5}, "pocket_side": "left"}

Only what the text states appears; unknown words are ignored. :func:`part_verdict` runs
the attribute classifier (:mod:`armani.evaluation.attributes`) on an image and checks
just those attributes with :func:`~armani.evaluation.attributes.compare`.

Reading rules (the vocabulary is the caption writer's, :mod:`armani.data.captions`, plus
``armani.parts.PART_WORDS`` and a few common synonyms such as "gray", "navy blue",
"plaid"):

- **Category, colour, pattern**: the first mention wins. A colour or pattern word that
  qualifies a part ("white buttons", "striped sleeves") describes that part, not the
  garment, and is skipped; a word that qualifies the category ("navy hooded jacket", "in
  navy") or stands alone is the garment's.
- **Sleeves**: "long-sleeved", "long sleeves", "short sleeve" set ``sleeve`` and the part
  ``sleeve`` (1); "sleeveless", "no sleeves", "without sleeves" set ``sleeve =
  "sleeveless"`` and ``parts["sleeve"] = 0``.
- **Parts** are named by :data:`armani.parts.PART_WORDS` (nouns, their plurals and their
  adjectives: "hooded", "cuffed", "zip-up"), and "hoodie" implies a hood, as in the data.
  The count is the number word, digit, "a"/"an"/"single" right before the noun (up to three
  adjectives may sit between: "two thin straps", "a single patch pocket", "a five-button
  front"). Non-countable parts are recorded as 1. For buttons, pockets and straps a
  plural without a number ("buttons") or a bare singular ("button fastening") gives
  ``None``: the part is asked for, its count is not.
- **Absence** is count 0: "no hood", "without a belt", "zero buttons", "collarless". The
  dataset's records only list present parts; 0 is this module's way to say "asked to be
  absent", and the verdict checks that the classifier sees no such part.
- **Pocket side** (the image's left, as in the data): "on the left" / "left pocket" ->
  ``left``, "on the right" -> ``right``, "on both sides", "one on each side", "left and
  right" -> ``both``; only when said of a pocket (in the words after the pocket noun,
  before the next part or sentence, or an adjective right before it).

:func:`part_verdict` turns the checks into one line such as ``"4/5 requested: category ✓
colour ✓ sleeves ✓ buttons 3≠5 ✗ pocket side ✓ pattern (untrusted)"``. An attribute whose
classifier accuracy on real renders (its folder's ``validation.json``) is below
:data:`armani.evaluation.attributes.TRUST_THRESHOLD`, or unknown, is shown as "(untrusted)" and left out
of the count, as in ``python -m armani.evaluate``. The sleeve part is not checked on its own
when a sleeve length is (the length says it), nor a button / pocket presence when its count
is.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from armani.data.captions import CATEGORY_WORDS, NUMBER_WORDS, PATTERN_WORDS
from armani.data.garments import COLORS
from armani.parts import COUNTABLE_PARTS, PART_NAMES, PART_WORDS

NO_CLASSIFIER_MESSAGE = ("n/a (no attribute classifier: train it with "
                         "`accelerate launch src/armani/train.py --config default --stage attribute_classifier`)")
NOTHING_REQUESTED_MESSAGE = "n/a (the text asks for no attribute the classifier reads)"

# -- vocabulary --------------------------------------------------------------------------------
_PART_ADJECTIVES = frozenset({"sleeved", "cuffed", "collared", "hooded", "buttoned", "zipped", "belted"})
_CATEGORY_EXTRA = {"tshirt": "t-shirt", "tee-shirt": "t-shirt", "tees": "t-shirt", "jeans": "trousers",
                   "trouser": "trousers", "hoody": "hoodie", "pullover": "sweater"}
_COLOR_EXTRA = {"gray": "grey", "navy blue": "navy"}
_PATTERN_EXTRA = {"stripe": "striped", "checks": "checked", "checkered": "checked", "chequered": "checked",
                  "plaid": "checked", "gingham": "checked", "dot": "dotted", "polka": "dotted",
                  "polka dots": "dotted", "polka dot": "dotted", "spotted": "dotted"}
# Hyphenated words read whole (anything else hyphenated is read word by word: "five-button").
_COMPOUNDS = {"zip-up": ("part_adj", "zipper"), "button-down": ("part_adj", "button"),
              "button-up": ("part_adj", "button")}
_LENGTHS = {"short": "short", "long": "long"}
_SIDES = {"left": "left", "right": "right", "both": "both", "each": "both", "either": "both"}
_NEGATIONS = frozenset({"no", "without", "non"})
_ARTICLES = frozenset({"a", "an", "single"})
# Words that end a noun phrase: a count or a colour never reaches across them.
_STOPS = frozenset({"with", "and", "or", "has", "have", "that", "features", "featuring", "comes", "finished",
                    "in", "on", "at", "of", "plus", "the", "this", "is", "its", "for", "to", "but", "by", "from"})
_SENTENCE_END = frozenset({".", ";", "!", "?"})
_NUMBERS = {word: n for n, word in enumerate(NUMBER_WORDS)}


def _phrases() -> dict[tuple[str, ...], tuple[str, str]]:
    """Token tuple -> (kind, value) for every multi- or single-word vocabulary entry."""
    table: dict[tuple[str, ...], tuple[str, str]] = {}

    def add(kind: str, words: dict[str, str]) -> None:
        for text, value in words.items():
            table.setdefault(tuple(text.split()), (kind, value))

    add("category", {w: cat for cat, ws in CATEGORY_WORDS.items() for w in ws} | {c: c for c in CATEGORY_WORDS})
    add("category", _CATEGORY_EXTRA)
    add("color", {c: c for c in COLORS} | _COLOR_EXTRA)
    add("pattern", {w: p for p, ws in PATTERN_WORDS.items() for w in ws} | _PATTERN_EXTRA)
    return table


_PHRASES = _phrases()
_MAX_PHRASE = max(len(k) for k in _PHRASES)
_KEEP_WHOLE = frozenset(w for key in _PHRASES for w in key if "-" in w) | frozenset(_COMPOUNDS)
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|[.,;:!?()]")


@dataclass
class _Tok:
    text: str
    kind: str  # category color pattern part part_adj part_less length number article negation side stop end word
    value: object = None
    in_compound: bool = False  # the leading pieces of a split hyphenated word ("five-button" -> five, button)


def _part_of(word: str) -> tuple[str, str] | None:
    """A part word -> (kind, part name) or None; kind is part (a noun), part_adj or part_less."""
    if word in _PART_ADJECTIVES:
        return "part_adj", PART_WORDS[word]
    if word in PART_WORDS and word != "hoodie":  # "hoodie" is a category (which implies a hood)
        return "part", PART_WORDS[word]
    if word.endswith("s") and word[:-1] in PART_WORDS and word[:-1] not in _PART_ADJECTIVES:
        return "part", PART_WORDS[word[:-1]]  # plurals PART_WORDS does not list ("hoods", "belts")
    if word.endswith("less") and word[:-4] in PART_WORDS and word != "sleeveless":
        return "part_less", PART_WORDS[word[:-4]]
    return None


def _words(text: str) -> list[tuple[str, bool]]:
    """Lower-case words and punctuation; hyphenated words split unless kept whole.
    Each item is (word, in_compound): True for all but the last piece of a split word."""
    out: list[tuple[str, bool]] = []
    for raw in _TOKEN.findall(text.lower().replace("’", "'")):
        if "-" in raw and raw not in _KEEP_WHOLE:
            pieces = [p for p in raw.split("-") if p]
            out += [(p, i < len(pieces) - 1) for i, p in enumerate(pieces)]
        else:
            out.append((raw, False))
    return out


def _tokens(text: str) -> list[_Tok]:
    words = _words(text)
    toks: list[_Tok] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_PHRASE, len(words) - i), 0, -1):  # longest vocabulary phrase first
            key = tuple(w for w, _ in words[i : i + n])
            if key in _PHRASES:
                kind, value = _PHRASES[key]
                toks.append(_Tok(" ".join(key), kind, value, in_compound=words[i + n - 1][1]))
                i += n
                break
        else:
            word, in_compound = words[i]
            toks.append(_classify(word, in_compound))
            i += 1
    return toks


def _classify(word: str, in_compound: bool) -> _Tok:
    if word in _COMPOUNDS:
        kind, value = _COMPOUNDS[word]
        return _Tok(word, kind, value)
    part = _part_of(word)
    if part is not None:
        kind, name = part
        return _Tok(word, kind, name, in_compound=in_compound)
    if word == "sleeveless":
        return _Tok(word, "length", "sleeveless")
    if word in _LENGTHS:
        return _Tok(word, "length", _LENGTHS[word])
    if word in _NUMBERS:
        return _Tok(word, "number", _NUMBERS[word])
    if word.isdigit():
        return _Tok(word, "number", int(word))
    if word in _ARTICLES:
        return _Tok(word, "article", 1)
    if word in _NEGATIONS:
        return _Tok(word, "negation", 0)
    if word in _SIDES:
        return _Tok(word, "side", _SIDES[word])
    if word in _SENTENCE_END:
        return _Tok(word, "end")
    if word in _STOPS or not word[0].isalnum():
        return _Tok(word, "stop")
    return _Tok(word, "word")


# -- reading -----------------------------------------------------------------------------------
_ADJECTIVE_KINDS = frozenset({"word", "color", "pattern", "length", "side", "part_adj"})


def _count_before(toks: list[_Tok], i: int) -> int | None:
    """The count said right before the part noun at ``i`` (number, article, negation), or None."""
    j, skipped = i - 1, 0
    while j >= 0:
        t = toks[j]
        if t.kind in ("number", "article"):
            negated = j > 0 and toks[j - 1].kind == "negation"
            return 0 if negated else int(t.value)
        if t.kind == "negation":
            return 0
        if t.kind in _ADJECTIVE_KINDS and skipped < 3:
            skipped += 1
            j -= 1
            continue
        return None
    return None


def _qualifies_part(toks: list[_Tok], i: int) -> bool:
    """Does the colour / pattern word at ``i`` describe a part ("white buttons") rather than
    the garment? It does when the first noun after it, within its noun phrase, is a part."""
    for t in toks[i + 1 : i + 5]:
        if t.kind == "part" and not t.in_compound:
            return True
        if t.kind in _ADJECTIVE_KINDS or (t.kind == "part" and t.in_compound) or t.kind == "number":
            continue
        return False  # a category, a stop word, punctuation
    return False


def _pocket_side(toks: list[_Tok], i: int) -> str | None:
    """The side said of the pocket noun at ``i``: after it (same sentence, before the next
    part or garment noun), else as an adjective just before it."""
    for k in range(i + 1, min(len(toks), i + 9)):
        t = toks[k]
        if t.kind == "end" or (t.kind in ("part", "part_adj", "part_less", "category") and t.value != "pocket"):
            break
        if t.kind == "side":
            if t.value in ("left", "right") and k + 2 < len(toks) and toks[k + 1].text in ("and", "or") \
                    and toks[k + 2].kind == "side" and toks[k + 2].value not in (t.value, "both"):
                return "both"  # "left and right"
            return str(t.value)
    j, skipped = i - 1, 0
    while j >= 0 and skipped < 3:
        t = toks[j]
        if t.kind == "side" and t.value in ("left", "right"):
            return str(t.value)
        if t.kind not in _ADJECTIVE_KINDS:
            break
        j, skipped = j - 1, skipped + 1
    return None


def requested_attributes(text: str) -> dict:
    """The attributes ``text`` asks for, as a partial attribute record (see the module doc).

    Keys appear only when stated: ``category``, ``color``, ``pattern``, ``sleeve``,
    ``parts`` ({part: count}, count None = present with no count said, 0 = asked absent)
    and ``pocket_side``.
    """
    toks = _tokens(text or "")
    out: dict = {}
    mentions: dict[str, list[tuple[int | None, bool]]] = {}  # part -> [(count, explicit)]

    def mention(part: str, count: int | None, explicit: bool) -> None:
        mentions.setdefault(part, []).append((count, explicit))

    sides: list[str] = []
    for i, t in enumerate(toks):
        if t.kind == "category":
            out.setdefault("category", t.value)
            if t.value == "hoodie":
                mention("hood", None, False)
        elif t.kind in ("color", "pattern"):
            if t.kind not in out and not _qualifies_part(toks, i):
                out[t.kind] = t.value
        elif t.kind == "length":
            if t.value == "sleeveless":
                out.setdefault("sleeve", "sleeveless")
                mention("sleeve", 0, True)
            elif i + 1 < len(toks) and toks[i + 1].kind in ("part", "part_adj") and toks[i + 1].value == "sleeve":
                out.setdefault("sleeve", t.value)
        elif t.kind == "part_adj":
            negated = i > 0 and toks[i - 1].kind == "negation"  # "non-belted"
            mention(str(t.value), 0 if negated else None, negated)
        elif t.kind == "part_less":
            mention(str(t.value), 0, True)
        elif t.kind == "part":
            count = _count_before(toks, i)
            mention(str(t.value), count, count is not None)
            if t.value == "pocket" and count != 0:
                side = _pocket_side(toks, i)
                if side is not None:
                    sides.append(side)

    parts: dict[str, int | None] = {}
    for part, said in mentions.items():
        explicit = [c for c, is_explicit in said if is_explicit]
        count = explicit[0] if explicit else (None if part in COUNTABLE_PARTS else 1)
        if count and part not in COUNTABLE_PARTS:
            count = 1  # the record convention: a non-countable part is 1 however it is drawn
        parts[part] = count
    if out.get("sleeve") in ("short", "long"):
        parts["sleeve"] = 1
    elif parts.get("sleeve") == 0:
        out.setdefault("sleeve", "sleeveless")
    if parts:
        out["parts"] = {name: parts[name] for name in PART_NAMES if name in parts}
    if sides and (out.get("parts") or {}).get("pocket") != 0:
        out["pocket_side"] = sides[0]
    order = ("category", "color", "pattern", "sleeve", "parts", "pocket_side")
    return {key: out[key] for key in order if key in out}


# -- the verdict -------------------------------------------------------------------------------
_LOCK = threading.Lock()
_CACHE: dict[str, tuple] = {}  # resolved folder -> (classifier, validation)


def _classifier_and_validation(classifier) -> tuple | None:
    """(model, validation or None) for ``classifier`` (None: the default folder; a folder; or
    an ``AttributeClassifier``, whose validation is unknown), loaded once per folder; None
    when the folder holds no classifier."""
    from armani.evaluation import attributes

    if classifier is not None and not isinstance(classifier, (str, Path)):
        return classifier, None
    folder = Path(classifier) if classifier is not None else attributes.default_classifier_dir()
    key = str(folder.resolve())
    with _LOCK:
        if key not in _CACHE:
            try:
                model, validation, _ = attributes.load_classifier(str(folder))
            except FileNotFoundError:
                return None
            if model is None:
                return None
            _CACHE[key] = (model, validation)
        return _CACHE[key]


def clear_cache() -> None:
    """Forget the loaded classifiers (a retrained one is read on the next call)."""
    with _LOCK:
        _CACHE.clear()


def _image_tensor(image):
    """A PIL image, an array (H x W, H x W x 3/4) or a (3, H, W) tensor in [-1, 1] -> (1, 3, S, S)."""
    import torch

    from armani.data.images import fit_image, load_image, pil_to_tensor, tensor_to_pil

    if isinstance(image, torch.Tensor):
        image = tensor_to_pil(image.detach().float().cpu())
    img = load_image(image)
    if img.width != img.height:  # letterbox, so the classifier's resize keeps the proportions
        img = fit_image(img, max(img.size))
    return pil_to_tensor(img)[None]


def _checks(requested: dict) -> list[tuple[str, str]]:
    """(label, compare key) for each requested attribute, in report order."""
    parts = requested.get("parts") or {}
    checks = [(label, key) for key, label in (("category", "category"), ("color", "colour"),
                                              ("pattern", "pattern"), ("sleeve", "sleeves")) if key in requested]
    for name, count in parts.items():
        if name == "sleeve" and "sleeve" in requested:
            continue  # the length check covers it
        if name in ("button", "pocket") and count is not None:
            checks.append((f"{name}s", f"count:{name}"))
        else:
            checks.append((name, f"part:{name}"))
    if "pocket_side" in requested:
        checks.append(("pocket side", "pocket_side"))
    return checks


def _target(requested: dict, pred: dict) -> dict:
    """The prediction with the requested attributes put in: compare(pred, target) is then
    True on every attribute that was not requested."""
    target = {**pred, **{k: v for k, v in requested.items() if k != "parts"}}
    parts = dict(pred.get("parts") or {})
    for name, count in (requested.get("parts") or {}).items():
        if count == 0:
            parts.pop(name, None)
        elif count is None:
            parts[name] = parts.get(name) or 1
        else:
            parts[name] = count
    target["parts"] = parts
    return target


def _show(key: str, record: dict):
    parts = record.get("parts") or {}
    if key.startswith("count:"):
        return int(parts.get(key[6:], 0))
    if key.startswith("part:"):
        return "present" if key[5:] in parts else "absent"
    value = record.get(key)
    return "none" if value is None else value


def part_verdict(image, text: str, classifier=None, validation: dict | None = None) -> str:
    """The attribute classifier's verdict on the attributes ``text`` asks for in ``image``.

    ``classifier``: None (``checkpoints/attribute_classifier``), a classifier folder, or an
    ``AttributeClassifier`` (then ``validation``, the folder's ``validation.json`` content,
    says which attributes it is trusted on; without it none is). Returns one line, e.g.
    ``"2/3 requested: category ✓ colour ✓ buttons 3≠5 ✗ pattern (untrusted)"``, or an
    "n/a (...)" line when there is no classifier or nothing to check.
    """
    from armani.evaluation.attributes import TRUST_THRESHOLD, compare

    loaded = _classifier_and_validation(classifier)
    if loaded is None:
        return NO_CLASSIFIER_MESSAGE
    requested = requested_attributes(text)
    checks = _checks(requested)
    if not checks:
        return NOTHING_REQUESTED_MESSAGE
    model, folder_validation = loaded
    accuracy = ((validation if validation is not None else folder_validation) or {}).get("accuracy") or {}
    pred = model.predict(_image_tensor(image))[0]
    target = _target(requested, pred)
    verdicts = compare(pred, target)
    items, right, counted = [], 0, 0
    for label, key in checks:
        acc = accuracy.get(key)
        if acc is None or acc < TRUST_THRESHOLD:
            items.append(f"{label} (untrusted)")
            continue
        counted += 1
        if verdicts[key]:
            right += 1
            items.append(f"{label} ✓")
        else:
            items.append(f"{label} {_show(key, pred)}≠{_show(key, target)} ✗")
    return f"{right}/{counted} requested: " + " ".join(items)


__all__ = ["NO_CLASSIFIER_MESSAGE", "NOTHING_REQUESTED_MESSAGE", "clear_cache", "part_verdict",
           "requested_attributes"]

"""Drawing one procedural garment and its exact part mask.

Every part is first rasterised once, as a boolean region, with OpenCV's non-antialiased
``fillPoly`` / ``circle`` (``LINE_8``) at the target resolution; that same region then sets
both the part id in the mask and the colour in the image. So the mask labels every pixel
exactly as it was drawn, and a part drawn later overwrites earlier ones in both. Effects
that are not parts (pattern, seams, folds, shading, fabric noise, the studio background and
the garment's shadow) change the image only.

Choices the brief leaves to us, written down here:

- Coordinates: a garment is designed in a unit square ("garment units", x to the right,
  y down, centre line x = 0.5), then posed onto the image with a random scale, a small
  rotation and a shift (:class:`Pose`). "Left" always means the image's left (the
  viewer's left), not the wearer's.
- Sizes that must survive 64x64 (buttons, straps, placket, zipper, cuffs, hems) have a
  minimum size in pixels; buttons are discs of radius ``max(1, round(0.018 * size))`` set
  at least ``2 r + 3`` pixels apart along the centre line, so each stays its own connected
  component (8-connectivity) even after rounding and rotation.
- Drawing order (later wins): hood, sleeves, body, straps, hem, cuffs, waistband, collar,
  placket, zipper, belt, pockets, logo, buttons. Pockets, the logo and buttons are placed
  where nothing drawn after them can cut them, so their connected components are exactly
  the counts in the attributes.
- The pattern (stripes, checks, dots) covers the fabric parts (body, sleeves, hood,
  pockets) in a lighter or darker tint of the garment's own colour, so the named colour
  stays the dominant one. Trims (collar, cuffs, hem, waistband, placket, straps) are the
  garment colour slightly shaded; buttons, zipper, logo and belt contrast with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from armani.parts import PART_ID

# -- the vocabulary a garment is drawn from (imported by the sampler, captions, classifiers)
CATEGORIES: tuple[str, ...] = (
    "t-shirt", "shirt", "polo", "dress", "skirt", "trousers",
    "shorts", "jacket", "hoodie", "coat", "tank top", "sweater",
)
TOPS: frozenset[str] = frozenset({"t-shirt", "shirt", "polo", "jacket", "hoodie", "coat", "tank top", "sweater", "dress"})
BOTTOMS: frozenset[str] = frozenset({"skirt", "trousers", "shorts"})

COLORS: dict[str, tuple[int, int, int]] = {
    "black": (32, 32, 36),
    "white": (242, 242, 238),
    "grey": (128, 128, 130),
    "red": (196, 32, 38),
    "orange": (238, 128, 30),
    "yellow": (240, 206, 48),
    "green": (42, 138, 62),
    "blue": (44, 102, 208),
    "navy": (28, 38, 88),
    "purple": (114, 56, 150),
    "pink": (238, 150, 182),
    "brown": (118, 74, 40),
    "beige": (214, 194, 158),
}
PATTERNS: tuple[str, ...] = ("plain", "striped", "checked", "dotted")
SLEEVES: tuple[str, ...] = ("sleeveless", "short", "long")

FABRIC_PARTS: tuple[str, ...] = ("body", "sleeve", "hood", "pocket")  # carry the pattern

_SHIFT = 4  # fractional bits for cv2.fillPoly: sub-pixel vertices, still no anti-aliasing
_ONE = 1 << _SHIFT


# -- pose and canvas ------------------------------------------------------------------------
@dataclass(frozen=True)
class Pose:
    """Maps garment units (unit square, centre 0.5, 0.5) to pixel coordinates."""

    size: int
    scale: float  # garment unit square -> this fraction of the image side
    angle: float  # radians, clockwise on screen
    cx: float  # garment centre in image units (0-1)
    cy: float

    def px(self, points) -> np.ndarray:
        """(N, 2) garment units -> (N, 2) float pixel coordinates (x, y)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2) - 0.5
        c, s = math.cos(self.angle), math.sin(self.angle)
        x = c * p[:, 0] - s * p[:, 1]
        y = s * p[:, 0] + c * p[:, 1]
        return np.stack([(self.cx + self.scale * x) * self.size, (self.cy + self.scale * y) * self.size], axis=1)

    def units(self, pixels: float) -> float:
        """A length in pixels, in garment units."""
        return pixels / (self.scale * self.size)

    def frame(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel garment-aligned coordinates in pixels: (u across, v down), each (H, W)."""
        yy, xx = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32)
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = xx - self.cx * self.size, yy - self.cy * self.size
        return c * dx + s * dy, -s * dx + c * dy


class _Canvas:
    """Image + mask painted region by region; every region is rasterised exactly once."""

    def __init__(self, pose: Pose):
        n = pose.size
        self.pose = pose
        self.mask = np.zeros((n, n), dtype=np.uint8)  # (H, W) part ids
        self.rgb = np.zeros((n, n, 3), dtype=np.float32)  # (H, W, 3) 0-255
        self._scratch = np.zeros((n, n), dtype=np.uint8)

    def polygon(self, points) -> np.ndarray:
        self._scratch[:] = 0
        p = np.round(self.pose.px(points) * _ONE).astype(np.int32)
        cv2.fillPoly(self._scratch, [p], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        return self._scratch.astype(bool)

    def disc(self, centre_px: tuple[int, int], radius_px: int) -> np.ndarray:
        self._scratch[:] = 0
        cv2.circle(self._scratch, centre_px, radius_px, 1, thickness=-1, lineType=cv2.LINE_8)
        return self._scratch.astype(bool)

    def band(self, y0: float, y1: float) -> np.ndarray:
        """A horizontal band of the garment frame (rotated with the pose), full width."""
        return self.polygon([(-1.0, y0), (2.0, y0), (2.0, y1), (-1.0, y1)])

    def paint(self, region: np.ndarray, part: str, colour: np.ndarray) -> np.ndarray:
        """Label ``region`` as ``part`` and colour it; ``colour`` is (3,) or a full (H, W, 3) layer."""
        self.mask[region] = PART_ID[part]
        self.rgb[region] = colour[region] if colour.ndim == 3 else colour
        return region


def _mirror(points) -> list[tuple[float, float]]:
    """Reflect garment-unit points about the centre line x = 0.5 (and reverse their order)."""
    return [(1.0 - x, y) for x, y in reversed(list(points))]


def _ellipse(cx: float, cy: float, a: float, b: float, t0: float = 0.0, t1: float = 2 * math.pi, n: int = 24):
    return [(cx + a * math.cos(t), cy + b * math.sin(t)) for t in np.linspace(t0, t1, n)]


# -- colours --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Style:
    fabric: np.ndarray  # (H, W, 3) garment colour with its pattern
    trim: np.ndarray  # (3,)
    detail: np.ndarray  # (3,) buttons, logo
    metal: np.ndarray  # (3,) zipper
    belt: np.ndarray  # (3,)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114])) / 255.0


def _mix(a: np.ndarray, b, t: float) -> np.ndarray:
    return (1 - t) * a + t * np.asarray(b, dtype=np.float32)


def _pattern_layer(pattern: str, pose: Pose, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float in [0, 1]: where the pattern's second colour shows (garment-aligned)."""
    u, v = pose.frame()
    n = pose.size
    if pattern == "plain":
        return np.zeros((n, n), dtype=np.float32)
    period = rng.uniform(4.0, 7.5) * max(1.0, n / 64) ** 0.8  # pixels; visible at 64 px
    phase_u, phase_v = rng.uniform(0, period, size=2)
    if pattern == "striped":
        axis = v if rng.random() < 0.7 else u  # mostly horizontal stripes
        duty = rng.uniform(0.35, 0.55)
        return (((axis + phase_v) % period) < duty * period).astype(np.float32)
    if pattern == "checked":
        duty = rng.uniform(0.35, 0.5)
        a = ((u + phase_u) % period) < duty * period
        b = ((v + phase_v) % period) < duty * period
        return 0.5 * a + 0.5 * b  # gingham: crossings darkest
    if pattern == "dotted":
        spacing = period * 1.25
        radius = max(0.9, spacing * rng.uniform(0.22, 0.3))
        row = np.floor((v + phase_v) / spacing)
        du = (u + phase_u + 0.5 * spacing * (row % 2)) % spacing - spacing / 2  # staggered rows
        dv = (v + phase_v) % spacing - spacing / 2
        return (du * du + dv * dv <= radius * radius).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")


def _style(attributes: dict, pose: Pose, rng: np.random.Generator) -> _Style:
    base = np.asarray(COLORS[attributes["color"]], dtype=np.float32)
    base = np.clip(base + rng.normal(0, 5, size=3), 0, 255)  # same named colour, new dye lot
    dark = _luma(base) < 0.55
    second = _mix(base, (255, 255, 255), 0.55) if dark else _mix(base, (0, 0, 0), 0.3)
    layer = _pattern_layer(attributes["pattern"], pose, rng)[..., None]  # (H, W, 1)
    fabric = (1 - layer) * base + layer * second  # (H, W, 3)
    trim = base * (1.18 if _luma(base) < 0.2 else 0.84) + (12 if _luma(base) < 0.2 else 0)
    detail = _mix(base, (250, 248, 240), 0.75) if dark else _mix(base, (20, 20, 20), 0.7)
    metal = np.full(3, rng.uniform(150, 200) if dark else rng.uniform(40, 80), dtype=np.float32)
    belt = base * 0.5 if not _luma(base) < 0.2 else _mix(base, (90, 90, 90), 0.5)
    return _Style(fabric.astype(np.float32), trim, detail, metal, belt)


# -- geometry helpers -----------------------------------------------------------------------
def _button_row(canvas: _Canvas, top: tuple[float, float], bottom: tuple[float, float], count: int,
                style: _Style) -> None:
    """Paint ``count`` buttons from ``top`` towards ``bottom`` (garment units).

    Centres are stepped by a whole number of pixel rows, at least 2r+2, so two discs of
    radius r always have one empty row between them: each button is its own connected
    component, whatever the rotation (|angle| < 45 degrees keeps the row nearly vertical).
    """
    pose = canvas.pose
    r = _button_radius(pose)
    a, b = pose.px([top, bottom])
    rows = b[1] - a[1]
    step = max(int(rows // (count - 1)), 2 * r + 2) if count > 1 else 0
    slope = (b[0] - a[0]) / rows if abs(rows) > 1e-6 else 0.0
    y0 = int(round(a[1]))
    for i in range(count):
        y = y0 + i * step
        x = int(round(a[0] + slope * (y - a[1])))
        canvas.paint(canvas.disc((x, y), r), "button", style.detail)


def _button_radius(pose: Pose) -> int:
    return max(1, round(0.018 * pose.size))


def _button_span(pose: Pose, count: int) -> float:
    """Garment-unit length a row of ``count`` buttons needs at this pose (plus a margin)."""
    r = _button_radius(pose)
    return pose.units((count - 1) * (2 * r + 2) + 2 * r + 2)


# -- tops (and dresses) ---------------------------------------------------------------------
def _draw_top(canvas: _Canvas, attributes: dict, rng: np.random.Generator, style: _Style) -> None:
    cat, sleeve, parts = attributes["category"], attributes["sleeve"], attributes["parts"]
    pose, cx = canvas.pose, 0.5
    has = parts.__contains__
    px2u = pose.units
    long_body = cat in ("coat", "dress")
    y_sh = rng.uniform(0.13, 0.17) + (0.06 if has("hood") else 0.0) - (0.03 if long_body else 0.0)
    hw = rng.uniform(0.19, 0.23) + (0.015 if cat in ("coat", "jacket") else 0.0)
    hw_a = hw * rng.uniform(0.88, 0.95)
    nw = rng.uniform(0.055, 0.075)
    slope = rng.uniform(0.025, 0.05)
    y_arm = y_sh + rng.uniform(0.15, 0.19)
    lapels = cat in ("jacket", "coat") and has("collar") and not has("zipper")
    nd = rng.uniform(0.14, 0.18) if lapels else rng.uniform(0.04, 0.075)
    y1 = rng.uniform(0.90, 0.95) if long_body else min(0.95, y_sh + rng.uniform(0.58, 0.66))
    if cat == "dress":
        y_w = y_sh + rng.uniform(0.26, 0.3)
        side = [(cx - hw_a * 0.82, y_w), (cx - hw * rng.uniform(1.25, 1.6), y1)]
    elif cat == "coat":
        y_w = y_sh + 0.3
        side = [(cx - hw_a * 0.97, y_w), (cx - hw_a * rng.uniform(1.05, 1.2), y1)]
    else:
        y_w = y_sh + 0.3
        side = [(cx - hw_a * rng.uniform(0.93, 1.03), y1)]

    # Sleeves (drawn before the body, which then covers the armhole seam).
    sleeve_quads = []
    if sleeve in ("short", "long"):
        shoulder, armpit = (cx - hw, y_sh + slope), (cx - hw_a, y_arm)
        mid = ((shoulder[0] + armpit[0]) / 2, (shoulder[1] + armpit[1]) / 2)
        if sleeve == "long":
            alpha, length, width = rng.uniform(0.3, 0.55), rng.uniform(0.42, 0.5), rng.uniform(0.085, 0.1)
        else:
            alpha, length, width = rng.uniform(0.75, 1.0), rng.uniform(0.12, 0.16), rng.uniform(0.13, 0.15)
        d = np.array([-math.sin(alpha), math.cos(alpha)])
        n = np.array([math.cos(alpha), math.sin(alpha)])
        end = np.array(mid) + length * d
        quad = [shoulder, tuple(end - width / 2 * n), tuple(end + width / 2 * n), armpit]
        sleeve_quads = [quad, _mirror(quad)]
        for q in sleeve_quads:
            canvas.paint(canvas.polygon(q), "sleeve", style.fabric)

    if has("hood"):
        hood = _ellipse(cx, y_sh - 0.02, nw + rng.uniform(0.045, 0.06), rng.uniform(0.1, 0.12))
        region = canvas.paint(canvas.polygon(hood), "hood", style.fabric)
        inner = canvas.polygon(_ellipse(cx, y_sh + 0.0, nw * 0.9, 0.07))
        canvas.rgb[region & inner] *= 0.62  # the hood's lining, seen from the front (image only)

    # Body with its neckline.
    straps = has("strap")
    if straps:
        sw = max(0.028, px2u(2.6))
        sx = nw + rng.uniform(0.015, 0.03)
        y_top = y_sh + rng.uniform(0.07, 0.1)
        left = [(cx - sx - sw / 2, y_top), (cx - hw_a + 0.02, y_top + 0.06), (cx - hw_a, y_arm)] + side
        inner_half = sx - sw / 2
        neck = _ellipse(cx, y_top, inner_half, nd + 0.03, 0.0, math.pi, 9)  # right to left, dipping
    else:
        left = [(cx - nw, y_sh), (cx - hw, y_sh + slope), (cx - hw_a, y_arm)] + side
        neck = [(cx + nw, y_sh), (cx, y_sh + nd), (cx - nw, y_sh)] if lapels else _ellipse(cx, y_sh, nw, nd, 0.0, math.pi, 9)
    body_poly = left + _mirror(left) + neck
    if cat in ("dress", "coat"):  # a slightly curved hemline
        body_poly = left + [(cx, y1 + 0.02)] + _mirror(left) + neck
    body = canvas.paint(canvas.polygon(body_poly), "body", style.fabric)

    if straps:
        for x in (cx - sx, cx + sx):
            canvas.paint(canvas.polygon([(x - sw / 2, y_sh), (x + sw / 2, y_sh), (x + sw / 2, y_top + 0.01),
                                         (x - sw / 2, y_top + 0.01)]), "strap", style.trim)
    if has("hem"):
        hh = max(rng.uniform(0.035, 0.05), px2u(2.5))
        canvas.paint(canvas.band(y1 - hh, y1 + 0.05) & body, "hem", style.trim)
    if has("cuff"):
        for q in sleeve_quads:
            f = 1 - max(rng.uniform(0.1, 0.14), px2u(3) / 0.45)
            s0, e0, e1, a0 = (np.array(p) for p in q)
            canvas.paint(canvas.polygon([s0 + f * (e0 - s0), e0, e1, a0 + f * (e1 - a0)]), "cuff", style.trim)

    y_front = (y_top + nd + 0.03) if straps else (y_sh + nd)  # top of the centre front opening
    if has("collar"):
        t = max(0.022, px2u(2.2))
        if cat in ("shirt", "polo"):
            big = 1.0 if cat == "shirt" else 0.8
            wing = [(cx - nw - 0.02, y_sh - 0.012), (cx - 0.004, y_sh + nd * 0.9),
                    (cx - 0.03 * big, y_sh + nd + 0.07 * big), (cx - nw - 0.035 * big, y_sh + 0.04 * big)]
            back = [(cx - nw - 0.02, y_sh - 0.03), (cx + nw + 0.02, y_sh - 0.03), (cx + nw + 0.02, y_sh), (cx - nw - 0.02, y_sh)]
            region = canvas.polygon(wing) | canvas.polygon(_mirror(wing)) | canvas.polygon(back)
        elif lapels:
            lapel = [(cx - nw, y_sh - 0.01), (cx - 0.004, y_sh + nd), (cx - nw * 0.5, y_sh + nd * 0.75),
                     (cx - nw - 0.07, y_sh + nd * 0.3), (cx - nw - 0.02, y_sh + 0.02)]
            back = [(cx - nw, y_sh - 0.03), (cx + nw, y_sh - 0.03), (cx + nw, y_sh), (cx - nw, y_sh)]
            region = canvas.polygon(lapel) | canvas.polygon(_mirror(lapel)) | canvas.polygon(back)
        elif straps:  # a bound neckline between the straps
            outer = _ellipse(cx, y_top - 0.005, inner_half + t, nd + 0.03 + t, 0.0, math.pi, 9)
            region = canvas.polygon(outer + _ellipse(cx, y_top - 0.005, inner_half, nd + 0.03, math.pi, 0.0, 9))
            region &= canvas.mask == PART_ID["body"]  # never cut into a strap
        else:  # ribbed crew neckline (or stand collar on zipped jackets)
            outer = _ellipse(cx, y_sh, nw + t, nd + t, 0.0, math.pi, 9)
            inner = _ellipse(cx, y_sh, nw, nd, math.pi, 0.0, 9)
            region = canvas.polygon(outer + inner)
            if cat in ("jacket", "coat"):
                region |= canvas.polygon([(cx - nw - t, y_sh - 0.035), (cx + nw + t, y_sh - 0.035), (cx + nw + t, y_sh + 0.005),
                                          (cx - nw - t, y_sh + 0.005)])
        canvas.paint(region, "collar", style.trim)

    pw = max(0.02, px2u(1.6))
    buttons = parts.get("button", 0)
    if has("placket"):
        y_end = y1 if cat == "shirt" else y_front + max(0.17, _button_span(pose, buttons) + 0.04)
        canvas.paint(canvas.polygon([(cx - pw, y_front - 0.01), (cx + pw, y_front - 0.01), (cx + pw, y_end), (cx - pw, y_end)]),
                     "placket", style.trim)
    if has("zipper"):
        zw = max(0.011, px2u(1.1))
        y_end = y_front + rng.uniform(0.16, 0.2) if cat == "t-shirt" else y1
        region = canvas.polygon([(cx - zw, y_front - 0.01), (cx + zw, y_front - 0.01), (cx + zw, y_end), (cx - zw, y_end)])
        tab = canvas.polygon([(cx - 2.2 * zw, y_front), (cx + 0.6 * zw, y_front), (cx + 0.6 * zw, y_front + max(0.04, px2u(3))),
                              (cx - 2.2 * zw, y_front + max(0.04, px2u(3)))])
        canvas.paint(region | tab, "zipper", style.metal)
    if has("belt"):
        y_b = y_w if cat in ("dress", "coat") else y1 - 0.15
        bh = max(rng.uniform(0.035, 0.05), px2u(3))
        wide = cv2.dilate(body.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        region = canvas.paint(canvas.band(y_b - bh / 2, y_b + bh / 2) & wide, "belt", style.belt)
        buckle = canvas.polygon([(cx - 0.035, y_b - bh / 2), (cx + 0.035, y_b - bh / 2), (cx + 0.035, y_b + bh / 2),
                                 (cx - 0.035, y_b + bh / 2)])
        canvas.rgb[region & buckle] = (200, 190, 150)  # the buckle, image only
    pockets = parts.get("pocket", 0)
    if pockets:
        sides = {"left": [-1], "right": [1], "both": [-1, 1]}[attributes["pocket_side"]]
        for sgn in sides:
            canvas.paint(canvas.polygon(_pocket_shape(cat, sgn, hw, y_sh, y1, y_w, pose, rng)), "pocket", style.fabric * 0.93)
    if has("logo"):
        pocket_sides = {"left": -1, "right": 1}.get(attributes["pocket_side"] or "", 0)
        centred = cat in ("sweater", "hoodie", "tank top") and not has("zipper") and not has("placket")
        sgn = 0 if centred else (-pocket_sides if pocket_sides else (1 if rng.random() < 0.5 else -1))
        lx, ly = cx + sgn * hw * 0.5, y_sh + nd * 0.5 + (0.12 if straps else 0.1)
        half = max(rng.uniform(0.025, 0.035), px2u(2.0))
        if rng.random() < 0.5:
            region = canvas.polygon([(lx - half, ly - half * 0.7), (lx + half, ly - half * 0.7), (lx + half, ly + half * 0.7),
                                     (lx - half, ly + half * 0.7)])
        else:
            region = canvas.polygon(_ellipse(lx, ly, half, half, n=12))
        canvas.paint(region, "logo", style.detail)
    if buttons:
        if cat in ("shirt",):
            top, bottom = y_front + 0.03, y1 - 0.05
        elif cat == "polo":
            top, bottom = y_front + 0.025, y_front + 0.025 + max(0.1, _button_span(pose, buttons) - 0.01)
        elif cat == "dress":
            top, bottom = y_front + 0.03, min(y1 - 0.08, y_front + 0.03 + max(0.38, _button_span(pose, buttons)))
        else:  # jacket, coat
            top, bottom = y_front + 0.02, min(y1 - 0.06, y_front + max(0.3, _button_span(pose, buttons)))
        _button_row(canvas, (cx, top), (cx, bottom), buttons, style)


def _pocket_shape(cat: str, sgn: int, hw: float, y_sh: float, y1: float, y_w: float, pose: Pose,
                  rng: np.random.Generator) -> list[tuple[float, float]]:
    """One pocket polygon on side ``sgn`` (-1 = image left, +1 = image right)."""
    cx = 0.5
    if cat in ("shirt", "t-shirt"):  # chest pocket with a pointed bottom
        w, h = max(0.07, pose.units(4)), max(0.075, pose.units(4))
        x, y = cx + sgn * hw * 0.5, y_sh + 0.11
        return [(x - w / 2, y), (x + w / 2, y), (x + w / 2, y + h), (x, y + h + 0.015), (x - w / 2, y + h)]
    if cat == "hoodie":  # a pouch pocket with a slanted opening
        x0, x1 = cx + sgn * 0.035, cx + sgn * hw * 0.8
        return [(x0, y1 - 0.2), (x1 - sgn * 0.05, y1 - 0.2), (x1, y1 - 0.09), (x0, y1 - 0.09)]
    if cat in ("jacket", "coat"):  # patch pocket
        w, h = rng.uniform(0.09, 0.11), rng.uniform(0.08, 0.1)
        x = cx + sgn * hw * 0.55
        y = (y_w + 0.12) if cat == "coat" else y1 - 0.17
        return [(x - w / 2, y), (x + w / 2, y), (x + w / 2, y + h), (x - w / 2, y + h)]
    # dress: slanted side pockets on the skirt
    x = cx + sgn * hw * 0.62
    y = y_w + 0.06
    return [(x - 0.04, y), (x + 0.04, y), (x + 0.04 + sgn * 0.01, y + 0.1), (x - 0.04 + sgn * 0.01, y + 0.1)]


# -- bottoms --------------------------------------------------------------------------------
def _draw_bottom(canvas: _Canvas, attributes: dict, rng: np.random.Generator, style: _Style) -> None:
    cat, parts = attributes["category"], attributes["parts"]
    pose, cx = canvas.pose, 0.5
    has = parts.__contains__
    px2u = pose.units
    ww = rng.uniform(0.14, 0.17)  # waist half width
    if cat == "skirt":
        y_top = rng.uniform(0.2, 0.26)
        y1 = y_top + rng.uniform(0.45, 0.6)
        hip = ww + rng.uniform(0.02, 0.04)
        hem = hip + rng.uniform(0.0, 0.14)
        left = [(cx - ww, y_top), (cx - hip, y_top + 0.12), (cx - hem, y1)]
        outline = left + [(cx, y1 + 0.015)] + _mirror(left)
    else:
        y_top = rng.uniform(0.06, 0.1) if cat == "trousers" else rng.uniform(0.2, 0.26)
        y1 = rng.uniform(0.92, 0.95) if cat == "trousers" else y_top + rng.uniform(0.32, 0.38)
        hip = ww + rng.uniform(0.02, 0.04)
        crotch = y_top + rng.uniform(0.24, 0.28)
        leg_out = hip + (rng.uniform(-0.04, 0.0) if cat == "trousers" else rng.uniform(0.0, 0.04))
        leg_in = rng.uniform(0.015, 0.03) if cat == "trousers" else rng.uniform(0.0, 0.02)
        left = [(cx - ww, y_top), (cx - hip, y_top + 0.12), (cx - leg_out, y1), (cx - leg_in, y1), (cx, crotch)]
        outline = left + _mirror(left[:-1])
    body = canvas.paint(canvas.polygon(outline), "body", style.fabric)
    if has("hem"):
        hh = max(rng.uniform(0.03, 0.045), px2u(2.5))
        canvas.paint(canvas.band(y1 - hh, y1 + 0.05) & body, "hem", style.trim)
    wb = max(rng.uniform(0.035, 0.05), px2u(5 if has("belt") else 3))
    if has("waistband"):
        canvas.paint(canvas.band(y_top - 0.02, y_top + wb) & body, "waistband", style.trim)
    if has("belt"):  # threaded through the lower half of the waistband, whose top stays visible
        bh = max(wb * 0.6, px2u(2.5))
        wide = cv2.dilate(body.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        region = canvas.paint(canvas.band(y_top + wb * 0.5, y_top + wb * 0.5 + bh) & wide, "belt", style.belt)
        bx = cx + rng.uniform(-0.01, 0.01)
        buckle = canvas.polygon([(bx - 0.03, y_top), (bx + 0.03, y_top), (bx + 0.03, y_top + 0.2), (bx - 0.03, y_top + 0.2)])
        canvas.rgb[region & buckle] = (200, 190, 150)  # the buckle, image only
    if parts.get("pocket", 0):
        sides = {"left": [-1], "right": [1], "both": [-1, 1]}[attributes["pocket_side"]]
        y = y_top + wb + max(0.015, px2u(1.5))
        for sgn in sides:  # a slanted hip pocket below the waistband
            shape = [(cx + sgn * (ww - 0.005), y), (cx + sgn * (ww - 0.075), y), (cx + sgn * (hip - 0.005), y + 0.1)]
            if cat == "skirt":
                shape = [(cx + sgn * (ww - 0.015), y), (cx + sgn * (ww - 0.08), y), (cx + sgn * (ww - 0.07), y + 0.09),
                         (cx + sgn * (ww - 0.01), y + 0.09)]
            canvas.paint(canvas.polygon(shape), "pocket", style.fabric * 0.93)
    if parts.get("button", 0):
        n = parts["button"]
        top = y_top + wb + max(0.03, px2u(2))
        _button_row(canvas, (cx, top), (cx, min(y1 - 0.06, top + max(0.3, _button_span(pose, n)))), n, style)


# -- finishing (image only) -----------------------------------------------------------------
def _finish(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Seams, folds, light, fabric noise, studio background and shadow. Returns uint8 (H, W, 3)."""
    pose, mask, n = canvas.pose, canvas.mask, canvas.pose.size
    rgb = canvas.rgb
    garment = mask > 0
    # Seams: darken garment pixels whose 4-neighbour has another label (buttons/logo excluded).
    diff = np.zeros_like(garment)
    diff[1:] |= mask[1:] != mask[:-1]
    diff[:-1] |= mask[:-1] != mask[1:]
    diff[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    diff[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    small = np.isin(mask, [PART_ID["button"], PART_ID["logo"], PART_ID["zipper"]])
    rgb[diff & garment & ~small] *= 0.8
    # Folds: soft darker/lighter ridges, mostly along the garment's length, plus top light.
    u, v = pose.frame()
    light = 1.0 + rng.uniform(0.04, 0.1) * (-v / n) + rng.uniform(-0.04, 0.04) * (u / n)
    for _ in range(int(rng.integers(2, 6))):
        theta = rng.normal(0, 0.35)
        x0, y0 = rng.uniform(-0.3, 0.3) * n, rng.uniform(-0.3, 0.3) * n
        dist = (u - x0) * math.cos(theta) - (v - y0) * math.sin(theta)
        width = rng.uniform(0.015, 0.05) * n
        light += rng.uniform(-0.18, 0.12) * np.exp(-0.5 * (dist / width) ** 2)
    rgb *= light[..., None]
    rgb += rng.normal(0, rng.uniform(2.0, 5.0), size=(n, n, 1))  # fabric grain, same on RGB
    # Background: a light studio tint with a gradient, and the garment's soft shadow.
    tint = rng.uniform(200, 240) + rng.normal(0, 6, size=3)
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float32) / n - 0.5
    g = rng.uniform(-25, 25) * gy + rng.uniform(-12, 12) * gx
    bg = tint[None, None, :] + g[..., None]
    off = max(1, round(0.025 * n))
    shadow = np.zeros((n, n), dtype=np.float32)
    shadow[off:, off:] = garment[:-off, :-off]
    k = 2 * max(1, round(0.03 * n)) + 1
    shadow = cv2.GaussianBlur(shadow, (k, k), 0)
    bg *= (1 - rng.uniform(0.1, 0.2) * shadow)[..., None]
    bg += rng.normal(0, 1.2, size=(n, n, 1))
    out = np.where(garment[..., None], rgb, bg)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


_FRAMING: dict[str, tuple[float, float]] = {
    "tank top": (0.45, 0.66), "dress": (0.52, 0.9), "coat": (0.52, 0.92), "trousers": (0.5, 0.9),
    "shorts": (0.41, 0.5), "skirt": (0.5, 0.64),
}


def render_garment(attributes: dict, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw the garment described by ``attributes`` (see ``armani.data.synthetic``).

    Returns ``(image, mask)``: uint8 (size, size, 3) RGB and uint8 (size, size) part ids
    indexing ``armani.parts.PART_NAMES``. Shape, pose, shading and background come from
    ``rng``; the parts, their counts and pocket sides come from ``attributes`` only.
    """
    if size < 32:
        raise ValueError(f"garments need at least 32x32 pixels to keep small parts apart, got size={size}")
    category = attributes["category"]
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    # Zoom so the garment fills ~80% of the frame: (vertical centre, largest extent) in units.
    y_mid, extent = _FRAMING.get(category, (0.47, 0.88 if attributes["sleeve"] == "long" else 0.7))
    scale = 0.8 / extent * rng.uniform(0.9, 1.04)
    pose = Pose(
        size=int(size),
        scale=scale,
        angle=rng.uniform(-0.06, 0.06),
        cx=0.5 + rng.uniform(-0.03, 0.03),
        cy=0.5 - scale * (y_mid - 0.5) + rng.uniform(-0.02, 0.02),
    )
    canvas = _Canvas(pose)
    style = _style(attributes, pose, rng)
    if category in BOTTOMS:
        _draw_bottom(canvas, attributes, rng, style)
    else:
        _draw_top(canvas, attributes, rng, style)
    return _finish(canvas, rng), canvas.mask

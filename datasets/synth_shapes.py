"""Offline procedural detection dataset ("synth-shapes") for yolo_attn.

Standalone: imports only numpy, cv2, yaml, the standard library and its sibling ``safe_build.py`` (the build-safety
layer), so a dataset YAML's ``download:`` snippet can import it from its folder (see ``synth-shapes.yaml``), the plugin
by path (``yolo_attn.by_path.import_file``), or it runs as a script::

    python datasets/synth_shapes.py --root DIR --train 1000 --val 200 --imgsz 320 --seed 0

Layout written under ``root`` (the standard Ultralytics one)::

    images/{train,val}/000000.jpg ...   JPEG, quality 90
    labels/{train,val}/000000.txt ...   "cls cx cy w h" normalised, one line per object (empty file: no objects)
    synth_shapes.json                   record of the finished build (generator version and arguments, class names,
                                        each folder's file count, size and digest of names and sizes), written last

Classes (colours are random and independent of the class, so colour alone never decides it):

    0 solid    filled shape (ellipse / triangle / quad / pentagon / hexagon), flat or softly shaded fill
    1 hollow   thick outline of the same kinds of shape, background visible inside (never an axis-aligned rectangle)
    2 striped  filled shape textured with parallel stripes of a second colour
    3 dotted   filled shape textured with a grid of dots of a second colour
    4 pair     two identical cross marks ("+" or "x") side by side in a horizontal row
    5 triplet  three identical cross marks side by side in a horizontal row
    6 framed   a thin axis-aligned rectangular frame with a solid shape inside it; the box is the whole frame and the
               inner shape is part of the object (a shape counts as "solid" only when it is NOT inside a frame)

Unlabelled distractors resemble parts of objects: line segments, open arcs (like a broken hollow outline), single
cross marks and vertical pairs of cross marks (pair/triplet with the wrong count or arrangement), empty frames (framed
without content) and scribbles. Any filled shape that is not inside a frame is an object (solid/striped/dotted), so
distractors are never filled shapes. Backgrounds are flat colour, linear or radial gradients or smooth colour
"clouds", optionally with grain/mottle noise; images may get sensor noise and a slight blur.

Labelling rules:

* every item is drawn through a binary mask into an owner map; an object's box is the tight bounding box of the pixels
  it still owns at the end (its *visible* extent), in pixel-edge coordinates, so boxes match what was drawn exactly
  (before JPEG/noise/blur, which can smear edges by about a pixel).
* objects may overlap; a placement is rejected if it would leave an earlier object with less than 50% of its pixels
  visible, and any object with less than 40% visible (more than 60% occluded) would be dropped from the labels.
* pair / triplet / single-mark / vertical-pair items and the inside of frames (filled or empty) are kept clear: they
  are only placed on untouched background and nothing is drawn over them or into a margin around them, so a visible
  arrangement of marks or a shape inside a frame always means what its label says.
* all objects lie fully inside the image.

Building: :func:`ensure` (what the dataset YAMLs' ``download:`` snippets call) uses a set that matches its record as
it is and otherwise builds it once under an inter-process lock (``.<set>.lock`` next to the folder), however many
processes ask at the same time; a set that no longer matches (files deleted or truncated, a build killed half-way)
is rebuilt. :func:`generate` always rebuilds. Both hand the writing to ``safe_build.build`` with :data:`RECIPE`; see
``docs/data.md``.

Determinism: image ``i`` of split ``s`` is rendered from ``numpy.random.default_rng([seed, split_code(s), i])`` alone,
so the same seed gives identical arrays and byte-identical label files (and JPEG bytes with the same OpenCV build),
independently of how many images a split has; train and val never share images.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

if __package__:  # imported as a module of its folder (yolo_attn.by_path.import_file; yolo_attn.datasets in a wheel)
    from . import safe_build
else:  # run as a script (its folder is first on sys.path), or imported by name from its folder
    import safe_build

__all__ = [
    "CLASS_NAMES",
    "RECIPE",
    "generate",
    "ensure",
    "describe",
    "encode_jpg",
    "render",
    "render_sample",
    "draw_labels",
    "save_previews",
    "write_dataset_yaml",
]

CLASS_NAMES: list[str] = ["solid", "hollow", "striped", "dotted", "pair", "triplet", "framed"]
VERSION = 1
JPEG_QUALITY = 90
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
MIN_SCALE, MAX_SCALE = 0.04, 0.5  # object size (longest side) as a fraction of the image side, log-uniform
PLACE_MIN_VISIBLE = 0.5  # reject a placement that would leave an earlier object less visible than this
LABEL_MIN_VISIBLE = 0.4  # drop objects less visible than this (i.e. more than 60% occluded)
MIN_COLOR_DIST = 90.0  # minimum RGB distance between an item's colour and what lies under it
SHAPE_KINDS = ("ellipse", "tri", "quad", "pent", "hex")
_N_SIDES = {"tri": 3, "quad": 4, "pent": 5, "hex": 6, "ellipse": 40}
# minimum longest side in pixels per class, so that texture / count / frame stay legible at small image sizes
_MIN_PX = {0: 5, 1: 14, 2: 12, 3: 14, 4: 12, 5: 19, 6: 16}


# ----------------------------------------------------------------------------------------------------------- helpers
def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Per-image generator: depends only on (seed, split, index)."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def _pick_color(rng: np.random.Generator, ref, min_dist: float = MIN_COLOR_DIST, tries: int = 16) -> np.ndarray:
    """Random RGB colour at least ``min_dist`` away from ``ref`` (or the farthest of ``tries`` candidates)."""
    cand = rng.integers(0, 256, (tries, 3)).astype(np.float32)
    d = np.linalg.norm(cand - np.asarray(ref, np.float32), axis=1)
    ok = np.flatnonzero(d >= min_dist)
    return cand[ok[0] if ok.size else int(d.argmax())].astype(np.uint8)


def _shape_poly(rng: np.random.Generator, kind: str, w: int, h: int, rot: float | None = None) -> np.ndarray:
    """Polygon (N, 2) of a shape whose bounding box is exactly [0, w-1] x [0, h-1] (pixel centres)."""
    n = _N_SIDES[kind]
    rot = rng.uniform(0, 2 * math.pi) if rot is None else rot
    a = rot + np.arange(n) * (2 * math.pi / n)
    p = np.stack([np.cos(a), np.sin(a)], 1)
    p -= p.min(0)
    p /= np.maximum(p.max(0), 1e-6)
    return p * np.array([w - 1, h - 1], np.float64)


def _fill_poly(mask: np.ndarray, poly: np.ndarray, ox: float = 0.0, oy: float = 0.0) -> None:
    pts = np.round((poly + (ox, oy)) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)


def _shape_size(rng: np.random.Generator, s: int) -> tuple[int, int]:
    """(w, h) with longest side ``s`` and a random aspect ratio in [0.6, 1]."""
    short = max(3, int(round(s * rng.uniform(0.6, 1.0))))
    return (s, short) if rng.random() < 0.5 else (short, s)


def _solid_kind(rng: np.random.Generator) -> str:
    return SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]


def _shade(rng: np.random.Generator, color: np.ndarray, h: int, w: int) -> np.ndarray:
    """Flat colour or a soft linear shading (amplitude <= 25 levels) over an (h, w) patch."""
    if rng.random() < 0.5:
        return np.broadcast_to(color, (h, w, 3))
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w)  # roughly in [-1, 1]
    out = color.astype(np.float32) + (rng.uniform(8, 25) * t)[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _mean_under(img: np.ndarray, x0: int, y0: int, mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    px = img[y0 : y0 + h, x0 : x0 + w][mask]
    return px.mean(0) if px.size else img[y0 : y0 + h, x0 : x0 + w].reshape(-1, 3).mean(0)


# ------------------------------------------------------------------------------------------------------------ items
# An item is a dict: mask (bool h x w, the pixels it paints), reserve (local rect x0, y0, x1, y1 that must be clean
# when placed and that nothing may paint into afterwards, or None) and paint(rng, img, x0, y0) -> (h, w, 3) colours.
def _item(mask, paint, reserve=None, cls=-1):
    return {"mask": mask.astype(bool), "paint": paint, "reserve": reserve, "cls": cls}


def _make_solid(rng, s, cls=0):
    w, h = _shape_size(rng, s)
    mask = np.zeros((h, w), np.uint8)
    _fill_poly(mask, _shape_poly(rng, _solid_kind(rng), w, h))
    m = mask.astype(bool)

    def paint(rng, img, x0, y0):
        return _shade(rng, _pick_color(rng, _mean_under(img, x0, y0, m)), h, w)

    return _item(m, paint, cls=cls)


def _make_hollow(rng, s):
    w, h = _shape_size(rng, s)
    kind = _solid_kind(rng)
    rot = None
    if kind == "quad":  # never an axis-aligned rectangle (those are frames)
        rot = math.radians(rng.uniform(20, 70))
    poly = _shape_poly(rng, kind, w, h, rot)
    fill = np.zeros((h, w), np.uint8)
    _fill_poly(fill, poly)
    # stroke relative to the inradius so that a clear hole always remains (thin triangles included)
    r_in = float(cv2.distanceTransform(np.pad(fill, 1), cv2.DIST_L2, 3).max())
    t = max(1, int(round(r_in * rng.uniform(0.25, 0.5))))
    inner = cv2.erode(np.pad(fill, 1), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * t + 1, 2 * t + 1)))
    m = fill.astype(bool) & ~inner[1:-1, 1:-1].astype(bool)

    def paint(rng, img, x0, y0):
        return _shade(rng, _pick_color(rng, _mean_under(img, x0, y0, m)), h, w)

    return _item(m, paint, cls=1)


def _make_textured(rng, s, cls):
    w, h = _shape_size(rng, s)
    mask = np.zeros((h, w), np.uint8)
    _fill_poly(mask, _shape_poly(rng, _solid_kind(rng), w, h))
    m = mask.astype(bool)
    lo, hi = (4.0, 5.0) if cls == 2 else (5.0, 6.0)
    period = rng.uniform(max(lo, s / 10), max(hi, s / 3.5))
    ang = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * math.cos(ang) + yy * math.sin(ang) + rng.uniform(0, period)
    if cls == 2:  # stripes
        pattern = (u % period) < period * rng.uniform(0.4, 0.6)
    else:  # dots on a (rotated) square grid
        v = -xx * math.sin(ang) + yy * math.cos(ang) + rng.uniform(0, period)
        du, dv = u % period - period / 2, v % period - period / 2
        pattern = du * du + dv * dv < (period * rng.uniform(0.22, 0.32)) ** 2

    def paint(rng, img, x0, y0):
        a = _pick_color(rng, _mean_under(img, x0, y0, m))
        b = _pick_color(rng, a)
        return np.where(pattern[..., None], b, a).astype(np.uint8)

    return _item(m, paint, cls=cls)


def _mark_mask(kind: int, m: int) -> np.ndarray:
    """Small cross mark, ``+`` (kind 0) or ``x`` (kind 1), filling an m x m box; never a filled or hollow shape."""
    mask = np.zeros((m, m), np.uint8)
    t = max(1, int(round(m * (0.3 if m >= 8 else 0.25))))
    if kind == 0:
        a = (m - t) // 2
        mask[a : a + t, :] = 1
        mask[:, a : a + t] = 1
    else:
        cv2.line(mask, (0, 0), (m - 1, m - 1), 1, t, cv2.LINE_8)
        cv2.line(mask, (m - 1, 0), (0, m - 1), 1, t, cv2.LINE_8)
    return mask


def _make_marks(rng, s, k, horizontal=True, cls=-1):
    """``k`` identical marks in a row spanning ``s`` pixels; clear margin of about one gap around the row."""
    gap_r = rng.uniform(0.5, 1.2)
    m = max(5, int(round(s / (k + (k - 1) * gap_r))))
    g = max(2, int(round(m * gap_r)))
    jitter = max(0, int(round(m * 0.1)))
    mk = _mark_mask(int(rng.integers(2)), m)
    length = k * m + (k - 1) * g
    h, w = m + jitter, length
    mask = np.zeros((h, w), np.uint8)
    for i in range(k):
        dy = int(rng.integers(0, jitter + 1))
        mask[dy : dy + m, i * (m + g) : i * (m + g) + m] |= mk
    if not horizontal:
        mask = mask.T.copy()
        h, w = w, h
    mx, my = (g, max(2, m // 2)) if horizontal else (max(2, m // 2), g)
    mb = mask.astype(bool)

    def paint(rng, img, x0, y0):
        return _shade(rng, _pick_color(rng, _mean_under(img, x0, y0, mb)), h, w)

    return _item(mb, paint, reserve=(-mx, -my, w + mx, h + my), cls=cls)


def _make_frame(rng, s, with_content=True):
    w, h = _shape_size(rng, s)
    w, h = max(w, 12), max(h, 12)
    t = max(1, int(round(min(w, h) * rng.uniform(0.04, 0.08))))
    mask = np.zeros((h, w), np.uint8)
    mask[:t], mask[-t:], mask[:, :t], mask[:, -t:] = 1, 1, 1, 1
    frame = mask.astype(bool)
    inner = np.zeros((h, w), bool)
    if with_content:
        iw, ih = w - 2 * t, h - 2 * t
        f = rng.uniform(0.35, 0.65)
        sw, sh = max(3, int(iw * f * rng.uniform(0.7, 1.0))), max(3, int(ih * f * rng.uniform(0.7, 1.0)))
        ox = t + (iw - sw) / 2 + rng.uniform(-0.15, 0.15) * (iw - sw)
        oy = t + (ih - sh) / 2 + rng.uniform(-0.15, 0.15) * (ih - sh)
        tmp = np.zeros((h, w), np.uint8)
        _fill_poly(tmp, _shape_poly(rng, _solid_kind(rng), sw, sh), round(ox), round(oy))
        inner = tmp.astype(bool)

    def paint(rng, img, x0, y0):
        out = _shade(rng, _pick_color(rng, _mean_under(img, x0, y0, frame)), h, w).copy()
        if with_content:
            out[inner] = _pick_color(rng, _mean_under(img, x0, y0, inner))
        return out

    return _item(frame | inner, paint, reserve=(t, t, w - t, h - t), cls=6 if with_content else -1)


def _make_line(rng, s):
    length = s
    a = rng.uniform(0, math.pi)
    dx, dy = abs(length * math.cos(a)), abs(length * math.sin(a))
    th = int(rng.integers(1, 4))
    w, h = int(dx) + th + 1, int(dy) + th + 1
    mask = np.zeros((h, w), np.uint8)
    p0, p1 = (th // 2 + 1, th // 2 + 1), (w - th // 2 - 2, h - th // 2 - 2)
    if rng.random() < 0.5:
        p0, p1 = (p0[0], p1[1]), (p1[0], p0[1])
    cv2.line(mask, p0, p1, 1, th, cv2.LINE_8)
    return _plain_item(rng, mask)


def _make_arc(rng, s):
    w, h = _shape_size(rng, s)
    t = max(2, int(round(min(w, h) * rng.uniform(0.08, 0.18))))
    mask = np.zeros((h + t, w + t), np.uint8)
    start = rng.uniform(0, 360)
    cv2.ellipse(mask, ((w + t) // 2, (h + t) // 2), (w // 2, h // 2), 0, start, start + rng.uniform(60, 220), 1, t)
    return _plain_item(rng, mask)


def _make_scribble(rng, s):
    n = int(rng.integers(3, 7))
    pts = rng.uniform(0, s, (n, 2))
    pts -= pts.min(0)
    th = int(rng.integers(1, 3))
    w, h = (np.ceil(pts.max(0)).astype(int) + th + 2).tolist()
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.round(pts).astype(np.int32) + th], False, 1, th, cv2.LINE_8)
    return _plain_item(rng, mask)


def _plain_item(rng, mask):
    m = mask.astype(bool)
    h, w = m.shape

    def paint(rng, img, x0, y0):
        return np.broadcast_to(_pick_color(rng, _mean_under(img, x0, y0, m), 60.0), (h, w, 3))

    return _item(m, paint)


def _make_object(rng, cls: int, s: int):
    if cls == 0:
        return _make_solid(rng, s)
    if cls == 1:
        return _make_hollow(rng, s)
    if cls in (2, 3):
        return _make_textured(rng, s, cls)
    if cls in (4, 5):
        return _make_marks(rng, s, 2 if cls == 4 else 3, True, cls)
    return _make_frame(rng, s, True)


def _make_distractor(rng, imgsz: int):
    kind = rng.choice(6, p=[0.26, 0.2, 0.18, 0.1, 0.12, 0.14])
    if kind == 0:
        return _make_line(rng, int(imgsz * rng.uniform(0.1, 0.6)))
    if kind == 1:
        return _make_arc(rng, _scale_px(rng, imgsz, 10))
    if kind == 2:  # single mark
        m = max(5, int(imgsz * math.exp(rng.uniform(math.log(0.015), math.log(0.12)))))
        return _make_marks(rng, m, 1)
    if kind == 3:  # vertical pair
        return _make_marks(rng, _scale_px(rng, imgsz, 12, 0.3), 2, horizontal=False)
    if kind == 4:
        return _make_frame(rng, _scale_px(rng, imgsz, 14), with_content=False)
    return _make_scribble(rng, int(imgsz * rng.uniform(0.05, 0.3)))


def _scale_px(rng, imgsz: int, min_px: int, max_scale: float = MAX_SCALE) -> int:
    s = imgsz * math.exp(rng.uniform(math.log(MIN_SCALE), math.log(max_scale)))
    return int(min(max(round(s), min_px), imgsz))


# ------------------------------------------------------------------------------------------------------- background
_NOISE_BANK: np.ndarray | None = None
_BANK = 640


def _noise(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    """(n, n, c) float32 standard-normal noise: a random crop (and flip) of a fixed, seeded bank, for speed."""
    global _NOISE_BANK
    if n > _BANK:
        return rng.standard_normal((n, n, c), np.float32)
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(20240611).standard_normal((_BANK, _BANK, 3), np.float32)
    oy, ox = rng.integers(0, _BANK - n + 1, 2)
    crop = _NOISE_BANK[oy : oy + n, ox : ox + n, :c]
    return crop[::-1] if rng.random() < 0.5 else crop


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Flat / linear gradient / radial gradient / smooth clouds, plus optional mottle and grain (uint8 BGR)."""
    kind = int(rng.integers(4))
    c1, c2 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    m = max(8, n // 8)  # smooth fields are computed at low resolution and upsampled
    r = (np.arange(m, dtype=np.float32) + 0.5) * np.float32(n / m)
    if kind == 0:
        base = np.empty((m, m, 3), np.float32)
        base[:] = c1
    elif kind in (1, 2):
        if kind == 1:
            a = rng.uniform(0, 2 * math.pi)
            t = r[None, :] * np.float32(math.cos(a)) + r[:, None] * np.float32(math.sin(a))
        else:
            cx, cy = rng.uniform(0, n, 2).astype(np.float32)
            t = np.sqrt((r[None, :] - cx) ** 2 + (r[:, None] - cy) ** 2)
        t -= t.min()
        t *= np.float32(1 / max(float(t.max()), 1e-6))
        base = c1 + (c2 - c1) * t[..., None]
    else:  # smooth colour clouds
        g = int(rng.integers(2, 7))
        base = cv2.resize(rng.uniform(0, 255, (g, g, 3)).astype(np.float32), (m, m), interpolation=cv2.INTER_CUBIC)
    img = cv2.resize(base, (n, n), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img, 0, 255, out=img).astype(np.uint8)
    lum = None
    if rng.random() < 0.35:  # mottle: mid-frequency luminance noise
        g = int(rng.integers(12, 40))
        lum = cv2.resize(rng.standard_normal((g, g), np.float32), (n, n), interpolation=cv2.INTER_LINEAR)
        lum *= np.float32(rng.uniform(5, 20))
    if rng.random() < 0.4:  # grain
        grain = _noise(rng, n, 1)[..., 0] * np.float32(rng.uniform(2, 10))
        lum = grain if lum is None else lum + grain
    if lum is not None:
        img = cv2.add(img, cv2.merge([lum, lum, lum]), dtype=cv2.CV_8U)
    return img


# ----------------------------------------------------------------------------------------------------------- render
def render(rng: np.random.Generator, imgsz: int = 320, debug: bool = False):
    """Render one image.

    Returns ``(img, labels)`` with ``img`` an (imgsz, imgsz, 3) BGR uint8 array and ``labels`` an int (n, 5) array of
    ``cls, x0, y0, x1, y1`` visible-extent boxes in pixel-edge coordinates (x1, y1 exclusive). With ``debug=True`` a
    third element is a dict with ``owner`` (int32 map of which item painted each pixel, -1 = background), ``ids``
    (the owner id of each label row), ``visible`` (visible fraction of each labelled object's pixels), ``background``,
    ``clean`` (the image before noise/blur) and ``items`` (``((x0, y0), mask)`` per label row: where the object's
    whole drawn mask was placed, occluded parts included).
    """
    n = int(imgsz)
    if n < 64:
        raise ValueError(f"imgsz must be >= 64, got {n}")
    img = _background(rng, n)
    background = img.copy() if debug else None
    owner = np.full((n, n), -1, np.int32)
    reserved = np.full((n, n), -1, np.int32)
    cls_of, total, visible = [], [], []

    def place(item, tries: int) -> bool:
        m = item["mask"]
        h, w = m.shape
        if h > n or w > n:
            return False
        for _ in range(tries):
            x0, y0 = int(rng.integers(0, n - w + 1)), int(rng.integers(0, n - h + 1))
            if (reserved[y0 : y0 + h, x0 : x0 + w][m] >= 0).any():
                continue  # would paint into a kept-clear zone
            rz = None
            if item["reserve"] is not None:
                a, b, c, d = item["reserve"]
                rz = (slice(max(0, y0 + b), min(n, y0 + d)), slice(max(0, x0 + a), min(n, x0 + c)))
                if (owner[rz] >= 0).any() or (reserved[rz] >= 0).any():
                    continue  # own clear zone must be untouched background
            under = owner[y0 : y0 + h, x0 : x0 + w][m]
            under = under[under >= 0]
            if under.size:
                ids, cnt = np.unique(under, return_counts=True)
                if any(cls_of[i] >= 0 and visible[i] - c < PLACE_MIN_VISIBLE * total[i] for i, c in zip(ids, cnt)):
                    continue  # would hide too much of an earlier object
                for i, c in zip(ids, cnt):
                    visible[i] -= int(c)
            k = len(cls_of)
            col = item["paint"](rng, img, x0, y0)
            img[y0 : y0 + h, x0 : x0 + w][m] = col[m]
            owner[y0 : y0 + h, x0 : x0 + w][m] = k
            if rz is not None:
                reserved[rz] = k
            npx = int(m.sum())
            cls_of.append(item["cls"])
            total.append(npx)
            visible.append(npx)
            item["xy"], item["id"] = (x0, y0), k
            return True
        return False

    # plan: objects with clear zones first (they need untouched background), then background clutter, then the
    # other objects, then clutter on top
    n_obj = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8], p=[0.08, 0.12, 0.16, 0.16, 0.16, 0.14, 0.1, 0.08]))
    classes = rng.integers(0, len(CLASS_NAMES), n_obj)
    first = [int(c) for c in classes if c >= 4]
    rest = [int(c) for c in classes if c < 4]
    n_clut = int(rng.integers(1, 9))
    n_under = int(rng.integers(0, n_clut + 1))
    placed = []
    for c in first:
        it = _make_object(rng, c, _scale_px(rng, n, _MIN_PX[c]))
        if place(it, 12):
            placed.append(it)
    for _ in range(n_under):
        place(_make_distractor(rng, n), 4)
    for c in rest:
        it = _make_object(rng, c, _scale_px(rng, n, _MIN_PX[c]))
        if place(it, 12):
            placed.append(it)
    for _ in range(n_clut - n_under):
        place(_make_distractor(rng, n), 4)

    # labels: tight box of the pixels each object still owns
    rows, ids, items = [], [], []
    for it in placed:
        k = it["id"]
        if visible[k] >= LABEL_MIN_VISIBLE * total[k]:
            rows.append((it["cls"], *_visible_box(owner, k, it)))
            ids.append(k)
            items.append((it["xy"], it["mask"]))
    out = np.array(rows, np.int64).reshape(-1, 5)

    clean = img.copy() if debug else None
    if rng.random() < 0.5:  # sensor noise
        img = cv2.add(img, _noise(rng, n, 3) * np.float32(rng.uniform(2, 8)), dtype=cv2.CV_8U)
    if rng.random() < 0.25:  # slight blur
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 0.8))
    if debug:
        vis = np.array([visible[k] / total[k] for k in ids], np.float64)
        info = {
            "owner": owner,
            "ids": np.array(ids, np.int64),
            "visible": vis,
            "background": background,
            "clean": clean,
            "items": items,
        }
        return img, out, info
    return img, out


def _visible_box(owner: np.ndarray, k: int, item: dict) -> tuple[int, int, int, int]:
    """Tight (x0, y0, x1, y1) box of the pixels owned by item ``k`` (searching only its own patch)."""
    x0, y0 = item["xy"]
    h, w = item["mask"].shape
    vis = owner[y0 : y0 + h, x0 : x0 + w] == k
    rows, cols = np.flatnonzero(vis.any(1)), np.flatnonzero(vis.any(0))
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def render_sample(seed: int, split: str, index: int, imgsz: int = 320, debug: bool = False):
    """Render image ``index`` of ``split`` exactly as :func:`generate` does (same RNG stream)."""
    return render(_rng(seed, split, index), imgsz, debug)


# -------------------------------------------------------------------------------------------------------------- I/O
def _label_text(labels: np.ndarray, n: int) -> str:
    lines = []
    for c, x0, y0, x1, y1 in labels.tolist():
        lines.append(f"{c} {(x0 + x1) / 2 / n:.6f} {(y0 + y1) / 2 / n:.6f} {(x1 - x0) / n:.6f} {(y1 - y0) / n:.6f}\n")
    return "".join(lines)


def encode_jpg(img: np.ndarray) -> bytes:
    """JPEG bytes of a BGR image at the set's quality (``JPEG_QUALITY``)."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def generate(root: str | Path, n_train: int, n_val: int, imgsz: int = 320, seed: int = 0) -> Path:
    """Write the dataset under ``root`` (see module docstring for the layout), replacing any earlier one; return it.

    ``images/{train,val}`` and ``labels/{train,val}`` are replaced as a whole (together with stale Ultralytics
    ``labels/{split}.cache`` files), under the set's lock (see ``safe_build.build``). Use :func:`ensure` to build only
    when the set is missing or damaged.
    """
    return safe_build.build(root, _detect_params(n_train, n_val, imgsz, seed), _write_detect, RECIPE, force=True)


def ensure(root: str | Path, n_train: int, n_val: int, imgsz: int = 320, seed: int = 0) -> Path:
    """Return ``root`` holding the finished dataset: used as it is when it matches its record, built otherwise.

    Safe to call from many processes at once (one builds, the others wait for it); see ``safe_build.build``.
    """
    return safe_build.build(root, _detect_params(n_train, n_val, imgsz, seed), _write_detect, RECIPE)


def _detect_params(n_train: int, n_val: int, imgsz: int, seed: int) -> dict:
    if min(n_train, n_val) < 0 or seed < 0:
        raise ValueError("n_train, n_val and seed must be >= 0")
    return {"task": "detect", "n_train": int(n_train), "n_val": int(n_val), "imgsz": int(imgsz), "seed": int(seed)}


def _write_detect(root: Path, params: dict) -> list[str]:
    """Write the detection splits into hidden ``.partial`` folders, rename them into place; return the folders."""
    splits = (("train", params["n_train"]), ("val", params["n_val"]))
    parts = {}
    for split, count in splits:
        parts[split] = {kind: safe_build.fresh_dir(root / kind / f".{split}.partial") for kind in ("images", "labels")}
        for i in range(count):
            img, labels = render_sample(params["seed"], split, i, params["imgsz"])
            text = _label_text(labels, params["imgsz"])
            safe_build.write_file(parts[split]["images"] / f"{i:06d}.jpg", encode_jpg(img))
            safe_build.write_file(parts[split]["labels"] / f"{i:06d}.txt", text.encode())
    for split, _ in splits:
        safe_build.commit_split(root, split, parts[split])
    return [f"{kind}/{split}" for split, _ in splits for kind in ("images", "labels")]


# ------------------------------------------------------------------------------------------------------- the record
def describe(params: dict) -> str:
    """The set that generator arguments give, in a few words (for the "building" message)."""
    return f"{params['task']}, {params['n_train']} train / {params['n_val']} val scenes at {params['imgsz']} px"


# What a build records besides its arguments (``synth_tasks.py`` records the same: the scenes are these)
RECIPE = safe_build.Recipe(
    "synth-shapes", "yolo_attn synth_shapes", VERSION, CLASS_NAMES, "synth_shapes.json", describe
)


def write_dataset_yaml(root: str | Path, path: str | Path) -> Path:
    """Write a plain Ultralytics dataset YAML (no ``download:``) for a dataset already generated at ``root``."""
    data = {
        "path": str(Path(root).resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(CLASS_NAMES)),
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def draw_labels(img: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Copy of ``img`` with pixel boxes ``(cls, x0, y0, x1, y1)`` and class names drawn on it (for visual checks)."""
    out = img.copy()
    for c, x0, y0, x1, y1 in np.asarray(labels).reshape(-1, 5).tolist():
        col = tuple(int(v) for v in np.array(cv2.applyColorMap(np.uint8([[c * 36]]), cv2.COLORMAP_HSV))[0, 0])
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 3)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), col, 1)
        cv2.putText(out, CLASS_NAMES[c], (x0, max(9, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 2)
        cv2.putText(out, CLASS_NAMES[c], (x0, max(9, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, col, 1)
    return out


def save_previews(out_dir: str | Path, n: int = 4, imgsz: int = 320, seed: int = 0, split: str = "train") -> list[Path]:
    """Save ``n`` images of ``split`` with their boxes drawn (PNG, upscaled x2) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        img, labels = render_sample(seed, split, i, imgsz)
        big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        f = out_dir / f"{split}_{i:06d}.png"
        cv2.imwrite(str(f), draw_labels(big, labels * np.array([1, 2, 2, 2, 2])))
        files.append(f)
    return files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate the synth-shapes detection dataset (offline, deterministic).")
    ap.add_argument("--root", required=True, help="output directory (dataset root)")
    ap.add_argument("--train", type=int, default=1000, help="number of training images")
    ap.add_argument("--val", type=int, default=200, help="number of validation images")
    ap.add_argument("--imgsz", type=int, default=320, help="image side in pixels (>= 64)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0)")
    ap.add_argument("--yaml", default="", help="also write a plain dataset YAML to this path")
    ap.add_argument("--preview", default="", help="also save a few training images with boxes drawn into this dir")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    root = generate(a.root, a.train, a.val, a.imgsz, a.seed)
    dt = time.perf_counter() - t
    print(f"synth-shapes: {a.train} train + {a.val} val images ({a.imgsz}px) in {dt:.1f}s -> {root}")
    if a.yaml:
        print(f"dataset YAML -> {write_dataset_yaml(root, a.yaml)}")
    if a.preview:
        print(f"previews -> {save_previews(a.preview, 4, a.imgsz, a.seed)[0].parent}")


if __name__ == "__main__":
    main()

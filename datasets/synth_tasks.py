"""synth-shapes for every Ultralytics task: the same scenes as ``synth_shapes.py``, labelled for segment, pose, OBB
and classify.

Standalone like ``synth_shapes.py`` (numpy, cv2, yaml, standard library), which it imports from its own folder with
``safe_build.py``, as a dataset YAML's ``download:`` snippet imports this file. Every label is derived from the pixels
each object owns at the end of rendering (its *visible* pixels, the ones its detection box is the tight box of) or
from the object's whole drawn mask:

* segment: one polygon per object through the centres of the boundary pixels of its visible pixels (pixel index +
  0.5, / imgsz; the box Ultralytics derives from it is the detection box less half a pixel on each side). Objects
  with several parts (pair, triplet, a shape cut in two by an occluder) or holes (hollow, framed) keep every part and
  hole (``cv2.RETR_CCOMP``): the loops are joined into one polygon by zero-width bridges between their nearest
  vertices (a minimum spanning tree, the idea of Ultralytics' ``merge_multi_segment``), so filling it as Ultralytics
  does (``cv2.fillPoly`` of ``int()`` pixel coordinates) gives back exactly the visible pixels, plus the one-pixel
  lines of bridges that cross background (holes stay empty). Keeping only the largest part would drop whole marks.
* pose: 5 keypoints per object, ``centre`` (centroid of its whole drawn mask) and the ``top``, ``right``, ``bottom``
  and ``left`` extreme pixels of that mask (the median pixel of the extreme row / column), at pixel centres.
  Visibility 2 where the object owns the pixel, 1 where it is hidden (occluded, or background inside a hollow
  shape); objects lie fully inside the image, so never 0. ``flip_idx`` swaps right and left.
* obb: the minimum-area rotated rectangle around the visible pixels (their pixel squares), 4 corners; when that
  rectangle would stick out of the image (objects touching the border, about 3 % of them) the smallest rectangle
  with a side along the pixels' convex hull that fits (at worst the axis-aligned detection box) is used instead.
* classify: one crop per object (its box with a 10 % margin, at least 16 px a side: Ultralytics skips images under
  10 px), ``{train,val}/<class name>/<image>_<object>.jpg``.

Run as a script: ``python synth_tasks.py --task segment --root DIR --train 16 --val 8 --imgsz 128``.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

if __package__:  # imported as a module of its folder (yolo_attn.by_path.import_file; yolo_attn.datasets in a wheel)
    from . import safe_build, synth_shapes
else:  # run as a script (its folder is first on sys.path), or imported by name from its folder
    import safe_build
    import synth_shapes

TASKS = ("segment", "pose", "obb", "classify")
KEYPOINTS = ("centre", "top", "right", "bottom", "left")
FLIP_IDX = [0, 1, 4, 3, 2]  # a horizontal flip swaps right and left
CROP_MARGIN = 0.1
MIN_CROP = 16  # Ultralytics drops images under 10 px a side as corrupt: small objects get more context instead


def objects(seed: int, split: str, index: int, imgsz: int) -> tuple[np.ndarray, list[dict]]:
    """Render image ``index`` of ``split`` as ``synth_shapes.generate`` does; return it with one dict per labelled
    object: ``cls``, ``box`` (x0, y0, x1, y1 pixel edges), ``visible`` and ``drawn`` (full-image boolean masks)."""
    img, labels, info = synth_shapes.render_sample(seed, split, index, imgsz, debug=True)
    out = []
    for (cls, *box), k, ((x0, y0), mask) in zip(labels.tolist(), info["ids"].tolist(), info["items"]):
        drawn = np.zeros((imgsz, imgsz), bool)
        drawn[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
        out.append({"cls": cls, "box": box, "visible": info["owner"] == k, "drawn": drawn})
    return img, out


def polygon(mask: np.ndarray) -> np.ndarray:
    """Return one (N, 2) polygon, in pixel indices, whose ``cv2.fillPoly`` filling is ``mask`` (plus bridge lines).

    Each contour (outer boundaries and holes, ``cv2.RETR_CCOMP``) is a loop through the centres of its boundary
    pixels. The loops are joined into one path by zero-width bridges (walked there and back) between their nearest
    vertices, along a minimum spanning tree, so the bridges are as short as the parts allow. The fill rule turns holes
    into holes again; a bridge across background rasterises to a one-pixel line, the only pixels added.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    loops = [c[:, 0].astype(np.int64) for c in contours]
    path = _walk(loops, bridges(loops), 0, 0)[:-1]  # the path is closed implicitly
    return np.array(path, np.float64)


def bridges(loops: list[np.ndarray]) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Return the links of a minimum spanning tree over ``loops`` (Prim's algorithm from loop 0).

    Each link joins the two nearest vertices of two loops: ``{(loop, vertex): [(child loop, child vertex), ...]}``.
    """
    nearest = {}  # (a, b) -> (squared distance, vertex of a, vertex of b)
    for a in range(len(loops)):
        for b in range(a + 1, len(loops)):
            d = ((loops[a][:, None] - loops[b][None]) ** 2).sum(-1)
            i, j = np.unravel_index(int(d.argmin()), d.shape)
            nearest[a, b], nearest[b, a] = (int(d[i, j]), int(i), int(j)), (int(d[i, j]), int(j), int(i))
    links, joined, rest = {}, [0], set(range(1, len(loops)))
    while rest:
        _, a, b = min((nearest[a, b][0], a, b) for a in joined for b in sorted(rest))
        _, i, j = nearest[a, b]
        links.setdefault((a, i), []).append((b, j))
        joined.append(b)
        rest.remove(b)
    return links


def _walk(loops: list[np.ndarray], links: dict, k: int, start: int) -> list[np.ndarray]:
    """Path around loop ``k`` from vertex ``start`` back to it, detouring into every loop linked to its vertices."""
    loop, path = loops[k], []
    for step in range(len(loop)):
        v = (start + step) % len(loop)
        path.append(loop[v])
        for child, entry in links.get((k, v), []):
            path += _walk(loops, links, child, entry)  # ends on the child's entry vertex
            path.append(loop[v])  # and back over the same bridge
    path.append(loop[start])
    return path


def keypoints(obj: dict) -> np.ndarray:
    """Return the (5, 3) keypoints ``x, y, visibility`` of an object, in pixels (see the module docstring)."""
    drawn, visible = obj["drawn"], obj["visible"]
    ys, xs = np.nonzero(drawn)
    points = [(xs.mean() + 0.5, ys.mean() + 0.5)]  # centroid of the pixel centres, in pixel-edge coordinates
    for on_row, values, extreme in (
        (True, ys, ys.min()),
        (False, xs, xs.max()),
        (True, ys, ys.max()),
        (False, xs, xs.min()),
    ):
        across = np.sort((xs if on_row else ys)[values == extreme])
        middle = across[(len(across) - 1) // 2]  # the median pixel of the extreme row / column
        points.append((middle + 0.5, extreme + 0.5) if on_row else (extreme + 0.5, middle + 0.5))
    return np.array([(x, y, 2 if visible[int(y), int(x)] else 1) for x, y in points], np.float64)


def oriented_box(mask: np.ndarray) -> np.ndarray:
    """Return the 4 corners (4, 2) of the smallest rotated rectangle around the pixel squares of ``mask`` that fits in
    the image (pixel-edge coordinates).

    The candidates are the rectangles with a side along an edge of the convex hull, which include the minimum-area
    one (``cv2.minAreaRect``, rotating calipers), and the axis-aligned box, which always fits. Usually the
    minimum-area rectangle fits; for an object touching the image border it may not, and the smallest candidate that
    does is taken instead of clipping corners (a clipped rectangle is no rectangle).
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pixels = np.concatenate([c[:, 0] for c in contours]).astype(np.float32)  # the boundary ones suffice
    squares = (pixels[:, None] + np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])).reshape(-1, 2)  # pixel edges
    hull = cv2.convexHull(squares)[:, 0].astype(np.float64)
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.unique(np.concatenate([[0.0], np.arctan2(edges[:, 1], edges[:, 0]) % (math.pi / 2)]))
    size = np.array(mask.shape[::-1], np.float64)  # (width, height)
    best, best_area = None, math.inf
    for a in angles:
        axes = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # rows: the rectangle's axes
        proj = hull @ axes.T
        (u0, v0), (u1, v1) = proj.min(0), proj.max(0)
        corners = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]) @ axes
        area = (u1 - u0) * (v1 - v0)
        if area < best_area - 1e-9 and (corners >= -1e-6).all() and (corners <= size + 1e-6).all():
            best, best_area = corners, area
    return np.clip(best, 0, size)  # only rounding noise is clipped


def _label_lines(task: str, objs: list[dict], n: int) -> str:
    """Label file text of one scene for ``task`` (segment, pose or obb): one line per object, coordinates / ``n``."""
    lines = []
    for obj in objs:
        if task == "segment":
            # pixel indices -> their centres (+0.5): Ultralytics fills int() of the pixel coordinates, which gives back
            # the same pixels whatever the rounding of the 6 written decimals
            fields = [f"{v:.6f}" for v in ((polygon(obj["visible"]) + 0.5) / n).ravel()]
        elif task == "pose":
            (x0, y0, x1, y1), kpts = obj["box"], keypoints(obj)
            box = ((x0 + x1) / 2 / n, (y0 + y1) / 2 / n, (x1 - x0) / n, (y1 - y0) / n)
            fields = [f"{v:.6f}" for v in box] + [f"{x / n:.6f} {y / n:.6f} {int(v)}" for x, y, v in kpts]
        else:  # obb
            fields = [f"{v:.6f}" for v in (oriented_box(obj["visible"]) / n).ravel()]
        lines.append(" ".join([str(obj["cls"]), *fields]) + "\n")
    return "".join(lines)


def crop_box(box: list, n: int) -> tuple[int, int, int, int]:
    """Return the crop window (x0, y0, x1, y1) of an object's box in an ``n`` px image.

    The box with a ``CROP_MARGIN`` margin on each side, cut at the image border; a side shorter than ``MIN_CROP`` is
    widened to it around its middle, moved inside the image.
    """
    window = []
    for lo, hi in ((box[0], box[2]), (box[1], box[3])):
        m = round((hi - lo) * CROP_MARGIN)
        lo, hi = max(0, lo - m), min(n, hi + m)
        if hi - lo < MIN_CROP:
            lo = min(max(0, (lo + hi - MIN_CROP) // 2), n - MIN_CROP)
            hi = lo + MIN_CROP
        window.append((lo, hi))
    (x0, x1), (y0, y1) = window
    return x0, y0, x1, y1


def generate(root: str | Path, task: str, n_train: int, n_val: int, imgsz: int = 320, seed: int = 0) -> Path:
    """Write the ``task`` version of synth-shapes under ``root``, replacing any earlier one; return ``root``.

    segment / pose / obb use the detection layout (``images/{split}``, ``labels/{split}``); classify writes
    ``{split}/<class name>/`` folders. Built under the set's lock and recorded like ``synth_shapes.generate`` (see
    ``safe_build.build``); use :func:`ensure` to build only when the set is missing or damaged.
    """
    return safe_build.build(root, _params(task, n_train, n_val, imgsz, seed), _write, synth_shapes.RECIPE, force=True)


def ensure(root: str | Path, task: str, n_train: int, n_val: int, imgsz: int = 320, seed: int = 0) -> Path:
    """Return ``root`` holding the finished ``task`` set: used as it is when it matches its record, built otherwise.

    Safe to call from many processes at once (one builds, the others wait for it); see ``safe_build.build``.
    """
    return safe_build.build(root, _params(task, n_train, n_val, imgsz, seed), _write, synth_shapes.RECIPE)


def _params(task: str, n_train: int, n_val: int, imgsz: int, seed: int) -> dict:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if min(n_train, n_val) < 0 or seed < 0:
        raise ValueError("n_train, n_val and seed must be >= 0")
    return {"task": task, "n_train": int(n_train), "n_val": int(n_val), "imgsz": int(imgsz), "seed": int(seed)}


def _write(root: Path, params: dict) -> list[str]:
    """Write the set into hidden ``.partial`` folders and rename them into place; return the folders written.

    Detection layout: each split's ``images`` and ``labels`` folders, ``images/val`` last (Ultralytics' sign of a
    finished set). Classify: the whole set in ``.<set>.partial`` next to ``root``, renamed to ``root`` at the end,
    since Ultralytics takes any existing classification folder for a finished set (on a rebuild its splits replace
    those in ``root``).
    """
    task, imgsz, seed = params["task"], params["imgsz"], params["seed"]
    stage = safe_build.fresh_dir(root.with_name(f".{root.name}.partial")) if task == "classify" else None
    for split in ("train", "val"):
        if task == "classify":
            parts = {"": stage / split}
            for name in synth_shapes.CLASS_NAMES:
                (stage / split / name).mkdir(parents=True)
        else:
            parts = {kind: safe_build.fresh_dir(root / kind / f".{split}.partial") for kind in ("images", "labels")}
        for i in range(params[f"n_{split}"]):
            img, objs = objects(seed, split, i, imgsz)
            if task == "classify":
                for j, obj in enumerate(objs):
                    x0, y0, x1, y1 = crop_box(obj["box"], imgsz)
                    name = synth_shapes.CLASS_NAMES[obj["cls"]]
                    jpg = synth_shapes.encode_jpg(np.ascontiguousarray(img[y0:y1, x0:x1]))
                    safe_build.write_file(parts[""] / name / f"{i:06d}_{j}.jpg", jpg)
                continue
            safe_build.write_file(parts["images"] / f"{i:06d}.jpg", synth_shapes.encode_jpg(img))
            safe_build.write_file(parts["labels"] / f"{i:06d}.txt", _label_lines(task, objs, imgsz).encode())
        if task != "classify":
            safe_build.commit_split(root, split, parts)
    if task == "classify":
        if root.exists():  # a rebuild: replace the splits (anything else in the folder stays)
            for split in ("train", "val"):
                if (root / split).exists():
                    shutil.rmtree(root / split)
                (stage / split).rename(root / split)
            stage.rmdir()
        else:
            stage.rename(root)
        safe_build.step()
        return ["train", "val"]
    return [f"{kind}/{split}" for split in ("train", "val") for kind in ("images", "labels")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate synth-shapes for segment, pose, obb or classify (offline).")
    ap.add_argument("--task", required=True, choices=TASKS)
    ap.add_argument("--root", required=True, help="output directory (dataset root)")
    ap.add_argument("--train", type=int, default=1000, help="number of training scenes")
    ap.add_argument("--val", type=int, default=200, help="number of validation scenes")
    ap.add_argument("--imgsz", type=int, default=320, help="scene side in pixels (>= 64)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0)")
    a = ap.parse_args(argv)
    print(f"synth-shapes {a.task} -> {generate(a.root, a.task, a.train, a.val, a.imgsz, a.seed)}")


if __name__ == "__main__":
    main()

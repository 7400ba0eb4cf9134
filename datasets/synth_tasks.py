"""synth-shapes for every Ultralytics task: the same scenes as ``synth_shapes.py``, labelled for segment, pose, OBB
and classify.

Standalone like ``synth_shapes.py`` (numpy, cv2, yaml, standard library), which it loads from its own folder; a
dataset YAML's ``download:`` snippet loads this file by path. Every label is derived from the pixels each object
owns at the end of rendering (its *visible* pixels, the ones its detection box is the tight box of) or from the
object's whole drawn mask:

* segment: one polygon per object tracing its visible pixels (pixel-index coordinates / imgsz). Objects with several
  parts (pair, triplet) or holes (hollow) become one polygon whose parts are joined by zero-width bridges, so filling
  it with ``cv2.fillPoly`` gives back exactly the visible pixels.
* pose: 5 keypoints per object, ``centre`` (centroid of its whole drawn mask) and the ``top``, ``right``, ``bottom``
  and ``left`` extreme pixels of that mask (the median pixel of the extreme row / column), at pixel centres.
  Visibility 2 where the object owns the pixel, 1 where it is hidden (occluded, or background inside a hollow
  shape); objects lie fully inside the image, so never 0. ``flip_idx`` swaps right and left.
* obb: the minimum-area rotated rectangle around the visible pixels (their pixel squares), 4 corners.
* classify: one crop per object (its box with a 10 % margin), ``{train,val}/<class name>/<image>_<object>.jpg``.

Run as a script: ``python synth_tasks.py --task segment --root DIR --train 16 --val 8 --imgsz 128``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

import cv2
import numpy as np

_spec = importlib.util.spec_from_file_location("synth_shapes", Path(__file__).with_name("synth_shapes.py"))
synth_shapes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synth_shapes)

TASKS = ("segment", "pose", "obb", "classify")
KEYPOINTS = ("centre", "top", "right", "bottom", "left")
FLIP_IDX = [0, 1, 4, 3, 2]  # a horizontal flip swaps right and left
CROP_MARGIN = 0.1


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
    """Return one (N, 2) polygon, in pixel indices, whose ``cv2.fillPoly`` filling is exactly ``mask``.

    Every contour (outer boundaries and holes) is visited from the first contour's start point and back along the
    same straight line, a bridge of zero width; the fill rule turns holes into holes again.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    loops = [c[:, 0] for c in contours]
    anchor = loops[0][0]
    path = [loops[0], loops[0][:1]]
    for loop in loops[1:]:
        j = int(np.argmin(((loop - anchor) ** 2).sum(1)))  # enter each loop at its point nearest the anchor
        path += [np.roll(loop, -j, axis=0), loop[j : j + 1], anchor[None]]
    return np.concatenate(path).astype(np.float64)


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
    """Return the 4 corners (4, 2) of the minimum-area rotated rectangle around the pixel squares of ``mask``."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    centres = np.concatenate([c[:, 0] for c in contours]).astype(np.float32)
    corners = (centres[:, None] + np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])).reshape(-1, 2)  # pixel edges
    return cv2.boxPoints(cv2.minAreaRect(corners)).astype(np.float64)


def _label_lines(task: str, objs: list[dict], n: int) -> str:
    lines = []
    for obj in objs:
        if task == "segment":
            values = (polygon(obj["visible"]) / n).ravel()
        elif task == "pose":
            (x0, y0, x1, y1), kpts = obj["box"], keypoints(obj)
            box = ((x0 + x1) / 2 / n, (y0 + y1) / 2 / n, (x1 - x0) / n, (y1 - y0) / n)
            values = np.concatenate([box, (kpts / [n, n, 1]).ravel()])
        else:  # obb
            values = (np.clip(oriented_box(obj["visible"]), 0, n) / n).ravel()
        lines.append(f"{obj['cls']} " + " ".join(f"{v:.6g}" for v in values) + "\n")
    return "".join(lines)


def _crop(img: np.ndarray, box: list) -> np.ndarray:
    x0, y0, x1, y1 = box
    mx, my = round((x1 - x0) * CROP_MARGIN), round((y1 - y0) * CROP_MARGIN)
    return img[max(0, y0 - my) : y1 + my, max(0, x0 - mx) : x1 + mx]


def generate(root: str | Path, task: str, n_train: int, n_val: int, imgsz: int = 320, seed: int = 0) -> Path:
    """Write the ``task`` version of synth-shapes under ``root`` and return ``root``.

    segment / pose / obb use the detection layout (``images/{split}``, ``labels/{split}``); classify writes
    ``{split}/<class name>/`` folders. Splits are written to hidden ``.partial`` folders and renamed at the end.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    root = Path(root)
    for split, count in (("train", int(n_train)), ("val", int(n_val))):
        if task == "classify":
            parts = {"": root / f".{split}.partial"}
            for name in synth_shapes.CLASS_NAMES:
                (parts[""] / name).mkdir(parents=True, exist_ok=True)
        else:
            parts = {kind: root / kind / f".{split}.partial" for kind in ("images", "labels")}
            for folder in parts.values():
                folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, objs = objects(seed, split, i, imgsz)
            if task == "classify":
                for j, obj in enumerate(objs):
                    crop = _crop(img, obj["box"])
                    name = synth_shapes.CLASS_NAMES[obj["cls"]]
                    cv2.imwrite(str(parts[""] / name / f"{i:06d}_{j}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
                continue
            (parts["images"] / f"{i:06d}.jpg").write_bytes(synth_shapes._encode_jpg(img))
            (parts["labels"] / f"{i:06d}.txt").write_text(_label_lines(task, objs, imgsz))
        (root / "labels" / f"{split}.cache").unlink(missing_ok=True)  # Ultralytics' cache of replaced labels
        for _, partial in sorted(parts.items(), key=lambda kv: kv[0] == "images"):  # images last: Ultralytics' marker
            final = partial.with_name(split)
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
    return root


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

"""neon-trees: a small real detection set (tree crowns in aerial RGB images) built on first use from a pip wheel.

Standalone like ``synth_shapes.py`` (numpy, cv2, the standard library and its sibling ``safe_build.py``). The source
is the ``deepforest`` wheel (MIT licence), fetched with ``python -m pip download deepforest==2.1.0 --no-deps`` (pip's
cache is used; nothing of deepforest is installed): its ``deepforest/data/`` folder holds four RGB orthophotos of
forest from the NEON programme (National Ecological Observatory Network, 0.1 m per pixel) with Pascal VOC boxes of
tree crowns drawn by people. The wheel is kept beside the set (``<datasets_dir>/deepforest-2.1.0-py3-none-any.whl``,
checked against its SHA-256), so a rebuild needs no network; without the network, put the wheel there.

=========================================  ===========  =====  =====
image (``deepforest/data/<name>.png``)     size (w×h)   boxes  split
=========================================  ===========  =====  =====
OSBS_029 (Florida)                         400×400      61     train
SOAP_061 (California; 9 Alive, 28 Dead)    400×400      37     train
2019_YELL_2_528000_4978000_image_crop2     2299×2472    574    train
2019_YELL_2_541000_4977000_image_crop      1249×1035    279    val
=========================================  ===========  =====  =====

Rules:

* **Split by source image**: every tile of an image goes to that image's split, so no part of a validation image is
  trained on. Validation is the Yellowstone crop ``541000_4977000``: its 279 crowns (29 % of the boxes) are enough
  for a stable mAP, and it leaves every site in training (Florida, California and the larger Yellowstone image);
  same site and sensor as the largest training image, so it measures unseen trees, not transfer to an unseen forest.
* **Tiles**: ``tile`` px squares (default 320) that overlap by ``overlap`` px (default 64, more than half the median
  crown of about 40 px); the last tile of a row or column is moved back to end at the image's edge (no padding), so
  the 400 px images give 2×2 tiles. Written as JPEG (quality 95), ``<image>_x<left>_y<top>.jpg``.
* **Boxes**: the VOC corners are taken as pixel-edge coordinates (as deepforest reads them) and clipped to the image;
  in a tile, a box is clipped to the tile and kept when at least ``MIN_INSIDE`` (half) of its area lies inside the
  tile, dropped otherwise (its crown is labelled in the neighbouring tile, which the overlap provides for crowns up
  to 128 px, wider than the largest). A tile without boxes keeps an empty label file (background).
* **One class** ``tree``: the ``Alive`` / ``Dead`` labels of SOAP_061 both become ``tree`` (a standing dead tree is a
  crown as well; deepforest's tree model counts both). Nothing is dropped for its label.

Run as a script: ``python neon_trees.py --root DIR [--tile 320 --overlap 64]`` (always rebuilds).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np

if __package__:  # imported as a module of its folder (yolo_attn.by_path.import_file; yolo_attn.datasets in a wheel)
    from . import safe_build
else:  # run as a script (its folder is first on sys.path), or imported by name from its folder
    import safe_build

__all__ = [
    "RECIPE",
    "SOURCES",
    "ensure",
    "generate",
    "fetch_wheel",
    "read_source",
    "tile_origins",
    "tile_boxes",
    "source_of",
]

REQUIREMENT = "deepforest==2.1.0"
WHEEL = "deepforest-2.1.0-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"  # what pip fetched, 2026-12-07
DATA = "deepforest/data"  # the images and their VOC files inside the wheel
SOURCES = {  # image name -> split
    "OSBS_029": "train",
    "SOAP_061": "train",
    "2019_YELL_2_528000_4978000_image_crop2": "train",
    "2019_YELL_2_541000_4977000_image_crop": "val",
}
CLASS_NAMES = ["tree"]
VERSION = 1
MIN_INSIDE = 0.5  # a box is kept in a tile when at least this fraction of its area lies inside the tile
JPEG_QUALITY = 95  # real photographs: keep the texture of the crowns
PIP_TIMEOUT = 600  # seconds for pip to fetch the 20 MB wheel
# what pip's retry warnings say when the index cannot be reached (its final error only says "no matching distribution")
NETWORK_ERROR = re.compile(r"(Failed to establish a new connection: [^\"')]*|Failed to resolve [^\"')]*|timed out)")


class SourceUnavailable(RuntimeError):
    """The deepforest wheel is neither beside the set nor fetchable; the message says what to do, in one line."""


def describe(params: dict) -> str:
    """The set that generator arguments give, in a few words (for the "building" message)."""
    tiles = f"{params['tile']} px tiles overlapping {params['overlap']} px"
    return f"{len(SOURCES)} NEON images from {params['source']}, {tiles}"


RECIPE = safe_build.Recipe("neon-trees", "yolo_attn neon_trees", VERSION, CLASS_NAMES, "neon_trees.json", describe)


def ensure(root: str | Path, tile: int = 320, overlap: int = 64) -> Path:
    """Return ``root`` holding the finished set: used as it is when it matches its record, built otherwise.

    Safe to call from many processes at once (one builds, the others wait for it); see ``safe_build.build``.

    Args:
        root (str | Path): The set's folder (its wheel is kept in the folder above it).
        tile (int): Tile side in pixels.
        overlap (int): Overlap of neighbouring tiles in pixels.

    Returns:
        (Path): ``root``.

    Raises:
        SourceUnavailable: The wheel is not beside the set and pip cannot fetch it.
    """
    return safe_build.build(root, _params(tile, overlap), _write, RECIPE)


def generate(root: str | Path, tile: int = 320, overlap: int = 64) -> Path:
    """Build the set under ``root``, replacing any earlier one (see :func:`ensure`); return ``root``."""
    return safe_build.build(root, _params(tile, overlap), _write, RECIPE, force=True)


def _params(tile: int, overlap: int) -> dict:
    if tile < 32 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 32 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    return {"task": "detect", "source": REQUIREMENT, "tile": int(tile), "overlap": int(overlap)}


def fetch_wheel(folder: str | Path) -> Path:
    """Return the deepforest wheel in ``folder``, fetching it with pip first if it is not there.

    pip uses its cache, so a machine that fetched it once needs the package index only for the index page.

    Args:
        folder (str | Path): Where the wheel is kept (the folder of the set's folder: Ultralytics' datasets_dir).

    Returns:
        (Path): The wheel, its SHA-256 checked.

    Raises:
        SourceUnavailable: pip failed (no network, no index): one line saying what to run and where to put the wheel.
        ValueError: A file of the wheel's name is there but is not that wheel.
    """
    folder = Path(folder)
    wheel = folder / WHEEL
    if not wheel.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        stage = safe_build.fresh_dir(folder / f".{WHEEL}.partial")
        try:
            args = [sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps", "--only-binary=:all:"]
            args += ["--dest", str(stage), "--retries", "1", "--timeout", "60", "--disable-pip-version-check"]
            args += ["--no-input"]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=PIP_TIMEOUT)
            if proc.returncode != 0 or not (stage / WHEEL).is_file():
                why = _pip_reason(proc.stderr) or f"pip exited with {proc.returncode}"
                raise SourceUnavailable(
                    f"neon-trees: cannot fetch {REQUIREMENT} from the package index ({why}); where it can be reached "
                    f"run `python -m pip download {REQUIREMENT} --no-deps -d DIR` and copy DIR/{WHEEL} to {folder}/"
                )
            os.replace(stage / WHEEL, wheel)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise ValueError(f"neon-trees: {wheel} is not deepforest 2.1.0's wheel (SHA-256 {digest}); delete it")
    return wheel


def _pip_reason(stderr: str) -> str:
    """pip's last error, and the network error behind it when pip retried one (one line)."""
    errors = [line.removeprefix("ERROR: ").strip() for line in stderr.splitlines() if line.startswith("ERROR: ")]
    network = NETWORK_ERROR.search(stderr)
    return "; ".join(filter(None, [errors[-1] if errors else "", network[1].strip() if network else ""]))


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Left (or top) edges of the tiles along a side of ``length`` px: a stride of ``tile - overlap``, the last tile
    moved back to end at the edge (one tile at 0 when the side is not longer than a tile)."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def tile_boxes(boxes: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The boxes kept in the tile ``(x0, y0, w, h)``, clipped to it, in tile coordinates: (n, 4) x0, y0, x1, y1.

    A box is kept when at least ``MIN_INSIDE`` of its area lies inside the tile.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    clipped = np.clip(boxes - [x0, y0, x0, y0], 0, [w, h, w, h])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped[inside >= MIN_INSIDE * area]


def source_of(tile_file: str | Path) -> str:
    """The source image a tile was cut from (its file name up to ``_x<left>_y<top>``)."""
    return Path(tile_file).stem.rsplit("_x", 1)[0]


def read_source(wheel: zipfile.ZipFile, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The image ``name`` of the wheel (BGR) and its boxes (n, 4: x0, y0, x1, y1 pixel edges, clipped to it)."""
    img = cv2.imdecode(np.frombuffer(wheel.read(f"{DATA}/{name}.png"), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"neon-trees: cannot decode {DATA}/{name}.png in {wheel.filename}")
    root = ElementTree.fromstring(wheel.read(f"{DATA}/{name}.xml"))
    keys = ("xmin", "ymin", "xmax", "ymax")
    corners = [[float(o.findtext(f"bndbox/{k}")) for k in keys] for o in root.iter("object")]
    h, w = img.shape[:2]
    return img, np.clip(np.array(corners, np.float64).reshape(-1, 4), 0, [w, h, w, h])


def _label_text(boxes: np.ndarray, w: int, h: int) -> str:
    return "".join(
        f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n"
        for x0, y0, x1, y1 in boxes.tolist()
    )


def _write(root: Path, params: dict) -> list[str]:
    """Tile the wheel's images into hidden ``.partial`` folders, rename them into place; return the folders."""
    tile, overlap = params["tile"], params["overlap"]
    wheel_file = fetch_wheel(root.parent)  # first: where it cannot be had, nothing of the set is created
    splits = sorted(set(SOURCES.values()), key=lambda s: s == "val")  # images/val last: Ultralytics' sign of a set
    parts = {s: {k: safe_build.fresh_dir(root / k / f".{s}.partial") for k in ("images", "labels")} for s in splits}
    with zipfile.ZipFile(wheel_file) as wheel:
        for name, split in SOURCES.items():
            img, boxes = read_source(wheel, name)
            h, w = img.shape[:2]
            for y0 in tile_origins(h, tile, overlap):
                for x0 in tile_origins(w, tile, overlap):
                    crop = np.ascontiguousarray(img[y0 : y0 + tile, x0 : x0 + tile])
                    ok, jpg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                    if not ok:
                        raise RuntimeError("JPEG encoding failed")
                    stem = f"{name}_x{x0:04d}_y{y0:04d}"
                    safe_build.write_file(parts[split]["images"] / f"{stem}.jpg", jpg.tobytes())
                    kept = tile_boxes(boxes, x0, y0, crop.shape[1], crop.shape[0])
                    text = _label_text(kept, crop.shape[1], crop.shape[0])
                    safe_build.write_file(parts[split]["labels"] / f"{stem}.txt", text.encode())
    (root / "README.md").write_text(ATTRIBUTION)
    for split in splits:
        safe_build.commit_split(root, split, parts[split])
    return [f"{kind}/{split}" for split in splits for kind in ("images", "labels")]


ATTRIBUTION = f"""# neon-trees

Tiles of the four annotated NEON images shipped in the `deepforest` wheel ({REQUIREMENT}, `deepforest/data/`),
built by yolo_attn's `neon_trees.py`; one class, `tree`. Not for redistribution as part of yolo_attn: built on each
machine from the wheel.

- Images: the National Ecological Observatory Network (NEON), a programme sponsored by the U.S. National Science
  Foundation and operated by Battelle: airborne RGB orthophotos (data product DP3.30010.001, High-resolution
  orthorectified camera imagery mosaic), released by NEON into the public domain (CC0 1.0) when these were
  published; NEON moves its data products to CC BY 4.0 from 2026, which asks for this attribution: "This material
  uses data from the National Ecological Observatory Network (NEON), https://www.neonscience.org". No endorsement
  by NEON is implied.
- Annotations and packaging: DeepForest (Weinstein et al., "DeepForest: A Python package for RGB deep learning tree
  crown delineation", Methods in Ecology and Evolution 11 (2020) 1743-1751), MIT licence:

      MIT License, Copyright (c) 2019, Ben Weinstein. Permission is hereby granted, free of charge, to any person
      obtaining a copy of this software and associated documentation files (the "Software"), to deal in the Software
      without restriction, including without limitation the rights to use, copy, modify, merge, publish, distribute,
      sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is furnished to do
      so, subject to the following conditions: The above copyright notice and this permission notice shall be
      included in all copies or substantial portions of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT
      WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
      FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE
      LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
      FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build the neon-trees detection set from the deepforest wheel.")
    ap.add_argument("--root", required=True, help="output directory (the set's folder; the wheel is kept beside it)")
    ap.add_argument("--tile", type=int, default=320, help="tile side in pixels")
    ap.add_argument("--overlap", type=int, default=64, help="overlap of neighbouring tiles in pixels")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    root = generate(a.root, a.tile, a.overlap)
    counts = {}
    for split in ("train", "val"):
        labels = sorted((root / "labels" / split).glob("*.txt"))
        counts[split] = (len(labels), sum(len(f.read_text().splitlines()) for f in labels))
    summary = ", ".join(f"{split} {n} tiles / {b} boxes" for split, (n, b) in counts.items())
    print(f"neon-trees: {summary} in {time.perf_counter() - t:.1f}s -> {root}")


if __name__ == "__main__":
    main()

